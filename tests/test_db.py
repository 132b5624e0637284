"""`db.transaction`: what it commits and what it rolls back, on both databases."""

from __future__ import annotations

import asyncio

import pytest

from airbourne import db
from airbourne.services.booking.schema import MIGRATIONS

pytestmark = pytest.mark.anyio

INSERT = "INSERT INTO outbox (messageId, kind, routingKey, body, createdAt, attempts)" \
    " VALUES (:id, 'test', '', '{}', :now, 0)"


async def ids(database) -> list[str]:
    async with database.connection() as conn:
        return [row["messageId"] for row in
                await db.fetch_all(conn, "SELECT messageId FROM outbox ORDER BY id", {})]


@pytest.fixture
async def database(database_url: str):
    database = await db.connect(database_url)
    await db.migrate(database, "booking", MIGRATIONS)
    yield database
    await db.disconnect(database)


async def test_a_transaction_commits_its_statements_together(database) -> None:
    async with database.connection() as conn:
        async with db.transaction(conn):
            await db.run(conn, INSERT, {"id": "a", "now": db.utcnow()})
            await db.run(conn, INSERT, {"id": "b", "now": db.utcnow()})
    assert await ids(database) == ["a", "b"]


async def test_an_error_rolls_back_every_statement_and_the_connection_goes_on(database) -> None:
    async with database.connection() as conn:
        with pytest.raises(db.IntegrityErrors):
            async with db.transaction(conn):
                await db.run(conn, INSERT, {"id": "a", "now": db.utcnow()})
                await db.run(conn, INSERT, {"id": "a", "now": db.utcnow()})  # unique messageId
        async with db.transaction(conn):
            await db.run(conn, INSERT, {"id": "b", "now": db.utcnow()})
    assert await ids(database) == ["b"]


async def test_a_cancelled_transaction_is_rolled_back(database) -> None:
    started = asyncio.Event()

    async def interrupted() -> None:
        async with database.connection() as conn:
            async with db.transaction(conn):
                await db.run(conn, INSERT, {"id": "a", "now": db.utcnow()})
                started.set()
                await asyncio.sleep(10)

    task = asyncio.create_task(interrupted())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await ids(database) == []


async def test_an_error_after_the_database_ended_the_transaction_is_the_one_raised(
    database,
) -> None:
    """SQLite rolls a transaction back by itself after some errors (a full disk); rolling
    back again would fail and hide the error that matters."""
    async with database.connection() as conn:
        with pytest.raises(RuntimeError, match="the error that matters"):
            async with db.transaction(conn):
                await db.run(conn, INSERT, {"id": "a", "now": db.utcnow()})
                await db.run(conn, "ROLLBACK", {})  # as the database does
                raise RuntimeError("the error that matters")
    assert await ids(database) == []


async def test_a_transaction_inside_another_is_refused(database) -> None:
    """On MySQL a second BEGIN would commit the first transaction's statements at once."""
    async with database.connection() as conn:
        with pytest.raises(RuntimeError, match="does not nest"):
            async with db.transaction(conn):
                await db.run(conn, INSERT, {"id": "a", "now": db.utcnow()})
                async with db.transaction(conn):
                    await db.run(conn, INSERT, {"id": "b", "now": db.utcnow()})
    assert await ids(database) == []
