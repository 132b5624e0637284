"""The booking service's SQL: bookings, written together with their outbox rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Sequence

import sqlalchemy as sa
from databases import Database

from airbourne import db
from airbourne.batch import Batch, outcome
from airbourne.services.booking import outbox
from airbourne.services.booking.ids import BookingIds
from airbourne.services.booking.outbox import OutboxMessage
from airbourne.services.booking.schema import BOOKED, CANCELLED, bookings

Booking = dict[str, Any]
Messages = Callable[[Booking, datetime], Sequence[OutboxMessage]]
"""Given the booking as written and the time of writing, the outbox rows to go with it."""

RECORD = [
    bookings.c.id, bookings.c.flightId, bookings.c.userId, bookings.c.NoOfSeats,
    bookings.c.totalCost, bookings.c.status, bookings.c.createdAt, bookings.c.updatedAt,
]
"""The columns of a booking on the wire (the idempotency key stays private)."""


class KeyAlreadyUsed(Exception):
    """Another booking of the same user has this idempotency key."""


class MaybeWritten(Exception):
    """The booking's COMMIT got no answer: `booking` (with the id it was given) may have
    been written or not. `was_written` tells, once the database answers."""

    def __init__(self, booking: Booking) -> None:
        super().__init__(f"booking {booking['id']}: no answer to its COMMIT")
        self.booking = booking


@dataclass(frozen=True)
class NewBooking:
    """A booking to write: its seats are reserved, its id is not drawn yet."""

    flight_id: int
    user_id: int
    seats: int
    total_cost: int
    idempotency_key: str | None
    reservation_key: str | None
    messages: Messages


class Writer:
    """Writes new bookings with their outbox rows.

    The bookings that arrive while one transaction is being written wait, and are then
    written together in the next: one COMMIT, and one trip to MySQL or one call to the SQLite
    file's thread, for all of them. On SQLite a file has one connection, held by a
    transaction until its COMMIT, and one at a time each booking held booking.db for 2.7 ms
    under load while the others queued for it. On MySQL each trip costs the event loop a
    send() and a wake-up, and MariaDB a transaction: written together, a booking costs
    both less CPU.

    Each booking still succeeds or fails alone: a key used before fails such a transaction
    as a whole, and its bookings are then written one by one, so that only that booking
    fails; a COMMIT that got no answer leaves each of them `MaybeWritten`.
    """

    def __init__(self, database: Database, ids: BookingIds) -> None:
        self.database = database
        self.ids = ids
        self._together = Batch(self._write_together, "booking: writer")

    async def write(self, new: NewBooking) -> Booking:
        """What `create_booking` returns and raises."""
        return await self._together.submit(new)

    async def _write_together(self, batch: list[NewBooking]) -> list[Booking | Exception]:
        if len(batch) > 1:
            now = db.utcnow()
            async with self.database.connection() as conn:
                made = [_booking(await self.ids.take(conn), new, now) for new in batch]
                try:
                    async with db.transaction(conn) as tx:
                        await tx.insert(bookings, [_row(*pair, now) for pair in zip(made, batch)])
                        messages = [m for b, new in zip(made, batch) for m in new.messages(b, now)]
                        await outbox.add(tx, messages, now)
                    return made
                except db.IntegrityErrors:
                    pass  # one by one, below
                except db.CommitUnknown:
                    return [MaybeWritten(booking) for booking in made]
        return [await outcome(create_booking(self.database, self.ids, new)) for new in batch]


async def create_booking(database: Database, ids: BookingIds, new: NewBooking) -> Booking:
    """Insert a `Booked` booking and its outbox rows in one transaction: on MySQL in one
    trip, its id drawn beforehand from `ids`. Raises `KeyAlreadyUsed` for an idempotency
    key the user gave another booking, and on MySQL `MaybeWritten` for a COMMIT that got
    no answer."""
    now = db.utcnow()
    async with database.connection() as conn:
        booking = _booking(await ids.take(conn), new, now)
        try:
            async with db.transaction(conn) as tx:
                await tx.insert(bookings, [_row(booking, new, now)])
                await outbox.add(tx, new.messages(booking, now), now)
        except db.IntegrityErrors:
            if new.idempotency_key is None:
                raise  # not a key clash: the caller gives the seats back as for any failure
            raise KeyAlreadyUsed(new.idempotency_key) from None
        except db.CommitUnknown as exc:
            raise MaybeWritten(booking) from exc
    return booking


def _booking(booking_id: int, new: NewBooking, now: datetime) -> Booking:
    """The booking as the API shows it."""
    stamp = db.iso(now)
    return {
        "id": booking_id, "flightId": new.flight_id, "userId": new.user_id,
        "NoOfSeats": new.seats, "totalCost": new.total_cost, "status": BOOKED,
        "createdAt": stamp, "updatedAt": stamp,
    }


def _row(booking: Booking, new: NewBooking, now: datetime) -> dict[str, Any]:
    """The booking as its table holds it."""
    return {
        **booking, "createdAt": now, "updatedAt": now,
        "idempotencyKey": new.idempotency_key, "reservationKey": new.reservation_key,
    }


async def was_written(database: Database, booking: Booking) -> bool:
    """Whether `booking`, whose COMMIT got no answer, is in the table. Its id settles it:
    no id is given out twice (see `ids.py`).

    On MySQL a locking read: if the server has not yet ended the transaction (its
    connection is gone on our side but not yet on the server's), the read waits for the
    COMMIT or the rollback instead of reading past an uncommitted row."""
    read = _WRITTEN if db.is_sqlite(database) else _WRITTEN + " LOCK IN SHARE MODE"
    async with database.connection() as conn:
        row = await db.fetch_one(conn, read, {"id": booking["id"]})
    return row is not None and row == {
        "flightId": booking["flightId"], "userId": booking["userId"],
        "NoOfSeats": booking["NoOfSeats"],
    }


_WRITTEN = "SELECT flightId, userId, NoOfSeats FROM bookings WHERE id = :id"


async def get_booking(database: Database, booking_id: int) -> Booking | None:
    row = await database.fetch_one(sa.select(*RECORD).where(bookings.c.id == booking_id))
    return None if row is None else db.as_dict(row)


async def find_by_key(database: Database, user_id: int, key: str) -> Booking | None:
    row = await database.fetch_one(
        sa.select(*RECORD).where(bookings.c.userId == user_id, bookings.c.idempotencyKey == key)
    )
    return None if row is None else db.as_dict(row)


async def list_bookings(
    database: Database, user_id: int, limit: int, offset: int
) -> list[Booking]:
    """The bookings of `user_id`, oldest first (ids follow that order only within one
    process, see `ids.py`)."""
    rows = await database.fetch_all(
        sa.select(*RECORD)
        .where(bookings.c.userId == user_id)
        .order_by(bookings.c.createdAt, bookings.c.id)
        .limit(limit)
        .offset(offset)
    )
    return [db.as_dict(row) for row in rows]


_READ_FOR_CANCEL = (
    f"SELECT {', '.join(column.name for column in RECORD)}, reservationKey"
    f" FROM {bookings.name} WHERE id = :id"
)


async def cancel_booking(
    database: Database, booking_id: int, messages: Messages
) -> Booking | None:
    """Turn a `Booked` booking `Cancelled` and write its outbox rows, in one transaction.
    A booking already cancelled is left as it is, so a repeated call writes nothing.
    `messages` is given the booking with its `reservationKey`; the answer has none."""
    now = db.utcnow()
    async with database.connection() as conn:
        async with db.transaction(conn) as tx:
            changed = await db.rowcount(
                conn,
                "UPDATE bookings SET status = :cancelled, updatedAt = :now"
                " WHERE id = :id AND status = :booked",
                {"cancelled": CANCELLED, "booked": BOOKED, "now": now, "id": booking_id},
            )
            row = await db.fetch_one(
                conn, _READ_FOR_CANCEL, {"id": booking_id}, ("createdAt", "updatedAt")
            )
            if row is None:
                return None
            booking = db.jsonable(row)
            if changed:
                await outbox.add(tx, messages(booking, now), now)
    del booking["reservationKey"]
    return booking


async def add_messages(database: Database, messages: Sequence[OutboxMessage]) -> None:
    """Write outbox rows on their own: work owed with no booking change to go with it."""
    now = db.utcnow()
    async with database.connection() as conn:
        async with db.transaction(conn) as tx:
            await outbox.add(tx, messages, now)

