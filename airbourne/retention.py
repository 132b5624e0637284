"""Deleting the rows of finished work once they are old enough, so that tables that record
work (the booking outbox, the reminder's tickets) do not grow for ever.

Rows go in batches of the oldest first, each batch one short statement, so a busy table is
never locked for long. A job runs every hour; a round that fails (the database is away) is
logged and the next one deletes what it left.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Mapping

from databases import Database

from airbourne import db

EVERY_SECONDS = 3600.0
BATCH = 500
"""Rows per DELETE: each names its rows, and SQLite before 3.32 takes at most 999 values."""


async def delete_done(
    database: Database,
    table: str,
    done: str,
    values: Mapping[str, Any],
    batch: int = BATCH,
    below_every_id: int | str = 0,
    key: str = "id",
) -> int:
    """Delete the rows of `table` for which the SQL condition `done` holds, `batch` at a
    time in order of their primary key `key`; returns how many were deleted.
    `below_every_id` is less than any key: 0 for positive integers, "" for text (MySQL
    would compare text with 0 as a number).

    Each round finds the keys of the `batch` oldest such rows with a plain SELECT, which
    locks nothing, then deletes those rows by key, `done` checked again. Deleting a range of
    keys instead locked, on InnoDB, every row and gap of the range, kept rows included, and
    the rows of other tables that `done` reads: a booking recording its reservation under
    a key that fell in the range deadlocked with the prune (1213), about one in fifty of the
    seat changes made while it ran. The SELECT walks the primary key from where the last
    round stopped, so no index on `done` is needed: rows kept among the old ones (tickets
    waiting for a far departure) are walked past once per call, not once per round.
    """
    find = f"SELECT {key} FROM {table} WHERE {key} > :after AND {done} ORDER BY {key} LIMIT :batch"
    values = {**values, "batch": batch, "after": below_every_id}
    deleted = 0
    async with database.connection() as conn:
        while found := [row[key] for row in await db.fetch_all(conn, find, values)]:
            listed, named = db.in_list("key", found)
            delete = f"DELETE FROM {table} WHERE {key} IN {listed} AND {done}"
            deleted += await db.rowcount(conn, delete, {**values, **named})
            values["after"] = found[-1]
    return deleted


async def every_hour(
    what: str, delete: Callable[[], Awaitable[int]], logger: logging.Logger
) -> None:
    """Run `delete` now and then every hour until cancelled, logging what it deleted."""
    while True:
        try:
            if deleted := await delete():
                logger.info("deleted %d %s", deleted, what)
        except Exception:  # the database is away: the next round deletes them
            logger.exception("deleting %s failed; trying again in an hour", what)
        await asyncio.sleep(EVERY_SECONDS)
