"""`db.transaction` and `db.run_in_transaction`: what they commit and what they roll back,
on both databases."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from datetime import datetime
from urllib.parse import urlsplit

import pymysql
import pytest

from airbourne import db
from airbourne.services.booking.schema import MIGRATIONS, outbox

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


ROW = {"kind": "test", "routingKey": "", "body": "{}", "attempts": 0}


async def test_inserted_rows_commit_with_the_transaction_and_roll_back_with_it(database) -> None:
    """`Transaction.insert` holds its rows back on MySQL until the next statement or the
    COMMIT; they are in the transaction all the same."""
    now = db.utcnow()
    async with database.connection() as conn:
        with pytest.raises(RuntimeError, match="changed my mind"):
            async with db.transaction(conn) as tx:
                await tx.insert(outbox, [{"messageId": "a", **ROW, "createdAt": now}])
                raise RuntimeError("changed my mind")
        async with db.transaction(conn) as tx:
            await tx.insert(outbox, [{"messageId": m, **ROW, "createdAt": now} for m in "bc"])
            # a statement inside the transaction sees them: they go first
            seen = await db.fetch_all(conn, "SELECT messageId FROM outbox ORDER BY id", {})
            assert [row["messageId"] for row in seen] == ["b", "c"]
            await tx.insert(outbox, [{"messageId": "d", **ROW, "createdAt": now}])
    assert await ids(database) == ["b", "c", "d"]


async def test_inserted_rows_that_fail_at_commit_roll_everything_back(database) -> None:
    """A duplicate held back until the COMMIT: the server refused it before committing, so
    this is an integrity error, not a COMMIT of unknown outcome, and nothing is written."""
    now = db.utcnow()
    async with database.connection() as conn:
        with pytest.raises(db.IntegrityErrors):
            async with db.transaction(conn) as tx:
                await db.run(conn, INSERT, {"id": "a", "now": now})
                await tx.insert(outbox, [{"messageId": "a", **ROW, "createdAt": now}])
        async with db.transaction(conn):
            await db.run(conn, INSERT, {"id": "b", "now": now})
    assert await ids(database) == ["b"]


async def test_run_then_fetch_reads_what_the_statement_left(database) -> None:
    async with database.connection() as conn:
        await db.run(conn, INSERT, {"id": "a", "now": db.utcnow()})
        outcome, rows = await db.run_then_fetch(
            conn, "UPDATE outbox SET attempts = attempts + 2 WHERE messageId = :id",
            "SELECT messageId, attempts, createdAt FROM outbox WHERE messageId = :id",
            {"id": "a"}, times=("createdAt",),
        )
    assert outcome.rowcount == 1
    assert [(row["messageId"], row["attempts"]) for row in rows] == [("a", 2)]
    assert isinstance(rows[0]["createdAt"], datetime)


async def test_statements_mixed_in_a_transaction_all_commit(database) -> None:
    """A statement, then `run_many`, then held-back rows: each goes out after what the
    transaction owes, and values with `%` and quotes arrive as they were."""
    now = db.utcnow()
    odd = "50% off, 'quoted' %(not)s \\ done"
    async with database.connection() as conn:
        async with db.transaction(conn) as tx:
            await db.run(conn, INSERT, {"id": "a", "now": now})
            await db.run_many(conn, INSERT, [{"id": "b", "now": now}, {"id": "c", "now": now}])
            await tx.insert(outbox, [{"messageId": "d", **ROW, "body": odd, "createdAt": now}])
        rows = await db.fetch_all(conn, "SELECT body FROM outbox WHERE messageId = :id", {"id": "d"})
    assert await ids(database) == ["a", "b", "c", "d"]
    assert rows == [{"body": odd}]


async def test_run_in_transaction_commits_its_statements_then_reads(database) -> None:
    """The statements, the COMMIT and the read in one trip on MySQL: each statement's
    outcome, and rows that see what they committed."""
    now = db.utcnow()
    bump = "UPDATE outbox SET attempts = attempts + 1 WHERE messageId = :id"
    async with database.connection() as conn:
        values = {"id": "a", "now": now}
        outcomes, rows = await db.run_in_transaction(
            conn, [(INSERT, values), (bump, values), (bump, {"id": "nobody"})],
            ("SELECT messageId, attempts, createdAt FROM outbox WHERE messageId = :id", values),
            times=("createdAt",),
        )
    assert [outcome.rowcount for outcome in outcomes] == [1, 1, 0]
    assert [(row["messageId"], row["attempts"]) for row in rows] == [("a", 1)]
    assert isinstance(rows[0]["createdAt"], datetime)
    assert await ids(database) == ["a"]


async def test_run_in_transaction_rolls_back_every_statement_a_refusal_follows(database) -> None:
    """A duplicate in the second statement: the first is rolled back with it, and the
    connection takes the next transaction as if nothing had happened."""
    now = db.utcnow()
    async with database.connection() as conn:
        await db.run(conn, INSERT, {"id": "a", "now": now})
        with pytest.raises(db.IntegrityErrors):
            await db.run_in_transaction(
                conn, [(INSERT, {"id": "b", "now": now}), (INSERT, {"id": "a", "now": now})],
                ("SELECT 1 AS one", {}),
            )
        _, rows = await db.run_in_transaction(
            conn, [(INSERT, {"id": "c", "now": now})], ("SELECT 1 AS one", {})
        )
    assert rows == [{"one": 1}]
    assert await ids(database) == ["a", "c"]


async def test_run_in_transaction_inside_a_transaction_is_refused(database) -> None:
    async with database.connection() as conn:
        with pytest.raises(RuntimeError, match="does not nest"):
            async with db.transaction(conn):
                await db.run(conn, INSERT, {"id": "a", "now": db.utcnow()})
                await db.run_in_transaction(
                    conn, [(INSERT, {"id": "b", "now": db.utcnow()})], ("SELECT 1 AS one", {})
                )
    assert await ids(database) == []


def test_a_deadlock_is_answered_try_again_not_as_an_internal_error(mysql_url: str) -> None:
    """InnoDB rolls a deadlock's victim back whole and asks for the transaction again: a
    503 "try again" for its request (db.unavailable), not a 500. A real deadlock: two
    transactions each hold a row the other wants."""
    parts = urlsplit(mysql_url)
    name = parts.path.lstrip("/")
    admin = pymysql.connect(host=parts.hostname, port=parts.port or 3306, user="root",
                            autocommit=True)
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE `{name}`")
        cursor.execute(f"CREATE TABLE `{name}`.t (id INT PRIMARY KEY, n INT)")
        cursor.execute(f"INSERT INTO `{name}`.t VALUES (1, 0), (2, 0)")
    first, second = (
        pymysql.connect(host=parts.hostname, port=parts.port or 3306, user="root", database=name)
        for _ in range(2)
    )
    try:
        first.cursor().execute("UPDATE t SET n = 1 WHERE id = 1")
        second.cursor().execute("UPDATE t SET n = 2 WHERE id = 2")
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(first.cursor().execute, "UPDATE t SET n = 1 WHERE id = 2")
            time.sleep(0.2)  # first now waits for second's row
            with pytest.raises(pymysql.err.OperationalError) as raised:
                second.cursor().execute("UPDATE t SET n = 2 WHERE id = 1")
            waiting.result(timeout=10)
    finally:
        first.close()
        second.close()
        admin.close()
    assert raised.value.args[0] == 1213
    assert db.unavailable(raised.value)
