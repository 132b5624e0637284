"""On SQLite, bookings and seat changes that arrive while the file's one connection is busy
are written together, one transaction for all of them; each still succeeds or fails on its
own. The same calls on MariaDB write each on its own."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from databases import Database

from airbourne import db
from airbourne.clients.flights import FlightNotFound, LocalFlights, NotEnoughSeats
from airbourne.services.booking import store
from airbourne.services.booking.ids import BookingIds
from airbourne.services.booking.outbox import release_seats
from airbourne.services.booking.schema import bookings, outbox
from airbourne.services.flights import SERVICE as FLIGHTS
from airbourne.services.flights import store as flights_store
from booking_support import create_flight, free_seats
from support import calls_of, make_config, started

pytestmark = pytest.mark.anyio


def new_booking(user_id: int, key: str | None = None) -> store.NewBooking:
    def messages(booking: store.Booking, now: datetime) -> list:
        return [release_seats(booking["flightId"], booking["NoOfSeats"])]

    return store.NewBooking(7, user_id, 2, 200, idempotency_key=key, reservation_key=None,
                            messages=messages)


async def test_bookings_written_at_once_are_each_written_once(
    booking_database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = store.Writer(booking_database, BookingIds())
    counted = calls_of(monkeypatch, db, "transaction")
    made = await asyncio.gather(*(writer.write(new_booking(user)) for user in range(20)))
    monkeypatch.undo()

    assert len({booking["id"] for booking in made}) == 20
    rows = await booking_database.fetch_all(sa.select(bookings.c.id, bookings.c.userId))
    assert sorted((row[0], row[1]) for row in rows) == sorted(
        (booking["id"], booking["userId"]) for booking in made
    )
    assert await booking_database.fetch_val(sa.select(sa.func.count()).select_from(outbox)) == 20
    if db.is_sqlite(booking_database):
        assert len(counted) < 20  # together
    else:
        assert len(counted) == 20  # each on its own: MariaDB's connections do not wait


async def test_a_key_used_before_fails_only_its_booking(booking_database: Database) -> None:
    writer = store.Writer(booking_database, BookingIds())
    first = await writer.write(new_booking(1, key="k"))

    outcomes = await asyncio.gather(
        *(writer.write(new_booking(user)) for user in (2, 3)),
        writer.write(new_booking(1, key="k")),
        *(writer.write(new_booking(user)) for user in (4, 5)),
        return_exceptions=True,
    )

    assert isinstance(outcomes[2], store.KeyAlreadyUsed)
    written = [outcome for outcome in outcomes if not isinstance(outcome, Exception)]
    assert [booking["userId"] for booking in written] == [2, 3, 4, 5]
    rows = await booking_database.fetch_all(sa.select(bookings.c.id))
    assert sorted(row[0] for row in rows) == sorted(b["id"] for b in [first, *written])
    assert await booking_database.fetch_val(sa.select(sa.func.count()).select_from(outbox)) == 5


async def test_seat_changes_made_together_each_take_or_fail_alone(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ten changes of 2 seats at once on a flight of 10: five take theirs, five are told
    there are not enough; one for a flight that does not exist is told so; none oversells."""
    together = calls_of(monkeypatch, flights_store, "reserve_seats_together")
    async with started(make_config(tmp_path, database_url), [FLIGHTS]) as runtime:
        flight = await create_flight(runtime, capacity=10)
        local = LocalFlights(runtime.database("flights"))
        calls = [local.reserve_seats(flight["id"], 2, f"key-{n}") for n in range(10)]
        calls.append(local.reserve_seats(9999, 1, "no-flight"))
        outcomes = await asyncio.gather(*calls, return_exceptions=True)

        kinds = Counter(type(outcome).__name__ for outcome in outcomes[:10])
        assert kinds == {"Reservation": 5, "NotEnoughSeats": 5}
        assert isinstance(outcomes[10], FlightNotFound)
        assert sorted(o.total_seats for o in outcomes[:10] if not isinstance(o, Exception)) == [
            0, 2, 4, 6, 8
        ]
        refused = [o for o in outcomes[:10] if isinstance(o, NotEnoughSeats)]
        assert all("2 requested" in str(refusal) for refusal in refused)
        assert await free_seats(runtime, flight["id"]) == 0
    sizes = [len(requests) for _, requests in together]
    if database_url.startswith("sqlite"):
        assert max(sizes) > 1 and sum(sizes) == 11
    else:
        assert sizes == []  # on MariaDB each is recorded under its key, in its own trip
