"""Booking ids drawn in blocks: never the same id twice, however many takers and
processes, so that a booking's id is known before its row is written."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from databases import Database

from airbourne import db
from airbourne.services.booking.ids import BookingIds
from airbourne.services.booking import SERVICE as BOOKING
from airbourne.services.booking.schema import bookings, id_blocks

pytestmark = pytest.mark.anyio


async def _take(database: Database, ids: BookingIds) -> int:
    async with database.connection() as conn:
        return await ids.take(conn)


async def test_takers_at_once_get_every_id_once_and_one_draw_per_block(
    booking_database: Database,
) -> None:
    ids = BookingIds(block=10)
    taken = await asyncio.gather(*(_take(booking_database, ids) for _ in range(95)))
    assert sorted(taken) == list(range(1, 96))
    next_id = await booking_database.fetch_val(sa.select(id_blocks.c.nextId))
    assert next_id == 101  # ten blocks drawn, not one per taker


async def test_processes_and_restarts_never_give_out_an_id_twice(booking_database: Database) -> None:
    first, second = BookingIds(block=5), BookingIds(block=5)  # as two processes
    taken = []
    for _ in range(12):
        taken += [await _take(booking_database, first), await _take(booking_database, second)]
    restarted = BookingIds(block=5)  # the first process again: its block's rest is skipped
    taken.append(await _take(booking_database, restarted))
    assert len(set(taken)) == len(taken)
    assert taken[:4] == [1, 6, 2, 7]
    assert taken[-1] == 31


async def test_a_database_without_the_counter_says_so(booking_database: Database) -> None:
    await booking_database.execute(id_blocks.delete())
    with pytest.raises(RuntimeError, match="id_blocks has no 'bookings' row"):
        await _take(booking_database, BookingIds())


async def test_a_block_starts_after_bookings_numbered_by_something_else(
    booking_database: Database,
) -> None:
    """An older Airbourne run again after a rollback lets the database number bookings,
    past the counter: the next block starts after them instead of clashing."""
    now = db.utcnow()
    row = {"flightId": 1, "userId": 2, "NoOfSeats": 3, "totalCost": 300, "status": "Booked",
           "createdAt": now, "updatedAt": now}
    ids = BookingIds(block=10)
    assert await _take(booking_database, ids) == 1
    await booking_database.execute(bookings.insert().values(**row, id=57))
    later = BookingIds(block=10)  # a process started after the rollback
    assert await _take(booking_database, later) == 58



@pytest.mark.mysql
async def test_a_draw_does_not_deadlock_with_bookings_written_together(mysql_url: str) -> None:
    """Another process writes several bookings in one transaction (`store.Writer`) while
    this one draws a block. A draw that read MAX(id) as a locking read (the subquery of an
    UPDATE) waited for the first uncommitted row and held the gap after the last one, which
    the second row needed: InnoDB killed one of them, and with it every booking of the
    batch (95 failed requests in a two-worker closed loop)."""
    here, there = await db.connect(mysql_url), await db.connect(mysql_url)
    try:
        await db.migrate(here, "booking", BOOKING.migrations)
        now = db.utcnow()
        row = {"flightId": 1, "userId": 2, "NoOfSeats": 3, "totalCost": 300,
               "status": "Booked", "createdAt": now, "updatedAt": now}
        insert = db.insert_sql(bookings, ("id", *row))
        async with there.connection() as conn:
            async with db.transaction(conn):
                await db.run(conn, insert, {**row, "id": 1})  # the batch's first row
                drawing = asyncio.create_task(_take(here, BookingIds(block=10)))
                await asyncio.sleep(0.3)  # the draw reads while the batch is open
                await db.run(conn, insert, {**row, "id": 2})  # and its second
        assert await asyncio.wait_for(drawing, 10) >= 1
    finally:
        await db.disconnect(here)
        await db.disconnect(there)
