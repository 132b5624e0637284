"""The hot-path scripts of bench/ run and their checks pass: a short run of each on the
embedded defaults, as a newcomer would start it (`python -m bench.hotpaths.<name>`), and of
the notifications on MariaDB and RabbitMQ."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pymysql
import pytest
from yarl import URL

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "args",
    [
        ["database", "--seconds", "0.5", "--concurrency", "4"],
        ["queue", "--seconds", "0.5", "--concurrency", "4"],
        ["email", "--seconds", "0.5", "--concurrency", "4"],
        ["notifications", "--bookings", "30"],
    ],
    ids=lambda args: args[0],
)
def test_a_hot_path_script_runs_and_its_check_passes(args: list[str]) -> None:
    check_passes(args)


@pytest.mark.mysql
@pytest.mark.amqp
def test_notifications_on_mariadb_and_rabbitmq_and_nothing_left_behind(
    mysql_server_url: str, amqp_url: str
) -> None:
    server = mysql_server_url
    before = bench_databases(server)
    output = check_passes(["notifications", "--bookings", "30", "--db", server,
                           "--broker", amqp_url])
    assert "on mysql and amqp" in output
    assert bench_databases(server) == before


def check_passes(args: list[str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", f"bench.hotpaths.{args[0]}", *args[1:]],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "check: " in done.stdout and "as expected" in done.stdout, done.stdout
    return done.stdout


def bench_databases(server: str) -> set[str]:
    url = URL(server)
    conn = pymysql.connect(host=url.host, port=url.port or 3306, user=url.user or "root",
                           password=url.password or "")
    try:
        with conn.cursor() as cursor:
            cursor.execute("SHOW DATABASES LIKE 'airbourne\\_bench\\_%'")
            return {name for (name,) in cursor.fetchall()}
    finally:
        conn.close()
