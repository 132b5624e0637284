"""The flights service as other services see it: seat inventory and flight records.

`LocalFlights` calls the flights store on its database (no HTTP, no JSON); `HttpFlights`
calls the flights service's routes over the runtime's pooled client. Both give the same
results and raise the same exceptions: `FlightNotFound`, `NotEnoughSeats`, and
`ServiceUnavailable` when the service cannot be reached.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Callable, Protocol

import httpx
from databases import Database

from airbourne import db
from airbourne.clients.errors import TIMEOUT_SECONDS, call, unexpected
from airbourne.runtime import Runtime
from airbourne.services.flights import store
from airbourne.services.flights.schema import flights
from airbourne.services.flights.store import (
    FlightNotFound,
    NotEnoughSeats,
    Reservation,
    TooManySeatsReleased,
)

__all__ = [
    "FlightNotFound", "FlightsClient", "HttpFlights", "LocalFlights", "NotEnoughSeats",
    "Reservation", "TooManySeatsReleased", "flights_client",
]


class FlightsClient(Protocol):
    async def reserve_seats(self, flight_id: int, seats: int) -> Reservation:
        """Take `seats` free seats of the flight at once, or none."""

    async def release_seats(self, flight_id: int, seats: int) -> int:
        """Give `seats` back; returns the flight's free seats. Raises `TooManySeatsReleased`
        rather than go above the flight's capacity."""

    async def get_flight(self, flight_id: int) -> dict[str, Any]:
        """The flight's record as the flights service answers it."""


class LocalFlights:
    """Flights in this process: direct calls to its store."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def reserve_seats(self, flight_id: int, seats: int) -> Reservation:
        return await store.reserve_seats(self.database, flight_id, seats)

    async def release_seats(self, flight_id: int, seats: int) -> int:
        return await store.release_seats(self.database, flight_id, seats)

    async def get_flight(self, flight_id: int) -> dict[str, Any]:
        return db.as_dict(await store.get(self.database, flights, flight_id))


class HttpFlights:
    """Flights in another process, through its routes under `base_url`."""

    def __init__(
        self, http: httpx.AsyncClient, base_url: str, timeout: float = TIMEOUT_SECONDS
    ) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    async def reserve_seats(self, flight_id: int, seats: int) -> Reservation:
        body = {"seats": seats}
        data = await self._call("POST", flight_id, "/seats/reserve", body, NotEnoughSeats)
        return Reservation(
            flight_id=data["flightId"],
            seats=data["seats"],
            price=data["price"],
            total_seats=data["totalSeats"],
            flight_number=data["flightNumber"],
            departure_time=_utc(data["departureTime"]),
        )

    async def release_seats(self, flight_id: int, seats: int) -> int:
        body = {"seats": seats}
        data = await self._call("POST", flight_id, "/seats/release", body, TooManySeatsReleased)
        return data["totalSeats"]

    async def get_flight(self, flight_id: int) -> dict[str, Any]:
        return await self._call("GET", flight_id, "", None, None)

    async def _call(
        self, method: str, flight_id: int, action: str, body: Any, refusal: Refusal | None
    ) -> Any:
        """The answer's data; 404 and 409 become the exceptions `LocalFlights` raises."""
        url = f"{self.base_url}/api/v1/flights/{flight_id}{action}"
        answer = await call(self.http, "flights", method, url, timeout=self.timeout, json=body)
        if answer.status_code == 200:
            return answer.json()["data"]
        if answer.status_code == 404:
            raise FlightNotFound(flight_id)
        if answer.status_code == 409 and refusal is not None:
            raise refusal(flight_id, body["seats"])
        raise unexpected("flights", method, url, answer)


Refusal = Callable[[int, int], Exception]
"""How a 409 is raised: `NotEnoughSeats` or `TooManySeatsReleased`, given flight and seats."""


def flights_client(runtime: Runtime, timeout: float = TIMEOUT_SECONDS) -> FlightsClient:
    """In-process when flights runs here, over HTTP to its configured URL otherwise."""
    if runtime.runs("flights"):
        return LocalFlights(runtime.database("flights"))
    return HttpFlights(runtime.http, runtime.config.services["flights"].url, timeout)


def _utc(text: str) -> datetime:
    """The flights service's ISO 8601 UTC time as the naive UTC datetime the store returns."""
    return datetime.fromisoformat(text).astimezone(timezone.utc).replace(tzinfo=None)
