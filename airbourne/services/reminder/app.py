"""The reminder's routes: create, list and read notification tickets."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from airbourne import validate
from airbourne.http import created, exception_handlers, not_found, ok, read_json
from airbourne.mail import mailer_from_config
from airbourne.runtime import Runtime
from airbourne.services.reminder import schema, store
from airbourne.services.reminder.sender import Sender

MAX_PAGE = 100


async def create_ticket(request: Request) -> Response:
    fields = schema.ticket_fields(await read_json(request))
    ticket = await store.create_ticket(request.app.state.database, fields)
    assert ticket is not None  # only a broker message id can be a duplicate
    request.app.state.sender.notice(ticket)
    return created(store.public(ticket), "Successfully created a ticket")


async def list_tickets(request: Request) -> Response:
    query = request.query_params
    status = schema.status(query, "status", required=False, default=None)
    limit = validate.integer(query, "limit", maximum=MAX_PAGE, required=False, default=MAX_PAGE,
                             text=True)
    offset = validate.integer(query, "offset", minimum=0, required=False, default=0, text=True)
    tickets = await store.list_tickets(request.app.state.database, status, limit, offset)
    return ok(tickets, "Successfully fetched the tickets")


async def get_ticket(request: Request) -> Response:
    ticket_id = validate.path_id(request)
    ticket = await store.get_ticket(request.app.state.database, ticket_id)
    if ticket is None:
        raise not_found(f"ticket {ticket_id}")
    return ok(ticket, "Successfully fetched the ticket")


def create_app(runtime: Runtime) -> Starlette:
    app = Starlette(
        routes=[
            Mount(
                "/api/v1",
                routes=[
                    Route("/tickets", create_ticket, methods=["POST"]),
                    Route("/tickets", list_tickets, methods=["GET"]),
                    Route("/tickets/{id}", get_ticket, methods=["GET"]),
                ],
            )
        ],
        exception_handlers=exception_handlers,
    )
    app.state.database = runtime.database("reminder")
    mailer = mailer_from_config(runtime.config)
    app.state.sender = Sender.from_config(app.state.database, mailer, runtime.config)
    return app
