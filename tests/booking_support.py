"""Helpers for the booking tests: a runtime with flights and booking, a flight to book, and
waiting for the outbox relay."""

from __future__ import annotations

import contextlib
import json
import uuid
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable

import anyio
import httpx
import sqlalchemy as sa

from airbourne.broker import Message
from airbourne.runtime import Runtime
from airbourne.services import flights
from airbourne.services.booking import SERVICE as BOOKING
from airbourne.services.booking.schema import outbox
from airbourne.services.reminder.consumer import BATCH, batch_items
from support import client, make_config, started

FAST_RELAY = {"AIRBOURNE_BOOKING_OUTBOX_INTERVAL_SECONDS": "0.05"}


@contextlib.asynccontextmanager
async def booking_runtime(
    tmp_path: Path, database_url: str | None, services=(flights.SERVICE, BOOKING), **env: str
) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    """A started runtime (flights and booking by default) and a client of its booking app."""
    config = make_config(tmp_path, database_url, **{**FAST_RELAY, **env})
    async with started(config, list(services)) as runtime:
        async with client(runtime.apps["booking"]) as http:
            yield runtime, http


async def collect(runtime: Runtime, delivered: list[Message] | None = None) -> list[Message]:
    """Subscribe to the notification queue, standing in for the reminder; returns the list
    the messages are added to, a `BATCH` unpacked into the messages it holds (the reminder
    does the same). `delivered`, if given, gets the broker's messages as they came. On the
    memory broker an outbox row is sent only once a consumer has handled its message."""
    received: list[Message] = []

    async def handler(message: Message) -> None:
        if delivered is not None:
            delivered.append(message)
        received.extend(unbatched(message))

    settings = runtime.config["broker"]
    queue, binding_key = settings["notification_queue"], settings["reminder_binding_key"]
    await runtime.broker.subscribe(queue, binding_key, handler)
    return received


def unbatched(message: Message) -> list[Message]:
    """The messages `message` holds: itself, or each item of a `BATCH` with its own id, as
    the reminder reads them."""
    payload = json.loads(message.body)
    if payload.get("service") != BATCH:
        return [message]
    return [
        Message(json.dumps(item).encode(), message.routing_key, message_id)
        for message_id, item in batch_items(payload["data"])
    ]


async def create_flight(
    runtime: Runtime,
    *,
    capacity: int = 100,
    price: int = 5000,
    departure: str = "2030-10-10T10:00:00Z",
    arrival: str = "2030-10-10T14:00:00Z",
) -> dict:
    """A new flight (with its own cities, airports and airplane) through the flights API."""
    tag = uuid.uuid4().hex[:8]
    async with client(runtime.apps["flights"]) as http:

        async def post(path: str, body: dict) -> dict:
            answer = await http.post(f"/api/v1/{path}", json=body)
            assert answer.status_code == 201, answer.text
            return answer.json()["data"]

        async def airport(code: str, city: str) -> dict:
            place = await post("city", {"name": f"{city} {tag}"})
            return await post("airports", {"name": f"{code} {tag}", "address": "Terminal 1",
                                           "cityId": place["id"]})

        leave, land = await airport("LIS", "Lisbon"), await airport("OSL", "Oslo")
        plane = await post("airplane", {"modelNumber": "A320", "capacity": capacity})
        return await post("flights", {
            "flightNumber": f"AB{tag}", "airplaneId": plane["id"],
            "departureAirportID": leave["id"], "arrivalAirportId": land["id"],
            "departureTime": departure, "arrivalTime": arrival, "price": price,
        })


async def free_seats(runtime: Runtime, flight_id: int) -> int:
    async with client(runtime.apps["flights"]) as http:
        answer = await http.get(f"/api/v1/flights/{flight_id}")
        assert answer.status_code == 200, answer.text
        return answer.json()["data"]["totalSeats"]


async def free_seats_are(runtime: Runtime, flight_id: int, seats: int) -> bool:
    """For `eventually`: whether the flight has exactly `seats` free."""
    return await free_seats(runtime, flight_id) == seats


async def outbox_rows(runtime: Runtime) -> list[dict]:
    rows = await runtime.database("booking").fetch_all(sa.select(outbox).order_by(outbox.c.id))
    return [dict(row._mapping) for row in rows]


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 20.0) -> None:
    """Wait until `check()` is true; fail after `seconds` (a guard against hanging)."""
    with anyio.fail_after(seconds):
        while not await check():
            await anyio.sleep(0.02)
