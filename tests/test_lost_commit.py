"""A connection to MariaDB that breaks at a COMMIT (a network failure, a failover): the
answer says what happened, no seat is oversold or lost, and the pool does not shrink."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from airbourne.services.booking.schema import bookings
from booking_support import (
    booking_runtime, create_flight, eventually, free_seats, free_seats_are,
)
from commit_cutter import commit_cutter

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


_USER_1 = {"x-user-id": "1", "x-user-email": "u1@example.com"}


def _as_served(runtime) -> httpx.AsyncClient:
    """A client of the booking app that gets the answer a server would give to an error
    (a 500), not the exception."""
    transport = httpx.ASGITransport(runtime.apps["booking"], raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")
