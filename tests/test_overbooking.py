"""Many clients booking one flight at once never oversell it (the old platform sold 267
seats of a 100-seat flight in exactly this test), straight to the booking service and
through the gateway with real tokens."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
import sqlalchemy as sa

from airbourne.services import flights, gateway
from airbourne.services.booking import SERVICE as BOOKING
from airbourne.services.booking.schema import bookings
from airbourne.tokens import Tokens, load_secret
from booking_support import booking_runtime, create_flight, free_seats
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
