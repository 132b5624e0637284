"""A connection to MariaDB that breaks at a COMMIT (a network failure, a failover): the
answer says what happened, no seat is oversold or lost, and the pool does not shrink."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from airbourne import db
from airbourne.services.booking import app as booking_app
from airbourne.services.booking import store
from airbourne.services.booking.schema import bookings
from airbourne.services.flights.schema import HELD, RELEASED, reservations
from booking_support import (
    booking_runtime, create_flight, eventually, free_seats, free_seats_are,
)
from commit_cutter import commit_cutter
from support import client

pytestmark = [pytest.mark.anyio, pytest.mark.mysql]


@pytest.mark.parametrize("answered", [True, False], ids=["committed", "not-committed"])
async def test_a_booking_whose_commit_answer_is_lost_is_neither_oversold_nor_lost(
    tmp_path: Path, mysql_url: str, answered: bool
) -> None:
    """The connection to MariaDB breaks at the booking's COMMIT. If the server committed,
    the booking stands and keeps its seats (before, its seats were given back: a flight
    showing free seats that a booking held); if not, its seats go back."""
    async with commit_cutter(mysql_url) as cutter:
        async with booking_runtime(tmp_path, cutter.url(mysql_url)) as (runtime, _):
            http = _as_served(runtime)
            flight = await create_flight(runtime, capacity=10, price=100)
            cutter.cut_next_commit(answered=answered)
            body = {"flightId": flight["id"], "userId": 1, "NoOfSeats": 3}
            answer = await http.post("/api/v1/bookings", json=body, headers=_USER_1)
            assert cutter.cut == 1
            made = await runtime.database("booking").fetch_all(
                sa.select(bookings.c.id, bookings.c.NoOfSeats)
            )
            if answered:
                assert answer.status_code == 200, answer.text
                assert [(row[0], row[1]) for row in made] == [(answer.json()["data"]["id"], 3)]
                assert await free_seats(runtime, flight["id"]) == 7
            else:
                assert answer.status_code == 503, answer.text
                assert "not made" in answer.json()["message"]
                assert made == []
                assert await free_seats(runtime, flight["id"]) == 10


@pytest.mark.parametrize("answered", [True, False], ids=["committed", "not-committed"])
async def test_bookings_written_together_whose_commit_answer_is_lost(
    tmp_path: Path, mysql_url: str, answered: bool
) -> None:
    """Bookings that arrive together are written in one transaction; its COMMIT's answer
    lost, each is settled as a booking alone is: if the server committed, all stand with
    their seats; if not, each of them is answered 503 and its seats go back."""
    async with commit_cutter(mysql_url) as cutter:
        async with booking_runtime(tmp_path, cutter.url(mysql_url)) as (runtime, _):
            http = _as_served(runtime)
            flight = await create_flight(runtime, capacity=100, price=100)
            cutter.cut_next(_several_bookings, answered=answered)
            body = {"flightId": flight["id"], "userId": 1, "NoOfSeats": 1}
            answers = await asyncio.gather(
                *(http.post("/api/v1/bookings", json=body, headers=_USER_1) for _ in range(8))
            )
            assert cutter.cut == 1
            made = [a.json()["data"]["id"] for a in answers if a.status_code == 200]
            refused = [a for a in answers if a.status_code != 200]
            rows = await runtime.database("booking").fetch_all(sa.select(bookings.c.id))
            assert sorted(row[0] for row in rows) == sorted(made)
            if answered:
                assert refused == []
            else:
                assert len(refused) > 1
                assert all(a.status_code == 503 and "not made" in a.json()["message"]
                           for a in refused)
            assert await free_seats(runtime, flight["id"]) == 100 - len(made)


def _several_bookings(query: str) -> bool:
    """A query that commits more than one booking."""
    return query.endswith("COMMIT") and query.count("'Booked'") > 1


async def test_lost_commits_do_not_use_up_the_pool(tmp_path: Path, mysql_url: str) -> None:
    """Each connection broken at COMMIT goes back to the pool (to be discarded): more of
    them than the pool holds, and bookings still get a connection."""
    async with commit_cutter(mysql_url) as cutter:
        pool = {"AIRBOURNE_DATABASE_POOL_SIZE": "2"}
        async with booking_runtime(tmp_path, cutter.url(mysql_url), **pool) as (runtime, _):
            http = _as_served(runtime)
            flight = await create_flight(runtime, capacity=10, price=100)
            body = {"flightId": flight["id"], "userId": 1, "NoOfSeats": 1}
            for _ in range(3):
                cutter.cut_next_commit(answered=False)
                answer = await http.post("/api/v1/bookings", json=body, headers=_USER_1)
                assert answer.status_code == 503, answer.text
            async with asyncio.timeout(10):
                answer = await http.post("/api/v1/bookings", json=body, headers=_USER_1)
            assert answer.status_code == 200, answer.text
            assert cutter.cut == 3
            assert await free_seats(runtime, flight["id"]) == 9


async def test_a_cancellation_whose_commit_answer_is_lost_can_be_sent_again(
    tmp_path: Path, mysql_url: str
) -> None:
    """A cancellation commits with the release of its seats; its answer lost, the client is
    told it may have been made, and cancelling again answers the cancelled booking and gives
    the seats back once."""
    async with commit_cutter(mysql_url) as cutter:
        async with booking_runtime(tmp_path, cutter.url(mysql_url)) as (runtime, _):
            http = _as_served(runtime)
            flight = await create_flight(runtime, capacity=10, price=100)
            body = {"flightId": flight["id"], "userId": 1, "NoOfSeats": 3}
            booked = await http.post("/api/v1/bookings", json=body, headers=_USER_1)
            cancel = f"/api/v1/bookings/{booked.json()['data']['id']}/cancel"
            cutter.cut_next_commit(answered=True)
            first = await http.post(cancel, headers=_USER_1)
            assert first.status_code == 503, first.text
            assert "may have been made" in first.json()["message"]
            assert first.headers["retry-after"] == "1"
            again = await http.post(cancel, headers=_USER_1)
            assert again.status_code == 200 and again.json()["data"]["status"] == "Cancelled"
            await eventually(lambda: free_seats_are(runtime, flight["id"], 10))
            await asyncio.sleep(0.3)  # time for a second release, were there one
            assert await free_seats(runtime, flight["id"]) == 10
            assert cutter.cut == 1


@pytest.mark.parametrize("answered", [True, False], ids=["committed", "not-committed"])
async def test_a_booking_the_database_cannot_settle_is_settled_once_it_can(
    tmp_path: Path, mysql_url: str, answered: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection breaks at the booking's COMMIT and the database stays out of reach
    past the request's own checks: the answer says the booking may have been made, and its
    seats stay taken. Once the database answers again the booking is looked up in the
    background; if it was not written its seats come back (before, they stayed taken for
    good)."""
    monkeypatch.setattr(booking_app, "WRITTEN_PAUSES", (0.0, 0.1))
    monkeypatch.setattr(booking_app, "SETTLE_PAUSES", (0.2,))
    async with commit_cutter(mysql_url) as cutter:
        async with booking_runtime(tmp_path, cutter.url(mysql_url)) as (runtime, _):
            http = _as_served(runtime)
            flight = await create_flight(runtime, capacity=10, price=100)
            cutter.cut_next_commit(answered=answered, then_down=True)
            body = {"flightId": flight["id"], "userId": 1, "NoOfSeats": 3}
            answer = await http.post("/api/v1/bookings", json=body, headers=_USER_1)
            assert answer.status_code == 503, answer.text
            assert "may have been made" in answer.json()["message"]
            await asyncio.sleep(0.5)  # the background looks fail while it is down
            cutter.come_back()
            await eventually(lambda: _seats_read(runtime, flight["id"], 7 if answered else 10))
            await asyncio.sleep(0.5)  # time for a wrong second move, were there one
            assert await free_seats(runtime, flight["id"]) == (7 if answered else 10)
            made = await runtime.database("booking").fetch_all(sa.select(bookings.c.id))
            assert len(made) == (1 if answered else 0)


async def test_the_lookup_waits_for_a_transaction_the_server_has_not_ended(
    tmp_path: Path, mysql_url: str
) -> None:
    """Our side of the connection is gone, but the server still holds the transaction open
    (it has not yet noticed the connection is gone): reading past the uncommitted row would
    say "not written" and give back the seats of a booking that then commits."""
    async with booking_runtime(tmp_path, mysql_url) as (runtime, _):
        database = runtime.database("booking")
        booking = {"id": 4242, "flightId": 1, "userId": 1, "NoOfSeats": 3}
        other = await db.connect(mysql_url)
        try:
            async with other.connection() as conn:
                async with db.transaction(conn):
                    now = db.utcnow()
                    row = {**booking, "totalCost": 300, "status": "Booked",
                           "createdAt": now, "updatedAt": now}
                    await db.run(conn, db.insert_sql(bookings, tuple(row)), row)
                    lookup = asyncio.create_task(store.was_written(database, booking))
                    await asyncio.sleep(0.5)
                    assert not lookup.done()  # it waits for this transaction to end
        finally:
            await db.disconnect(other)
        assert await lookup is True


@pytest.mark.parametrize("answered", [True, False], ids=["taken", "not-taken"])
async def test_a_seat_change_whose_answer_is_lost_gives_back_what_it_took(
    tmp_path: Path, mysql_url: str, answered: bool
) -> None:
    """The connection breaks while the seat change is out: the booking cannot tell whether
    the seats were taken. It answers 503 and books nothing, and gives back under the
    change's key whatever the change did: the seats come back once if they were taken,
    and nothing more if they were not (before, taken seats stayed held by no booking)."""
    async with commit_cutter(mysql_url) as cutter:
        async with booking_runtime(tmp_path, cutter.url(mysql_url)) as (runtime, _):
            http = _as_served(runtime)
            flight = await create_flight(runtime, capacity=10, price=100)
            cutter.cut_next(lambda query: "UPDATE flights" in query, answered=answered)
            body = {"flightId": flight["id"], "userId": 1, "NoOfSeats": 3}
            answer = await http.post("/api/v1/bookings", json=body, headers=_USER_1)
            assert answer.status_code == 503, answer.text
            assert "flights" in answer.json()["message"]
            assert cutter.cut == 1
            assert await runtime.database("booking").fetch_all(sa.select(bookings.c.id)) == []
            await eventually(lambda: _released(runtime, 3 if answered else 0))
            assert await free_seats(runtime, flight["id"]) == 10
            answer = await http.post("/api/v1/bookings", json=body, headers=_USER_1)
            assert answer.status_code == 200, answer.text
            assert await free_seats(runtime, flight["id"]) == 7


@pytest.mark.parametrize("answered", [True, False], ids=["taken", "not-taken"])
async def test_seat_changes_made_together_whose_answer_is_lost_give_back_what_they_took(
    tmp_path: Path, mysql_url: str, answered: bool
) -> None:
    """The seat changes of bookings that arrive together go in one trip; the connection
    breaks while it is out: each of those bookings is answered 503, and gives back under
    its key whatever its change did."""
    async with commit_cutter(mysql_url) as cutter:
        async with booking_runtime(tmp_path, cutter.url(mysql_url)) as (runtime, _):
            http = _as_served(runtime)
            flight = await create_flight(runtime, capacity=100, price=100)
            cutter.cut_next(lambda query: query.count("UPDATE flights") > 1, answered=answered)
            body = {"flightId": flight["id"], "userId": 1, "NoOfSeats": 1}
            answers = await asyncio.gather(
                *(http.post("/api/v1/bookings", json=body, headers=_USER_1) for _ in range(8))
            )
            assert cutter.cut == 1
            refused = [a for a in answers if a.status_code != 200]
            assert len(refused) > 1
            assert all(a.status_code == 503 and "flights" in a.json()["message"] for a in refused)
            made = 8 - len(refused)
            count = sa.select(sa.func.count()).select_from(reservations)
            released = count.where(reservations.c.status == RELEASED)
            await eventually(lambda: _count_is(runtime, released, len(refused)))
            assert await _count_is(runtime, count.where(reservations.c.status == HELD), made)
            assert await free_seats(runtime, flight["id"]) == 100 - made


async def _count_is(runtime, query: sa.Select, count: int) -> bool:
    """For `eventually`: the flights database counts `count` (False while it cannot be read:
    its pooled connections to the relay were cut)."""
    try:
        return await runtime.database("flights").fetch_val(query) == count
    except Exception:
        return False


async def _released(runtime, seats: int) -> bool:
    """For `eventually`: the one key the booking's failed seat change used is released,
    giving back `seats` (a key released before its change arrived records 0)."""
    query = sa.select(reservations.c.seats, reservations.c.status)
    try:
        rows = await runtime.database("flights").fetch_all(query)
    except Exception:  # the flights pool's connections to the relay were cut
        return False
    return [(row["seats"], row["status"]) for row in rows] == [(seats, RELEASED)]


async def _seats_read(runtime, flight_id: int, seats: int) -> bool:
    """For `eventually`: the flight has `seats` free (False while the flights service
    cannot read it yet: its pooled connections to the relay were cut)."""
    async with client(runtime.apps["flights"]) as http:
        answer = await http.get(f"/api/v1/flights/{flight_id}")
    return answer.status_code == 200 and answer.json()["data"]["totalSeats"] == seats


_USER_1 = {"x-user-id": "1", "x-user-email": "u1@example.com"}


def _as_served(runtime) -> httpx.AsyncClient:
    """A client of the booking app that gets the answer a server would give to an error
    (a 500), not the exception."""
    transport = httpx.ASGITransport(runtime.apps["booking"], raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")
