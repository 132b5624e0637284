"""Booking ids, drawn from the database in blocks.

A booking's outbox rows carry its id (the emails name the booking), so the id must be known
before they are written. Were the database to number bookings (AUTO_INCREMENT), the INSERT
would have to go to the server and back before the outbox rows could be made: on MariaDB a
trip of its own. With the id known beforehand, the booking, its outbox rows and the COMMIT
go in one trip (see `db.Transaction`), and a booking is two trips instead of three.

Each process takes `BLOCK` ids at a time from the `id_blocks` row, a counter that only goes
up (and never starts a block below an id in use), and gives them out in order. An id is
never given out twice, even across processes and restarts; the rest of a block is skipped
when a process stops (a gap, as a rolled-back AUTO_INCREMENT leaves). With several
processes, ids are not in the order bookings were made: lists order by `createdAt`.
"""

from __future__ import annotations

import asyncio

import aiosqlite
from databases.core import Connection

from airbourne import db

BLOCK = 100
"""Ids drawn at a time: a read and an UPDATE per hundred bookings."""

_AFTER_IN_USE = "SELECT COALESCE(MAX(id), 0) + 1 AS after FROM bookings"
"""A block starts after the last block drawn and after every id in use, should bookings have
been numbered by something else meanwhile (an older Airbourne, run again after a rollback,
lets the database number them). MAX(id) reads one end of the primary key.

A read of its own, not a subquery of the UPDATE below: there MariaDB reads it with locks,
waiting for a row another process has written but not committed and holding the gap after
it, and a transaction writing several bookings, which needs that gap for its next row,
deadlocked with the draw. Bookings of this code are numbered by the counter alone; the read
only has to see what was committed before."""

_DRAW = {
    # MariaDB has no UPDATE ... RETURNING: LAST_INSERT_ID(expr) puts the new value in the
    # statement's reply, where an insert id goes (as the flights' seat change does).
    "mysql": (
        "UPDATE id_blocks SET nextId = LAST_INSERT_ID(GREATEST(nextId, :after) + :size)"
        " WHERE name = :name"
    ),
    "sqlite": (
        "UPDATE id_blocks SET nextId = max(nextId, :after) + :size"
        " WHERE name = :name RETURNING nextId"
    ),
}


class BookingIds:
    """The ids of one process's bookings on one database."""

    def __init__(self, block: int = BLOCK) -> None:
        if block < 1:
            raise ValueError(f"a block holds at least one id, not {block}")
        self._block = block
        self._next = self._end = 0
        self._drawing = asyncio.Lock()

    async def take(self, conn: Connection) -> int:
        """The next id, drawing a new block over `conn` (outside any transaction, so that
        the block stays drawn whatever becomes of the caller's) when this one is used up."""
        while self._next >= self._end:
            async with self._drawing:  # one draw for all who find the block used up
                if self._next >= self._end:
                    end = await _draw(conn, self._block)
                    self._next, self._end = end - self._block, end
        taken = self._next
        self._next += 1
        return taken


async def _draw(conn: Connection, size: int) -> int:
    """Move the counter on by `size`; the end of the block drawn (the new `nextId`)."""
    after = (await db.fetch_one(conn, _AFTER_IN_USE, {}))["after"]
    values = {"after": after, "size": size, "name": "bookings"}
    if isinstance(conn.raw_connection, aiosqlite.Connection):
        row = await db.fetch_one(conn, _DRAW["sqlite"], values)
        end = None if row is None else row["nextId"]
    else:
        outcome = await db.run(conn, _DRAW["mysql"], values)
        end = outcome.lastrowid if outcome.rowcount else None
    if end is None:
        raise RuntimeError("id_blocks has no 'bookings' row: the booking migrations did not run")
    return end
