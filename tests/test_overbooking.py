"""Many clients booking one flight at once never oversell it (the old platform sold 267
seats of a 100-seat flight in exactly this test), straight to the booking service and
through the gateway with real tokens."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
from pathlib import Path
from urllib.parse import urlsplit

import pymysql
import pytest
import sqlalchemy as sa

from airbourne.services import flights, gateway
from airbourne.services.booking import SERVICE as BOOKING
from airbourne.services.booking.schema import bookings
from airbourne.tokens import Tokens, load_secret
from booking_support import (
    booking_runtime, create_flight, eventually, free_seats, free_seats_are,
)
from support import client

pytestmark = pytest.mark.anyio

CAPACITY = 100
CLIENTS = 300


@pytest.mark.parametrize("via", ["booking", "gateway"])
async def test_concurrent_bookings_never_oversell(tmp_path: Path, database_url: str, via: str) -> None:
    services = (flights.SERVICE, BOOKING, gateway.SERVICE)
    async with booking_runtime(tmp_path, database_url, services) as (runtime, booking_http):
        flight = await create_flight(runtime, capacity=CAPACITY, price=100)
        wanted = [random.randint(1, 4) for _ in range(CLIENTS)]
        tokens = Tokens(load_secret(runtime.config), 3600)
        gateway_http = client(runtime.apps["gateway"])

        async def one(user_id: int, seats: int):
            body = {"flightId": flight["id"], "userId": user_id, "NoOfSeats": seats}
            if via == "gateway":
                token = tokens.issue(user_id, f"u{user_id}@example.com")
                return await gateway_http.post("/bookingservice/api/v1/bookings", json=body,
                                               headers={"x-access-token": token})
            return await booking_http.post("/api/v1/bookings", json=body, headers={
                "x-user-id": str(user_id), "x-user-email": f"u{user_id}@example.com"})

        async with gateway_http:
            answers = await asyncio.gather(*(one(user, seats) for user, seats in enumerate(wanted, 1)))
        statuses = [answer.status_code for answer in answers]
        assert set(statuses) <= {200, 409}, [a.text for a in answers if a.status_code >= 500]
        booked = [answer.json()["data"] for answer in answers if answer.status_code == 200]
        assert all(b["status"] == "Booked" for b in booked)
        assert all(b["totalCost"] == 100 * b["NoOfSeats"] for b in booked)
        sold = sum(b["NoOfSeats"] for b in booked)
        assert sold <= CAPACITY
        assert await free_seats(runtime, flight["id"]) == CAPACITY - sold
        left = CAPACITY - sold
        # a refusal is real: free seats only go down, so each refused request wanted more
        # than are left now
        refused = [seats for answer, seats in zip(answers, wanted) if answer.status_code == 409]
        assert all(seats > left for seats in refused)

        database = runtime.database("booking")
        stored = await database.fetch_val(
            sa.select(sa.func.coalesce(sa.func.sum(bookings.c.NoOfSeats), 0))
            .where(bookings.c.status == "Booked")
        )
        assert stored == sold
        assert await free_seats(runtime, flight["id"]) == CAPACITY - stored


@pytest.mark.parametrize("parts", ["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
async def test_a_booking_cancelled_mid_write_finishes_and_keeps_its_seats(
    tmp_path: Path, parts: str, request: pytest.FixtureRequest
) -> None:
    """A request cancelled (a shutdown past its grace period) while its booking is being
    written: the booking goes on to commit and keeps its seats. Before, the request gave
    the seats back at once: had the COMMIT already gone out, the flight would have shown
    seats free that a booking held, and been oversold."""
    database_url = None if parts == "sqlite" else request.getfixturevalue("mysql_url")
    async with booking_runtime(tmp_path, database_url) as (runtime, http):
        flight = await create_flight(runtime, capacity=10, price=100)
        with _bookings_locked(runtime) as release:
            answer = await _book_three_seats_stuck(runtime, http, flight)
            await asyncio.sleep(0.2)
            answer.cancel()
            with pytest.raises(asyncio.CancelledError):
                await answer
            release()
        database = runtime.database("booking")

        async def written() -> bool:
            return bool(await database.fetch_all(sa.select(bookings.c.id)))

        await eventually(written)
        made = await database.fetch_all(sa.select(bookings.c.NoOfSeats))
        assert [row[0] for row in made] == [3]
        assert await free_seats(runtime, flight["id"]) == 7


@pytest.mark.parametrize("parts", ["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
async def test_a_stop_waits_for_a_booking_being_written(
    tmp_path: Path, parts: str, request: pytest.FixtureRequest
) -> None:
    """Stopping the runtime (SIGTERM) while a booking waits to be written: the pools stay
    open until it has committed, so it is neither cut off nor, cancelled as the event loop
    closes, made to give back the seats of a booking that committed."""
    database_url = None if parts == "sqlite" else request.getfixturevalue("mysql_url")
    async with booking_runtime(tmp_path, database_url) as (runtime, http):
        flight = await create_flight(runtime, capacity=10, price=100)
        with _bookings_locked(runtime) as release:
            answer = await _book_three_seats_stuck(runtime, http, flight)
            stopping = asyncio.create_task(runtime.stop())
            await asyncio.sleep(0.5)
            assert not stopping.done()
            release()
            await stopping
        assert answer.done() and (await answer).status_code == 200
    async with booking_runtime(tmp_path, database_url) as (runtime, http):
        made = await runtime.database("booking").fetch_all(sa.select(bookings.c.NoOfSeats))
        assert [row[0] for row in made] == [3]
        assert await free_seats(runtime, flight["id"]) == 7


async def _book_three_seats_stuck(runtime, http, flight: dict) -> asyncio.Task:
    """Start a booking of 3 seats on a flight of 10 while `_bookings_locked` holds: return
    its request's task once the seats are taken and the booking's INSERT waits on the lock."""
    body = {"flightId": flight["id"], "userId": 1, "NoOfSeats": 3}
    headers = {"x-user-id": "1", "x-user-email": "u1@example.com"}
    answer = asyncio.create_task(http.post("/api/v1/bookings", json=body, headers=headers))
    await eventually(lambda: free_seats_are(runtime, flight["id"], 7))
    return answer


@contextlib.contextmanager
def _bookings_locked(runtime):
    """Hold a lock that the booking's INSERT waits for (not the seat change): the bookings
    table on MariaDB, the booking service's own file on SQLite. Yields the release."""
    url = runtime.config.services["booking"].database_url
    if url.startswith("mysql"):
        parts = urlsplit(url)
        conn = pymysql.connect(host=parts.hostname, port=parts.port or 3306,
                               user=parts.username or "root", password=parts.password or "",
                               database=parts.path.lstrip("/"))
        with conn.cursor() as cursor:
            cursor.execute("LOCK TABLES bookings WRITE")

        def release() -> None:
            with conn.cursor() as cursor:
                cursor.execute("UNLOCK TABLES")
    else:
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")

        def release() -> None:
            conn.rollback()
    try:
        yield release
    finally:
        conn.close()
