"""Bookings and seat changes that arrive while one is being written are written together,
one transaction for all of them: on SQLite one call to the file's thread, on MariaDB one
trip. Each still succeeds or fails on its own, and none oversells."""

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
from airbourne.services.flights.schema import HELD, reservations
from booking_support import create_flight, free_seats
from support import calls_of, client, make_config, started

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
    assert len(counted) < 20  # together


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
    sqlite = database_url.startswith("sqlite")
    name = "reserve_seats_together" if sqlite else "reserve_seats_once_together"
    together = calls_of(monkeypatch, flights_store, name)
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
        if not sqlite:  # each taken change recorded under its key, a refused one not
            held = await runtime.database("flights").fetch_all(
                sa.select(reservations.c.id, reservations.c.seats, reservations.c.status)
            )
            taken = [o.key for o in outcomes[:10] if not isinstance(o, Exception)]
            assert sorted((r[0], r[1], r[2]) for r in held) == [(k, 2, HELD) for k in sorted(taken)]
    sizes = [len(requests) for _, requests in together]
    assert max(sizes) > 1 and sum(sizes) == 11


async def test_keyed_reservations_over_http_are_made_together(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flights service's route, for a booking service in another process: keyed
    reservations that arrive while one is being made go together, and each is answered on
    its own: of eight new keys for the eight seats left four take theirs and four are
    refused, and a key sent again answers its reservation and takes nothing more."""
    together = calls_of(monkeypatch, flights_store, "reserve_seats_once_together")
    async with started(make_config(tmp_path, database_url), [FLIGHTS]) as runtime:
        flight = await create_flight(runtime, capacity=10)
        path = f"/api/v1/flights/{flight['id']}/seats/reserve"
        async with client(runtime.apps["flights"]) as http:
            first = await http.post(path, json={"seats": 2, "reservation": "first"})
            assert first.status_code == 200, first.text
            answers = await asyncio.gather(
                http.post(path, json={"seats": 2, "reservation": "first"}),
                *(http.post(path, json={"seats": 2, "reservation": f"key-{n}"}) for n in range(8)),
            )
        assert answers[0].status_code == 200 and answers[0].json()["data"]["seats"] == 2
        assert Counter(answer.status_code for answer in answers[1:]) == {200: 4, 409: 4}
        assert await free_seats(runtime, flight["id"]) == 0
    sizes = [len(requests) for _, requests in together]
    assert max(sizes) > 1 and sum(sizes) == 10


@pytest.mark.mysql
async def test_a_key_recorded_before_goes_its_own_way_and_the_others_take_their_seats(
    tmp_path: Path, mysql_url: str
) -> None:
    """A change under a key recorded before fails the one transaction of all of them (the
    key's row exists): they are then made one by one, so the repeated key answers as
    `reserve_seats_once` does (the same reservation again, taking nothing more; a released
    key takes nothing) and the others take their seats."""
    async with started(make_config(tmp_path, mysql_url), [FLIGHTS]) as runtime:
        database = runtime.database("flights")
        flight = await create_flight(runtime, capacity=10)
        await flights_store.reserve_seats_once(database, "again", flight["id"], 3)
        await flights_store.release_reservation(database, "released", flight["id"])

        outcomes = await flights_store.reserve_seats_once_together(database, [
            ("new-1", flight["id"], 1), ("again", flight["id"], 3), ("released", flight["id"], 2),
            ("new-2", flight["id"], 2),
        ])

        new_1, again, released, new_2 = outcomes
        assert (new_1.key, new_1.seats, new_2.key, new_2.seats) == ("new-1", 1, "new-2", 2)
        assert (again.key, again.seats) == ("again", 3)
        assert isinstance(released, flights_store.ReservationReleased)
        assert await free_seats(runtime, flight["id"]) == 10 - 3 - 1 - 2


@pytest.mark.mysql
async def test_changes_made_together_in_two_processes_do_not_deadlock(
    tmp_path: Path, mysql_url: str
) -> None:
    """Two processes (two pools) each take seats of the same two flights together, asking
    in opposite orders: each transaction changes the flights in the order of their ids, so
    one waits for the other instead of both deadlocking (InnoDB would kill one, and every
    booking in it would fail). Each transaction first waits on a flight of its own that a
    third one holds, so that both go on at the same moment."""
    async with started(make_config(tmp_path, mysql_url), [FLIGHTS]) as runtime:
        flights = [(await create_flight(runtime, capacity=1000))["id"] for _ in range(4)]
        gate_here, gate_there, first, second = flights
        other, holder = await db.connect(mysql_url), await db.connect(mysql_url)
        try:
            here, there = LocalFlights(runtime.database("flights")), LocalFlights(other)
            for turn in range(5):
                async with holder.connection() as conn:
                    async with db.transaction(conn):
                        await db.run(conn, "UPDATE flights SET price = price WHERE id IN "
                                     f"({gate_here}, {gate_there})", {})
                        asking = asyncio.gather(
                            *(here.reserve_seats(flight, 1, f"here-{turn}-{flight}")
                              for flight in (gate_here, first, second)),
                            *(there.reserve_seats(flight, 1, f"there-{turn}-{flight}")
                              for flight in (gate_there, second, first)),
                            return_exceptions=True,
                        )
                        await asyncio.sleep(0.2)  # both wait for their gate
                outcomes = await asyncio.wait_for(asking, 10)
                assert [o for o in outcomes if isinstance(o, Exception)] == []
        finally:
            await db.disconnect(other)
            await db.disconnect(holder)
        assert [await free_seats(runtime, flight) for flight in flights] == [995, 995, 990, 990]
