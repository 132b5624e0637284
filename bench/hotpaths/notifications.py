"""A booking's notifications, from its outbox rows to its confirmation email: the outbox
relay publishes to the broker, the reminder turns each message into a ticket and sends the
confirmation, due at once, as a `.eml` file. On the embedded defaults, or on MySQL and
RabbitMQ (fresh databases, exchange and queue of their own, removed afterwards).

    python -m bench.hotpaths.notifications --bookings 3000
    python -m bench.hotpaths.notifications --profile notifications.html
    python -m bench.hotpaths.notifications --bookings 10000 \
        --db mysql://root@127.0.0.1:3306 --broker amqp://guest:guest@127.0.0.1:5672/

The outbox rows of `--bookings` bookings (a confirmation and a departure reminder each, as
the booking service writes them) are written first; then the services run, in this process
on a temporary folder, until every confirmation is in the outbox folder. It prints how long
that took, bookings per second, and the CPU time per booking of this process (its threads
included: SQLite's, the mail writer's; not the database server's nor RabbitMQ's). On the
embedded defaults this work shares the process, and the core, with the bookings
themselves: it is what separates the embedded closed loop from the one on MariaDB +
RabbitMQ, where RabbitMQ holds the messages.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Sequence

from databases import DatabaseURL

from airbourne import config, db
from airbourne.runtime import Runtime
from airbourne.services.booking import outbox
from airbourne.services.registry import SERVICES
from airbourne.services.reminder.schema import SUCCESS
from bench.hotpaths import common
from bench.hotpaths.database import drop_mysql_database
from bench.hotpaths.queue import delete_topology

ROWS_PER_TRANSACTION = 100
POLL_SECONDS = 0.05
_SENT = "SELECT COUNT(*) FROM tickets WHERE status = :sent"
"""Done: a ticket is marked SUCCESS once its email is written. Counting files instead, every
poll, cost this process more CPU than the work measured."""


def confirmations(folder: Path) -> int:
    """`.eml` files with their final name (not the hidden ones still being written)."""
    if not folder.is_dir():
        return 0
    return sum(
        1 for entry in os.scandir(folder)
        if entry.name.endswith(".eml") and not entry.name.startswith(".")
    )


async def write_outbox_rows(runtime: Runtime, bookings: int) -> None:
    state = runtime.apps["booking"].state
    now = db.utcnow()
    departure = now + timedelta(days=10)
    async with state.database.connection() as conn:
        for first in range(0, bookings, ROWS_PER_TRANSACTION):
            messages = []
            for n in range(first + 1, min(bookings, first + ROWS_PER_TRANSACTION) + 1):
                booking = {"id": n, "NoOfSeats": 2, "totalCost": 10000, "flightId": 1}
                email = f"user{n % 50}@example.com"
                messages += state.notifications.booked(booking, "BX1234", departure, email, now)
            async with db.transaction(conn) as tx:
                await outbox.add(tx, messages, now)


async def measure(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="airbourne-bench-") as folder:
        name = f"airbourne_bench_{uuid.uuid4().hex[:12]}"
        environ = {"AIRBOURNE_SERVER_DATA_DIR": folder}
        if args.db != "sqlite":
            environ["AIRBOURNE_DATABASE_URL"] = f"{args.db.rstrip('/')}/{name}_{{service}}"
        if args.broker != "memory://":
            environ.update(AIRBOURNE_BROKER_URL=args.broker, AIRBOURNE_BROKER_EXCHANGE=name,
                           AIRBOURNE_BROKER_NOTIFICATION_QUEUE=name,
                           # RabbitMQ connects while the relay starts: its first try waits
                           # this long after failing, not the default second.
                           AIRBOURNE_BOOKING_OUTBOX_INTERVAL_SECONDS="0.05")
        settings = config.load(environ=environ)
        try:
            seconds, cpu, tickets, written = await notify(settings, args, Path(folder))
        finally:
            if args.db != "sqlite":
                for service in SERVICES:
                    drop_mysql_database(DatabaseURL(args.db), f"{name}_{service}")
            if args.broker != "memory://":
                await delete_topology(args.broker, name, name)
    database = "sqlite" if args.db == "sqlite" else DatabaseURL(args.db).dialect
    where = "the embedded defaults" if (args.db, args.broker) == ("sqlite", "memory://") else (
        f"{database} and {args.broker.partition(':')[0]}"
    )
    print(f"notifications of {args.bookings} bookings on {where} "
          "(measured on this machine, as busy as it is)")
    print(f"all confirmations written in {seconds:.2f} s: {args.bookings / seconds:.0f} bookings/s,"
          f" {cpu * 1000 / args.bookings:.3f} ms of CPU per booking")
    if (tickets, written) != (2 * args.bookings, args.bookings):
        raise SystemExit(f"check FAILED: {args.bookings} bookings, but {tickets} tickets"
                         f" and {written} emails")
    print(f"check: {written} confirmations written, {tickets} tickets (confirmation and"
          " departure reminder): as expected")


async def notify(
    settings: config.Config, args: argparse.Namespace, folder: Path
) -> tuple[float, float, int, int]:
    """Write the outbox rows, then run the services until every confirmation is sent: the
    seconds and this process's CPU seconds that took, the tickets and the emails made."""
    services = [SERVICES[name] for name in ("auth", "flights", "booking", "reminder")]
    writer = Runtime(settings, services, background=False)  # no relay, no reminder yet
    await writer.start()
    try:
        await write_outbox_rows(writer, args.bookings)
    finally:
        await writer.stop()
    runtime = Runtime(settings, services)
    with common.profiled(args.profile):
        began, cpu = time.perf_counter(), common.cpu_seconds()
        await runtime.start()  # the relay takes the rows at once
        try:
            reminder = runtime.database("reminder")
            while await reminder.fetch_val(_SENT, {"sent": SUCCESS}) < args.bookings:
                await asyncio.sleep(POLL_SECONDS)
            seconds, cpu = time.perf_counter() - began, common.cpu_seconds() - cpu
            tickets = await reminder.fetch_val("SELECT COUNT(*) FROM tickets")
        finally:
            await runtime.stop()
    return seconds, cpu, tickets, confirmations(folder / "outbox")


def main(argv: Sequence[str] | None = None) -> None:
    description, _, examples = __doc__.partition("\n\n")
    parser = argparse.ArgumentParser(
        prog=f"python -m {__spec__.name}", description=description, epilog=examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--bookings", type=int, default=3000, help="bookings to notify")
    parser.add_argument("--db", default="sqlite",
                        help="sqlite (default) or a MySQL server: mysql://root@127.0.0.1:3306")
    parser.add_argument("--broker", default="memory://",
                        help="memory:// (default) or amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--profile", type=Path, metavar="OUT.html",
                        help="write a pyinstrument HTML profile of the run")
    args = parser.parse_args(argv)
    if args.db != "sqlite" and DatabaseURL(args.db).dialect != "mysql":
        parser.error(f"--db must be sqlite or mysql://user@host:port, got {args.db!r}")
    common.run(measure(args))


if __name__ == "__main__":
    main()
