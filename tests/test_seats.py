"""Seat inventory: reserving and releasing seats over HTTP and through the store functions the
booking service calls in-process. Many clients at once never oversell a flight, and giving
seats back never raises a flight above its capacity."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import AsyncIterator, Awaitable
from urllib.parse import urlsplit

import httpx
import pymysql
import pytest
import sqlalchemy as sa

from airbourne import db
from airbourne.runtime import Runtime
from airbourne.services.flights import SERVICE, store
from airbourne.services.flights.schema import HELD, flights, reservations
from booking_support import create_flight, eventually, free_seats
from support import client, make_config, started

pytestmark = pytest.mark.anyio


@pytest.fixture
async def runtime(tmp_path: Path, database_url: str) -> AsyncIterator[Runtime]:
    """A runtime with the flights service on a fresh database: SQLite, then MariaDB."""
    async with started(make_config(tmp_path, database_url), [SERVICE]) as started_runtime:
        yield started_runtime


@pytest.fixture
async def api(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with client(runtime.apps["flights"]) as http:
        yield http


async def reserve(api: httpx.AsyncClient, flight_id: int, seats: int) -> httpx.Response:
    return await api.post(f"/api/v1/flights/{flight_id}/seats/reserve", json={"seats": seats})


async def release(api: httpx.AsyncClient, flight_id: int, seats: int) -> httpx.Response:
    return await api.post(f"/api/v1/flights/{flight_id}/seats/release", json={"seats": seats})


def failure(answer: httpx.Response, status: int) -> dict:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["success"] is False and body["data"] == {} and body["message"]
    return body


async def test_concurrent_reservations_never_oversell(
    runtime: Runtime, api: httpx.AsyncClient
) -> None:
    flight = await create_flight(runtime, capacity=50)

    answers = await asyncio.gather(*(reserve(api, flight["id"], 1) for _ in range(200)))

    assert Counter(answer.status_code for answer in answers) == {200: 50, 409: 150}
    taken = [answer.json()["data"] for answer in answers if answer.status_code == 200]
    # Each reservation saw its own decrement: none was lost, none counted twice.
    assert sorted(data["totalSeats"] for data in taken) == list(range(50))
    assert await free_seats(runtime, flight["id"]) == 0


async def test_concurrent_store_calls_never_oversell(runtime: Runtime) -> None:
    """The in-process path, as the booking service takes it: tasks sharing one context."""
    database = runtime.database("flights")
    flight = await create_flight(runtime, capacity=30)

    results = await asyncio.gather(
        *(store.reserve_seats(database, flight["id"], 2) for _ in range(40)),
        return_exceptions=True,
    )

    assert Counter(type(result) for result in results) == {
        store.Reservation: 15, store.NotEnoughSeats: 25,
    }
    assert await free_seats(runtime, flight["id"]) == 0


@pytest.mark.mysql
async def test_keyed_store_calls_record_what_they_took(tmp_path: Path, mysql_url: str) -> None:
    """The booking's path on MariaDB: each seat change recorded under its key in the same
    transaction, so that a lost answer can be undone by the key. Concurrent calls record
    exactly the seats each took, each sees its own decrement, the refused record nothing,
    and a key used before takes nothing more."""
    async with started(make_config(tmp_path, mysql_url), [SERVICE]) as runtime:
        database = runtime.database("flights")
        flight = await create_flight(runtime, capacity=30)
        other = await create_flight(runtime, capacity=5)

        results = await asyncio.gather(
            *(store.reserve_seats(database, flight["id"], 2, f"k{n}") for n in range(40)),
            return_exceptions=True,
        )

        made = [result for result in results if isinstance(result, store.Reservation)]
        assert Counter(type(result) for result in results) == {
            store.Reservation: 15, store.NotEnoughSeats: 25,
        }
        assert sorted(reservation.total_seats for reservation in made) == list(range(0, 30, 2))
        rows = await database.fetch_all(sa.select(reservations))
        recorded = {(row["id"], row["flightId"], row["seats"], row["status"]) for row in rows}
        assert recorded == {(r.key, flight["id"], 2, HELD) for r in made}
        assert await free_seats(runtime, flight["id"]) == 0

        with pytest.raises(db.IntegrityErrors):
            await store.reserve_seats(database, other["id"], 1, made[0].key)
        assert await free_seats(runtime, other["id"]) == 5


async def test_reserve_and_release_round_trip(runtime: Runtime, api: httpx.AsyncClient) -> None:
    flight = await create_flight(runtime, capacity=10, price=700)

    answer = await reserve(api, flight["id"], 3)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "data": {
            "flightId": flight["id"], "seats": 3, "price": 700, "totalSeats": 7,
            "flightNumber": flight["flightNumber"], "departureTime": flight["departureTime"],
        },
        "success": True, "message": "Successfully reserved the seats", "err": {},
    }
    answer = await release(api, flight["id"], 2)
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"] == {"flightId": flight["id"], "seats": 2, "totalSeats": 9}
    assert await free_seats(runtime, flight["id"]) == 9

    body = failure(await reserve(api, flight["id"], 10), 409)
    assert body["message"] == f"flight {flight['id']} has 9 free seats, 10 requested"
    assert (await reserve(api, flight["id"], 9)).json()["data"]["totalSeats"] == 0
    failure(await reserve(api, flight["id"], 1), 409)
    assert (await release(api, flight["id"], 10)).json()["data"]["totalSeats"] == 10


async def test_release_never_goes_above_capacity(runtime: Runtime, api: httpx.AsyncClient) -> None:
    flight = await create_flight(runtime, capacity=5)
    failure(await release(api, flight["id"], 1), 409)
    await reserve(api, flight["id"], 2)
    failure(await release(api, flight["id"], 3), 409)
    assert await free_seats(runtime, flight["id"]) == 3
    assert (await release(api, flight["id"], 2)).json()["data"]["totalSeats"] == 5
    failure(await release(api, flight["id"], 1), 409)
    assert await free_seats(runtime, flight["id"]) == 5


async def test_unknown_flight_is_404(api: httpx.AsyncClient) -> None:
    for answer in (await reserve(api, 999, 1), await release(api, 999, 1)):
        assert failure(answer, 404)["message"] == "flight 999 not found"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "seats"), ({"seats": None}, "seats"), ({"seats": 0}, "seats"),
        ({"seats": -1}, "seats"), ({"seats": 1.5}, "seats"), ({"seats": "two"}, "seats"),
        ({"seats": "2"}, "seats"),
        ({"seats": True}, "seats"), ({"seats": 1_000_001}, "seats"), ([1], "body"),
    ],
)
async def test_bad_seat_requests_are_400(tmp_path: Path, body: object, field: str) -> None:
    async with started(make_config(tmp_path), [SERVICE]) as runtime:
        flight = await create_flight(runtime, capacity=5)
        async with client(runtime.apps["flights"]) as api:
            for action in ("reserve", "release"):
                url = f"/api/v1/flights/{flight['id']}/seats/{action}"
                assert failure(await api.post(url, json=body), 400)["err"]["field"] == field
            failure(await api.post(url, content=b"{seats: 1}"), 400)
            answer = await api.post("/api/v1/flights/abc/seats/reserve", json={"seats": 1})
            assert failure(answer, 400)["err"]["field"] == "id"
        assert await free_seats(runtime, flight["id"]) == 5


async def test_store_functions(runtime: Runtime) -> None:
    database = runtime.database("flights")
    flight = await create_flight(runtime, capacity=4, price=250)

    reservation = await store.reserve_seats(database, flight["id"], 3)
    assert reservation == store.Reservation(
        flight_id=flight["id"], seats=3, price=250, total_seats=1,
        flight_number=flight["flightNumber"], departure_time=datetime(2030, 10, 10, 10, 0),
    )
    with pytest.raises(store.NotEnoughSeats) as raised:
        await store.reserve_seats(database, flight["id"], 2)
    assert raised.value.free == 1
    with pytest.raises(store.FlightNotFound):
        await store.reserve_seats(database, 999, 1)

    assert await store.release_seats(database, flight["id"], 3) == 4
    with pytest.raises(store.TooManySeatsReleased):
        await store.release_seats(database, flight["id"], 1)
    with pytest.raises(store.FlightNotFound):
        await store.release_seats(database, 999, 1)
    for function in (store.reserve_seats, store.release_seats):
        with pytest.raises(ValueError):
            await function(database, flight["id"], 0)
    if db.is_sqlite(database):  # a key goes with the seat change on a database server only
        with pytest.raises(ValueError):
            await store.reserve_seats(database, flight["id"], 1, "key")
    assert await free_seats(runtime, flight["id"]) == 4


# --- reservations under a caller's key ------------------------------------------------------


async def test_a_keyed_reservation_is_taken_once_and_released_once(runtime: Runtime) -> None:
    database = runtime.database("flights")
    flight = await create_flight(runtime, capacity=10, price=250)

    first = await store.reserve_seats_once(database, "trip", flight["id"], 4)
    retry = await store.reserve_seats_once(database, "trip", flight["id"], 4)
    assert first.key == retry.key == "trip"
    assert (first.total_seats, retry.total_seats, first.price) == (6, 6, 250)
    assert await free_seats(runtime, flight["id"]) == 6
    with pytest.raises(store.ReservationMismatch):
        await store.reserve_seats_once(database, "trip", flight["id"], 5)

    assert await store.release_reservation(database, "trip", flight["id"]) == (4, 10)
    assert await store.release_reservation(database, "trip", flight["id"]) == (0, 10)
    with pytest.raises(store.ReservationReleased):
        await store.reserve_seats_once(database, "trip", flight["id"], 4)
    assert await free_seats(runtime, flight["id"]) == 10


async def test_a_release_once_gives_the_seats_back_once(runtime: Runtime) -> None:
    """Seats taken without a key (in-process), given back under the key of the outbox row
    that asks for it: done again after a crash, it gives nothing more."""
    database = runtime.database("flights")
    flight = await create_flight(runtime, capacity=10)
    await store.reserve_seats(database, flight["id"], 6)

    assert await store.release_seats_once(database, "row-7", flight["id"], 4) == 8
    assert await store.release_seats_once(database, "row-7", flight["id"], 4) == 8
    with pytest.raises(store.ReservationMismatch):
        await store.release_seats_once(database, "row-7", flight["id"], 2)
    with pytest.raises(store.TooManySeatsReleased):  # refused, and so not recorded
        await store.release_seats_once(database, "row-8", flight["id"], 3)
    assert await store.release_seats_once(database, "row-8", flight["id"], 2) == 10
    assert await free_seats(runtime, flight["id"]) == 10


async def test_a_release_before_its_reservation_leaves_the_seats_free(runtime: Runtime) -> None:
    """The booking service gave up on a slow reservation and released it; the reservation
    then arrives after all. It must take nothing."""
    database = runtime.database("flights")
    flight = await create_flight(runtime, capacity=10)

    assert await store.release_reservation(database, "late", flight["id"]) == (0, 10)
    with pytest.raises(store.ReservationReleased):
        await store.reserve_seats_once(database, "late", flight["id"], 3)
    assert await free_seats(runtime, flight["id"]) == 10


async def test_a_refused_keyed_reservation_keeps_no_record(runtime: Runtime) -> None:
    database = runtime.database("flights")
    flight = await create_flight(runtime, capacity=3)
    with pytest.raises(store.NotEnoughSeats):
        await store.reserve_seats_once(database, "big", flight["id"], 4)
    with pytest.raises(store.FlightNotFound):
        await store.reserve_seats_once(database, "nowhere", 999, 1)
    assert (await store.reserve_seats_once(database, "big", flight["id"], 3)).total_seats == 0
    with pytest.raises(store.ReservationMismatch):  # a key names one flight's seats
        await store.release_reservation(database, "big", 999)
    assert await free_seats(runtime, flight["id"]) == 0


async def test_racing_reservations_and_releases_of_one_key_end_with_the_seats_free(
    runtime: Runtime,
) -> None:
    """Each key's reservation, its retries and its release all at once, in either order:
    a reservation is released whether it comes first or last, and none takes seats twice."""
    database = runtime.database("flights")
    flight = await create_flight(runtime, capacity=100)

    async def attempt(call: Awaitable[object]) -> None:
        with contextlib.suppress(store.ReservationReleased):  # the release came first
            await call

    calls = []
    for n in range(20):
        key = f"key{n}"
        reservations = [store.reserve_seats_once(database, key, flight["id"], 2) for _ in range(2)]
        release = store.release_reservation(database, key, flight["id"])
        calls += [*reservations, release] if n % 2 else [release, *reservations]
    await asyncio.gather(*(attempt(call) for call in calls))  # any other error fails

    assert await free_seats(runtime, flight["id"]) == 100


async def test_reservations_no_caller_needs_are_pruned(runtime: Runtime) -> None:
    """Released ones once old enough, and any of a flight departed long enough ago or
    deleted; held ones of flights to come stay whatever their age (cancelling gives their
    seats back by the key), and so do recent releases (a late call under the key finds
    them). Several small batches walk the text keys in order."""
    database = runtime.database("flights")
    to_come = await create_flight(runtime, capacity=100)
    departed = await create_flight(runtime, departure="2020-01-01T10:00:00Z",
                                   arrival="2020-01-01T12:00:00Z")
    recently = await create_flight(runtime, departure="2026-01-10T10:00:00Z",
                                   arrival="2026-01-10T12:00:00Z")
    deleted = await create_flight(runtime)
    for key, flight in [("a-held", to_come), ("b-old-release", to_come),
                        ("c-new-release", to_come), ("d-departed", departed),
                        ("e-recently", recently), ("f-deleted", deleted)]:
        await store.reserve_seats_once(database, key, flight["id"], 1)
    for key, flight in [("b-old-release", to_come), ("c-new-release", to_come)]:
        await store.release_reservation(database, key, flight["id"])
    await database.execute(sa.delete(flights).where(flights.c.id == deleted["id"]))
    cutoff = datetime(2026, 1, 1)
    touched_long_ago = {"createdAt": datetime(2025, 1, 1), "updatedAt": datetime(2025, 1, 1)}
    await database.execute(  # every row is old, but only some are done
        sa.update(reservations).where(reservations.c.id != "c-new-release")
        .values(**touched_long_ago)
    )

    assert await store.prune_reservations(database, cutoff, batch=1) == 3
    rows = await database.fetch_all(sa.select(reservations.c.id).order_by(reservations.c.id))
    assert [row["id"] for row in rows] == ["a-held", "c-new-release", "e-recently"]
    assert await store.prune_reservations(database, cutoff, batch=1) == 0

    assert await store.release_reservation(database, "a-held", to_come["id"]) == (1, 100)


async def test_the_flights_service_prunes_reservations_as_it_starts(tmp_path: Path) -> None:
    """The hourly job runs once at start: a reservation released long ago is gone after a
    restart, a held one is not."""
    config = make_config(tmp_path)
    async with started(config, [SERVICE]) as runtime:
        database = runtime.database("flights")
        flight = await create_flight(runtime)
        for key in ("held", "released"):
            await store.reserve_seats_once(database, key, flight["id"], 1)
        await store.release_reservation(database, "released", flight["id"])
        long_ago = datetime(2020, 1, 1)
        await database.execute(sa.update(reservations).values(updatedAt=long_ago))
    async with started(config, [SERVICE]) as runtime:
        query = sa.select(reservations.c.id)
        await eventually(lambda: _ids_are(runtime.database("flights"), query, ["held"]))


async def _ids_are(database, query, ids: list[str]) -> bool:
    return [row["id"] for row in await database.fetch_all(query)] == ids


async def test_keyed_reserve_and_release_over_http(
    runtime: Runtime, api: httpx.AsyncClient
) -> None:
    flight = await create_flight(runtime, capacity=10)
    url = f"/api/v1/flights/{flight['id']}/seats"
    for _ in range(2):  # a retry takes nothing more
        answer = await api.post(f"{url}/reserve", json={"seats": 3, "reservation": "a-1_B"})
        assert answer.status_code == 200 and answer.json()["data"]["totalSeats"] == 7
    for released in (3, 0):  # nor does a repeated release give more back
        answer = await api.post(f"{url}/release", json={"reservation": "a-1_B"})
        assert answer.json()["data"] == {"flightId": flight["id"], "seats": released,
                                         "totalSeats": 10}
    await reserve(api, flight["id"], 5)
    for _ in range(2):  # seats given back once under a key of their own
        answer = await api.post(f"{url}/release", json={"seats": 2, "once": "row-1"})
        assert answer.status_code == 200 and answer.json()["data"]["totalSeats"] == 7
    await release(api, flight["id"], 3)
    body = failure(await api.post(f"{url}/reserve", json={"seats": 3, "reservation": "a-1_B"}),
                   409)
    assert body["message"] == "reservation a-1_B was released; its key cannot take seats again"
    assert await free_seats(runtime, flight["id"]) == 10


@pytest.mark.parametrize(
    ("action", "body", "field"),
    [
        ("reserve", {"seats": 1, "reservation": ""}, "reservation"),
        ("reserve", {"seats": 1, "reservation": 7}, "reservation"),
        ("reserve", {"seats": 1, "reservation": "a b"}, "reservation"),
        ("reserve", {"seats": 1, "reservation": "k" * 65}, "reservation"),
        ("reserve", {"reservation": "k"}, "seats"),
        ("release", {"seats": 1, "reservation": "k"}, "seats"),
        ("release", {"reservation": "k/1"}, "reservation"),
        ("release", {"reservation": "k", "once": "k"}, "once"),
        ("release", {"seats": 1, "once": "a b"}, "once"),
        ("release", {"once": "k"}, "seats"),
    ],
)
async def test_bad_reservation_keys_are_400(
    runtime: Runtime, api: httpx.AsyncClient, action: str, body: dict, field: str
) -> None:
    flight = await create_flight(runtime, capacity=5)
    answer = await api.post(f"/api/v1/flights/{flight['id']}/seats/{action}", json=body)
    assert failure(answer, 400)["err"]["field"] == field
    assert await free_seats(runtime, flight["id"]) == 5


async def test_a_new_airplane_keeps_the_booked_seats(
    runtime: Runtime, api: httpx.AsyncClient
) -> None:
    flight = await create_flight(runtime, capacity=10)
    url = f"/api/v1/flights/{flight['id']}"
    small, medium = [
        (await api.post("/api/v1/airplane", json={"modelNumber": "E190", "capacity": seats}))
        .json()["data"]["id"]
        for seats in (5, 8)
    ]
    await reserve(api, flight["id"], 6)

    body = failure(await api.patch(url, json={"airplaneId": small}), 409)
    assert "6 seats booked" in body["message"]
    assert await free_seats(runtime, flight["id"]) == 4

    answer = await api.patch(url, json={"airplaneId": medium})
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"]["totalSeats"] == 2  # 8 seats, 6 still booked
    assert (await release(api, flight["id"], 6)).json()["data"]["totalSeats"] == 8
    failure(await release(api, flight["id"], 1), 409)  # the new capacity is the ceiling


async def test_pruning_waits_for_no_seat_change_in_flight(tmp_path: Path, mysql_url: str) -> None:
    """On MariaDB the prune locks only the rows it deletes. A booking's seat change still
    open (its key recorded between old released keys, its flight's row changed) neither
    holds it up nor deadlocks with it. Deleting a range of keys instead locked every row
    and gap of the range and the flights its condition read: bookings made while it ran
    failed with deadlocks (1213)."""
    async with started(make_config(tmp_path, mysql_url), [SERVICE]) as runtime:
        database = runtime.database("flights")
        flight = await create_flight(runtime, capacity=100)
        for key in ("a-old", "c-old"):
            await store.reserve_seats_once(database, key, flight["id"], 1)
            await store.release_reservation(database, key, flight["id"])
        await database.execute(sa.update(reservations).values(updatedAt=datetime(2020, 1, 1)))

        parts = urlsplit(mysql_url)
        other = pymysql.connect(host=parts.hostname, port=parts.port or 3306,
                                user=parts.username or "root", password=parts.password or "",
                                database=parts.path.lstrip("/"))
        try:
            with other.cursor() as cursor:  # a booking's keyed seat change, not yet committed
                cursor.execute("BEGIN")
                cursor.execute(
                    "INSERT INTO reservations (id, flightId, seats, status, createdAt, updatedAt)"
                    " VALUES ('b-open', %s, 1, 'HELD', NOW(), NOW())", (flight["id"],)
                )
                cursor.execute("UPDATE flights SET totalSeats = totalSeats - 1 WHERE id = %s",
                               (flight["id"],))
            prune = store.prune_reservations(database, datetime(2026, 1, 1))
            assert await asyncio.wait_for(prune, 10) == 2
            other.commit()
        finally:
            other.close()
        query = sa.select(reservations.c.id).order_by(reservations.c.id)
        assert await _ids_are(database, query, ["b-open"])
