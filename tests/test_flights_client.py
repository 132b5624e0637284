"""The flights client: in-process and over HTTP it gives the same answers and the same
exceptions, and a flights service that cannot be reached is `ServiceUnavailable` at once."""

from __future__ import annotations

import socket
from pathlib import Path

import anyio
import pytest

from airbourne.clients.errors import ServiceTimeout, ServiceUnavailable, session
from airbourne.clients.flights import (
    Conflict,
    FlightNotFound,
    HttpFlights,
    LocalFlights,
    NotEnoughSeats,
    flights_client,
)
from airbourne.clients.auth import HttpAuth
from airbourne.services import auth, flights
from airbourne.services.booking import SERVICE as BOOKING
from booking_support import create_flight
from support import free_port, make_config, served, started

pytestmark = pytest.mark.anyio


async def test_local_and_http_agree(tmp_path: Path, database_url: str) -> None:
    async with started(make_config(tmp_path, database_url), [flights.SERVICE]) as runtime:
        flight = await create_flight(runtime, capacity=10, price=700)
        local = LocalFlights(runtime.database("flights"))
        async with served(runtime.apps["flights"]) as url:
            remote = HttpFlights(runtime.http, url)

            assert await local.get_flight(flight["id"]) == await remote.get_flight(flight["id"])
            assert (await remote.get_flight(flight["id"]))["id"] == flight["id"]

            first = await local.reserve_seats(flight["id"], 3, "first")
            second = await remote.reserve_seats(flight["id"], 3, "second")
            assert (first.total_seats, second.total_seats) == (7, 4)
            # Recorded where the answer can be lost: over HTTP, and to a database server.
            local_key = None if database_url.startswith("sqlite") else "first"
            assert (first.key, second.key) == (local_key, "second")
            for reservation in (first, second):
                assert reservation.flight_id == flight["id"] and reservation.seats == 3
                assert reservation.price == 700
                assert reservation.flight_number == flight["flightNumber"]
            assert first.departure_time == second.departure_time
            assert first.departure_time.isoformat() == "2030-10-10T10:00:00"

            assert await local.release_seats(flight["id"], 1) == 5
            assert await remote.release_seats(flight["id"], 1) == 6

            for client_ in (local, remote):
                with pytest.raises(NotEnoughSeats):
                    await client_.reserve_seats(flight["id"], 7, "too-many")
                with pytest.raises(FlightNotFound):
                    await client_.reserve_seats(9999, 1, "no-flight")
                with pytest.raises(FlightNotFound):
                    await client_.release_seats(9999, 1)
                with pytest.raises(FlightNotFound):
                    await client_.get_flight(9999)
            assert (await local.get_flight(flight["id"]))["totalSeats"] == 6


async def test_a_reservation_over_http_is_released_once_by_its_key(
    tmp_path: Path, database_url: str
) -> None:
    """However often a release is sent, and by either client: the seats come back once."""
    async with started(make_config(tmp_path, database_url), [flights.SERVICE]) as runtime:
        flight = await create_flight(runtime, capacity=10)
        local = LocalFlights(runtime.database("flights"))
        async with served(runtime.apps["flights"]) as url:
            remote = HttpFlights(runtime.http, url)
            assert (await remote.reserve_seats(flight["id"], 4, "trip")).total_seats == 6
            assert (await remote.reserve_seats(flight["id"], 4, "trip")).total_seats == 6
            assert await remote.release_reservation(flight["id"], "trip") == 10
            assert await remote.release_reservation(flight["id"], "trip") == 10
            assert await local.release_reservation(flight["id"], "trip") == 10
            # Released before it was made: the reservation, arriving late, takes nothing.
            assert await remote.release_reservation(flight["id"], "late") == 10
            with pytest.raises(Conflict):
                await remote.reserve_seats(flight["id"], 2, "late")
            assert (await local.get_flight(flight["id"]))["totalSeats"] == 10

            # Seats taken without a key, given back once per key by either client.
            await local.reserve_seats(flight["id"], 5, "unrecorded")
            assert await remote.release_seats_once(flight["id"], 2, "row-1") == 7
            assert await local.release_seats_once(flight["id"], 2, "row-1") == 7
            assert await local.release_seats_once(flight["id"], 3, "row-2") == 10
            assert await remote.release_seats_once(flight["id"], 3, "row-2") == 10


async def test_an_answer_the_client_does_not_expect_is_the_service_failing(
    tmp_path: Path,
) -> None:
    """A 4xx other than 404/409 means this service sent something the other refused: no
    fault of the end client, so not passed on as a 4xx (auth's client does the same)."""
    async with started(make_config(tmp_path), [flights.SERVICE, auth.SERVICE]) as runtime:
        flight = await create_flight(runtime, capacity=10)
        async with served(runtime.apps["flights"]) as url:
            with pytest.raises(ServiceUnavailable) as refused:
                await HttpFlights(runtime.http, url).reserve_seats(flight["id"], 2_000_000, "k")
        assert refused.value.status_code == 503
        assert "answered 400" in refused.value.message and "seats" in refused.value.message
        async with served(runtime.apps["auth"]) as url:
            with pytest.raises(ServiceUnavailable) as refused:
                await HttpAuth(runtime.http, url).user_email(0)
        assert refused.value.status_code == 503 and "answered 400" in refused.value.message


async def test_a_closed_port_is_unavailable_at_once() -> None:
    async with session() as http:
        remote = HttpFlights(http, f"http://127.0.0.1:{free_port()}", timeout=30.0)
        with anyio.fail_after(10):  # a guard against hanging, far above the connect timeout
            with pytest.raises(ServiceUnavailable) as raised:
                await remote.reserve_seats(1, 1, "k")
    assert not isinstance(raised.value, ServiceTimeout)
    assert not raised.value.maybe_done  # no connection: the request never went out
    assert raised.value.status == 503 and raised.value.service == "flights"
    assert raised.value.message.startswith("flights service unavailable: ")


async def test_a_silent_server_is_a_timeout() -> None:
    with socket.socket() as silent:  # the kernel accepts connections; nobody answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = "http://127.0.0.1:%d" % silent.getsockname()[1]
        async with session() as http:
            with pytest.raises(ServiceTimeout) as raised:
                await HttpFlights(http, url, timeout=0.2).release_seats(1, 1)
    assert raised.value.status == 504 and raised.value.maybe_done


async def test_the_runtime_picks_local_or_http(tmp_path: Path) -> None:
    config = make_config(tmp_path, AIRBOURNE_FLIGHTS_URL="http://flights.internal:3002")
    async with started(config, [flights.SERVICE, BOOKING]) as together:
        assert isinstance(flights_client(together), LocalFlights)
    async with started(config, [BOOKING]) as alone:
        chosen = flights_client(alone)
        assert isinstance(chosen, HttpFlights)
        assert chosen.base_url == "http://flights.internal:3002"
