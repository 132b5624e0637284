"""The booking write path as the services run it: take seats on a flight as the booking
service does in one process (`LocalFlights.reserve_seats`: on MySQL recorded under a key in
the same trip), then write the booking and its outbox rows in one transaction (the booking
service's `store.Writer`), on SQLite or MySQL. Both write the changes that wait together,
one transaction for all of them. No HTTP, no broker.

    python -m bench.hotpaths.database --seconds 5 --concurrency 16
    python -m bench.hotpaths.database --db mysql://root@127.0.0.1:3306 --profile db.html

SQLite: one file per service in a temporary folder, as the default configuration has it.
MySQL: one fresh database for both services, as in production, dropped afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import uuid
from datetime import datetime, timedelta
from typing import AsyncIterator, Sequence

import pymysql
import sqlalchemy as sa
from databases import Database
from databases.core import DatabaseURL

from airbourne import db
from airbourne.clients.flights import LocalFlights
from airbourne.ids import unique_hex
from airbourne.service import Service
from airbourne.services.booking import SERVICE as BOOKING
from airbourne.services.booking import store as booking_store
from airbourne.services.booking.ids import BookingIds
from airbourne.services.booking.notifications import Notifications
from airbourne.services.booking.schema import bookings, outbox
from airbourne.services.flights import SERVICE as FLIGHTS
from airbourne.services.flights import store as flights_store
from airbourne.services.flights.schema import (
    airplanes, airports, cities, flights, reservations,
)
from bench.hotpaths import common

CAPACITY = 2_000_000_000
"""Seats on the benchmark's flight: it never sells out, and it fits MySQL's INT."""

SEATS = 2
PRICE = 5000
EMAIL = "bench@example.com"
DEPARTURE = datetime(2030, 10, 10, 10, 0)
"""Far enough ahead that every booking writes both of its outbox rows (confirmation and
departure reminder)."""


async def create_flight(database: Database, capacity: int = CAPACITY) -> int:
    """A new flight with its own city, airports and airplane; returns its id."""
    tag = uuid.uuid4().hex[:8]
    city = await flights_store.create(database, cities, {"name": f"Bench {tag}"})
    leave, land = [
        await flights_store.create(database, airports, {"name": f"{code} {tag}", "cityId": city.id})
        for code in ("LIS", "OSL")
    ]
    plane = await flights_store.create(
        database, airplanes, {"modelNumber": "A380", "capacity": capacity}
    )
    flight = await flights_store.create(database, flights, {
        "flightNumber": f"BX{tag}", "airplaneId": plane.id,
        "departureAirportID": leave.id, "arrivalAirportId": land.id,
        "departureTime": DEPARTURE, "arrivalTime": DEPARTURE + timedelta(hours=4),
        "price": PRICE, "totalSeats": capacity, "capacity": capacity,
    })
    return flight.id


async def migrated(url: str, services: Sequence[Service]) -> Database:
    database = await db.connect(url)
    for service in services:
        await db.migrate(database, service.name, service.migrations)
    return database


@contextlib.asynccontextmanager
async def databases(target: str) -> AsyncIterator[tuple[Database, Database]]:
    """The flights and the booking database for `target` ("sqlite" or a MySQL server URL);
    removed on exit."""
    if target == "sqlite":
        with tempfile.TemporaryDirectory(prefix="airbourne-bench-") as folder:
            flights_db = await migrated(f"sqlite:///{folder}/flights.db", [FLIGHTS])
            booking_db = await migrated(f"sqlite:///{folder}/booking.db", [BOOKING])
            try:
                yield flights_db, booking_db
            finally:
                await db.disconnect(flights_db)
                await db.disconnect(booking_db)
        return
    server = DatabaseURL(target)
    if server.dialect != "mysql":
        raise SystemExit(f"--db must be sqlite or mysql://user@host:port, got {target!r}")
    name = f"airbourne_bench_{uuid.uuid4().hex[:12]}"
    try:
        shared = await migrated(str(server.replace(database=name)), [FLIGHTS, BOOKING])
        try:
            yield shared, shared
        finally:
            await db.disconnect(shared)
    finally:
        drop_mysql_database(server, name)


def drop_mysql_database(server: DatabaseURL, name: str) -> None:
    conn = pymysql.connect(
        host=server.hostname, port=server.port or 3306,
        user=server.username or "root", password=server.password or "",
    )
    try:
        with conn.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
    finally:
        conn.close()


async def count(database: Database, table: sa.Table) -> int:
    return await database.fetch_val(sa.select(sa.func.count()).select_from(table))


async def measure(args: argparse.Namespace) -> None:
    notifications = Notifications(routing_key="REMINDER", reminder_lead=timedelta(hours=24))
    async with databases(args.db) as (flights_db, booking_db):
        flight_id = await create_flight(flights_db)
        writer = booking_store.Writer(booking_db, BookingIds())
        seats = LocalFlights(flights_db)
        booked = 0

        async def book() -> None:
            nonlocal booked
            reservation = await seats.reserve_seats(flight_id, SEATS, unique_hex())

            def messages(booking: booking_store.Booking, now: datetime) -> list:
                return notifications.booked(
                    booking, reservation.flight_number, reservation.departure_time, EMAIL, now
                )

            await writer.write(booking_store.NewBooking(
                flight_id, user_id=1, seats=SEATS, total_cost=reservation.price * SEATS,
                idempotency_key=None, reservation_key=reservation.key, messages=messages,
            ))
            booked += 1

        with common.profiled(args.profile):
            timings = await common.drive(book, args.seconds, args.concurrency)
        print(f"booking write path on {flights_db.url.dialect}, concurrency {args.concurrency}, "
              f"{timings.seconds:.1f} s (measured on this machine, as busy as it is)")
        print(common.header())
        print(common.line("booking", timings.latencies, timings.seconds))
        free = (await flights_store.get(flights_db, flights, flight_id)).totalSeats
        rows = (await count(booking_db, bookings), await count(booking_db, outbox),
                await count(flights_db, reservations))
        expected = booked, 2 * booked, 0 if db.is_sqlite(flights_db) else booked
        if rows != expected or free != CAPACITY - SEATS * booked:
            raise SystemExit(
                f"check FAILED: {booked} bookings made, but {rows[0]} booking rows, "
                f"{rows[1]} outbox rows, {rows[2]} reservations and {CAPACITY - free} seats taken"
            )
        print(f"check: {booked} bookings, {rows[1]} outbox rows, {rows[2]} reservations, "
              f"{CAPACITY - free} seats taken: as expected")


def main(argv: Sequence[str] | None = None) -> None:
    parser = common.parser(__spec__.name, __doc__)
    parser.add_argument(
        "--db", default="sqlite",
        help="sqlite (default) or a MySQL server: mysql://root@127.0.0.1:3306",
    )
    common.run(measure(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
