"""SQL of the flights service, and the seat inventory that bookings draw on.

Records come back as database rows (`db.as_dict` makes them JSON). A missing record raises
`NotFound`; a write the data refuses (a duplicate name, a record still in use, too few seats)
raises `Conflict`. Both carry a message fit for the client.

Seats are taken and given back by one conditional UPDATE each: the database checks the count
and changes it in the same statement, so concurrent bookings can neither oversell a flight
nor lose an update.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterator, Mapping, Sequence

import sqlalchemy as sa
from databases import Database
from databases.core import Connection
from databases.interfaces import Record

from airbourne import batch, db, retention
from airbourne.services.flights.schema import (
    HELD, RELEASED, airplanes, airports, cities, flights, reservations,
)


class NotFound(LookupError):
    def __init__(self, kind: str, record_id: int) -> None:
        super().__init__(f"{kind} {record_id} not found")
        self.record_id = record_id


class FlightNotFound(NotFound):
    def __init__(self, flight_id: int) -> None:
        super().__init__("flight", flight_id)


class Conflict(Exception):
    """A write that the current data refuses."""


class NotEnoughSeats(Conflict):
    def __init__(self, flight_id: int, requested: int, free: int | None = None) -> None:
        left = "too few free seats" if free is None else f"{free} free seats"
        super().__init__(f"flight {flight_id} has {left}, {requested} requested")
        self.free = free


class TooManySeatsReleased(Conflict):
    """Giving back more seats than were taken: a caller's accounting is wrong somewhere."""

    def __init__(
        self, flight_id: int, released: int, free: int | None = None, capacity: int | None = None
    ) -> None:
        if free is None:  # a client over HTTP does not know the counts
            message = f"flight {flight_id}: {released} more free seats would exceed its capacity"
        else:
            message = (f"flight {flight_id} has {free} free seats of {capacity}: "
                       f"{released} more would exceed its capacity")
        super().__init__(message)


@dataclass(frozen=True)
class Reservation:
    flight_id: int
    seats: int
    price: int
    """The price of one seat when the seats were taken."""
    total_seats: int
    """The flight's free seats left after this reservation."""
    flight_number: str
    departure_time: datetime
    """For the booking's confirmation and departure reminder, without another query."""
    key: str | None = None
    """The key the seats are held under (see `reserve_seats_once`), or None."""


_USED_BY = {
    cities.name: [airports.c.cityId],
    airports.name: [flights.c.departureAirportID, flights.c.arrivalAirportId],
    airplanes.name: [flights.c.airplaneId],
}
"""The columns that refer to a record, so a delete can refuse with a reason, not a 500."""


def _missing(table: sa.Table, record_id: int) -> NotFound:
    if table is flights:
        return FlightNotFound(record_id)
    return NotFound(table.info["kind"], record_id)


def _public(table: sa.Table) -> list[sa.Column]:
    return [column for column in table.c if not column.info.get("internal")]


# --- records -------------------------------------------------------------------------------


async def get(database: Database, table: sa.Table, record_id: int) -> Record:
    row = await database.fetch_one(sa.select(*_public(table)).where(table.c.id == record_id))
    if row is None:
        raise _missing(table, record_id)
    return row


async def find(
    database: Database, table: sa.Table, *conditions: Any, limit: int, offset: int = 0
) -> list[Record]:
    query = (
        sa.select(*_public(table)).where(*conditions)
        .order_by(table.c.id).limit(limit).offset(offset)
    )
    return await database.fetch_all(query)


async def create(database: Database, table: sa.Table, values: Mapping[str, Any]) -> Record:
    now = db.utcnow()
    with _refused(table, values):
        record_id = await database.execute(
            table.insert().values(**values, createdAt=now, updatedAt=now)
        )
    return await get(database, table, record_id)


async def update(
    database: Database, table: sa.Table, record_id: int, changes: Mapping[str, Any]
) -> Record:
    statement = table.update().where(table.c.id == record_id)
    with _refused(table, changes):
        await database.execute(statement.values(**changes, updatedAt=db.utcnow()))
    return await get(database, table, record_id)


async def delete(database: Database, table: sa.Table, record_id: int) -> None:
    """Delete a record that nothing refers to any more."""
    await get(database, table, record_id)
    for column in _USED_BY.get(table.name, ()):
        query = sa.select(column.table.c.id).where(column == record_id).limit(1)
        if await database.fetch_val(query) is not None:
            raise _in_use(table, record_id)
    try:
        await database.execute(table.delete().where(table.c.id == record_id))
    except db.IntegrityErrors:
        raise _in_use(table, record_id) from None  # a reference added since the check above


def _in_use(table: sa.Table, record_id: int) -> Conflict:
    users = _USED_BY[table.name][0].table.name
    return Conflict(f"{table.info['kind']} {record_id} is still used by {users}: "
                    f"delete or change those first")


@contextlib.contextmanager
def _refused(table: sa.Table, values: Mapping[str, Any]) -> Iterator[None]:
    """Turn a broken unique key or foreign key into a `Conflict` that says which."""
    try:
        yield
    except db.IntegrityErrors as exc:
        unique = next(
            (c for c in table.constraints if isinstance(c, sa.UniqueConstraint)), None
        )
        if unique is not None and _is_duplicate(exc):
            field = unique.columns.keys()[0]
            raise Conflict(f"{field} {values.get(field)!r} is already taken") from None
        raise Conflict("a record this one refers to was deleted meanwhile") from None


def _is_duplicate(exc: Exception) -> bool:
    return "UNIQUE constraint" in str(exc) or exc.args[:1] == (1062,)  # SQLite, MySQL


# --- flights -------------------------------------------------------------------------------

_EDITABLE = frozenset((
    "flightNumber", "airplaneId", "departureAirportID", "arrivalAirportId",
    "departureTime", "arrivalTime", "price", "boardingGate",
))


async def update_flight(
    database: Database, flight_id: int, changes: Mapping[str, Any], capacity: int | None = None
) -> Record:
    """Apply `changes` to a flight; `capacity` is the new airplane's when `airplaneId` changes.

    The caller has checked the merged record. The WHERE clause checks it again against the
    row as it is when the statement runs, so a concurrent change cannot slip an invalid flight
    in. A new airplane keeps the seats already booked: free seats move by the difference in
    capacity, and an airplane too small for them is refused.
    """
    assert _EDITABLE.issuperset(changes), set(changes) - _EDITABLE

    def value(name: str) -> str:
        return f":{name}" if name in changes else name

    values = {**changes, "id": flight_id, "updatedAt": db.utcnow()}
    assignments = [f"{name} = :{name}" for name in changes]
    conditions = [
        "id = :id",
        f"{value('arrivalTime')} > {value('departureTime')}",
        f"{value('departureAirportID')} <> {value('arrivalAirportId')}",
    ]
    if capacity is not None:
        values["capacity"] = capacity
        free = "totalSeats + :capacity - capacity"
        # totalSeats before capacity: MySQL assigns left to right, reading the new values.
        assignments += [f"totalSeats = {free}", "capacity = :capacity"]
        conditions.append(f"{free} >= 0")
    assignments.append("updatedAt = :updatedAt")
    sql = f"UPDATE flights SET {', '.join(assignments)} WHERE {' AND '.join(conditions)}"
    async with database.connection() as conn:
        with _refused(flights, changes):
            changed = await db.rowcount(conn, sql, values)
    if not changed:
        raise await _refusal(database, flight_id, capacity)
    return await get(database, flights, flight_id)


async def _refusal(database: Database, flight_id: int, capacity: int | None) -> Exception:
    """Why `update_flight` changed nothing: the flight is gone, or it changed meanwhile."""
    query = sa.select(flights.c.totalSeats, flights.c.capacity).where(flights.c.id == flight_id)
    row = await database.fetch_one(query)
    if row is None:
        return FlightNotFound(flight_id)
    booked = row.capacity - row.totalSeats
    if capacity is not None and booked > capacity:
        return Conflict(f"flight {flight_id} has {booked} seats booked; "
                        f"the new airplane has only {capacity}")
    return Conflict(f"flight {flight_id} changed while it was being updated: read it and retry")


# --- seat inventory ------------------------------------------------------------------------

_TAKE = ("totalSeats - :seats", "totalSeats >= :seats")
_GIVE_BACK = ("totalSeats + :seats", "totalSeats + :seats <= capacity")
"""A seat change: the new free-seat count, and the condition that keeps it within bounds."""

_SEATS_COLUMNS = "price, totalSeats, capacity, flightNumber, departureTime"


@functools.lru_cache(maxsize=None)
def _seat_update(dialect: str, change: tuple[str, str]) -> str:
    """The conditional UPDATE for `change`, made to report the free seats it leaves.

    SQLite returns them with the row (`RETURNING`). MariaDB has no `UPDATE ... RETURNING`;
    `LAST_INSERT_ID(expr)` stores the new count where the statement's reply carries an
    insert id (the MySQL manual's idiom for counters), so neither needs a transaction and a
    read that a concurrent booking could overtake.
    """
    new_total, condition = change
    if dialect == "mysql":
        new_total = f"LAST_INSERT_ID({new_total})"
    sql = (f"UPDATE flights SET totalSeats = {new_total}, updatedAt = :now"
           f" WHERE id = :id AND {condition}")
    return f"{sql} RETURNING {_SEATS_COLUMNS}" if dialect == "sqlite" else sql


async def reserve_seats(
    database: Database, flight_id: int, seats: int, key: str | None = None
) -> Reservation:
    """Take `seats` free seats of a flight, all or none; with `key` (MySQL only), record
    them as `HELD` under it in the same transaction and the same trip to the server.

    Raises `FlightNotFound` or `NotEnoughSeats` (a `Conflict`), and with `key` an
    `IntegrityError` for a key recorded before (nothing is taken).
    """
    changed, flight = await _change_seats(database, _TAKE, flight_id, seats, key)
    taken = _taken(flight_id, seats, changed, flight, key)
    if isinstance(taken, Exception):
        raise taken
    return taken


async def reserve_seats_together(
    database: Database, requests: Sequence[tuple[int, int]]
) -> list[Reservation | Exception]:
    """`reserve_seats` for each `(flight id, seats)` of `requests`, without a key, in one
    transaction: on SQLite one call to the file's thread and one COMMIT for all of them
    (see `LocalFlights`). Each change stands alone: one that finds too few seats, or no
    flight, takes nothing and gets its exception; the others go on."""
    if len(requests) == 1:  # alone: one statement, no transaction (one call instead of two)
        return [await batch.outcome(reserve_seats(database, *requests[0]))]
    if any(seats < 1 for _, seats in requests):  # checked by each caller beforehand
        raise ValueError(f"seats must be positive integers, got {requests}")
    now = db.utcnow()
    update = _seat_update(database.url.dialect, _TAKE)
    values = [{"seats": seats, "id": flight_id, "now": now} for flight_id, seats in requests]
    times = ("departureTime",)
    async with database.connection() as conn:
        async with db.transaction(conn):
            taken = await db.fetch_each(conn, update, values, times)
        refused = [{"id": flight_id} for (flight_id, _), rows in zip(requests, taken) if not rows]
        flights_now = iter(await db.fetch_each(conn, _SEATS_READ, refused, times) if refused else [])
    results: list[Reservation | Exception] = []
    for (flight_id, seats), rows in zip(requests, taken):
        changed = bool(rows)
        if not changed:  # refused: the flight as read after it, if there is one
            rows = next(flights_now)
        results.append(_taken(flight_id, seats, changed, rows[0] if rows else None))
    return results


def _taken(
    flight_id: int, seats: int, changed: bool, flight: Mapping[str, Any] | None,
    key: str | None = None,
) -> Reservation | Exception:
    """What taking `seats` came to, from whether the UPDATE matched and the flight's row
    (None: no such flight): the reservation, or the refusal to raise."""
    if flight is None:
        return FlightNotFound(flight_id)
    if not changed:
        return NotEnoughSeats(flight_id, seats, flight["totalSeats"])
    return _reservation(flight_id, seats, flight, key)


def _reservation(
    flight_id: int, seats: int, flight: Mapping[str, Any], key: str | None = None
) -> Reservation:
    """The reservation of `seats`, from the flight's row as `_SEATS_READ` reads it."""
    return Reservation(
        flight_id, seats, flight["price"], flight["totalSeats"], flight["flightNumber"],
        flight["departureTime"], key,
    )


class ReservationReleased(Conflict):
    def __init__(self, key: str) -> None:
        super().__init__(f"reservation {key} was released; its key cannot take seats again")


class ReservationMismatch(Conflict):
    def __init__(self, key: str, flight_id: int, seats: int | None = None) -> None:
        what = f"flight {flight_id}" if seats is None else f"{seats} seats of flight {flight_id}"
        super().__init__(f"reservation {key} was made for other than {what}")


async def reserve_seats_once(
    database: Database, key: str, flight_id: int, seats: int
) -> Reservation:
    """`reserve_seats`, recorded under the caller's `key` in the same transaction.

    For callers in another process, which may not learn whether a call took the seats: the
    same key again takes nothing more and answers the same reservation, and
    `release_reservation(key)` undoes it whether it was made, is still on its way, or never
    comes. Raises as `reserve_seats` does, and `ReservationReleased` for a released key.

    On MySQL a new key, the common case, takes one trip (`reserve_seats` with the key); a
    key recorded before is then looked at as on SQLite.
    """
    if not db.is_sqlite(database):
        with contextlib.suppress(*db.IntegrityErrors):  # a retry, or a release came first
            return await reserve_seats(database, flight_id, seats, key)
    async with database.connection() as conn:
        async with db.transaction(conn):
            earlier = await _record_key(conn, key, flight_id, seats, HELD)
            if earlier is None:
                made = await reserve_seats(database, flight_id, seats)  # on conn: same task
                return dataclasses.replace(made, key=key)
            if earlier["status"] == RELEASED:
                raise ReservationReleased(key)
            if (earlier["flightId"], earlier["seats"]) != (flight_id, seats):
                raise ReservationMismatch(key, flight_id, seats)
            # A retry: the same reservation.
            return _reservation(flight_id, seats, await _seats_of(conn, flight_id), key)


async def reserve_seats_once_together(
    database: Database, requests: Sequence[tuple[str, int, int]]
) -> list[Reservation | Exception]:
    """`reserve_seats_once` for each `(key, flight id, seats)` of `requests`, on MySQL in
    one transaction and one trip for all of them (see `LocalFlights`). Each change stands
    alone, as in `reserve_seats_together`.

    The changes go in the order of their flights' ids, so that two such transactions lock
    the flights they share in the same order and one waits for the other rather than both
    deadlocking. A key recorded before (a retry, or a release that came first) fails the
    transaction as a whole: nothing is taken, and each change is then made on its own.
    A lost connection raises for all of them (each may have been made: release by key).
    """
    if len(requests) == 1 or db.is_sqlite(database):
        return await _once_each(database, requests)
    if any(seats < 1 for _, _, seats in requests):  # checked by each caller beforehand
        raise ValueError(f"seats must be positive integers, got {requests}")
    now = db.utcnow()
    update = _seat_update(database.url.dialect, _TAKE)
    order = sorted(range(len(requests)), key=lambda index: requests[index][1])
    statements = []
    for index in order:
        key, flight_id, seats = requests[index]
        values = {"key": key, "id": flight_id, "seats": seats, "held": HELD, "now": now}
        statements += [(sql, values) for sql in (_RECORD, update, _FORGET_IF_NOT_TAKEN)]
    ids, bound = db.in_list("id", sorted({flight_id for _, flight_id, _ in requests}))
    read = f"SELECT id, {_SEATS_COLUMNS} FROM flights WHERE id IN {ids}"
    async with database.connection() as conn:
        try:
            outcomes, rows = await db.run_in_transaction(
                conn, statements, (read, bound), ("departureTime",)
            )
        except db.IntegrityErrors:  # nothing was taken
            return await _once_each(database, requests)
    updates = {index: outcomes[3 * position + 1] for position, index in enumerate(order)}
    found = {row["id"]: row for row in rows}
    results: list[Reservation | Exception] = []
    for index, (key, flight_id, seats) in enumerate(requests):
        flight = found.get(flight_id)
        changed, flight = _matched(updates[index], [] if flight is None else [dict(flight)])
        results.append(_taken(flight_id, seats, changed, flight, key))
    return results


async def _once_each(
    database: Database, requests: Sequence[tuple[str, int, int]]
) -> list[Reservation | Exception]:
    return [await batch.outcome(reserve_seats_once(database, *request)) for request in requests]


async def release_reservation(database: Database, key: str, flight_id: int) -> tuple[int, int]:
    """Give back the seats held under `key`; `(seats given back, free seats after)`.

    Safe to repeat: a released reservation gives nothing more. A key never reserved is
    recorded as released (0 seats), so a reservation still on its way takes nothing.
    Raises `FlightNotFound`, `ReservationMismatch` for a key of another flight, and
    `TooManySeatsReleased` as `release_seats` does.
    """
    async with database.connection() as conn:
        async with db.transaction(conn):
            # First, so that a reservation arriving meanwhile waits for this and finds it.
            earlier = await _record_key(conn, key, flight_id, 0, RELEASED)
            if earlier is not None:
                if earlier["flightId"] != flight_id:
                    raise ReservationMismatch(key, flight_id)
                values = {"key": key, "released": RELEASED, "held": HELD, "now": db.utcnow()}
                if await db.rowcount(conn, _RESERVATION_RELEASE, values):
                    seats = earlier["seats"]
                    return seats, await release_seats(database, flight_id, seats)
            return 0, (await _seats_of(conn, flight_id))["totalSeats"]


async def release_seats_once(database: Database, key: str, flight_id: int, seats: int) -> int:
    """`release_seats`, recorded under the caller's `key` in the same transaction, so the
    same key again gives nothing more back: for a release its caller may send twice (the
    outbox, after a crash between the release and marking it done). Returns the flight's
    free seats. Raises as `release_seats` does, and `ReservationMismatch` for a key used
    for other seats."""
    async with database.connection() as conn:
        async with db.transaction(conn):
            earlier = await _record_key(conn, key, flight_id, seats, RELEASED)
            if earlier is None:
                return await release_seats(database, flight_id, seats)  # on conn: same task
            if (earlier["flightId"], earlier["seats"]) != (flight_id, seats):
                raise ReservationMismatch(key, flight_id, seats)
            return (await _seats_of(conn, flight_id))["totalSeats"]  # given back already


async def _record_key(
    conn: Connection, key: str, flight_id: int, seats: int, status: str
) -> dict[str, Any] | None:
    """Record `key` for `seats` of the flight: None if the key is new, else its row as it was
    recorded before (a concurrent transaction with the key is waited for)."""
    now = db.utcnow()
    row = {"id": key, "flightId": flight_id, "seats": seats, "status": status,
           "createdAt": now, "updatedAt": now}
    try:
        await db.run(conn, db.insert_sql(reservations, tuple(row)), row)
        return None
    except db.IntegrityErrors:
        earlier = await db.fetch_one(conn, _RESERVATION_READ, {"key": key})
        if earlier is None:  # deleted in between by `prune_reservations`: a key long unused
            raise Conflict(f"reservation {key} was being deleted as old; try again") from None
        return earlier


async def _seats_of(conn: Connection, flight_id: int) -> dict[str, Any]:
    flight = await db.fetch_one(conn, _SEATS_READ, {"id": flight_id}, ("departureTime",))
    if flight is None:
        raise FlightNotFound(flight_id)
    return flight


_RESERVATION_READ = "SELECT flightId, seats, status FROM reservations WHERE id = :key"
_RESERVATION_RELEASE = (
    "UPDATE reservations SET status = :released, updatedAt = :now"
    " WHERE id = :key AND status = :held"
)


async def release_seats(database: Database, flight_id: int, seats: int) -> int:
    """Give back `seats` seats taken earlier; returns the flight's free seats after.

    Raises `FlightNotFound`, or `TooManySeatsReleased` (a `Conflict`) when the free seats
    would exceed the flight's capacity.
    """
    changed, flight = await _change_seats(database, _GIVE_BACK, flight_id, seats)
    if flight is None:
        raise FlightNotFound(flight_id)
    if not changed:
        raise TooManySeatsReleased(flight_id, seats, flight["totalSeats"], flight["capacity"])
    return flight["totalSeats"]


async def _change_seats(
    database: Database, change: tuple[str, str], flight_id: int, seats: int,
    key: str | None = None,
) -> tuple[bool, dict[str, Any] | None]:
    """Run a conditional seat change; whether it matched, and the flight as it left it (its
    free seats are the ones this change left, not a later booking's). Plain SQL, and no
    transaction unless the change is recorded under `key`: this runs for every booking.
    """
    if seats < 1:
        raise ValueError(f"seats must be a positive integer, got {seats}")
    values = {"seats": seats, "id": flight_id, "now": db.utcnow()}
    update = _seat_update(database.url.dialect, change)
    times = ("departureTime",)
    async with database.connection() as conn:
        if key is not None:
            if db.is_sqlite(database):
                raise ValueError("a key is recorded in one trip on MySQL only")
            values.update(key=key, held=HELD)
            statements = [(sql, values) for sql in (_RECORD, update, _FORGET_IF_NOT_TAKEN)]
            (_, outcome, _), rows = await db.run_in_transaction(
                conn, statements, (_SEATS_READ, values), times
            )
            return _matched(outcome, rows)
        if db.is_sqlite(database):
            flight = await db.fetch_one(conn, update, values, times)
            if flight is not None:
                return True, flight
        else:  # the UPDATE and the read of the flight in one trip
            outcome, rows = await db.run_then_fetch(conn, update, _SEATS_READ, values, times)
            return _matched(outcome, rows)
        return False, await db.fetch_one(conn, _SEATS_READ, {"id": flight_id}, times)


def _matched(
    outcome: db.Outcome, rows: list[dict[str, Any]]
) -> tuple[bool, dict[str, Any] | None]:
    """MySQL: what `_change_seats` returns, from its UPDATE's outcome and the flight read
    after it (whose free seats may already be a later booking's)."""
    flight = rows[0] if rows else None
    if outcome.rowcount != 1:
        return False, flight
    if flight is not None:
        flight["totalSeats"] = outcome.lastrowid  # what this UPDATE left
    return True, flight


_SEATS_READ = f"SELECT {_SEATS_COLUMNS} FROM flights WHERE id = :id"
_RECORD = (
    "INSERT INTO reservations (id, flightId, seats, status, createdAt, updatedAt)"
    " VALUES (:key, :id, :seats, :held, :now, :now)"
)
_FORGET_IF_NOT_TAKEN = "DELETE FROM reservations WHERE id = :key AND ROW_COUNT() = 0"
"""A keyed seat change is its record, the UPDATE, and this, in one transaction: the record
is deleted again if the UPDATE took nothing (`ROW_COUNT()`, the rows the statement before
matched). The record goes first, as in `release_reservation` and `reserve_seats_once`:
a reservation and the release of its key lock the key's row and then the flight's in the
same order, so when they race one waits for the other instead of both deadlocking."""


# --- retention -----------------------------------------------------------------------------


async def prune_reservations(
    database: Database, before: datetime, batch: int = retention.BATCH
) -> int:
    """Delete the reservations no caller can need any more; returns how many were deleted.

    A released one once it was released before `before`: until then a reservation
    arriving late under its key must find it (and take nothing), and a release sent again
    must find it (and give nothing more). Any reservation of a flight that departed before
    `before`, or was deleted: its booking may still be cancelled, but the seats of a flight
    gone no longer matter. Held reservations of flights still to come are kept, so that
    cancelling a booking gives its seats back by its key.
    """
    done = (
        "((status = :released AND updatedAt < :before) OR NOT EXISTS (SELECT 1 FROM flights"
        " WHERE flights.id = reservations.flightId AND flights.departureTime >= :before))"
    )
    values = {"released": RELEASED, "before": before}
    return await retention.delete_done(
        database, "reservations", done, values, batch, below_every_id=""
    )
