"""The flights service's tables: cities, airplanes, airports, flights, and seat reservations.

Column names are the wire names (`departureAirportID` included), so a row is a response body
as it is; a table's `info["kind"]` names one of its records in messages ("city 3 not found").
Foreign keys restrict deletes: a city with airports, or an airport or airplane that flights
use, cannot be deleted.
"""

from __future__ import annotations

import sqlalchemy as sa

from airbourne.db import Migration, create_tables, record_columns, timestamp_column

metadata = sa.MetaData()

RESERVATION_KEY_MAX = 64

cities = sa.Table(
    "cities",
    metadata,
    *record_columns(),
    sa.Column("name", sa.String(255), nullable=False),
    sa.UniqueConstraint("name", name="uq_cities_name"),
    info={"kind": "city"},
)

airplanes = sa.Table(
    "airplanes",
    metadata,
    *record_columns(),
    sa.Column("modelNumber", sa.String(255), nullable=False),
    sa.Column("capacity", sa.Integer, nullable=False),
    info={"kind": "airplane"},
)

airports = sa.Table(
    "airports",
    metadata,
    *record_columns(),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("address", sa.String(255)),
    sa.Column("cityId", sa.Integer, sa.ForeignKey(cities.c.id), nullable=False),
    sa.UniqueConstraint("name", name="uq_airports_name"),
    sa.Index("ix_airports_city", "cityId"),
    info={"kind": "airport"},
)

flights = sa.Table(
    "flights",
    metadata,
    *record_columns(),
    sa.Column("flightNumber", sa.String(255), nullable=False),
    sa.Column("airplaneId", sa.Integer, sa.ForeignKey(airplanes.c.id), nullable=False),
    sa.Column("departureAirportID", sa.Integer, sa.ForeignKey(airports.c.id), nullable=False),
    sa.Column("arrivalAirportId", sa.Integer, sa.ForeignKey(airports.c.id), nullable=False),
    timestamp_column("departureTime", nullable=False),
    timestamp_column("arrivalTime", nullable=False),
    sa.Column("price", sa.Integer, nullable=False),
    sa.Column("boardingGate", sa.String(255)),
    sa.Column("totalSeats", sa.Integer, nullable=False),
    # The airplane's capacity, kept so that giving seats back can never raise totalSeats
    # above it. Internal: not part of the wire record.
    sa.Column("capacity", sa.Integer, nullable=False, info={"internal": True}),
    sa.UniqueConstraint("flightNumber", name="uq_flights_number"),
    sa.Index("ix_flights_airplane", "airplaneId"),
    sa.Index("ix_flights_departure", "departureAirportID"),
    sa.Index("ix_flights_arrival", "arrivalAirportId"),
    sa.Index("ix_flights_price", "price"),
    info={"kind": "flight"},
)

HELD = "HELD"
RELEASED = "RELEASED"

reservations = sa.Table(
    "reservations",
    metadata,
    # The key the caller chose, so that it can name the reservation before it knows whether
    # it was made (a call over HTTP that timed out).
    sa.Column("id", sa.String(RESERVATION_KEY_MAX), primary_key=True),
    sa.Column("flightId", sa.Integer, nullable=False),
    sa.Column("seats", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    timestamp_column("createdAt", nullable=False),
    timestamp_column("updatedAt", nullable=False),
)
"""Seat changes under a caller's key: a booking's over HTTP, and on MySQL every booking's
(`store.reserve_seats` records it in the same trip). A reservation is `HELD` until
released, then `RELEASED`. A release that arrives before its reservation (or instead of
it) leaves a `RELEASED` row of 0 seats, so the reservation, if it comes later, takes
nothing. Seats given back once per key (`release_seats_once`) leave a `RELEASED` row of
those seats. No foreign key: a flight may still be deleted, as with bookings, which live in
another service."""

MIGRATIONS = [
    Migration(1, "cities, airplanes, airports and flights",
              create_tables(cities, airplanes, airports, flights)),
    Migration(2, "reservations under a caller's key", create_tables(reservations)),
]
