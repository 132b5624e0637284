"""The flights service as other services see it: seat inventory and flight records.

`LocalFlights` calls the flights store on its database (no HTTP, no JSON); `HttpFlights`
calls the flights service's routes over the runtime's pooled client. Both give the same
results and raise the same exceptions: `FlightNotFound`, `NotEnoughSeats`, and
`ServiceUnavailable` when the service cannot be reached.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Protocol

import aiohttp
from databases import Database

from airbourne import db
from airbourne.batch import Batch
from airbourne.clients.errors import TIMEOUT_SECONDS, ServiceUnavailable, call, unexpected
from airbourne.runtime import Runtime
from airbourne.services.flights import store
from airbourne.services.flights.schema import flights
from airbourne.services.flights.store import (
    Conflict,
    FlightNotFound,
    NotEnoughSeats,
    Reservation,
    TooManySeatsReleased,
)

__all__ = [
    "Conflict", "FlightNotFound", "FlightsClient", "HttpFlights", "LocalFlights", "NotEnoughSeats",
    "Reservation", "TooManySeatsReleased", "flights_client",
]


class FlightsClient(Protocol):
    async def reserve_seats(self, flight_id: int, seats: int, key: str) -> Reservation:
        """Take `seats` free seats of the flight at once, or none.

        `key` names the reservation where its outcome can be lost on the way (over HTTP, or
        to a database server): the returned `Reservation.key` is then `key`, and
        `release_reservation(..., key)` undoes it even after a call that raised
        `ServiceUnavailable`. Where the outcome cannot be lost (a SQLite file in this
        process) nothing is recorded and `Reservation.key` is None."""

    async def release_seats(self, flight_id: int, seats: int) -> int:
        """Give `seats` back; returns the flight's free seats. Raises `TooManySeatsReleased`
        rather than go above the flight's capacity."""

    async def release_seats_once(self, flight_id: int, seats: int, key: str) -> int:
        """`release_seats`, but a second call with the same `key` gives nothing more."""

    async def release_reservation(self, flight_id: int, key: str) -> int:
        """Give back the seats reserved under `key`, once however often it is called, and
        none if they never were; returns the flight's free seats."""

    async def get_flight(self, flight_id: int) -> dict[str, Any]:
        """The flight's record as the flights service answers it."""


class LocalFlights:
    """Flights in this process: direct calls to its store.

    The seat changes of bookings that arrive while one is being made wait, and are then
    made together, one transaction for all of them: on SQLite one call to the file's
    thread (one at a time, each held flights.db for 2.5 ms under load while the others
    queued for it), on MySQL one trip (`store.reserve_seats_together`,
    `store.reserve_seats_once_together`).
    """

    def __init__(self, database: Database) -> None:
        self.database = database
        self._takes = Batch(self._take_together, "flights: seat changes")

    async def reserve_seats(self, flight_id: int, seats: int, key: str) -> Reservation:
        """On a database server the seats are recorded under `key` in the same trip (a row
        per booking): the connection may break while the change is out, and then the
        caller gives back under the key whatever it did (`ServiceUnavailable` with
        `maybe_done`, as over HTTP). A SQLite file in this process answers or raises, so
        there no key is recorded."""
        if seats < 1:
            raise ValueError(f"seats must be a positive integer, got {seats}")
        try:
            return await self._takes.submit((key, flight_id, seats))
        except Exception as exc:
            if db.answer_lost(exc) or isinstance(exc, db.CommitUnknown):
                raise ServiceUnavailable(
                    "flights", "the connection to its database broke while taking the seats",
                    maybe_done=True,
                ) from exc
            raise

    async def _take_together(
        self, requests: list[tuple[str, int, int]]
    ) -> list[Reservation | Exception]:
        if db.is_sqlite(self.database):
            unkeyed = [(flight_id, seats) for _, flight_id, seats in requests]
            return await store.reserve_seats_together(self.database, unkeyed)
        return await store.reserve_seats_once_together(self.database, requests)

    async def release_seats(self, flight_id: int, seats: int) -> int:
        return await store.release_seats(self.database, flight_id, seats)

    async def release_seats_once(self, flight_id: int, seats: int, key: str) -> int:
        return await store.release_seats_once(self.database, key, flight_id, seats)

    async def release_reservation(self, flight_id: int, key: str) -> int:
        return (await store.release_reservation(self.database, key, flight_id))[1]

    async def get_flight(self, flight_id: int) -> dict[str, Any]:
        return db.as_dict(await store.get(self.database, flights, flight_id))


class HttpFlights:
    """Flights in another process, through its routes under `base_url`."""

    def __init__(
        self, http: aiohttp.ClientSession, base_url: str, timeout: float = TIMEOUT_SECONDS
    ) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    async def reserve_seats(self, flight_id: int, seats: int, key: str) -> Reservation:
        body = {"seats": seats, "reservation": key}
        refusal = NotEnoughSeats(flight_id, seats)
        data = await self._call("POST", flight_id, "/seats/reserve", body, refusal)
        return Reservation(
            flight_id=data["flightId"],
            seats=data["seats"],
            price=data["price"],
            total_seats=data["totalSeats"],
            flight_number=data["flightNumber"],
            departure_time=_utc(data["departureTime"]),
            key=key,
        )

    async def release_seats(self, flight_id: int, seats: int) -> int:
        refusal = TooManySeatsReleased(flight_id, seats)
        return await self._release(flight_id, {"seats": seats}, refusal)

    async def release_seats_once(self, flight_id: int, seats: int, key: str) -> int:
        refusal = TooManySeatsReleased(flight_id, seats)
        return await self._release(flight_id, {"seats": seats, "once": key}, refusal)

    async def release_reservation(self, flight_id: int, key: str) -> int:
        refusal = Conflict(f"flight {flight_id} refused to release reservation {key}")
        return await self._release(flight_id, {"reservation": key}, refusal)

    async def _release(self, flight_id: int, body: dict[str, Any], refusal: Exception) -> int:
        data = await self._call("POST", flight_id, "/seats/release", body, refusal)
        return data["totalSeats"]

    async def get_flight(self, flight_id: int) -> dict[str, Any]:
        return await self._call("GET", flight_id, "", None, None)

    async def _call(
        self, method: str, flight_id: int, action: str, body: Any, refusal: Exception | None
    ) -> Any:
        """The answer's data; 404 and 409 (`refusal`) become what `LocalFlights` raises."""
        url = f"{self.base_url}/api/v1/flights/{flight_id}{action}"
        answer = await call(self.http, "flights", method, url, timeout=self.timeout, json=body)
        if answer.status_code == 200:
            return answer.json()["data"]
        if answer.status_code == 404:
            raise FlightNotFound(flight_id)
        if answer.status_code == 409 and refusal is not None:
            raise refusal
        raise unexpected("flights", method, url, answer)


def flights_client(runtime: Runtime, timeout: float = TIMEOUT_SECONDS) -> FlightsClient:
    """In-process when flights runs here, over HTTP to its configured URL otherwise."""
    if runtime.runs("flights"):
        return LocalFlights(runtime.database("flights"))
    return HttpFlights(runtime.http, runtime.config.services["flights"].url, timeout)


def _utc(text: str) -> datetime:
    """The flights service's ISO 8601 UTC time as the naive UTC datetime the store returns."""
    return datetime.fromisoformat(text).astimezone(timezone.utc).replace(tzinfo=None)
