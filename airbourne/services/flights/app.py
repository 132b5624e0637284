"""Routes of the flights service: cities, airplanes, airports, flights and their seats.

A body that names a record that does not exist (`cityId`, `airplaneId`, `departureAirportID`,
`arrivalAirportId`) is answered 404 with `err.field` naming it, as an unknown id in the path
is and as the booking service answers an unknown `flightId`. A record still referred to
cannot be deleted (409). `totalSeats` is inventory: only reserving and releasing seats
(`POST /flights/{id}/seats/reserve|release`, `{"seats": n}`, optionally under a caller's
`"reservation"` or `"once"` key) change it; a flight given another airplane keeps its booked seats and
takes that airplane's capacity.
"""

from __future__ import annotations

import logging
import operator
import re
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Mapping

import sqlalchemy as sa
from databases import Database
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from airbourne import db, retention, validate
from airbourne.batch import Batch
from airbourne.http import (
    ApiError, bad_request, created, exception_handlers, failure, ok, read_json,
)
from airbourne.services.flights import store
from airbourne.services.flights.schema import (
    RESERVATION_KEY_MAX, airplanes, airports, cities, flights,
)
from airbourne.validate import MISSING

if TYPE_CHECKING:
    from airbourne.runtime import Runtime

logger = logging.getLogger("airbourne.flights")

MAX_CAPACITY = 1_000_000
MAX_PAGE = 1000

Parse = Callable[[Mapping[str, Any], bool], dict[str, Any]]


def create_app(runtime: Runtime) -> Starlette:
    routes = [
        Route("/city", partial(create, cities, _city), methods=["POST"]),
        Route("/city", list_cities, methods=["GET"]),
        Route("/city/{id}", partial(read, cities), methods=["GET"]),
        Route("/city/{id}", partial(update, cities, _city), methods=["PATCH"]),
        Route("/city/{id}", partial(delete, cities), methods=["DELETE"]),
        Route("/airplane", partial(create, airplanes, _airplane), methods=["POST"]),
        Route("/airplane", partial(list_all, airplanes), methods=["GET"]),
        Route("/airplane/{id}", partial(read, airplanes), methods=["GET"]),
        Route("/airplane/{id}", partial(update, airplanes, _airplane), methods=["PATCH"]),
        Route("/airplane/{id}", partial(delete, airplanes), methods=["DELETE"]),
        Route("/airports", partial(create, airports, _airport), methods=["POST"]),
        Route("/airports", partial(list_all, airports), methods=["GET"]),
        Route("/airports/{id}", partial(read, airports), methods=["GET"]),
        Route("/airports/{id}", partial(update, airports, _airport), methods=["PATCH"]),
        Route("/airports/{id}", partial(delete, airports), methods=["DELETE"]),
        Route("/flights", create_flight, methods=["POST"]),
        Route("/flights", list_flights, methods=["GET"]),
        Route("/flights/{id}", partial(read, flights), methods=["GET"]),
        Route("/flights/{id}", update_flight, methods=["PATCH"]),
        Route("/flights/{id}", partial(delete, flights), methods=["DELETE"]),
        Route("/flights/{id}/seats/reserve", reserve_seats, methods=["POST"]),
        Route("/flights/{id}/seats/release", release_seats, methods=["POST"]),
    ]
    handlers = {**exception_handlers, store.NotFound: _store_error, store.Conflict: _store_error}
    app = Starlette(routes=[Mount("/api/v1", routes=routes)], exception_handlers=handlers)
    app.state.database = runtime.database("flights")
    app.state.keyed_reservations = Batch(
        partial(store.reserve_seats_once_together, app.state.database), "flights: reservations"
    )
    return app


async def prune_periodically(runtime: Runtime) -> None:
    """Every hour, delete the reservations released, or of flights departed or deleted,
    more than `flights.reservation_keep_days` ago (`store.prune_reservations`): on MySQL
    every booking records one, so the table would otherwise grow as fast as bookings do."""
    database = runtime.database("flights")
    keep = timedelta(days=runtime.config["flights"]["reservation_keep_days"])

    async def delete() -> int:
        return await store.prune_reservations(database, db.utcnow() - keep)

    what = f"reservations released, or of flights gone, more than {keep} ago"
    await retention.every_hour(what, delete, logger)


async def _store_error(request: Request, exc: Exception) -> Response:
    return failure(404 if isinstance(exc, store.NotFound) else 409, str(exc))


def _database(request: Request) -> Database:
    return request.app.state.database


# --- any record ----------------------------------------------------------------------------


async def create(table: sa.Table, parse: Parse, request: Request) -> Response:
    database = _database(request)
    values = parse(await read_json(request), False)
    await _referenced(database, values)
    record = await store.create(database, table, values)
    return created(db.as_dict(record), f"Successfully created the {table.info['kind']}")


async def read(table: sa.Table, request: Request) -> Response:
    record = await store.get(_database(request), table, validate.path_id(request))
    return ok(db.as_dict(record), f"Successfully fetched the {table.info['kind']}")


async def update(table: sa.Table, parse: Parse, request: Request) -> Response:
    database, record_id = _database(request), validate.path_id(request)
    changes = parse(await read_json(request), True)
    await _referenced(database, changes)
    record = await store.update(database, table, record_id, changes)
    return ok(db.as_dict(record), f"Successfully updated the {table.info['kind']}")


async def delete(table: sa.Table, request: Request) -> Response:
    await store.delete(_database(request), table, validate.path_id(request))
    return ok(True, f"Successfully deleted the {table.info['kind']}")


async def list_all(table: sa.Table, request: Request) -> Response:
    return await _listing(request, table)


async def _listing(request: Request, table: sa.Table, *conditions: Any) -> Response:
    query = _query(request)
    limit = validate.integer(
        query, "limit", maximum=MAX_PAGE, required=False, default=MAX_PAGE, text=True
    )
    offset = validate.integer(query, "offset", minimum=0, required=False, default=0, text=True)
    rows = await store.find(_database(request), table, *conditions, limit=limit, offset=offset)
    return ok([db.as_dict(row) for row in rows], f"Successfully fetched the {table.name}")


def _query(request: Request) -> dict[str, str]:
    """The query string; an empty value (`?minPrice=`) counts as not given."""
    return {name: value for name, value in request.query_params.items() if value != ""}


_REFERENCES = {
    "cityId": cities,
    "airplaneId": airplanes,
    "departureAirportID": airports,
    "arrivalAirportId": airports,
}


async def _referenced(database: Database, values: Mapping[str, Any]) -> dict[str, Any]:
    """The records `values` refer to, by field; a 404 naming the field if one is missing."""
    found = {}
    for field, table in _REFERENCES.items():
        if field in values:
            try:
                found[field] = await store.get(database, table, values[field])
            except store.NotFound as exc:
                raise ApiError(404, f"{field}: {exc}", {"field": field}) from None
    return found


def _given(values: dict[str, Any]) -> dict[str, Any]:
    """`values` without the fields not sent; a 400 if that leaves nothing to write."""
    given = {name: value for name, value in values.items() if value is not MISSING}
    if not given:
        message = f"nothing to update: send one of {', '.join(values)}"
        raise ApiError(400, message, {"field": "body"})
    return given


# --- cities, airplanes, airports -----------------------------------------------------------


def _city(body: Mapping[str, Any], patch: bool) -> dict[str, Any]:
    return _given({"name": validate.string(body, "name", required=not patch)})


def _airplane(body: Mapping[str, Any], patch: bool) -> dict[str, Any]:
    return _given({
        "modelNumber": validate.string(body, "modelNumber", required=not patch),
        "capacity": validate.integer(
            body, "capacity", maximum=MAX_CAPACITY, required=False,
            default=MISSING if patch else 200,
        ),
    })


def _airport(body: Mapping[str, Any], patch: bool) -> dict[str, Any]:
    return _given({
        "name": validate.string(body, "name", required=not patch),
        "address": validate.string(body, "address", required=False),
        "cityId": validate.integer(body, "cityId", required=not patch),
    })


async def list_cities(request: Request) -> Response:
    """All cities, or with `?name=` those whose name starts with it."""
    name = validate.string(_query(request), "name", required=False)
    if name is MISSING:
        return await _listing(request, cities)
    return await _listing(request, cities, cities.c.name.like(_prefix(name), escape="/"))


def _prefix(text: str) -> str:
    """A LIKE pattern for what starts with `text`, its `%` and `_` taken literally.

    Built here rather than with SQLAlchemy's `startswith(autoescape=True)`, whose `'%'`
    literal in the SQL breaks the `databases` SQLite backend.
    """
    for special in "/%_":
        text = text.replace(special, "/" + special)
    return text + "%"


# --- flights -------------------------------------------------------------------------------


def _flight(body: Mapping[str, Any], patch: bool) -> dict[str, Any]:
    required = not patch
    if patch and "totalSeats" in body:
        raise bad_request("totalSeats", "cannot be set: reserve or release seats to change it")
    return _given({
        "flightNumber": validate.string(body, "flightNumber", required=required),
        "airplaneId": validate.integer(body, "airplaneId", required=required),
        "departureAirportID": validate.integer(body, "departureAirportID", required=required),
        "arrivalAirportId": validate.integer(body, "arrivalAirportId", required=required),
        "departureTime": validate.timestamp(body, "departureTime", required=required),
        "arrivalTime": validate.timestamp(body, "arrivalTime", required=required),
        "price": validate.integer(body, "price", minimum=0, required=required),
        "boardingGate": validate.string(body, "boardingGate", required=False),
    })


def _check_route(flight: Mapping[str, Any]) -> None:
    if flight["arrivalTime"] <= flight["departureTime"]:
        raise bad_request("arrivalTime", "must be after departureTime")
    if flight["arrivalAirportId"] == flight["departureAirportID"]:
        raise bad_request("arrivalAirportId", "must differ from departureAirportID")


async def create_flight(request: Request) -> Response:
    """A new flight; its free seats are its airplane's capacity."""
    database = _database(request)
    values = _flight(await read_json(request), False)
    _check_route(values)
    capacity = (await _referenced(database, values))["airplaneId"].capacity
    record = await store.create(
        database, flights, {**values, "totalSeats": capacity, "capacity": capacity}
    )
    return created(db.as_dict(record), "Successfully created the flight")


async def update_flight(request: Request) -> Response:
    database, flight_id = _database(request), validate.path_id(request)
    changes = _flight(await read_json(request), True)
    current = await store.get(database, flights, flight_id)
    _check_route({
        name: changes.get(name, current[name])
        for name in ("departureTime", "arrivalTime", "departureAirportID", "arrivalAirportId")
    })
    airplane = (await _referenced(database, changes)).get("airplaneId")
    capacity = airplane.capacity if airplane is not None else None
    record = await store.update_flight(database, flight_id, changes, capacity)
    return ok(db.as_dict(record), "Successfully updated the flight")


async def list_flights(request: Request) -> Response:
    """Flights, filtered by `arrivalAirportId`, `departureAirportID`, `minPrice`, `maxPrice`."""
    query, columns = _query(request), flights.c
    filters = [
        ("arrivalAirportId", operator.eq, columns.arrivalAirportId, 1),
        ("departureAirportID", operator.eq, columns.departureAirportID, 1),
        ("minPrice", operator.ge, columns.price, 0),
        ("maxPrice", operator.le, columns.price, 0),
    ]
    conditions = []
    for name, compare, column, minimum in filters:
        value = validate.integer(query, name, minimum=minimum, required=False, text=True)
        if value is not MISSING:
            conditions.append(compare(column, value))
    return await _listing(request, flights, *conditions)


# --- seats ---------------------------------------------------------------------------------


RESERVATION = "reservation"
"""The optional key of a reservation (see `store.reserve_seats_once`)."""
ONCE = "once"
"""The optional key of a release given back once (see `store.release_seats_once`)."""


async def reserve_seats(request: Request) -> Response:
    flight_id = validate.path_id(request)
    body = await read_json(request)
    seats = validate.integer(body, "seats", maximum=MAX_CAPACITY)
    key = _reservation_key(body)
    if key is None:
        reservation = await store.reserve_seats(_database(request), flight_id, seats)
    else:  # together with the keyed changes that arrive meanwhile, as in LocalFlights
        reservation = await request.app.state.keyed_reservations.submit((key, flight_id, seats))
    data = {
        "flightId": flight_id, "seats": seats, "price": reservation.price,
        "totalSeats": reservation.total_seats, "flightNumber": reservation.flight_number,
        "departureTime": db.iso(reservation.departure_time),
    }
    return ok(data, "Successfully reserved the seats")


async def release_seats(request: Request) -> Response:
    """`{"seats": n}` gives back n seats; `{"seats": n, "once": key}` does so once per key;
    `{"reservation": key}` gives back the seats reserved under key, once."""
    flight_id = validate.path_id(request)
    body = await read_json(request)
    key = _reservation_key(body)
    database = _database(request)
    if key is not None:
        if "seats" in body or ONCE in body:
            field = "seats" if "seats" in body else ONCE
            raise bad_request(field, f"must not be given with {RESERVATION}: its seats are known")
        seats, total_seats = await store.release_reservation(database, key, flight_id)
    else:
        seats = validate.integer(body, "seats", maximum=MAX_CAPACITY)
        once = _reservation_key(body, ONCE)
        if once is None:
            total_seats = await store.release_seats(database, flight_id, seats)
        else:
            total_seats = await store.release_seats_once(database, once, flight_id, seats)
    return ok({"flightId": flight_id, "seats": seats, "totalSeats": total_seats},
              "Successfully released the seats")


def _reservation_key(body: Mapping[str, Any], name: str = RESERVATION) -> str | None:
    key = validate.string(body, name, max_length=RESERVATION_KEY_MAX, required=False,
                          default=None)
    if key is not None and not _KEY.fullmatch(key):
        raise bad_request(name, "must be letters, digits, '-' and '_'")
    return key


_KEY = re.compile(r"[A-Za-z0-9_-]+")
