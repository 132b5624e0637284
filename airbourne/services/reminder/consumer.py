"""The reminder's broker consumer: messages from other services become tickets and emails.

Body: `{"service": "CREATE_TICKET" | "SEND_BASIC_MAIL" | "CANCEL_TICKETS", "data": {...}}`,
or several such messages in one: `{"service": "BATCH", "data": {"messages": [{"messageId":
"...", "message": {"service": ..., "data": ...}}, ...]}}`, as the booking outbox publishes
what it relays together (a message costs both ends and RabbitMQ far more than its bytes).
A handler returns only after its work is committed, which acknowledges the message. A
message that can never succeed (not JSON, an unknown `service`, invalid data) raises
`Reject` and goes to the dead letters instead of blocking the queue; any other error (the
database is away) sends it back to be delivered again. A batch is done item by item: its
good items are done even when another is rejected, and the batch is then dead-lettered
naming the rejected ones; delivered again, its items already done are recognised by their
own message ids.

Delivery is at-least-once, so every handler is idempotent: a ticket remembers the id of the
message it came from and the same id makes no second ticket (and sends no second email);
cancelling twice cancels nothing more.
"""

from __future__ import annotations

import asyncio
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

BATCH = "BATCH"
MAX_BATCH = 1000
"""The most messages one batch may hold: the booking outbox relays at most 200 at a time."""


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
        if isinstance(payload, dict) and payload.get("service") == BATCH:
            await self.handle_batch(batch_items(payload.get("data")))
        else:
            await self.dispatch(payload, message.message_id)

    async def handle_batch(self, items: list[tuple[str, Any]]) -> None:
        """Do the (message id, payload) `items` of a batch together, so that their tickets
        are written with one statement. Their order does not matter: a booking's ticket
        written after its cancel is cancelled as it is written (`store.cancel_booking_tickets`)."""
        outcomes = await asyncio.gather(
            *(self.dispatch(payload, message_id) for message_id, payload in items),
            return_exceptions=True,
        )
        rejected: list[str] = []
        for (message_id, _), outcome in zip(items, outcomes):
            if isinstance(outcome, Reject):
                rejected.append(f"{message_id}: {outcome}")
            elif isinstance(outcome, BaseException):
                raise outcome  # delivered again: the items done meanwhile are not redone
        if rejected:
            shown = "; ".join(rejected[:5]) + ("; ..." if len(rejected) > 5 else "")
            raise Reject(f"{BATCH}: {len(rejected)} of {len(items)} messages rejected: {shown}")

    async def dispatch(self, payload: Any, message_id: str | None) -> None:
        """Do what one message's decoded body asks."""
        if not isinstance(payload, dict):
            raise Reject("the body is not a JSON object")
        service, data = payload.get("service"), payload.get("data")
        action = self._actions.get(service) if isinstance(service, str) else None
        if action is None:
            known = ", ".join([*self._actions, BATCH])
            raise Reject(f"unknown service {service!r}; expected one of {known}")
        if not isinstance(data, dict):
            raise Reject(f"{service}: data must be a JSON object")
        try:
            await action(data, message_id)
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
        """Cancel the booking's PENDING tickets, and those of it written later: under load
        a ticket delivered before the cancel may still be on its way to the database."""
        booking_id = validate.integer(data, "bookingId")
        await store.cancel_booking_tickets(self.database, booking_id)


def batch_items(data: Any) -> list[tuple[str, Any]]:
    """The (message id, payload) items of a batch's `data`; `Reject` if it is malformed."""
    messages = data.get("messages") if isinstance(data, dict) else None
    if not isinstance(messages, list) or not messages:
        raise Reject(f"{BATCH}: data.messages must be a non-empty list")
    if len(messages) > MAX_BATCH:
        raise Reject(f"{BATCH}: at most {MAX_BATCH} messages, got {len(messages)}")
    items = []
    for index, item in enumerate(messages):
        message_id = item.get("messageId") if isinstance(item, dict) else None
        if not isinstance(message_id, str) or not 0 < len(message_id) <= schema.MESSAGE_ID_MAX:
            raise Reject(
                f"{BATCH}: messages[{index}].messageId must be a string of 1 to"
                f" {schema.MESSAGE_ID_MAX} characters"
            )
        payload = item.get("message")
        if isinstance(payload, dict) and payload.get("service") == BATCH:
            raise Reject(f"{BATCH}: messages[{index}] is a batch itself")
        items.append((message_id, payload))
    return items


async def consume(runtime: Runtime) -> None:
    """Subscribe the reminder to its queue; the broker delivers from then on."""
    settings = runtime.config["broker"]
    consumer = Consumer(sender_of(runtime))
    await runtime.broker.subscribe(
        settings["notification_queue"], settings["reminder_binding_key"], consumer.handle
    )
