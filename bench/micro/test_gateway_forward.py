"""A guarded request through the gateway's ASGI app: rate limit, routing, token check,
headers, and the in-process hop (`LocalProxy`) to the service, here a trivial one that
answers with the user the gateway vouched for. The client is a `LocalProxy` too: the
gateway app is called directly, with no socket or HTTP parsing in front."""

from __future__ import annotations

import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from airbourne.clients.proxy import LocalProxy
from airbourne.http import ok
from airbourne.runtime import Runtime
from airbourne.service import Service
from airbourne.services.gateway import SERVICE as GATEWAY

BODY = b'{"flightId":12,"userId":7,"NoOfSeats":2}'


async def who(request: Request) -> Response:
    return ok({"user": request.headers["x-user-id"], "bytes": len(await request.body())})


def trivial_booking(runtime: Runtime) -> Starlette:
    return Starlette(routes=[Route("/api/v1/bookings", who, methods=["POST"])])


TRIVIAL_BOOKING = Service(name="booking", create_app=trivial_booking, uses_database=False)


def test_gateway_forwards_a_booking(benchmark, loop, start) -> None:
    runtime = start([GATEWAY, TRIVIAL_BOOKING])
    gateway = runtime.apps["gateway"]
    token = gateway.state.tokens.issue(7, "ada@example.com")
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(BODY)).encode()),
        (b"x-access-token", token.encode()),
    ]
    client = LocalProxy(gateway)
    statuses = []

    def forward():
        answer = loop.run_until_complete(
            client.forward("POST", "/bookingservice/api/v1/bookings", b"", headers, BODY)
        )
        statuses.append(answer.status)
        return answer

    answer = benchmark(forward)

    assert set(statuses) == {200}, answer.body
    assert json.loads(answer.body)["data"] == {"user": "7", "bytes": len(BODY)}
