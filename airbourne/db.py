"""Database handles and versioned migrations.

Services use `databases.Database` with SQLAlchemy Core tables. Three things here make up for
gaps in `databases` 0.9:

- Its SQLite backend opens a new aiosqlite connection (and so a new thread) for every
  acquire. `_PooledSQLite` keeps a few open instead, with the busy timeout and foreign keys
  set once per connection; the file runs in WAL mode so readers never wait for a writer.
- Its transactions spend trips: on SQLite three to the connection's thread on each of
  BEGIN and COMMIT; on MySQL a statement alone is a trip to the server. `transaction()`
  sends the BEGIN and the COMMIT with other statements, on SQLite in one call to the
  connection's thread (see `Transaction`, `_on_sqlite`; `run_then_fetch` does the same for
  a change and a read). Inside a transaction, run statements with this module's
  functions; it does not nest.
- Its `execute()` returns `lastrowid` when that is non-zero and `rowcount` otherwise, which
  inside a transaction is ambiguous. `rowcount()` runs a statement on the driver connection
  and returns the number of rows the statement matched (on MySQL too, by the FOUND_ROWS
  flag), which conditional updates (seat reservations, status changes) depend on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import sqlite3
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence

import aiosqlite
import pymysql
import sqlalchemy as sa
from databases import Database
from databases.backends.sqlite import SQLitePool
from databases.core import Connection, DatabaseURL
from pymysql.constants.CLIENT import FOUND_ROWS
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.schema import CreateIndex, CreateTable

logger = logging.getLogger("airbourne.db")


@contextlib.contextmanager
def _quiet_ddl() -> Iterator[None]:
    """MariaDB answers `CREATE ... IF NOT EXISTS` on an existing object with a note, which
    aiomysql raises as a Python warning at every start: the expected case, not news."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", r".*(already exists|database exists|Duplicate key name)", pymysql.err.Warning
        )
        yield


def timestamp_column(name: str, **kwargs: Any) -> sa.Column:
    """A UTC date-time column with millisecond precision on MySQL (DATETIME(3))."""
    kind = sa.DateTime().with_variant(mysql.DATETIME(fsp=3), "mysql")
    return sa.Column(name, kind, **kwargs)


def record_columns() -> list[sa.Column]:
    """`id`, `createdAt`, `updatedAt`: the columns every record carries."""
    return [
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        timestamp_column("createdAt", nullable=False),
        timestamp_column("updatedAt", nullable=False),
    ]


def utcnow() -> datetime:
    """Now in UTC, naive, truncated to milliseconds (what DATETIME(3) keeps)."""
    now = datetime.fromtimestamp(time.time(), timezone.utc)  # a third of datetime.now's cost
    return now.replace(microsecond=now.microsecond // 1000 * 1000, tzinfo=None)


def iso(value: datetime) -> str:
    """ISO 8601 in UTC as the old platform wrote it: `2025-10-10T10:00:00.000Z`."""
    return value.isoformat(timespec="milliseconds") + "Z"  # naive: no offset is written


def as_dict(row: Any) -> dict[str, Any]:
    """A `databases` record as a JSON-ready dict: date-times become ISO strings."""
    values = row._mapping  # the SQLAlchemy Row inside; its own `_mapping` fails on str keys
    return jsonable(dict(zip(values._fields, values)))


def jsonable(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row as a JSON-ready dict: date-times (naive UTC) become ISO strings."""
    return {k: iso(v) if isinstance(v, datetime) else v for k, v in row.items()}


# --- handles ---------------------------------------------------------------------------


class _PooledSQLite(SQLitePool):
    """At most `size` aiosqlite connections, kept open and shared; an acquire waits for a
    free one instead of opening another (each is a thread).

    SQLite lets one writer in at a time, and a connection that finds the file locked waits
    in SQLite's busy handler, which sleeps in growing steps (1 ms up to 100 ms) while
    others keep taking the lock: under load some writers starve for seconds. One
    connection per file (the default `SQLITE_CONNECTIONS`) queues statements here instead,
    in order, without sleeping. Other processes on the same file still meet the busy
    handler, bounded by the busy timeout.
    """

    def __init__(self, url: DatabaseURL, size: int, busy_timeout: float) -> None:
        super().__init__(url)
        self._idle: list[aiosqlite.Connection] = []
        self._slots = asyncio.Semaphore(size)
        self._busy_timeout = busy_timeout

    async def acquire(self) -> aiosqlite.Connection:
        await self._slots.acquire()
        if self._idle:
            return self._idle.pop()
        opening = asyncio.ensure_future(self._open())
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:
            # A task cancelled while connecting (a background job at shutdown): finish and
            # close the connection, or its thread outlives the event loop and fails there.
            self._slots.release()
            await (await opening).close()
            raise
        except BaseException:
            self._slots.release()
            raise

    async def _open(self) -> aiosqlite.Connection:
        connection = aiosqlite.connect(
            self._database, isolation_level=None, timeout=self._busy_timeout
        )
        await connection.__aenter__()
        await connection.execute("PRAGMA foreign_keys = ON")
        return connection

    async def release(self, connection: aiosqlite.Connection) -> None:
        try:
            if connection.in_transaction:  # abandoned mid-transaction: do not reuse it
                await connection.close()
            else:
                self._idle.append(connection)
        finally:
            self._slots.release()

    async def close(self) -> None:
        while self._idle:
            await self._idle.pop().close()


def is_sqlite(database: Database) -> bool:
    return database.url.dialect == "sqlite"


IntegrityErrors = (sqlite3.IntegrityError, pymysql.err.IntegrityError)
"""What either driver raises for a broken constraint (a duplicate unique key, a missing
foreign key): `except db.IntegrityErrors` turns it into a 409 or 404 at the source."""


class CommitUnknown(Exception):
    """The COMMIT went out but no answer came back (the connection to MySQL broke): the
    transaction may have been committed or not, and only a fresh connection can tell."""


_LOST_MID_QUERY = 2013  # the connection broke while a statement was out
_MYSQL_UNREACHABLE = {2003, 2006, _LOST_MID_QUERY, 2055}  # also: cannot connect, gone away
_MYSQL_LOCK_CONFLICT = {1205, 1213}
"""A lock wait timed out, or a deadlock rolled the transaction back: InnoDB's own advice
is to run it again."""


def unavailable(exc: BaseException) -> bool:
    """Whether `exc` says the database cannot be reached or is too busy for now, so the
    request may succeed if tried again (a 503), rather than that a statement is wrong."""
    if isinstance(exc, CommitUnknown):
        return True
    if isinstance(exc, pymysql.err.OperationalError):
        return bool(exc.args) and exc.args[0] in _MYSQL_UNREACHABLE | _MYSQL_LOCK_CONFLICT
    if isinstance(exc, sqlite3.OperationalError):
        return "database is locked" in str(exc)
    return False


def answer_lost(exc: BaseException) -> bool:
    """Whether `exc` says the connection to MySQL broke while a statement was out (2013):
    the server may have run it, and only a fresh connection can tell."""
    return isinstance(exc, pymysql.err.OperationalError) and exc.args[:1] == (_LOST_MID_QUERY,)


SQLITE_CONNECTIONS = 1
"""Connections per SQLite file in one process: see `_PooledSQLite`."""


async def connect(url: str, pool_size: int = 10, busy_timeout: float = 10.0) -> Database:
    """Open a pool on `url`, creating the SQLite folder or the MySQL database if missing.
    `pool_size` is the MySQL pool's; SQLite gets `SQLITE_CONNECTIONS`."""
    parsed = DatabaseURL(url)
    if parsed.dialect == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        database = Database(url)
        database._backend._pool = _PooledSQLite(parsed, SQLITE_CONNECTIONS, busy_timeout)
        await database.connect()
        async with database.connection() as conn:
            await conn.execute("PRAGMA journal_mode = WAL")
        return database
    if parsed.dialect == "mysql":
        options = {
            "min_size": 1, "max_size": pool_size, "charset": "utf8mb4", "pool_recycle": 3600,
            "client_flag": FOUND_ROWS,  # rowcount() counts matched rows, as SQLite does
        }
        await _create_mysql_database(parsed)
        database = Database(url, **options)
        await database.connect()
        return database
    raise ValueError(f"unsupported database URL {parsed.scheme}:// (use sqlite:// or mysql://)")


async def disconnect(database: Database, timeout: float = 5.0) -> None:
    """Close the pool. A connection still held (a query cancelled mid-transaction at
    shutdown) would make aiomysql wait for it forever, so after `timeout` it is cut."""
    pool = getattr(database._backend, "_pool", None)
    try:
        await asyncio.wait_for(database.disconnect(), timeout)
    except asyncio.TimeoutError:
        logger.warning("database pool did not close in %.0fs: closing its connections", timeout)
        if pool is not None and hasattr(pool, "terminate"):
            pool.terminate()
    if isinstance(pool, _PooledSQLite):
        await pool.close()


async def _create_mysql_database(url: DatabaseURL) -> None:
    import aiomysql

    name = url.database
    if not re.fullmatch(r"[A-Za-z0-9_]+", name or ""):
        raise ValueError(f"MySQL database name {name!r} must be letters, digits and _")
    conn = await aiomysql.connect(
        host=url.hostname, port=url.port or 3306, user=url.username or "root",
        password=url.password or "", autocommit=True,
    )
    try:
        async with conn.cursor() as cursor:
            with _quiet_ddl():
                await cursor.execute(f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4")
    finally:
        conn.close()


# --- raw statements ----------------------------------------------------------------------

_NAMED = re.compile(r"(?<!:):([A-Za-z_][A-Za-z0-9_]*)")


@functools.lru_cache(maxsize=256)
def _pyformat(sql: str) -> tuple[str, tuple[str, ...]]:
    """`sql` with `%(name)s` for its `:name` parameters, and their names, each once."""
    template = _NAMED.sub(r"%(\1)s", sql.replace("%", "%%"))
    return template, tuple(dict.fromkeys(_NAMED.findall(sql)))


@dataclass(frozen=True)
class Outcome:
    rowcount: int
    """Rows the statement matched (MySQL connections set FOUND_ROWS, as SQLite counts)."""
    lastrowid: int | None


async def run(conn: Connection, sql: str, values: Mapping[str, Any]) -> Outcome:
    """Run one statement (`:name` parameters) on the driver connection.

    For the statements of the booking path: `databases` compiles a SQLAlchemy statement
    again on every execution, which profiling showed to be a fifth of the event loop's time
    under load; a plain SQL string costs nothing to prepare.
    """
    raw = conn.raw_connection
    if isinstance(raw, aiosqlite.Connection):
        return await _on_sqlite(raw, functools.partial(_sqlite_run, sql, _sqlite_values(values)))
    ((outcome, _),) = await _send(raw, [_render(raw, sql, values)])
    return outcome


async def run_then_fetch(
    conn: Connection, sql: str, query: str, values: Mapping[str, Any], times: Sequence[str] = ()
) -> tuple[Outcome, list[dict[str, Any]]]:
    """Run `sql`, then the SELECT `query`, with the same `values`: on MySQL in one trip to
    the server. What `run` returns for the first and `fetch_all` for the second."""
    raw = conn.raw_connection
    if isinstance(raw, aiosqlite.Connection):
        return await run(conn, sql, values), await fetch_all(conn, query, values, times)
    (outcome, _), (_, rows) = await _send(
        raw, [_render(raw, sql, values), _render(raw, query, values)]
    )
    return outcome, _as_times(rows, times)


# --- transactions --------------------------------------------------------------------------


class Transaction:
    """The transaction `transaction()` opened on a connection: `insert` rows in it.

    On MySQL every statement is a trip to the server and back: a send() and a wake-up of the
    event loop for the answer, tens of microseconds of CPU each on a virtual machine (in the
    closed loop's profile aiomysql's sends alone were 14-19 % of the event loop). So the
    BEGIN goes out with the transaction's first statement, rows given to `insert` with the
    next statement or with the COMMIT, each time as one multi-statement query (aiomysql
    always allows them). A booking's transaction is one trip instead of four (its id is
    drawn beforehand: `services/booking/ids.py`). SQLite is owed the same, as steps run in
    one call to the connection's thread (`_on_sqlite`).

    Statements inside a transaction must go through `db`'s functions (`run`, `fetch_all`,
    ...) or `insert`: a statement run through `databases` itself (`conn.execute`) could go
    out before the BEGIN, outside the transaction.
    """

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._sqlite = isinstance(raw, aiosqlite.Connection)
        # Not run yet: MySQL statements, SQLite steps (see `_on_sqlite`).
        self._owed: list[Any] = [_sqlite_begin if self._sqlite else "BEGIN"]
        self._sent = False  # whether anything went to the server: something to roll back

    async def insert(self, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert `rows`, each with the same columns, in one statement: for rows whose ids
        nobody reads. On MySQL it goes out with the next statement or the COMMIT, and an
        error it raises is raised there."""
        if not rows:
            return
        columns = tuple(rows[0])
        if isinstance(self._raw, aiosqlite.Connection):
            self._owed.append(_sqlite_run_many(insert_sql(table, columns), rows))
            return
        values = ", ".join(_render(self._raw, _values_sql(columns), row) for row in rows)
        self._owed.append(f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES {values}")

    def _take_owed(self) -> list[Any]:
        """The statements owed to the server, now to be sent before anything else."""
        owed, self._owed = self._owed, []
        self._sent = self._sent or bool(owed)
        return owed

    async def _commit(self) -> None:
        """Send what is owed and COMMIT, in one trip; nothing if nothing was run. On MySQL a
        COMMIT that gets no answer raises `CommitUnknown`; on SQLite, a local file, a
        COMMIT that raises committed nothing and is rolled back in the same trip."""
        owed = self._take_owed()
        if owed in (["BEGIN"], [_sqlite_begin]):  # nothing ran: there is no transaction
            return
        if self._sqlite:
            await _in_sqlite_thread(self._raw, _sqlite_commit, owed)
            return
        try:
            await _send(self._raw, [*owed, "COMMIT"], owed=False)
        except pymysql.err.MySQLError as exc:
            if _server_refused(exc):  # a statement before the COMMIT failed: still open
                await self._rollback()
                raise
            raise CommitUnknown(f"no answer to COMMIT: {exc}") from exc
        except Exception as exc:
            raise CommitUnknown(f"no answer to COMMIT: {exc}") from exc

    async def _rollback(self) -> None:
        if not self._sent:
            return
        if self._sqlite:  # after whatever this connection's thread still has to run
            await _in_sqlite_thread(self._raw, _sqlite_rollback)
        else:
            await _rollback(self._raw)


_open: dict[int, Transaction] = {}
"""The transaction open on each driver connection (by `id`), which owes it statements."""


# --- SQLite: steps run in the connection's thread --------------------------------------------

Step = Callable[[sqlite3.Connection], Any]


async def _on_sqlite(raw: aiosqlite.Connection, step: Step) -> Any:
    """Run `step` in the thread of the aiosqlite connection `raw`, after the steps its open
    transaction owes, all in one hand-over; what `step` returns.

    Each aiosqlite call is a trip to the connection's thread and back to the event loop, and
    the file's one connection (see `_PooledSQLite`) is held from a transaction's BEGIN to its
    COMMIT: under load every trip waits a turn of a busy loop, so the trips of a booking's
    transaction bounded how many bookings a second the file took. As on MySQL (see
    `Transaction`), the BEGIN and the rows given to `insert` wait for the next statement or
    the COMMIT: a booking's transaction is one trip instead of four.
    """
    tx = _open.get(id(raw))
    owed = tx._take_owed() if tx is not None else []
    if not owed:
        return await _in_sqlite_thread(raw, step)
    return await _in_sqlite_thread(raw, _sqlite_steps, [*owed, step])


async def _in_sqlite_thread(raw: aiosqlite.Connection, function: Callable, *args: Any) -> Any:
    """`function(sqlite3 connection, *args)` in the thread of `raw`, after the calls queued
    there before it. aiosqlite's public calls run one statement each, so this uses
    `_execute`, the call they are all made of, and `_conn`, its sqlite3 connection: the one
    place that does (pyproject.toml allows the aiosqlite versions tested)."""
    return await raw._execute(function, raw._conn, *args)


def _sqlite_steps(conn: sqlite3.Connection, steps: Sequence[Step]) -> Any:
    result = None
    for step in steps:
        result = step(conn)
    return result


def _sqlite_begin(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN")


def _sqlite_commit(conn: sqlite3.Connection, steps: Sequence[Step]) -> None:
    try:
        _sqlite_steps(conn, steps)
        conn.execute("COMMIT")
    except BaseException:
        _sqlite_rollback(conn)
        raise


def _sqlite_rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:  # SQLite ends it by itself after some errors (a full disk)
        conn.execute("ROLLBACK")


def _sqlite_run(sql: str, values: Mapping[str, Any], conn: sqlite3.Connection) -> Outcome:
    cursor = conn.execute(sql, values)
    return Outcome(cursor.rowcount, cursor.lastrowid)


def _sqlite_run_many(sql: str, rows: Sequence[Mapping[str, Any]]) -> Step:
    values = [_sqlite_values(row) for row in rows]
    return lambda conn: conn.executemany(sql, values)


def _sqlite_fetch_all(
    sql: str, values: Mapping[str, Any], conn: sqlite3.Connection
) -> list[dict[str, Any]]:
    cursor = conn.execute(sql, values)
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def _sqlite_fetch_each(
    sql: str, values: Sequence[Mapping[str, Any]], conn: sqlite3.Connection
) -> list[list[dict[str, Any]]]:
    return [_sqlite_fetch_all(sql, each, conn) for each in values]


def _server_refused(exc: pymysql.err.MySQLError) -> bool:
    """Whether the server answered with this error: its codes are 1000-1999 and from 3000
    on; 2000-2999 are the client's own (a lost connection), and 0 an unnumbered one."""
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
    return 1000 <= code < 2000 or code >= 3000


@contextlib.asynccontextmanager
async def transaction(conn: Connection) -> AsyncIterator[Transaction]:
    """A transaction on `conn`, committed on success and rolled back on any error. A COMMIT
    on MySQL that gets no answer raises `CommitUnknown`. Not nestable.

    `databases` spends three trips to SQLite's thread on each of BEGIN and COMMIT (execute,
    close, close again); here the BEGIN and the COMMIT go with the statements around them
    (`_on_sqlite`; on MySQL, `Transaction`). `databases` 0.9 also never hands back to the
    pool a MySQL connection whose COMMIT or ROLLBACK raised, so each connection lost at
    that moment shrank the pool for good, until requests waited for ever for a connection.
    """
    raw = conn.raw_connection
    _refuse_nesting(raw)
    tx = Transaction(raw)
    _open[id(raw)] = tx
    try:
        try:
            yield tx
        except BaseException:
            await tx._rollback()
            raise
        await tx._commit()
    finally:
        del _open[id(raw)]


async def _rollback(raw: Any) -> None:
    """ROLLBACK on a MySQL connection; on a broken one, nothing (the error is the news)."""
    with contextlib.suppress(Exception):
        await _send(raw, ["ROLLBACK"], owed=False)


def _refuse_nesting(raw: Any) -> None:
    """A second BEGIN would fail on SQLite, and on MySQL silently commit the first."""
    if isinstance(raw, aiosqlite.Connection):
        nested = id(raw) in _open or raw.in_transaction
    else:
        nested = id(raw) in _open or raw.get_transaction_status()
    if nested:
        raise RuntimeError("db.transaction does not nest: this connection is in one already")


async def run_in_transaction(
    conn: Connection,
    statements: Sequence[tuple[str, Mapping[str, Any]]],
    then: tuple[str, Mapping[str, Any]],
    times: Sequence[str] = (),
) -> tuple[list[Outcome], list[dict[str, Any]]]:
    """Run `statements`, each `(sql, values)`, as one transaction, then the SELECT `then`:
    what `run` returns for each statement, and the rows of `then`.

    On MySQL the BEGIN, the statements, the COMMIT and the SELECT go to the server as one
    query, one trip, so a later statement cannot depend on an earlier one's outcome in
    Python, only in SQL (`ROW_COUNT()`). A statement the server refuses stops the query
    there: the transaction is rolled back and the error raised. A connection that breaks
    before the answer (`answer_lost`) raises as it came: the server may have committed.
    """
    raw = conn.raw_connection
    if isinstance(raw, aiosqlite.Connection):
        async with transaction(conn):
            outcomes = [await run(conn, sql, values) for sql, values in statements]
        return outcomes, await fetch_all(conn, *then, times)
    _refuse_nesting(raw)
    sent = ["BEGIN", *(_render(raw, sql, values) for sql, values in statements), "COMMIT"]
    try:
        results = await _send(raw, [*sent, _render(raw, *then)], owed=False)
    except pymysql.err.MySQLError as exc:
        if _server_refused(exc):
            await _rollback(raw)
        raise
    outcomes = [outcome for outcome, _ in results[1 : len(statements) + 1]]
    return outcomes, _as_times(results[-1][1], times)


async def _send(
    raw: Any, statements: Sequence[str], owed: bool = True
) -> list[tuple[Outcome, list[dict[str, Any]]]]:
    """Run `statements` on a MySQL connection as one query, after what the connection's
    open transaction owes (with `owed`); the outcome and rows of each of `statements`."""
    tx = _open.get(id(raw)) if owed else None
    first = tx._take_owed() if tx is not None else []
    results: list[tuple[Outcome, list[dict[str, Any]]]] = []
    if not first and not statements:
        return results
    async with raw.cursor() as cursor:
        await cursor.execute("; ".join([*first, *statements]))  # no values: nothing to format
        for index in range(len(first) + len(statements)):
            if index:
                await cursor.nextset()
            if index >= len(first):
                rows = []
                if cursor.description:  # a statement that returns rows
                    names = [d[0] for d in cursor.description]
                    rows = [dict(zip(names, row)) for row in await cursor.fetchall()]
                results.append((Outcome(cursor.rowcount, cursor.lastrowid), rows))
    return results


def _render(raw: Any, sql: str, values: Mapping[str, Any]) -> str:
    """`sql` with its `:name` parameters replaced by the values as MySQL literals."""
    template, names = _pyformat(sql)
    literal = raw.literal  # only the values `sql` names: escaping is most of the cost
    return template % {name: literal(values[name]) for name in names}


async def run_many(conn: Connection, sql: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """Run one statement for each of `rows` (MySQL sends an INSERT as one multi-row INSERT)."""
    raw = conn.raw_connection
    if isinstance(raw, aiosqlite.Connection):
        await _on_sqlite(raw, _sqlite_run_many(sql, rows))
        return
    if id(raw) in _open:
        await _send(raw, [])  # what the transaction owes goes first
    async with raw.cursor() as cursor:
        await cursor.executemany(_pyformat(sql)[0], rows)


async def fetch_all(
    conn: Connection, sql: str, values: Mapping[str, Any], times: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """The rows of a SELECT (or `... RETURNING`) as dicts; the columns named in `times` as
    date-times (SQLite returns them as text)."""
    raw = conn.raw_connection
    if isinstance(raw, aiosqlite.Connection):
        step = functools.partial(_sqlite_fetch_all, sql, _sqlite_values(values))
        return _as_times(await _on_sqlite(raw, step), times)
    ((_, found),) = await _send(raw, [_render(raw, sql, values)])
    return _as_times(found, times)


async def fetch_each(
    conn: Connection, sql: str, values: Sequence[Mapping[str, Any]], times: Sequence[str] = ()
) -> list[list[dict[str, Any]]]:
    """`fetch_all` of `sql` once for each of `values`: on SQLite in one call to the
    connection's thread (on MySQL one trip each)."""
    raw = conn.raw_connection
    if not isinstance(raw, aiosqlite.Connection):
        return [await fetch_all(conn, sql, each, times) for each in values]
    step = functools.partial(_sqlite_fetch_each, sql, [_sqlite_values(each) for each in values])
    return [_as_times(rows, times) for rows in await _on_sqlite(raw, step)]


def _as_times(rows: list[dict[str, Any]], times: Sequence[str]) -> list[dict[str, Any]]:
    for name in times:
        for row in rows:
            if isinstance(row[name], str):
                row[name] = datetime.fromisoformat(row[name])
    return rows


async def fetch_one(
    conn: Connection, sql: str, values: Mapping[str, Any], times: Sequence[str] = ()
) -> dict[str, Any] | None:
    """The first row of a SELECT as a dict, as `fetch_all` reads it; None if there is none."""
    rows = await fetch_all(conn, sql, values, times)
    return rows[0] if rows else None


IN_LIST_MAX = 500
"""Values for one `in_list` where their number has no bound of its own: SQLite builds
before 3.32 take at most 999 parameters in a statement."""


def in_list(name: str, values: Sequence[Any]) -> tuple[str, dict[str, Any]]:
    """`(:name0, :name1, ...)` and the values to go with it, for `column IN` in plain SQL."""
    bound = {f"{name}{i}": value for i, value in enumerate(values)}
    return "(" + ", ".join(":" + key for key in bound) + ")", bound


def in_lists(name: str, values: Sequence[Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """`in_list` of each run of at most `IN_LIST_MAX` of `values`, one statement each."""
    for start in range(0, len(values), IN_LIST_MAX):
        yield in_list(name, values[start : start + IN_LIST_MAX])


@functools.lru_cache(maxsize=None)
def insert_sql(table: sa.Table, columns: tuple[str, ...]) -> str:
    """`INSERT INTO table (columns) VALUES (:column, ...)`, built once per column set."""
    return f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES {_values_sql(columns)}"


@functools.lru_cache(maxsize=None)
def _values_sql(columns: tuple[str, ...]) -> str:
    return "(" + ", ".join(":" + c for c in columns) + ")"


async def rowcount(conn: Connection, sql: str, values: Mapping[str, Any]) -> int:
    """Run one statement (`:name` parameters) and return the number of rows it matched."""
    return (await run(conn, sql, values)).rowcount


def _sqlite_values(values: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _sqlite_value(value) for name, value in values.items()}


def _sqlite_value(value: Any) -> Any:
    """Date-times in the text form SQLAlchemy's SQLite dialect writes and compares."""
    return value.isoformat(" ", "microseconds") if isinstance(value, datetime) else value


# --- migrations ----------------------------------------------------------------------------

Apply = Callable[[Connection, str], Awaitable[None]]


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    apply: Apply
    """Called with a connection and the dialect name ("sqlite" or "mysql")."""


def create_tables(*tables: sa.Table) -> Apply:
    """A migration step that creates `tables` and their indexes as they are defined now.

    Use it for the migration that introduces a table. A later change to a table is a new
    migration (`add_columns`, or its own ALTER statements) that an old database needs and a
    new one, built as the table is defined now, already has.
    """

    async def apply(conn: Connection, dialect_name: str) -> None:
        dialect = _DIALECTS[dialect_name]
        with _quiet_ddl():
            await _create(conn, dialect, tables)

    return apply


async def _create(conn: Connection, dialect: Any, tables: Sequence[sa.Table]) -> None:
    for table in tables:
        await conn.execute(str(CreateTable(table, if_not_exists=True).compile(dialect=dialect)))
        for index in table.indexes:
            await _create_index(conn, dialect, index)


async def _create_index(conn: Connection, dialect: Any, index: sa.Index) -> None:
    await conn.execute(str(CreateIndex(index, if_not_exists=True).compile(dialect=dialect)))


def add_indexes(table: sa.Table, *names: str) -> Apply:
    """A migration step that creates the indexes `names`, as `table` defines them now, on a
    table built before they existed; a table built since has them, and they are left as
    they are. InnoDB builds a secondary index without stopping writes to the table."""
    indexes = [index for index in table.indexes if index.name in names]
    if len(indexes) != len(names):
        raise ValueError(f"{table.name} defines no index among {', '.join(names)}")

    async def apply(conn: Connection, dialect_name: str) -> None:
        with _quiet_ddl():
            for index in indexes:
                await _create_index(conn, _DIALECTS[dialect_name], index)

    return apply


def add_columns(table: sa.Table, *names: str) -> Apply:
    """A migration step that adds the nullable columns `names`, as `table` defines them now,
    to a table built before they existed. A database built since has them already (its
    `create_tables` step builds the table as defined now): they are left as they are."""

    async def apply(conn: Connection, dialect_name: str) -> None:
        present = await _column_names(conn, table.name, dialect_name)
        for name in names:
            if name not in present:
                kind = table.c[name].type.compile(dialect=_DIALECTS[dialect_name])
                await conn.execute(f"ALTER TABLE {table.name} ADD COLUMN {name} {kind}")

    return apply


async def _column_names(conn: Connection, table: str, dialect_name: str) -> set[str]:
    if dialect_name == "sqlite":
        return {row[1] for row in await conn.fetch_all(f"PRAGMA table_info({table})")}
    rows = await conn.fetch_all(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = DATABASE() AND table_name = :name",
        {"name": table},
    )
    return {row[0] for row in rows}


_DIALECTS = {"sqlite": sqlite.dialect(), "mysql": mysql.dialect()}

_migrations = sa.Table(
    "airbourne_migrations",
    sa.MetaData(),
    sa.Column("service", sa.String(32), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("description", sa.String(255), nullable=False),
    timestamp_column("appliedAt", nullable=False),
)


async def migrate(database: Database, service: str, migrations: Sequence[Migration]) -> list[int]:
    """Apply the migrations of `service` not yet applied; returns the versions applied.

    Never drops or empties anything. Several processes starting at once are serialised by a
    lock (a MySQL named lock; on SQLite the write transaction itself).
    """
    dialect_name = database.url.dialect
    applied_now: list[int] = []
    async with database.connection() as conn:
        await create_tables(_migrations)(conn, dialect_name)
        if dialect_name == "mysql":
            await conn.fetch_val("SELECT GET_LOCK('airbourne_migrate', 60)")
        try:
            done = {
                row[0]
                for row in await conn.fetch_all(
                    sa.select(_migrations.c.version).where(_migrations.c.service == service)
                )
            }
            for migration in sorted(migrations, key=lambda m: m.version):
                if migration.version in done:
                    continue
                logger.info("%s: migration %d, %s", service, migration.version, migration.description)
                await migration.apply(conn, dialect_name)
                await conn.execute(
                    _migrations.insert().values(
                        service=service, version=migration.version,
                        description=migration.description, appliedAt=utcnow(),
                    )
                )
                applied_now.append(migration.version)
        finally:
            if dialect_name == "mysql":
                await conn.fetch_val("SELECT RELEASE_LOCK('airbourne_migrate')")
    return applied_now

