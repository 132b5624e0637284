"""The reminder's sender against a real SMTP server: due tickets go out once each, failures
are retried with backoff and end FAILED, and nothing goes out early.

Tickets are created for a time a day ahead, and `send_due(runtime, now=...)` plays the clock,
so the service's own sending loop (which uses the real time) never touches them.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import AsyncIterator, Iterator

import pytest

from airbourne import db
from airbourne.runtime import Runtime
from airbourne.services import reminder
from airbourne.services.reminder import store
from airbourne.services.reminder.sender import send_due
from mailserver import MailServer
from support import client, make_config, started

pytestmark = pytest.mark.anyio

LATER = db.utcnow().replace(microsecond=0) + timedelta(days=1)


@pytest.fixture
def smtp() -> Iterator[MailServer]:
    with MailServer() as server:
        yield server


def settings(tmp_path, database_url, smtp: MailServer, **environ: str):
    return make_config(
        tmp_path,
        database_url,
        AIRBOURNE_MAIL_TRANSPORT="smtp",
        AIRBOURNE_MAIL_SMTP_PORT=str(smtp.port),
        AIRBOURNE_MAIL_SMTP_TIMEOUT_SECONDS="5",
        AIRBOURNE_REMINDER_MAX_ATTEMPTS="3",
        AIRBOURNE_REMINDER_RETRY_BASE_SECONDS="60",
        **environ,
    )


@pytest.fixture
async def runtime(tmp_path, database_url, smtp) -> AsyncIterator[Runtime]:
    async with started(settings(tmp_path, database_url, smtp), [reminder.SERVICE]) as runtime:
        yield runtime


async def create(runtime: Runtime, at: datetime = LATER, **fields: str) -> dict:
    body = {"subject": "Your flight AB123", "content": "Boarding at gate G7.",
            "recepientEmail": "ada@example.com", "notificationTime": db.iso(at), **fields}
    async with client(runtime.apps["reminder"]) as http:
        answer = await http.post("/api/v1/tickets", json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()["data"]


async def read(runtime: Runtime, ticket: dict) -> dict:
    async with client(runtime.apps["reminder"]) as http:
        return (await http.get(f"/api/v1/tickets/{ticket['id']}")).json()["data"]


async def test_due_tickets_are_sent_once_and_marked_success(runtime, smtp):
    ada = await create(runtime, subject="For Ada", content="Gate G7")
    bob = await create(runtime, subject="For Bob", content="Gate B2\nSeat 14C",
                       recepientEmail="bob@example.com")

    assert await send_due(runtime, now=LATER) == 2
    received = {r.message["Subject"]: r for r in smtp.received}
    assert received.keys() == {"For Ada", "For Bob"}
    assert received["For Ada"].recipients == ["ada@example.com"]
    assert received["For Ada"].message["To"] == "ada@example.com"
    assert received["For Ada"].body == "Gate G7"
    assert received["For Bob"].recipients == ["bob@example.com"]
    assert received["For Bob"].body == "Gate B2\nSeat 14C"
    for ticket in (ada, bob):
        stored = await read(runtime, ticket)
        assert stored["status"] == "SUCCESS" and stored["attempts"] == 1

    assert await send_due(runtime, now=LATER + timedelta(hours=1)) == 0
    assert len(smtp.received) == 2


async def test_future_tickets_are_not_sent_early(runtime, smtp):
    soon = await create(runtime)
    later = await create(runtime, at=LATER + timedelta(hours=2), subject="Later")

    assert await send_due(runtime, now=LATER - timedelta(seconds=1)) == 0
    assert smtp.received == []
    assert await send_due(runtime, now=LATER + timedelta(hours=1)) == 1
    assert [r.message["Subject"] for r in smtp.received] == ["Your flight AB123"]
    assert (await read(runtime, soon))["status"] == "SUCCESS"
    assert (await read(runtime, later))["status"] == "PENDING"


async def test_smtp_down_retries_with_backoff_then_fails_and_smtp_back_sends_new_ones(
    runtime, smtp
):
    smtp.stop()
    ticket = await create(runtime)

    assert await send_due(runtime, now=LATER) == 0
    first = await read(runtime, ticket)
    assert (first["status"], first["attempts"]) == ("PENDING", 1)
    assert f"127.0.0.1:{smtp.port}" in first["lastError"]

    # the next attempt is due 60 s after the first failure, the third 120 s after the second
    await send_due(runtime, now=LATER + timedelta(seconds=59))
    assert (await read(runtime, ticket))["attempts"] == 1
    await send_due(runtime, now=LATER + timedelta(seconds=60))
    assert (await read(runtime, ticket))["attempts"] == 2
    await send_due(runtime, now=LATER + timedelta(seconds=179))
    assert (await read(runtime, ticket))["attempts"] == 2
    await send_due(runtime, now=LATER + timedelta(seconds=180))
    failed = await read(runtime, ticket)
    assert (failed["status"], failed["attempts"]) == ("FAILED", 3)
    assert failed["lastError"]

    smtp.start()
    fresh = await create(runtime, at=LATER + timedelta(hours=1), subject="After the outage")
    assert await send_due(runtime, now=LATER + timedelta(days=1)) == 1
    assert [r.message["Subject"] for r in smtp.received] == ["After the outage"]
    assert (await read(runtime, fresh))["status"] == "SUCCESS"
    assert (await read(runtime, ticket))["status"] == "FAILED"


async def test_concurrent_senders_send_each_email_exactly_once(tmp_path, database_url, smtp):
    """Two rounds in one process and one in a second process (its own pool on the same
    database) all claim from the same due tickets at once."""
    config = settings(tmp_path, database_url, smtp, AIRBOURNE_REMINDER_SEND_CONCURRENCY="4")
    async with started(config, [reminder.SERVICE]) as one, started(config, [reminder.SERVICE]) as two:
        tickets = [await create(one, subject=f"Ticket {n}") for n in range(40)]

        counts = await asyncio.gather(
            send_due(one, now=LATER), send_due(one, now=LATER), send_due(two, now=LATER)
        )

        assert sum(counts) == 40
        subjects = sorted(r.message["Subject"] for r in smtp.received)
        assert subjects == sorted(f"Ticket {n}" for n in range(40))
        for ticket in tickets:
            stored = await read(two, ticket)
            assert (stored["status"], stored["attempts"]) == ("SUCCESS", 1)


async def test_a_run_sends_at_most_its_concurrency_at_once(tmp_path, database_url):
    """Tickets are claimed a hundred at a time but sent `send_concurrency` at a time."""
    with MailServer(data_seconds=0.05) as slow:
        config = settings(tmp_path, database_url, slow, AIRBOURNE_REMINDER_SEND_CONCURRENCY="3")
        async with started(config, [reminder.SERVICE]) as runtime:
            for n in range(25):
                await create(runtime, subject=f"Ticket {n}")
            assert await send_due(runtime, now=LATER) == 25
    assert sorted(r.message["Subject"] for r in slow.received) == sorted(
        f"Ticket {n}" for n in range(25)
    )
    assert slow.most_in_flight == 3


async def test_a_ticket_due_now_wakes_the_sending_loop(tmp_path, database_url, smtp):
    """With an interval of an hour, only the wake-up can send the ticket in time."""
    config = settings(tmp_path, database_url, smtp, AIRBOURNE_REMINDER_SEND_INTERVAL_SECONDS="3600")
    async with started(config, [reminder.SERVICE]) as runtime:
        await asyncio.sleep(0.1)  # the loop's first round has run and it now waits
        ticket = await create(runtime, at=db.utcnow(), subject="Booking confirmed")
        [received] = await smtp.until_received(1)
        assert received.message["Subject"] == "Booking confirmed"
        with pytest.raises(TimeoutError):  # and it is sent once
            await smtp.until_received(2, seconds=0.3)
        assert (await read(runtime, ticket))["status"] == "SUCCESS"


async def test_default_outbox_transport_writes_due_tickets(tmp_path, database_url):
    config = make_config(tmp_path, database_url)
    async with started(config, [reminder.SERVICE]) as runtime:
        await create(runtime, subject="Into the outbox")
        assert await send_due(runtime, now=LATER) == 1
    [path] = (tmp_path / "data" / "outbox").glob("*.eml")
    assert b"Subject: Into the outbox" in path.read_bytes()


async def test_a_claim_reads_the_due_tickets_not_the_whole_table(tmp_path, mysql_url):
    """The table keeps every ticket ever sent, so a claim must find the due ones by index
    and read them back by id. MariaDB counts, per connection, the rows read by full table
    scans (`Handler_read_rnd_next`): a claim among 5,000 sent tickets adds far fewer.
    (A claim that read back by its token, which has no index, added all 5,005.)"""
    async with started(make_config(tmp_path, mysql_url), [reminder.SERVICE]) as runtime:
        database = runtime.database("reminder")
        fields = {"subject": "Sent", "content": "Long ago.", "recepientEmail": "ada@example.com",
                  "status": "SUCCESS", "notificationTime": db.utcnow() - timedelta(days=1)}
        await store.create_tickets(database, [(fields, None)] * 5000)
        due = {**fields, "subject": "Due", "status": "PENDING"}
        await store.create_tickets(database, [(due, None)] * 5)

        async with database.connection() as conn:  # claim_due takes this one too: same task

            async def scanned() -> int:
                row = await conn.fetch_one("SHOW SESSION STATUS LIKE 'Handler_read_rnd_next'")
                return int(row[1])

            await conn.execute("ANALYZE TABLE tickets")
            before = await scanned()
            itself = await scanned() - before  # what SHOW STATUS adds by itself
            claimed = await store.claim_due(database, db.utcnow(), 100, timedelta(minutes=5))
            read = await scanned() - before - 2 * itself

        assert sorted(ticket["subject"] for ticket in claimed) == ["Due"] * 5
        assert read < 100, f"a claim read {read} rows by full scans"


async def test_tickets_sent_or_cancelled_long_ago_are_deleted_and_no_others(runtime):
    """Pending tickets wait for their time and failed ones for an operator, however old;
    of the finished ones only those older than the keep time go."""
    from airbourne.services.reminder.schema import tickets

    statuses = ["SUCCESS", "CANCELLED", "PENDING", "FAILED", "SUCCESS", "SUCCESS", "CANCELLED"]
    made = [await create(runtime, status=status) for status in statuses]
    long_ago = db.utcnow() - timedelta(days=40)
    database = runtime.database("reminder")
    for ticket in made[:5]:  # the last two finished recently
        await database.execute(
            tickets.update().where(tickets.c.id == ticket["id"]).values(updatedAt=long_ago))

    cutoff = db.utcnow() - timedelta(days=30)
    assert await store.prune_tickets(database, cutoff, batch=1) == 3
    left = [(ticket["id"], ticket["status"]) for ticket in await store.list_tickets(database, None, 100, 0)]
    assert sorted(left) == [(made[n]["id"], statuses[n]) for n in (2, 3, 5, 6)]
    assert await store.prune_tickets(database, cutoff, batch=1) == 0


async def test_a_claim_skips_a_ticket_of_a_booking_recorded_cancelled(runtime, smtp):
    """A ticket is written, then checked for a cancelled booking: between the two, no sender
    may take it (on MySQL the two are separate statements)."""
    from airbourne.services.reminder.schema import tickets

    database = runtime.database("reminder")
    await store.cancel_booking_tickets(database, 8)
    row = store._row({"subject": "Booking 8 confirmed", "content": "Seat 1A.", "bookingId": 8,
                      "recepientEmail": "ada@example.com", "status": "PENDING",
                      "notificationTime": LATER}, "unchecked")
    async with database.connection() as conn:  # written, not yet checked
        await db.run(conn, db.insert_sql(tickets, tuple(row)), row)
    await create(runtime, subject="Other")  # due at LATER: the service's own loop leaves it
    assert await send_due(runtime, now=LATER) == 1
    assert [received.message["Subject"] for received in smtp.received] == ["Other"]


async def test_records_of_cancelled_bookings_are_kept_as_long_as_finished_tickets(runtime):
    from airbourne.services.reminder.schema import cancelled_bookings

    database = runtime.database("reminder")
    for booking in (1, 2, 3):
        await store.cancel_booking_tickets(database, booking)
    await database.execute(
        cancelled_bookings.update().where(cancelled_bookings.c.bookingId != 2)
        .values(cancelledAt=db.utcnow() - timedelta(days=40)))
    cutoff = db.utcnow() - timedelta(days=30)
    assert await store.prune_cancelled_bookings(database, cutoff, batch=1) == 2
    rows = await database.fetch_all("SELECT bookingId FROM cancelled_bookings")
    assert [row[0] for row in rows] == [2]


async def test_deleting_old_tickets_reads_each_row_about_once(tmp_path, mysql_url):
    """Reminders of far departures wait, PENDING, among old sent tickets, and a deletion
    takes many rounds. Each round starts where the last one stopped, so the rows are read
    about once per deletion, not once per round. MariaDB counts the rows its handlers read
    per connection (`Handler_read_%`): starting every round from the first id, or from the
    status index, read about 107,000 here (now about 7,200)."""
    async with started(make_config(tmp_path, mysql_url), [reminder.SERVICE]) as runtime:
        database = runtime.database("reminder")
        fields = {"subject": "Soon", "content": "Your flight.", "recepientEmail": "ada@example.com",
                  "status": "PENDING", "notificationTime": db.utcnow() + timedelta(days=300)}
        await store.create_tickets(database, [(fields, None)] * 500)
        sent = {**fields, "subject": "Sent", "status": "SUCCESS"}
        await store.create_tickets(database, [(sent, None)] * 2000)
        await database.execute("ANALYZE TABLE tickets")

        async with database.connection() as conn:  # prune_tickets takes this one too

            async def read() -> int:
                rows = await conn.fetch_all("SHOW SESSION STATUS LIKE 'Handler_read_%'")
                return sum(int(row[1]) for row in rows)

            before = await read()
            deleted = await store.prune_tickets(database, db.utcnow() + timedelta(days=1), 20)
            count = await read() - before

        assert deleted == 2000
        assert count < 20_000, f"deleting read {count} rows"


async def test_the_reminder_deletes_old_finished_tickets_when_it_starts(
    tmp_path, database_url, smtp, caplog
):
    from airbourne.services.reminder.schema import cancelled_bookings, tickets

    caplog.set_level(logging.INFO, logger="airbourne.reminder")
    config = settings(tmp_path, database_url, smtp, AIRBOURNE_REMINDER_TICKET_KEEP_DAYS="7")
    eight_days_ago = db.utcnow() - timedelta(days=8)
    async with started(config, [reminder.SERVICE]) as runtime:
        database = runtime.database("reminder")
        old, recent = await create(runtime, status="SUCCESS"), await create(runtime, status="SUCCESS")
        await database.execute(
            tickets.update().where(tickets.c.id == old["id"]).values(updatedAt=eight_days_ago))
        for booking in (8, 9):
            await store.cancel_booking_tickets(database, booking)
        await database.execute(cancelled_bookings.update()
                               .where(cancelled_bookings.c.bookingId == 8)
                               .values(cancelledAt=eight_days_ago))
    async with started(config, [reminder.SERVICE]) as runtime:
        for _ in range(200):
            if not await read(runtime, old):  # 404: no data
                break
            await asyncio.sleep(0.02)
        assert not await read(runtime, old)
        assert (await read(runtime, recent))["status"] == "SUCCESS"
        for _ in range(200):
            if "deleted 1 records of bookings cancelled" in caplog.text:
                break
            await asyncio.sleep(0.02)
        rows = await runtime.database("reminder").fetch_all(
            "SELECT bookingId FROM cancelled_bookings")
        assert [row[0] for row in rows] == [9]
    assert "deleted 1 records of bookings cancelled more than 7 days" in caplog.text
