"""The booking service's tables: bookings and the outbox of messages still to be relayed.

`flightId` and `userId` name records of other services, so they carry no foreign key: each
service owns its own tables (and may have its own database).
"""

from __future__ import annotations

import sqlalchemy as sa
from databases.core import Connection

from airbourne.db import (
    Migration, add_columns, add_indexes, create_tables, record_columns, timestamp_column,
)
from airbourne.services.flights.schema import RESERVATION_KEY_MAX

BOOKED = "Booked"
CANCELLED = "Cancelled"
IN_PROCESS = "InProcess"

metadata = sa.MetaData()

bookings = sa.Table(
    "bookings",
    metadata,
    *record_columns(),
    sa.Column("flightId", sa.Integer, nullable=False),
    sa.Column("userId", sa.Integer, nullable=False),
    sa.Column("NoOfSeats", sa.Integer, nullable=False),
    sa.Column("totalCost", sa.BigInteger, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("idempotencyKey", sa.String(255)),
    # The flights service's key for the seats, when they were reserved over HTTP: a release
    # under it happens once however often it is sent (see clients/flights.py).
    sa.Column("reservationKey", sa.String(RESERVATION_KEY_MAX)),
    # Two requests with the same key cannot both book; NULL keys never clash.
    sa.UniqueConstraint("userId", "idempotencyKey", name="uq_bookings_user_key"),
    # A user's bookings in the order they are listed: a page is read off the index instead
    # of sorting all of the user's bookings for every request.
    sa.Index("ix_bookings_user_created", "userId", "createdAt", "id"),
)

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("messageId", sa.String(32), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("routingKey", sa.String(255), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    timestamp_column("createdAt", nullable=False),
    timestamp_column("sentAt"),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("lastError", sa.String(500)),
    sa.UniqueConstraint("messageId", name="uq_outbox_message"),
    sa.Index("ix_outbox_unsent", "sentAt", "id"),
    # The seat releases still unsent, in order, for the relay's release lane: found among
    # all unsent rows, each of them was read, and while the broker is away notifications
    # pile up unsent (374 ms a look with 200,000 waiting, once a second).
    sa.Index("ix_outbox_kind_unsent", "kind", "sentAt", "id"),
)
"""A row is unsent while `sentAt` is NULL. `kind` says what relaying it means: publishing
`body` with `routingKey`, or for `release_seats` giving seats back to the flights service."""

id_blocks = sa.Table(
    "id_blocks",
    metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("nextId", sa.BigInteger, nullable=False),
)
"""Where each process draws its next block of booking ids (see `ids.py`): `nextId` is the
first id not yet given out."""


async def _start_booking_ids(conn: Connection, dialect_name: str) -> None:
    """Create `id_blocks` and start the bookings' counter after the last id in use.

    Airbourne before this migration let the database number bookings (AUTO_INCREMENT).
    Going back to such a version and forward again is safe: a block starts after every id
    in use. Running both on one database at once is not: the database could number a
    booking with an id of a block a process has drawn but not yet used."""
    await create_tables(id_blocks)(conn, dialect_name)
    await conn.execute(  # not again if a run stopped after it, before being recorded
        "INSERT INTO id_blocks (name, nextId)"
        " SELECT 'bookings', next_id FROM (SELECT COALESCE(MAX(id), 0) + 1 AS next_id"
        " FROM bookings) AS last WHERE NOT EXISTS"
        " (SELECT 1 FROM id_blocks WHERE name = 'bookings')"
    )


MIGRATIONS = [
    Migration(1, "bookings and outbox tables", create_tables(bookings, outbox)),
    Migration(2, "the reservation key of a booking's seats",
              add_columns(bookings, "reservationKey")),
    Migration(3, "booking ids drawn in blocks", _start_booking_ids),
    Migration(4, "a user's bookings in the order they are listed",
              add_indexes(bookings, "ix_bookings_user_created")),
    Migration(5, "unsent outbox rows of one kind in order",
              add_indexes(outbox, "ix_outbox_kind_unsent")),
]
