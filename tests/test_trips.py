"""The trips to MariaDB a booking makes. Each statement sent alone is a send() and a wake-up
of the event loop for its answer; in the closed loop's profile those were the largest cost
of the booking path, so statements that can go together go in one query."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from airbourne import db
from airbourne.services import reminder
from airbourne.services.reminder import store as tickets
from booking_support import booking_runtime, create_flight, free_seats
from commit_cutter import commit_cutter

pytestmark = [pytest.mark.anyio, pytest.mark.mysql]


def _relays(query: str) -> bool:
    """A query of the outbox relay or its clean-up, which run beside the booking."""
    return "FROM outbox" in query or query.startswith("UPDATE outbox")


async def test_a_booking_takes_three_trips_to_mariadb(tmp_path: Path, mysql_url: str) -> None:
    """The seat change with the read of the flight; BEGIN with the booking's INSERT; the
    outbox rows with the COMMIT. It took six before: each statement alone."""
    async with commit_cutter(mysql_url) as relay:
        async with booking_runtime(tmp_path, relay.url(mysql_url)) as (runtime, http):
            flight = await create_flight(runtime, capacity=10, price=100)
            relay.queries.clear()
            body = {"flightId": flight["id"], "userId": 1, "NoOfSeats": 3}
            user = {"x-user-id": "1", "x-user-email": "u1@example.com"}
            answer = await http.post("/api/v1/bookings", json=body, headers=user)
            assert answer.status_code == 200, answer.text
            path = [query for query in relay.queries if not _relays(query)]
            assert await free_seats(runtime, flight["id"]) == 7
    assert len(path) == 3, path
    seats, booking, outbox = path
    assert re.fullmatch(r"UPDATE flights .*; SELECT .* FROM flights WHERE id = \d+", seats)
    assert re.fullmatch(r"BEGIN; INSERT INTO bookings .*", booking)
    assert re.fullmatch(r"INSERT INTO outbox .*\), \(.*; COMMIT", outbox, re.S)  # two rows


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
