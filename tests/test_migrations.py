"""Migrations that change a table: an old database gains the column and keeps its rows; a
new one, built as the table is defined now, passes the step by."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, sqlite

from airbourne import db
from airbourne.db import Migration, create_tables
from airbourne.services.booking.ids import BookingIds
from airbourne.services.booking.schema import MIGRATIONS, bookings, id_blocks, outbox
from airbourne.services.reminder import schema as reminder_schema, store as reminder_store
from airbourne.services.reminder.schema import tickets

pytestmark = pytest.mark.anyio

FIRST = sa.Table(  # bookings as migration 1 built it, before `reservationKey`
    "bookings", sa.MetaData(),
    *(
        sa.Column(column.name, column.type, primary_key=column.primary_key,
                  nullable=column.nullable)
        for column in bookings.columns if column.name != "reservationKey"
    ),
)


async def test_an_old_bookings_table_gains_the_reservation_key(database_url: str) -> None:
    database = await db.connect(database_url)
    try:
        first = [Migration(1, "bookings and outbox tables", create_tables(FIRST, outbox))]
        assert await db.migrate(database, "booking", first) == [1]
        now = db.utcnow()
        row = {"flightId": 1, "userId": 2, "NoOfSeats": 3, "totalCost": 300, "status": "Booked",
               "createdAt": now, "updatedAt": now}
        await database.execute(FIRST.insert().values(**row))

        assert await db.migrate(database, "booking", MIGRATIONS) == [2, 3, 4, 5]
        assert await db.migrate(database, "booking", MIGRATIONS) == []
        kept = await database.fetch_one(sa.select(bookings.c.NoOfSeats, bookings.c.reservationKey))
        assert (kept[0], kept[1]) == (3, None)
        await database.execute(bookings.insert().values(**row, reservationKey="k" * 64))
    finally:
        await db.disconnect(database)


async def test_a_new_database_passes_the_added_column_by(database_url: str) -> None:
    database = await db.connect(database_url)
    try:
        assert await db.migrate(database, "booking", MIGRATIONS) == [1, 2, 3, 4, 5]
        await database.fetch_all(sa.select(bookings.c.reservationKey))
        assert "ix_bookings_user_created" in await index_names(database, "bookings")
    finally:
        await db.disconnect(database)


async def test_booking_ids_start_after_the_last_booking_the_database_numbered(
    database_url: str,
) -> None:
    """Before migration 3 the database numbered bookings; the ids drawn since go on after
    the last of them. A run stopped after the counter's row, before being recorded, does
    not write it again when repeated."""
    database = await db.connect(database_url)
    try:
        assert await db.migrate(database, "booking", MIGRATIONS[:2]) == [1, 2]
        now = db.utcnow()
        row = {"flightId": 1, "userId": 2, "NoOfSeats": 3, "totalCost": 300, "status": "Booked",
               "createdAt": now, "updatedAt": now}
        for _ in range(3):
            await database.execute(bookings.insert().values(**row))
        await database.execute(bookings.insert().values(**row, id=41))
        assert await db.migrate(database, "booking", MIGRATIONS) == [3, 4, 5]
        async with database.connection() as conn:
            await MIGRATIONS[2].apply(conn, database.url.dialect)  # a repeated run
            assert await BookingIds(block=10).take(conn) == 42
        rows = await database.fetch_all(sa.select(id_blocks.c.name, id_blocks.c.nextId))
        assert [(row[0], row[1]) for row in rows] == [("bookings", 52)]
    finally:
        await db.disconnect(database)


async def test_an_old_bookings_table_gains_the_index_its_users_lists_are_read_from(
    database_url: str,
) -> None:
    """Migration 4 indexes a table built before it, keeping its rows; a run stopped after
    the index, before being recorded, passes it by when repeated."""
    database = await db.connect(database_url)
    try:
        first = [Migration(1, "bookings and outbox tables", create_tables(FIRST, outbox))]
        assert await db.migrate(database, "booking", first) == [1]
        assert "ix_bookings_user_created" not in await index_names(database, "bookings")
        assert await db.migrate(database, "booking", MIGRATIONS) == [2, 3, 4, 5]
        assert "ix_bookings_user_created" in await index_names(database, "bookings")
        async with database.connection() as conn:
            await MIGRATIONS[3].apply(conn, database.url.dialect)  # a repeated run
    finally:
        await db.disconnect(database)


async def index_names(database, table: str) -> set[str]:
    if database.url.dialect == "sqlite":
        return {row[1] for row in await database.fetch_all(f"PRAGMA index_list({table})")}
    rows = await database.fetch_all(
        "SELECT index_name FROM information_schema.statistics"
        " WHERE table_schema = DATABASE() AND table_name = :table", {"table": table}
    )
    return {row[0] for row in rows}


async def test_tickets_of_one_status_are_paged_off_an_index_not_sorted(
    database_url: str,
) -> None:
    """Reminder migration 2 indexes a tickets table built before it; a page of one status
    is then read in id order off that index (before it, every ticket of the status was
    sorted for each page: most are SUCCESS, kept for 30 days)."""
    database = await db.connect(database_url)
    try:
        first = reminder_schema.MIGRATIONS[:1]
        assert await db.migrate(database, "reminder", first) == [1]
        async with database.connection() as conn:  # as migration 1 built it before the index
            await conn.execute("DROP INDEX ix_tickets_status" + (
                "" if database.url.dialect == "sqlite" else " ON tickets"))
        await add_tickets(database, 300)
        page = reminder_store.page_query("SUCCESS", 20, 40)
        assert await sorts(database, page)
        assert await db.migrate(database, "reminder", reminder_schema.MIGRATIONS[:2]) == [2]
        assert not await sorts(database, page)
        assert not await sorts(database, reminder_store.page_query(None, 20, 40))
        async with database.connection() as conn:
            await reminder_schema.MIGRATIONS[1].apply(conn, database.url.dialect)  # repeated
        listed = await reminder_store.list_tickets(database, "SUCCESS", 20, 40)
        assert [ticket["id"] for ticket in listed] == list(range(122, 182, 3))
    finally:
        await db.disconnect(database)


async def test_a_reminder_database_from_before_cancelled_bookings_gets_their_table(
    database_url: str,
) -> None:
    """Reminder migration 3 adds the record of cancelled bookings beside existing tickets."""
    database = await db.connect(database_url)
    try:
        assert await db.migrate(database, "reminder", reminder_schema.MIGRATIONS[:2]) == [1, 2]
        await add_tickets(database, 3)
        assert await db.migrate(database, "reminder", reminder_schema.MIGRATIONS) == [3]
        await reminder_store.cancel_booking_tickets(database, 7)
        assert await database.fetch_val("SELECT bookingId FROM cancelled_bookings") == 7
        assert len(await reminder_store.list_tickets(database, None, 10, 0)) == 3
    finally:
        await db.disconnect(database)


async def add_tickets(database, count: int) -> None:
    """`count` tickets, ids 1.., every third one PENDING, SUCCESS, FAILED in turn."""
    now = db.utcnow()
    statuses = ("PENDING", "SUCCESS", "FAILED")
    await database.execute_many(db.insert_sql(tickets, TICKET_COLUMNS), [
        {"id": i, "subject": "s", "content": "c", "recepientEmail": "a@example.com",
         "status": statuses[(i - 1) % 3], "notificationTime": now, "attempts": 0,
         "nextAttemptAt": now, "createdAt": now, "updatedAt": now}
        for i in range(1, count + 1)
    ])
    if database.url.dialect == "mysql":
        await database.execute("ANALYZE TABLE tickets")


TICKET_COLUMNS = ("id", "subject", "content", "recepientEmail", "status", "notificationTime",
                  "attempts", "nextAttemptAt", "createdAt", "updatedAt")


async def sorts(database, query: sa.Select) -> bool:
    """Whether the database's plan for `query` sorts its rows instead of reading them off
    an index in order."""
    if database.url.dialect == "sqlite":
        sql = str(query.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
        plan = await database.fetch_all("EXPLAIN QUERY PLAN " + sql)
        return any("TEMP B-TREE" in row[3] for row in plan)
    sql = str(query.compile(dialect=mysql.dialect(), compile_kwargs={"literal_binds": True}))
    plan = await database.fetch_all("EXPLAIN " + sql)
    return any("filesort" in (row._mapping["Extra"] or "") for row in plan)
