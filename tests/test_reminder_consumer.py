"""The reminder's broker consumer, on the memory broker and on RabbitMQ, over SQLite and
MariaDB: tickets from messages, once per message id; poison dead-lettered without blocking
the queue; basic mails sent at once; a booking's tickets cancelled.

Each test has its own exchange and queue (deleted from RabbitMQ afterwards), and a prefetch
of 1, so messages are handled one after the other: once the last message published has had
its effect, so have those before it.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from datetime import timedelta
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator

import aio_pika
import anyio
import pytest

from airbourne import db
from airbourne.broker import Message, Reject
from airbourne.broker.memory import MemoryBroker
from airbourne.runtime import Runtime
from airbourne.services import reminder
from airbourne.services.reminder.consumer import Consumer
from airbourne.services.reminder.sender import send_due, sender_of
from mailserver import MailServer
from support import calls_of, client, delete_topology, make_config, started

pytestmark = pytest.mark.anyio

LATER = db.utcnow().replace(microsecond=0) + timedelta(days=1)


def ticket_data(**changes: Any) -> dict[str, Any]:
    data = {"subject": "Your flight AB123", "content": "Boarding at gate G7.",
            "recepientEmail": "ada@example.com", "notificationTime": db.iso(LATER)}
    return {**data, **changes}


def batch(*items: tuple[str, Any]) -> dict[str, Any]:
    """A `BATCH` of (message id, message) items, as the booking outbox publishes them."""
    messages = [{"messageId": message_id, "message": message} for message_id, message in items]
    return {"service": "BATCH", "data": {"messages": messages}}


def created(subject: str, **changes: Any) -> dict[str, Any]:
    return {"service": "CREATE_TICKET", "data": ticket_data(subject=subject, **changes)}


def basic_mail(**changes: Any) -> dict[str, Any]:
    return {"mailTo": "ada@example.com", "mailSubject": "Welcome aboard",
            "mailBody": "Your booking is confirmed.", **changes}


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 10.0) -> None:
    with anyio.fail_after(seconds):
        while not await check():
            await anyio.sleep(0.02)


class Reminder:
    """A started reminder on names unique to one test, and what a test needs to see of it."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        settings = runtime.config["broker"]
        self.queue = settings["notification_queue"]
        self.key = settings["reminder_binding_key"]

    async def publish(self, body: Any, message_id: str | None = None) -> str:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        message_id = message_id or uuid.uuid4().hex
        await self.runtime.broker.publish(self.key, raw, message_id=message_id)
        return message_id

    async def tickets(self, status: str | None = None) -> list[dict]:
        params = {"status": status} if status else {}
        async with client(self.runtime.apps["reminder"]) as http:
            return (await http.get("/api/v1/tickets", params=params)).json()["data"]

    async def drain(self) -> dict:
        """Publish a marker ticket and wait until it is stored: with a prefetch of 1, every
        message published before it has then been handled, unless one was waiting to be
        delivered again (the memory broker requeues at the back). Returns the marker."""
        marker = f"marker {uuid.uuid4().hex}"
        await self.publish({"service": "CREATE_TICKET", "data": ticket_data(subject=marker)})

        async def stored() -> bool:
            return any(t["subject"] == marker for t in await self.tickets())

        await eventually(stored)
        return next(t for t in await self.tickets() if t["subject"] == marker)

    async def dead_letters(self) -> list[bytes]:
        broker = self.runtime.broker
        if isinstance(broker, MemoryBroker):
            return [message.body for message in broker.dead_letters(self.queue)]
        async with await aio_pika.connect(broker.url) as connection:
            dead = await (await connection.channel()).get_queue(f"{self.queue}.dead")
            bodies = []
            while (incoming := await dead.get(no_ack=True, fail=False)) is not None:
                bodies.append(incoming.body)
            return bodies


@pytest.fixture
def smtp() -> Iterator[MailServer]:
    with MailServer() as server:
        yield server


@pytest.fixture(params=["memory", pytest.param("rabbitmq", marks=pytest.mark.amqp)])
async def service(request, tmp_path, database_url, smtp) -> AsyncIterator[Reminder]:
    name = f"test-{uuid.uuid4().hex[:12]}"
    environ = {
        "AIRBOURNE_BROKER_EXCHANGE": name,
        "AIRBOURNE_BROKER_NOTIFICATION_QUEUE": f"{name}-notifications",
        "AIRBOURNE_BROKER_PREFETCH": "1",
        "AIRBOURNE_MAIL_TRANSPORT": "smtp",
        "AIRBOURNE_MAIL_SMTP_PORT": str(smtp.port),
        "AIRBOURNE_MAIL_SMTP_TIMEOUT_SECONDS": "5",
        "AIRBOURNE_REMINDER_SEND_INTERVAL_SECONDS": "3600",
    }
    if request.param == "rabbitmq":
        environ["AIRBOURNE_BROKER_URL"] = request.getfixturevalue("amqp_url")
    config = make_config(tmp_path, database_url, **environ)
    try:
        async with started(config, [reminder.SERVICE]) as runtime:
            with anyio.fail_after(10):
                while not runtime.broker.connected:
                    await anyio.sleep(0.02)
            service = Reminder(runtime)
            await runtime.broker.declare(service.queue, service.key)
            yield service
    finally:
        if request.param == "rabbitmq":
            await delete_topology(config["broker"]["url"], name, [f"{name}-notifications"])


async def test_create_ticket_stores_one_ticket(service):
    await service.publish({"service": "CREATE_TICKET",
                           "data": ticket_data(subject="Reminder: AB123", bookingId=7)})
    await service.drain()
    [ticket] = [t for t in await service.tickets() if t["subject"] == "Reminder: AB123"]
    assert ticket["recepientEmail"] == "ada@example.com"
    assert ticket["content"] == "Boarding at gate G7."
    assert ticket["notificationTime"] == db.iso(LATER)
    assert ticket["status"] == "PENDING"
    assert await service.dead_letters() == []


async def test_the_same_message_delivered_twice_makes_one_ticket(service):
    body = {"service": "CREATE_TICKET", "data": ticket_data(subject="Only once")}
    message_id = await service.publish(body)
    await service.publish(body, message_id=message_id)
    await service.drain()
    assert [t["subject"] for t in await service.tickets()].count("Only once") == 1


@pytest.mark.parametrize(
    "poison",
    [
        b"this is not JSON",
        b"\xff\xfe",
        [1, 2, 3],
        {"service": "ORDER_PIZZA", "data": {}},
        {"data": ticket_data()},
        {"service": "CREATE_TICKET"},
        {"service": "CREATE_TICKET", "data": "subject=hi"},
        {"service": "CREATE_TICKET", "data": ticket_data(recepientEmail=None)},
        {"service": "CREATE_TICKET", "data": ticket_data(recepientEmail="nobody")},
        {"service": "CREATE_TICKET", "data": ticket_data(notificationTime="soon")},
        {"service": "CREATE_TICKET", "data": ticket_data(bookingId="seven")},
        {"service": "SEND_BASIC_MAIL", "data": basic_mail(mailTo=None)},
        {"service": "SEND_BASIC_MAIL", "data": basic_mail(mailFrom="x\nBcc: eve@example.com")},
        {"service": "CANCEL_TICKETS", "data": {}},
        {"service": "BATCH", "data": {}},
        {"service": "BATCH", "data": {"messages": []}},
        {"service": "BATCH", "data": {"messages": [1]}},
        {"service": "BATCH", "data": {"messages": [{"message": {"service": "CANCEL_TICKETS"}}]}},
        batch(("x" * 256, {"service": "CREATE_TICKET", "data": ticket_data()})),
        batch(("inner", {"service": "CREATE_TICKET", "data": ticket_data()}),
              ("nested", batch(("deep", {"service": "CREATE_TICKET", "data": ticket_data()})))),
        batch(*((f"m-{i}", {"service": "CANCEL_TICKETS", "data": {"bookingId": 1}})
                for i in range(1001))),
        batch(("not-an-object", 5)),
    ],
)
async def test_poison_is_dead_lettered_and_the_next_message_handled(service, smtp, poison):
    raw = poison if isinstance(poison, bytes) else json.dumps(poison).encode()
    await service.publish(raw)
    marker = await service.drain()
    assert [t["id"] for t in await service.tickets()] == [marker["id"]]
    assert await service.dead_letters() == [raw]
    assert smtp.received == []


async def test_send_basic_mail_is_sent_at_once_and_only_once(service, smtp):
    body = {"service": "SEND_BASIC_MAIL",
            "data": basic_mail(mailFrom="Airline Desk <desk@airline.test>")}
    message_id = await service.publish(body)
    [received] = await smtp.until_received(1)
    assert received.recipients == ["ada@example.com"]
    assert received.sender == "desk@airline.test"
    assert received.message["Subject"] == "Welcome aboard"
    assert received.body == "Your booking is confirmed."

    await service.publish(body, message_id=message_id)  # delivered again: not sent again
    await service.drain()
    assert len(smtp.received) == 1
    [kept] = await service.tickets("SUCCESS")
    assert kept["subject"] == "Welcome aboard" and kept["attempts"] == 1


async def test_send_basic_mail_with_smtp_down_is_kept_and_sent_later(service, smtp):
    smtp.stop()
    await service.publish({"service": "SEND_BASIC_MAIL", "data": basic_mail()})
    await service.drain()
    [kept] = [t for t in await service.tickets() if t["subject"] == "Welcome aboard"]
    assert (kept["status"], kept["attempts"]) == ("PENDING", 1)
    assert kept["lastError"]

    smtp.start()
    await send_due(service.runtime, now=db.utcnow() + timedelta(hours=1))
    assert [r.message["Subject"] for r in smtp.received] == ["Welcome aboard"]
    assert [t["subject"] for t in await service.tickets("SUCCESS")] == ["Welcome aboard"]


async def test_a_ticket_due_now_is_sent_without_waiting_for_the_interval(service, smtp):
    await service.publish({"service": "CREATE_TICKET", "data": ticket_data(
        subject="Booking confirmed", notificationTime=db.iso(db.utcnow()))})
    [received] = await smtp.until_received(1)
    assert received.message["Subject"] == "Booking confirmed"


async def test_cancel_tickets_cancels_the_pending_tickets_of_one_booking(service, smtp):
    for subject, booking, status in [("7 confirmed", 7, "SUCCESS"), ("7 reminder", 7, "PENDING"),
                                     ("7 other", 7, "PENDING"), ("8 reminder", 8, "PENDING")]:
        await service.publish({"service": "CREATE_TICKET",
                               "data": ticket_data(subject=subject, bookingId=booking, status=status)})
    await service.publish({"service": "CANCEL_TICKETS", "data": {"bookingId": 7}})
    marker = await service.drain()

    status = {t["subject"]: t["status"] for t in await service.tickets()}
    assert status["7 confirmed"] == "SUCCESS"
    assert status["7 reminder"] == status["7 other"] == "CANCELLED"
    assert status["8 reminder"] == "PENDING"
    await send_due(service.runtime, now=LATER)
    assert {r.message["Subject"] for r in smtp.received} == {"8 reminder", marker["subject"]}


async def test_a_database_error_redelivers_instead_of_dead_lettering(service, caplog):
    database = service.runtime.database("reminder")
    await database.execute("ALTER TABLE tickets RENAME TO tickets_away")
    try:  # a task: the memory broker confirms only once the message is handled
        publishing = asyncio.create_task(
            service.publish({"service": "CREATE_TICKET", "data": ticket_data(subject="Kept")})
        )
        with anyio.fail_after(10):
            while "handler failed" not in caplog.text:
                await anyio.sleep(0.02)
    finally:
        await database.execute("ALTER TABLE tickets_away RENAME TO tickets")

    async def kept() -> bool:
        return "Kept" in [t["subject"] for t in await service.tickets()]

    # Not `drain()`: the memory broker puts a redelivered message at the back of the queue,
    # so a marker published during the pause can be stored first.
    await eventually(kept)
    await publishing
    assert await service.dead_letters() == []


async def test_handler_is_idempotent_under_concurrent_deliveries(service):
    """Two deliveries of one message at once make one ticket; messages with no id are each
    kept, since nothing says they are the same."""
    consumer = Consumer(sender_of(service.runtime))
    body = json.dumps({"service": "CREATE_TICKET", "data": ticket_data(subject="Twice")}).encode()
    same = Message(body, service.key, message_id="m-1")
    await asyncio.gather(*(consumer.handle(same) for _ in range(5)))
    anonymous = Message(body, service.key, message_id=None)
    await consumer.handle(anonymous)
    await consumer.handle(anonymous)
    assert [t["subject"] for t in await service.tickets()].count("Twice") == 3


def _create_ticket_message(subject: str, message_id: str | None) -> Message:
    body = json.dumps({"service": "CREATE_TICKET", "data": ticket_data(subject=subject)})
    return Message(body.encode(), "notifications", message_id=message_id)


async def test_messages_handled_together_are_written_together(service, monkeypatch):
    """Concurrent deliveries share one INSERT; each handler still returns only once its
    ticket is stored."""
    from airbourne.services.reminder import store

    calls = calls_of(monkeypatch, store, "create_tickets")
    consumer = Consumer(sender_of(service.runtime))
    messages = [_create_ticket_message(f"Batch {i}", f"batch-{i}") for i in range(20)]
    await asyncio.gather(*(consumer.handle(message) for message in messages))
    subjects = [t["subject"] for t in await service.tickets()]
    assert sorted(s for s in subjects if s.startswith("Batch ")) == sorted(
        f"Batch {i}" for i in range(20)
    )
    batches = [len(made_from) for _, made_from in calls]
    assert sum(batches) == 20 and max(batches) > 1


async def test_a_redelivered_message_in_a_batch_does_not_hold_up_the_others(service):
    consumer = Consumer(sender_of(service.runtime))
    await consumer.handle(_create_ticket_message("Seen", "seen-before"))
    again = [_create_ticket_message("Seen", "seen-before"),
             *(_create_ticket_message(f"New {i}", f"new-{i}") for i in range(5))]
    await asyncio.gather(*(consumer.handle(message) for message in again))
    subjects = [t["subject"] for t in await service.tickets()]
    assert subjects.count("Seen") == 1
    assert sorted(s for s in subjects if s.startswith("New ")) == [f"New {i}" for i in range(5)]


async def test_a_database_error_fails_every_handler_of_the_batch(service):
    """None of the batch is acknowledged, so the broker delivers all of them again."""
    consumer = Consumer(sender_of(service.runtime))
    database = service.runtime.database("reminder")
    messages = [_create_ticket_message(f"Retry {i}", f"retry-{i}") for i in range(5)]
    await database.execute("ALTER TABLE tickets RENAME TO tickets_away")
    try:
        outcomes = await asyncio.gather(
            *(consumer.handle(message) for message in messages), return_exceptions=True
        )
    finally:
        await database.execute("ALTER TABLE tickets_away RENAME TO tickets")
    assert all(isinstance(outcome, Exception) for outcome in outcomes)
    await asyncio.gather(*(consumer.handle(message) for message in messages))
    subjects = [t["subject"] for t in await service.tickets()]
    assert sorted(s for s in subjects if s.startswith("Retry ")) == [f"Retry {i}" for i in range(5)]


async def test_a_batch_makes_each_ticket_once_with_one_statement(service, smtp, monkeypatch):
    from airbourne.services.reminder import store

    calls = calls_of(monkeypatch, store, "create_tickets")
    body = batch(
        *((f"held-{i}", created(f"Held {i}")) for i in range(10)),
        ("mail", {"service": "SEND_BASIC_MAIL", "data": basic_mail()}),
    )
    consumer = Consumer(sender_of(service.runtime))
    message = Message(json.dumps(body).encode(), service.key, message_id="outer")
    await consumer.handle(message)
    await consumer.handle(message)  # delivered again: nothing more

    subjects = [t["subject"] for t in await service.tickets()]
    assert sorted(s for s in subjects if s.startswith("Held ")) == sorted(
        f"Held {i}" for i in range(10)
    )
    assert [len(made_from) for _, made_from in calls][0] == 10
    assert [r.message["Subject"] for r in smtp.received] == ["Welcome aboard"]


async def test_a_batch_delivered_again_with_new_messages_is_not_written_one_by_one(
    service, monkeypatch
):
    """Redelivered after a lost connection, with messages since: the tickets made before
    are found with one SELECT and the new ones written with one INSERT."""
    from airbourne.services.reminder import store

    consumer = Consumer(sender_of(service.runtime))
    first = batch(*((f"again-{i}", created(f"Again {i}")) for i in range(10)))
    await consumer.handle(Message(json.dumps(first).encode(), service.key, message_id="b1"))
    one_by_one = calls_of(monkeypatch, store, "create_ticket")
    second = batch(*((f"again-{i}", created(f"Again {i}")) for i in range(15)))
    await consumer.handle(Message(json.dumps(second).encode(), service.key, message_id="b2"))
    subjects = [t["subject"] for t in await service.tickets()]
    assert sorted(s for s in subjects if s.startswith("Again ")) == sorted(
        f"Again {i}" for i in range(15)
    )
    assert one_by_one == []


async def test_tickets_written_again_by_the_thousand_are_each_made_once(
    tmp_path, database_url, monkeypatch
):
    """Message ids and booking ids are looked up in lists of `db.IN_LIST_MAX` (old SQLite
    builds take 999 parameters a statement); made small here so that every list is cut."""
    from airbourne.services.reminder import store

    monkeypatch.setattr(db, "IN_LIST_MAX", 7)
    async with started(make_config(tmp_path, database_url), [reminder.SERVICE]) as runtime:
        database = runtime.database("reminder")

        def made_from(count: int) -> list[tuple[dict, str]]:
            return [({"subject": f"Many {n}", "content": "Your flight.", "bookingId": n,
                      "recepientEmail": "ada@example.com", "status": "PENDING",
                      "notificationTime": LATER}, f"many-{n}") for n in range(count)]

        await store.cancel_booking_tickets(database, 1500)
        assert len(await store.create_tickets(database, made_from(1200))) == 1200
        one_by_one = calls_of(monkeypatch, store, "create_ticket")
        made = await store.create_tickets(database, made_from(1800))
        assert made[:1200] == [None] * 1200 and None not in made[1200:]
        assert one_by_one == []
        rows = await database.fetch_all("SELECT bookingId, status FROM tickets")
        assert len(rows) == 1800
        assert {row[0] for row in rows if row[1] == "CANCELLED"} == {1500}


async def test_a_batch_does_its_good_messages_and_is_dead_lettered_naming_the_bad(service):
    bad = created("Bad", recepientEmail="nobody")
    body = batch(("good-1", created("Good 1")), ("bad-1", bad), ("good-2", created("Good 2")))
    consumer = Consumer(sender_of(service.runtime))
    message = Message(json.dumps(body).encode(), service.key, message_id="outer")
    with pytest.raises(Reject, match=r"BATCH: 1 of 3 messages rejected: bad-1: CREATE_TICKET"):
        await consumer.handle(message)
    assert sorted(t["subject"] for t in await service.tickets()) == ["Good 1", "Good 2"]

    await service.publish(message.body)  # through the broker: dead-lettered, good ones once
    await service.drain()
    subjects = [t["subject"] for t in await service.tickets()]
    assert subjects.count("Good 1") == subjects.count("Good 2") == 1
    assert await service.dead_letters() == [message.body]


async def test_a_batch_with_a_cancel_cancels_its_booking_s_tickets_before_and_after_it(
    service,
):
    """The items of a batch are done together, in no set order: the booking's tickets are
    cancelled whether they come before or after the cancel in the batch; the notice of the
    cancellation, which names no booking, is not."""
    body = batch(
        ("reminder", created("9 reminder", bookingId=9)),
        ("cancel", {"service": "CANCEL_TICKETS", "data": {"bookingId": 9}}),
        ("late", created("9 late reminder", bookingId=9)),
        ("notice", created("9 cancelled")),
        ("other", created("10 reminder", bookingId=10)),
    )
    await service.publish(body)
    await service.drain()
    status = {t["subject"]: t["status"] for t in await service.tickets()}
    assert status["9 reminder"] == status["9 late reminder"] == "CANCELLED"
    assert status["9 cancelled"] == status["10 reminder"] == "PENDING"


async def test_a_ticket_delivered_after_its_booking_s_cancel_is_cancelled(service, smtp):
    """A CREATE_TICKET that failed and is delivered again after the cancel, or that another
    reminder process handles later, makes no reminder of a cancelled booking."""
    await service.publish({"service": "CANCEL_TICKETS", "data": {"bookingId": 5}})
    await service.publish({"service": "CANCEL_TICKETS", "data": {"bookingId": 5}})  # again
    await service.publish(created("5 reminder", bookingId=5))
    await service.publish(created("5 due now", bookingId=5, notificationTime=db.iso(db.utcnow())))
    await service.publish(created("6 reminder", bookingId=6))
    await service.drain()
    status = {t["subject"]: t["status"] for t in await service.tickets()}
    assert status["5 reminder"] == status["5 due now"] == "CANCELLED"
    assert status["6 reminder"] == "PENDING"
    await send_due(service.runtime, now=LATER)
    assert "5 due now" not in {r.message["Subject"] for r in smtp.received}
    assert "5 reminder" not in {r.message["Subject"] for r in smtp.received}


async def test_a_ticket_written_but_not_checked_is_checked_when_its_message_comes_again(
    service, monkeypatch
):
    """On MySQL a ticket is written, then checked, in two statements: a connection that
    breaks between them leaves it written and unchecked, its message unacknowledged. When
    the message comes again the ticket is found made before, and checked then."""
    from airbourne.services.reminder import store

    consumer = Consumer(sender_of(service.runtime))
    cancel = {"service": "CANCEL_TICKETS", "data": {"bookingId": 4}}
    await consumer.handle(Message(json.dumps(cancel).encode(), service.key, message_id="c-4"))
    check = store._cancel_if_booking_cancelled

    async def broken(conn, written):
        raise ConnectionError("the connection broke after the INSERT")

    monkeypatch.setattr(store, "_cancel_if_booking_cancelled", broken)
    reminder = Message(json.dumps(created("4 reminder", bookingId=4)).encode(), service.key,
                       message_id="reminder-4")
    with pytest.raises(ConnectionError):
        await consumer.handle(reminder)
    monkeypatch.setattr(store, "_cancel_if_booking_cancelled", check)
    await consumer.handle(reminder)  # delivered again
    [ticket] = [t for t in await service.tickets() if t["subject"] == "4 reminder"]
    assert ticket["status"] == "CANCELLED"


async def test_a_ticket_on_its_way_to_the_database_when_its_cancel_runs_is_cancelled(
    service, monkeypatch
):
    """Under load a ticket may still be on its way to the database when the cancel of its
    booking is handled: the cancel must not leave it PENDING."""
    from airbourne.services.reminder import store

    write = store.create_tickets

    async def slow_write(*args):
        await asyncio.sleep(0.2)  # a busy database
        return await write(*args)

    monkeypatch.setattr(store, "create_tickets", slow_write)
    consumer = Consumer(sender_of(service.runtime))
    reminder = Message(json.dumps(created("6 reminder", bookingId=6)).encode(), service.key,
                       message_id="reminder-6")
    cancel = Message(json.dumps({"service": "CANCEL_TICKETS", "data": {"bookingId": 6}}).encode(),
                     service.key, message_id="cancel-6")
    handled = asyncio.create_task(consumer.handle(reminder))
    await asyncio.sleep(0)  # delivered first, and on its way to the database
    await consumer.handle(cancel)
    await handled
    [ticket] = [t for t in await service.tickets() if t["subject"] == "6 reminder"]
    assert ticket["status"] == "CANCELLED"


async def test_an_unknown_service_is_rejected_naming_the_known_ones(service):
    consumer = Consumer(sender_of(service.runtime))
    message = Message(b'{"service": "ORDER_PIZZA", "data": {}}', service.key, message_id="p")
    known = "CREATE_TICKET, SEND_BASIC_MAIL, CANCEL_TICKETS, BATCH"
    with pytest.raises(Reject, match=f"unknown service 'ORDER_PIZZA'; expected one of {known}"):
        await consumer.handle(message)


async def test_a_ticket_and_its_cancel_handled_at_once_by_two_processes_end_cancelled(
    tmp_path, database_url
):
    """Two reminder processes (here two connection pools on one database) may handle a
    booking's CREATE_TICKET and its CANCEL_TICKETS at the same moment: however their
    statements interleave, the ticket ends CANCELLED."""
    from airbourne.services.reminder import store

    config = make_config(tmp_path, database_url)
    async with started(config, [reminder.SERVICE]) as runtime:
        one = runtime.database("reminder")
        other = await db.connect(config.services["reminder"].database_url, pool_size=10)
        try:
            def ticket(booking: int) -> tuple[dict, str]:
                fields = {"subject": f"{booking} reminder", "content": "Your flight.",
                          "recepientEmail": "ada@example.com", "status": "PENDING",
                          "notificationTime": LATER, "bookingId": booking}
                return fields, f"reminder-{booking}"

            async def after(delay: float, step: Awaitable) -> None:
                await asyncio.sleep(delay)
                await step

            bookings = range(1, 61)
            jitter = random.Random(5)  # each step starts within 4 ms: every interleaving
            steps = [after(jitter.uniform(0, 0.004), step) for booking in bookings for step in (
                store.create_tickets(one, [ticket(booking)]),
                store.cancel_booking_tickets(other, booking),
            )]
            for pool in (one, other):  # connections open: neither side waits for one
                await asyncio.gather(*(pool.fetch_val("SELECT 1") for _ in range(10)))
            await asyncio.gather(*steps)
        finally:
            await db.disconnect(other)
        tickets = await store.list_tickets(one, None, 100, 0)
        assert len(tickets) == len(bookings)
        assert {t["status"] for t in tickets} == {"CANCELLED"}
