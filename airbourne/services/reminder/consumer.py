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

import functools
import json
import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping

from airbourne import db, validate
from airbourne.batch import Batch
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
        # Tickets of messages handled together (up to the broker's prefetch count) are
        # written with one statement: under load a statement per message was the
        # reminder's largest cost.
        self._tickets = Batch(
            functools.partial(store.create_tickets, self.database), "reminder: ticket writer"
        )
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
        ticket = await self._tickets.submit((fields, message_id))
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


async def consume(runtime: Runtime) -> None:
    """Subscribe the reminder to its queue; the broker delivers from then on."""
    settings = runtime.config["broker"]
    consumer = Consumer(sender_of(runtime))
    await runtime.broker.subscribe(
        settings["notification_queue"], settings["reminder_binding_key"], consumer.handle
    )
