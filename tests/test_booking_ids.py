"""Booking ids drawn in blocks: never the same id twice, however many takers and
processes, so that a booking's id is known before its row is written."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

import pytest
import sqlalchemy as sa
from databases import Database

from airbourne import db
from airbourne.services.booking import SERVICE
from airbourne.services.booking.ids import BookingIds
from airbourne.services.booking.schema import bookings, id_blocks

pytestmark = pytest.mark.anyio


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    database = await db.connect(database_url)
    try:
        await db.migrate(database, "booking", SERVICE.migrations)
        yield database
    finally:
        await db.disconnect(database)


async def _take(database: Database, ids: BookingIds) -> int:
    async with database.connection() as conn:
        return await ids.take(conn)


async def test_takers_at_once_get_every_id_once_and_one_draw_per_block(
    database: Database,
) -> None:
    ids = BookingIds(block=10)
    taken = await asyncio.gather(*(_take(database, ids) for _ in range(95)))
    assert sorted(taken) == list(range(1, 96))
    next_id = await database.fetch_val(sa.select(id_blocks.c.nextId))
    assert next_id == 101  # ten blocks drawn, not one per taker


async def test_processes_and_restarts_never_give_out_an_id_twice(database: Database) -> None:
    first, second = BookingIds(block=5), BookingIds(block=5)  # as two processes
    taken = []
    for _ in range(12):
        taken += [await _take(database, first), await _take(database, second)]
    restarted = BookingIds(block=5)  # the first process again: its block's rest is skipped
    taken.append(await _take(database, restarted))
    assert len(set(taken)) == len(taken)
    assert taken[:4] == [1, 6, 2, 7]
    assert taken[-1] == 31


async def test_a_database_without_the_counter_says_so(database: Database) -> None:
    await database.execute(id_blocks.delete())
    with pytest.raises(RuntimeError, match="id_blocks has no 'bookings' row"):
        await _take(database, BookingIds())


async def test_a_block_starts_after_bookings_numbered_by_something_else(
    database: Database,
) -> None:
    """An older Airbourne run again after a rollback lets the database number bookings,
    past the counter: the next block starts after them instead of clashing."""
    now = db.utcnow()
    row = {"flightId": 1, "userId": 2, "NoOfSeats": 3, "totalCost": 300, "status": "Booked",
           "createdAt": now, "updatedAt": now}
    ids = BookingIds(block=10)
    assert await _take(database, ids) == 1
    await database.execute(bookings.insert().values(**row, id=57))
    later = BookingIds(block=10)  # a process started after the rollback
    assert await _take(database, later) == 58
