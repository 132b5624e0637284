"""One POST /api/v1/bookings through the booking app's ASGI callable, with flights in the
same runtime on SQLite: validation, the seat reservation, the booking and its outbox rows in
one transaction, the answer (and the outbox relay, woken by each booking, on the same loop).
The request carries the gateway's `x-user-id` and `x-user-email`, so auth is not asked."""

from __future__ import annotations

import json

from airbourne.clients.proxy import LocalProxy
from airbourne.services.booking import SERVICE as BOOKING
from airbourne.services.booking.schema import bookings
from airbourne.services.flights import SERVICE as FLIGHTS
from airbourne.services.flights.schema import flights
from airbourne.services.flights.store import get
from bench.hotpaths.database import CAPACITY, count, create_flight

SEATS = 2


def test_book_in_process(benchmark, loop, start) -> None:
    runtime = start([FLIGHTS, BOOKING])
    flights_db, booking_db = runtime.database("flights"), runtime.database("booking")
    flight_id = loop.run_until_complete(create_flight(flights_db))
    body = b'{"flightId":%d,"userId":7,"NoOfSeats":%d}' % (flight_id, SEATS)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-user-id", b"7"),
        (b"x-user-email", b"ada@example.com"),
    ]
    client = LocalProxy(runtime.apps["booking"])
    statuses = []

    def book():
        answer = loop.run_until_complete(
            client.forward("POST", "/api/v1/bookings", b"", headers, body)
        )
        statuses.append(answer.status)
        return answer

    answer = benchmark(book)

    assert set(statuses) == {200}, answer.body
    booking = json.loads(answer.body)["data"]
    assert (booking["flightId"], booking["userId"], booking["NoOfSeats"], booking["status"]) == (
        flight_id, 7, SEATS, "Booked"
    )
    assert loop.run_until_complete(count(booking_db, bookings)) == len(statuses)
    flight = loop.run_until_complete(get(flights_db, flights, flight_id))
    assert flight.totalSeats == CAPACITY - SEATS * len(statuses)
