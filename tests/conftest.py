"""Shared fixtures.

Tests that need MariaDB or RabbitMQ read `AIRBOURNE_TEST_MYSQL_URL` (for example
`mysql://root@127.0.0.1:3306`) and `AIRBOURNE_TEST_AMQP_URL`. Without them those tests skip,
unless `AIRBOURNE_REQUIRE_SERVICES=1` (set by .ci/run), where a missing or unreachable server
fails the test instead.
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path
from typing import AsyncIterator, Iterable
from urllib.parse import urlsplit

import pymysql
import pytest
from databases import Database

from airbourne import db
from airbourne.services.booking import SERVICE as BOOKING

REQUIRE = os.environ.get("AIRBOURNE_REQUIRE_SERVICES") == "1"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def server_url(variable: str) -> str:
    """The URL in `variable`, after checking its server answers; skip or fail otherwise."""
    url = os.environ.get(variable)
    if not url:
        if REQUIRE:
            pytest.fail(f"{variable} is not set but AIRBOURNE_REQUIRE_SERVICES=1")
        pytest.skip(f"{variable} not set")
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port or 0), timeout=2).close()
    except OSError as exc:
        if REQUIRE:
            pytest.fail(f"{variable}={url} does not answer: {exc}")
        pytest.skip(f"{variable} does not answer: {exc}")
    return url


@pytest.fixture
def mysql_url() -> Iterable[str]:
    """A URL to a fresh, empty MariaDB database, dropped after the test."""
    base = server_url("AIRBOURNE_TEST_MYSQL_URL").rstrip("/")
    parts = urlsplit(base)
    name = f"airbourne_test_{uuid.uuid4().hex[:12]}"
    yield f"{parts.scheme}://{parts.netloc}/{name}"
    conn = pymysql.connect(
        host=parts.hostname, port=parts.port or 3306,
        user=parts.username or "root", password=parts.password or "",
    )
    with conn.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
    conn.close()


@pytest.fixture
def mysql_server_url() -> str:
    """The MariaDB server, without a database: for what makes and drops databases itself."""
    return server_url("AIRBOURNE_TEST_MYSQL_URL").rstrip("/")


@pytest.fixture
def amqp_url() -> str:
    return server_url("AIRBOURNE_TEST_AMQP_URL")


@pytest.fixture(params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Runs the test once on SQLite and once on MariaDB."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/test.db"
    return request.getfixturevalue("mysql_url")


@pytest.fixture
async def booking_database(database_url: str) -> AsyncIterator[Database]:
    """The booking service's database, migrated, on SQLite and on MariaDB."""
    database = await db.connect(database_url)
    try:
        await db.migrate(database, "booking", BOOKING.migrations)
        yield database
    finally:
        await db.disconnect(database)
