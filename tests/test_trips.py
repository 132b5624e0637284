"""The trips to MariaDB a booking makes. Each statement sent alone is a send() and a wake-up
of the event loop for its answer; in the closed loop's profile those were the largest cost
of the booking path, so statements that can go together go in one query. On SQLite the
same holds for the hand-overs to a connection's thread."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from pathlib import Path

import aiosqlite
import pytest

from airbourne import db
from airbourne.services import reminder
from airbourne.services.reminder import store as tickets
from booking_support import booking_runtime, create_flight, free_seats
from commit_cutter import commit_cutter

pytestmark = pytest.mark.anyio


def _relays(query: str) -> bool:
    """A query of the outbox relay or its clean-up, which run beside the booking."""
    return "FROM outbox" in query or query.startswith("UPDATE outbox")


@pytest.mark.mysql
async def test_a_booking_takes_two_trips_to_mariadb(tmp_path: Path, mysql_url: str) -> None:
    """The seat change with the record of its key and the read of the flight; BEGIN, the
    booking's INSERT, its outbox rows and the COMMIT. It took six before the statements went
    together, and three while the database numbered bookings (the INSERT's id was needed for
    the outbox rows). The first booking of a process also draws a block of ids: two trips
    (the highest id in use, then the counter) per hundred bookings."""
    async with commit_cutter(mysql_url) as relay:
        async with booking_runtime(tmp_path, relay.url(mysql_url)) as (runtime, http):
            flight = await create_flight(runtime, capacity=10, price=100)
            user = {"x-user-id": "1", "x-user-email": "u1@example.com"}
            paths = []
            for _ in range(2):
                relay.queries.clear()
                body = {"flightId": flight["id"], "userId": 1, "NoOfSeats": 3}
                answer = await http.post("/api/v1/bookings", json=body, headers=user)
                assert answer.status_code == 200, answer.text
                paths.append([query for query in relay.queries if not _relays(query)])
            assert await free_seats(runtime, flight["id"]) == 4
    first, second = paths
    assert len(first) == 4, first
    assert first[1].startswith("SELECT COALESCE(MAX(id), 0)") and first[2].startswith(
        "UPDATE id_blocks "
    ), first
    assert len(second) == 2, second
    seats, booking = second
    # the seat change recorded under the booking's key, committed, and the flight read
    assert re.fullmatch(r"BEGIN; INSERT INTO reservations .*; UPDATE flights .*;"
                        r" DELETE FROM reservations .*; COMMIT; SELECT .* FROM flights"
                        r" WHERE id = \d+", seats)
    # two outbox rows
    assert re.fullmatch(r"BEGIN; INSERT INTO bookings .*; INSERT INTO outbox .*\), \(.*; COMMIT",
                        booking, re.S)


@pytest.mark.mysql
async def test_a_transaction_with_nothing_in_it_makes_no_trip(
    tmp_path: Path, mysql_url: str
) -> None:
    async with commit_cutter(mysql_url) as relay:
        database = await db.connect(relay.url(mysql_url))
        try:
            async with database.connection() as conn:
                relay.queries.clear()
                async with db.transaction(conn):
                    pass
        finally:
            await db.disconnect(database)
    assert relay.queries == []


@pytest.mark.mysql
async def test_a_senders_claim_takes_two_trips_to_mariadb(mysql_url: str) -> None:
    """The candidates' SELECT; the UPDATE that claims them with the read-back by id. Under
    the seed's own pace a claim runs for every booking or two."""
    async with commit_cutter(mysql_url) as relay:
        database = await db.connect(relay.url(mysql_url))
        try:
            await db.migrate(database, "reminder", reminder.SERVICE.migrations)
            due = {"subject": "Due", "content": "Now.", "recepientEmail": "ada@example.com",
                   "status": "PENDING", "notificationTime": db.utcnow() - timedelta(seconds=1)}
            await tickets.create_tickets(database, [(due, None)] * 3)
            relay.queries.clear()
            claimed = await tickets.claim_due(database, db.utcnow(), 100, timedelta(minutes=5))
        finally:
            await db.disconnect(database)
    assert [ticket["subject"] for ticket in claimed] == ["Due"] * 3
    assert len(relay.queries) == 2, relay.queries
    assert re.fullmatch(r"UPDATE tickets .*; SELECT \* FROM tickets .*", relay.queries[1])


async def test_a_booking_hands_one_call_to_each_sqlite_files_thread(tmp_path: Path, monkeypatch) -> None:
    """On SQLite each file's one connection is held from BEGIN to COMMIT, and under load
    each hand-over to its thread waits a turn of the event loop: the seat change is one
    (the UPDATE with its RETURNING rows), the booking's transaction another (BEGIN, the
    booking, its outbox rows, COMMIT), where they were two and four."""
    trips: list[object] = []
    original = aiosqlite.Connection._execute

    async def counted(self, fn, *args, **kwargs):
        # The booking's task and the booking writer's (store.Writer), not the outbox relay's.
        if asyncio.current_task().get_coro().__name__ in ("_book", "_write_waiting"):
            trips.append(fn)
        return await original(self, fn, *args, **kwargs)

    async with booking_runtime(tmp_path, None) as (runtime, http):
        flight = await create_flight(runtime, capacity=10, price=100)
        user = {"x-user-id": "1", "x-user-email": "u1@example.com"}
        monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
        for _ in range(2):
            trips.clear()
            body = {"flightId": flight["id"], "userId": 1, "NoOfSeats": 3}
            answer = await http.post("/api/v1/bookings", json=body, headers=user)
            assert answer.status_code == 200, answer.text
        monkeypatch.undo()
        assert await free_seats(runtime, flight["id"]) == 4
    assert len(trips) == 2, trips
