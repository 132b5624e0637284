"""The seat reservation (`reserve_seats`: one conditional UPDATE and one read) on SQLite."""

from __future__ import annotations

from airbourne.services.flights import SERVICE as FLIGHTS
from airbourne.services.flights.schema import flights
from airbourne.services.flights.store import get, reserve_seats
from bench.hotpaths.database import CAPACITY, create_flight


def test_reserve_seats(benchmark, loop, start) -> None:
    database = start([FLIGHTS]).database("flights")
    flight_id = loop.run_until_complete(create_flight(database))
    left = []

    def reserve():
        reservation = loop.run_until_complete(reserve_seats(database, flight_id, 1))
        left.append(reservation.total_seats)
        return reservation

    reservation = benchmark(reserve)

    assert reservation.flight_id == flight_id
    assert left == list(range(CAPACITY - 1, CAPACITY - 1 - len(left), -1))
    flight = loop.run_until_complete(get(database, flights, flight_id))
    assert flight.totalSeats == CAPACITY - len(left)
