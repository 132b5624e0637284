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
BATCH = 10_000


async def delete_done(
    database: Database,
    table: str,
    done: str,
    values: Mapping[str, Any],
    batch: int = BATCH,
    below_every_id: int | str = 0,
) -> int:
    """Delete the rows of `table` for which the SQL condition `done` holds, `batch` at a
    time in order of their `id`; returns how many were deleted. `below_every_id` is less
    than any id: 0 for positive integers, "" for text (MySQL would compare text with 0 as
    a number).

    Each round finds the highest id among the `batch` oldest such rows and deletes those up
    to it (a DELETE with LIMIT, or a LIMIT inside IN, is refused by SQLite or MariaDB). Both
    statements walk the primary key, each round from where the last one stopped, so no
    index on `done` is needed: rows kept among the old ones (tickets waiting for a far
    departure) are walked past once per call, not once per round.
    """
    edge = (
        f"SELECT MAX(id) AS edge FROM (SELECT id FROM {table}"
        f" WHERE id > :after AND {done} ORDER BY id LIMIT :batch) AS oldest"
    )
    delete = f"DELETE FROM {table} WHERE id > :after AND id <= :edge AND {done}"
    values = {**values, "batch": batch, "after": below_every_id}
    deleted = 0
    async with database.connection() as conn:
        while True:
            found = await db.fetch_one(conn, edge, values)
            if found is None or found["edge"] is None:
                return deleted
            deleted += await db.rowcount(conn, delete, {**values, "edge": found["edge"]})
            values["after"] = found["edge"]


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
