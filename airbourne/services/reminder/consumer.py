"""The reminder's broker consumer: messages from other services become tickets and emails.

Body: `{"service": "CREATE_TICKET" | "SEND_BASIC_MAIL" | "CANCEL_TICKETS", "data": {...}}`.
A handler returns only after its work is committed, which acknowledges the message. A
message that can never succeed (not JSON, an unknown `service`, invalid data) raises
`Reject` and goes to the dead letters instead of blocking the queue; any other error (the
database is away) sends it back to be delivered again.

Delivery is at-least-once, so every handler is idempotent: a ticket remembers the id of the
message it came from and the same id makes no second ticket (and sends no second email);
cancelling twice cancels nothing more.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping

from databases import Database

from airbourne import db, validate
from airbourne.broker import Message, Reject
from airbourne.http import ApiError
from airbourne.ids import unique_hex
from airbourne.services.reminder import schema, store
from airbourne.services.reminder.sender import CLAIM_SECONDS, Sender, sender_of

if TYPE_CHECKING:
    from airbourne.runtime import Runtime

logger = logging.getLogger("airbourne.reminder")

Data = Mapping[str, Any]


class Consumer:
    def __init__(self, sender: Sender) -> None:
        self.sender = sender
        self.database = sender.database
        self._tickets = TicketWriter(self.database)
        self._actions: dict[str, Callable[[Data, str | None], Awaitable[None]]] = {
            "CREATE_TICKET": self.create_ticket,
            "SEND_BASIC_MAIL": self.send_basic_mail,
            "CANCEL_TICKETS": self.cancel_tickets,
        }

    async def handle(self, message: Message) -> None:
        try:
            payload = json.loads(message.body)
        except (ValueError, RecursionError):
            raise Reject("the body is not JSON") from None
        if not isinstance(payload, dict):
            raise Reject("the body is not a JSON object")
        service, data = payload.get("service"), payload.get("data")
        action = self._actions.get(service) if isinstance(service, str) else None
        if action is None:
            raise Reject(f"unknown service {service!r}; expected one of {', '.join(self._actions)}")
        if not isinstance(data, dict):
            raise Reject(f"{service}: data must be a JSON object")
        try:
            await action(data, message.message_id)
        except ApiError as exc:  # a field check failed: the message itself is wrong
            raise Reject(f"{service}: {exc.message}") from None

    async def create_ticket(self, data: Data, message_id: str | None) -> None:
        fields = schema.ticket_fields(data)
        fields["bookingId"] = validate.integer(data, "bookingId", required=False, default=None)
        ticket = await self._tickets.create(fields, message_id)
        if ticket is None:
            logger.info("message %s was handled before; no new ticket", message_id)
        else:
            self.sender.notice(ticket)

    async def send_basic_mail(self, data: Data, message_id: str | None) -> None:
        """Send at once. The email is kept as a ticket first, born claimed by this handler:
        its message id stops a redelivery from sending it twice, and if the send fails the
        ticket stays PENDING for the sender to retry, so the email is not lost."""
        now = db.utcnow()
        fields = {
            "subject": validate.string(data, "mailSubject", max_length=schema.SUBJECT_MAX),
            "content": validate.string(data, "mailBody", max_length=schema.CONTENT_MAX),
            "recepientEmail": validate.email(data, "mailTo"),
            "mailFrom": schema.sender(data, "mailFrom"),
            "notificationTime": now,
            "status": schema.PENDING,
        }
        ticket = await store.create_ticket(
            self.database, fields, message_id=message_id, claim_token=unique_hex(),
            claimed_until=now + timedelta(seconds=CLAIM_SECONDS),
        )
        if ticket is None:
            logger.info("message %s was handled before; not sending it again", message_id)
            return
        await self.sender.deliver(ticket, now)

    async def cancel_tickets(self, data: Data, message_id: str | None) -> None:
        booking_id = validate.integer(data, "bookingId")
        await store.cancel_booking_tickets(self.database, booking_id)


class TicketWriter:
    """Writes the tickets of messages that arrive together (up to the broker's prefetch
    count) with one statement: under load a statement per message was the reminder's largest
    cost. A handler still returns only once its own ticket is committed.

    One write is in flight at a time; tickets that arrive meanwhile make the next one.
    """

    def __init__(self, database: Database) -> None:
        self.database = database
        self._waiting: list[tuple[Data, str | None, asyncio.Future]] = []
        self._writing: asyncio.Task | None = None

    async def create(self, fields: Data, message_id: str | None) -> dict[str, Any] | None:
        """What `store.create_ticket` returns (without the `id`)."""
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((fields, message_id, future))
        if self._writing is None:
            self._writing = asyncio.create_task(self._write(), name="reminder: ticket writer")
        return await future

    async def _write(self) -> None:
        batch: list[tuple[Data, str | None, asyncio.Future]] = []
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    made = await store.create_tickets(
                        self.database, [(fields, message_id) for fields, message_id, _ in batch]
                    )
                except Exception as exc:  # the database is away: every message goes back
                    _settle(batch, exception=exc)
                else:
                    _settle(batch, made)
        except BaseException as exc:  # cancelled at shutdown: no handler waits forever
            _settle(batch + self._waiting, exception=exc)
            self._waiting = []
            raise
        finally:
            self._writing = None


def _settle(
    batch: list[tuple[Data, str | None, asyncio.Future]],
    results: list[Any] | None = None,
    exception: BaseException | None = None,
) -> None:
    for index, (*_, future) in enumerate(batch):
        if future.done():  # its handler was cancelled
            continue
        if exception is not None:
            future.set_exception(exception)
        else:
            future.set_result(results[index])


async def consume(runtime: Runtime) -> None:
    """Subscribe the reminder to its queue; the broker delivers from then on."""
    settings = runtime.config["broker"]
    consumer = Consumer(sender_of(runtime))
    await runtime.broker.subscribe(
        settings["notification_queue"], settings["reminder_binding_key"], consumer.handle
    )
