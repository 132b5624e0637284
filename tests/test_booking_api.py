"""The booking service over HTTP: every route, its answers and its client mistakes, on SQLite
and MariaDB."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from airbourne.http import MAX_BODY_BYTES
from airbourne.services import auth, flights
from airbourne.services.booking import SERVICE as BOOKING
from airbourne.services.booking.schema import bookings
from booking_support import (
    booking_runtime, collect, create_flight, eventually, free_seats, outbox_rows,
)
from support import client, free_port

pytestmark = pytest.mark.anyio

RECORD = {"id", "flightId", "userId", "NoOfSeats", "totalCost", "status", "createdAt", "updatedAt"}


def as_user(user_id: int) -> dict[str, str]:
    """The headers the gateway adds for a signed-in user."""
    return {"x-user-id": str(user_id), "x-user-email": f"user{user_id}@example.com"}


def order(flight_id: int, seats: int, user_id: int = 1) -> dict:
    return {"flightId": flight_id, "userId": user_id, "NoOfSeats": seats}


async def book(http: httpx.AsyncClient, flight_id: int, seats: int, user_id: int = 1,
               headers: dict | None = None) -> dict:
    headers = as_user(user_id) if headers is None else headers
    answer = await http.post("/api/v1/bookings", json=order(flight_id, seats, user_id),
                             headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()


def assert_refused(answer: httpx.Response, status: int, field: str | None = None) -> None:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["success"] is False and body["data"] == {}
    if field is not None:
        assert body["err"]["field"] == field, body


async def test_info(tmp_path: Path) -> None:
    async with booking_runtime(tmp_path, None) as (_, http):
        answer = await http.get("/api/v1/info")
    assert answer.status_code == 200
    assert answer.json() == {"message": "Response from routes"}


async def test_book_then_read(tmp_path: Path, database_url: str) -> None:
    async with booking_runtime(tmp_path, database_url) as (runtime, http):
        flight = await create_flight(runtime, capacity=100, price=4250)
        body = await book(http, flight["id"], 3, user_id=7)
        assert body["success"] is True and body["err"] == {}
        booking = body["data"]
        assert set(booking) == RECORD
        assert booking["flightId"] == flight["id"] and booking["userId"] == 7
        assert booking["NoOfSeats"] == 3 and booking["totalCost"] == 3 * 4250
        assert booking["status"] == "Booked"
        assert booking["createdAt"].endswith("Z") and booking["createdAt"] == booking["updatedAt"]
        assert await free_seats(runtime, flight["id"]) == 97

        read = await http.get(f"/api/v1/bookings/{booking['id']}", headers=as_user(7))
        assert read.status_code == 200 and read.json()["data"] == booking
        trusted = await http.get(f"/api/v1/bookings/{booking['id']}")  # an internal caller
        assert trusted.status_code == 200 and trusted.json()["data"] == booking


async def test_unknown_flight_is_404_and_writes_nothing(tmp_path: Path, database_url: str) -> None:
    async with booking_runtime(tmp_path, database_url) as (runtime, http):
        answer = await http.post("/api/v1/bookings", json=order(999, 1), headers=as_user(1))
        assert_refused(answer, 404)
        assert "flight 999" in answer.json()["message"]
        assert await outbox_rows(runtime) == []


async def test_bad_counts_and_missing_fields_are_400(tmp_path: Path, database_url: str) -> None:
    async with booking_runtime(tmp_path, database_url) as (runtime, http):
        flight = await create_flight(runtime, capacity=10)
        good = order(flight["id"], 1)
        for seats in (0, -1, 1.5, "2", "two", True, None, [], {}, 1001, 2**40):
            answer = await http.post("/api/v1/bookings", json={**good, "NoOfSeats": seats})
            assert_refused(answer, 400, "NoOfSeats")
        for field in good:
            body = {name: value for name, value in good.items() if name != field}
            answer = await http.post("/api/v1/bookings", json=body, headers=as_user(1))
            assert_refused(answer, 400, field)
            assert field in answer.json()["message"]
        for field in ("flightId", "userId"):
            for value in ("abc", "1", -3, 0, 2.5):
                answer = await http.post("/api/v1/bookings", json={**good, field: value})
                assert_refused(answer, 400, field)
        assert await free_seats(runtime, flight["id"]) == 10


async def test_malformed_and_oversized_bodies(tmp_path: Path, database_url: str) -> None:
    json_type = {"content-type": "application/json"}
    async with booking_runtime(tmp_path, database_url) as (_, http):
        for content in (b"{not json", b"[1, 2]", b"", b"42", b'"text"'):
            answer = await http.post("/api/v1/bookings", content=content, headers=json_type)
            assert_refused(answer, 400, "body")
        huge = json.dumps({**order(1, 1), "pad": "x" * MAX_BODY_BYTES})
        answer = await http.post("/api/v1/bookings", content=huge, headers=json_type)
        assert_refused(answer, 413, "body")


async def test_sold_out_is_409_and_takes_nothing(tmp_path: Path, database_url: str) -> None:
    async with booking_runtime(tmp_path, database_url) as (runtime, http):
        flight = await create_flight(runtime, capacity=5)
        await book(http, flight["id"], 4)
        answer = await http.post("/api/v1/bookings", json=order(flight["id"], 2, 2),
                                 headers=as_user(2))
        assert_refused(answer, 409)
        assert await free_seats(runtime, flight["id"]) == 1
        await book(http, flight["id"], 1, user_id=2)
        assert await free_seats(runtime, flight["id"]) == 0


async def test_path_ids_must_be_integers(tmp_path: Path, database_url: str) -> None:
    async with booking_runtime(tmp_path, database_url) as (_, http):
        assert_refused(await http.get("/api/v1/bookings/abc"), 400, "id")
        assert_refused(await http.get("/api/v1/bookings/0"), 400, "id")
        assert_refused(await http.post("/api/v1/bookings/1x/cancel"), 400, "id")
        assert_refused(await http.get("/api/v1/bookings/12345"), 404)
        assert_refused(await http.post("/api/v1/bookings/12345/cancel"), 404)


async def test_a_user_books_only_for_themselves(tmp_path: Path, database_url: str) -> None:
    async with booking_runtime(tmp_path, database_url) as (runtime, http):
        flight = await create_flight(runtime, capacity=10)
        someone_else = order(flight["id"], 1, user_id=2)
        answer = await http.post("/api/v1/bookings", json=someone_else, headers=as_user(1))
        assert_refused(answer, 403, "userId")
        answer = await http.post("/api/v1/bookings", json=someone_else,
                                 headers={"x-user-id": "abc"})
        assert_refused(answer, 400, "x-user-id")
        assert await free_seats(runtime, flight["id"]) == 10


async def test_reading_and_listing_are_the_owners(tmp_path: Path, database_url: str) -> None:
    async with booking_runtime(tmp_path, database_url) as (runtime, http):
        flight = await create_flight(runtime, capacity=50)
        mine = [(await book(http, flight["id"], n, user_id=1))["data"] for n in (1, 2, 3)]
        theirs = (await book(http, flight["id"], 4, user_id=2))["data"]

        async def listed(query: str, headers: dict) -> list:
            answer = await http.get(f"/api/v1/bookings{query}", headers=headers)
            assert answer.status_code == 200, answer.text
            return answer.json()["data"]

        assert await listed("", as_user(1)) == mine
        assert await listed("?userId=1", as_user(1)) == mine
        assert await listed("?limit=2&offset=1", as_user(1)) == mine[1:3]
        refused = [
            await http.get("/api/v1/bookings?userId=2", headers=as_user(1)),
            await http.get(f"/api/v1/bookings/{theirs['id']}", headers=as_user(1)),
            await http.post(f"/api/v1/bookings/{theirs['id']}/cancel", headers=as_user(1)),
        ]
        for answer in refused:
            assert_refused(answer, 403)
        for query in ("limit=0", "limit=501", "offset=-1", "limit=x", "userId=abc"):
            answer = await http.get(f"/api/v1/bookings?{query}", headers=as_user(1))
            assert_refused(answer, 400)

        # internal callers (no x-user-id) are trusted, but say whose bookings they want
        assert await listed("?userId=2", {}) == [theirs]
        assert await listed("?userId=3", {}) == []
        assert_refused(await http.get("/api/v1/bookings"), 400, "userId")
        assert (await http.get(f"/api/v1/bookings/{theirs['id']}")).status_code == 200


async def test_cancel_again_returns_the_seats_once(tmp_path: Path, database_url: str) -> None:
    async with booking_runtime(tmp_path, database_url) as (runtime, http):
        await collect(runtime)  # the reminder's part: rows are sent once handled
        flight = await create_flight(runtime, capacity=20)
        await book(http, flight["id"], 5, user_id=1)
        booking = (await book(http, flight["id"], 3, user_id=2))["data"]
        cancel = f"/api/v1/bookings/{booking['id']}/cancel"

        first = await http.post(cancel, headers=as_user(2))
        assert first.status_code == 200, first.text
        cancelled = first.json()["data"]
        assert cancelled["status"] == "Cancelled" and cancelled["id"] == booking["id"]
        assert cancelled["updatedAt"] >= booking["updatedAt"]
        again = await asyncio.gather(*(http.post(cancel, headers=as_user(2)) for _ in range(5)))
        assert all(a.status_code == 200 and a.json()["data"] == cancelled for a in again)
        read = await http.get(f"/api/v1/bookings/{booking['id']}")
        assert read.json()["data"] == cancelled

        async def all_done() -> bool:
            return all(row["sentAt"] for row in await outbox_rows(runtime))

        await eventually(all_done)
        assert await free_seats(runtime, flight["id"]) == 15  # 20 - 5: returned once, not twice
        kinds = [row["kind"] for row in await outbox_rows(runtime)]
        assert kinds.count("release_seats") == 1 and kinds.count("cancel_tickets") == 1


async def test_concurrent_cancels_return_the_seats_once(tmp_path: Path, database_url: str) -> None:
    async with booking_runtime(tmp_path, database_url) as (runtime, http):
        await collect(runtime)  # the reminder's part: rows are sent once handled
        flight = await create_flight(runtime, capacity=20)
        booking = (await book(http, flight["id"], 3))["data"]
        cancel = f"/api/v1/bookings/{booking['id']}/cancel"
        answers = await asyncio.gather(*(http.post(cancel, headers=as_user(1)) for _ in range(8)))
        assert {a.status_code for a in answers} == {200}
        assert {a.json()["data"]["status"] for a in answers} == {"Cancelled"}
        kinds = [row["kind"] for row in await outbox_rows(runtime)]
        assert kinds.count("release_seats") == 1 and kinds.count("cancellation") == 1

        async def returned() -> bool:
            return all(row["sentAt"] is not None for row in await outbox_rows(runtime))

        await eventually(returned)  # the relay has given the seats back, once
        assert await free_seats(runtime, flight["id"]) == 20


async def test_a_retry_with_the_same_key_returns_the_first_booking(
    tmp_path: Path, database_url: str
) -> None:
    async with booking_runtime(tmp_path, database_url) as (runtime, http):
        flight = await create_flight(runtime, capacity=10)
        body = order(flight["id"], 2)
        keyed = {**as_user(1), "Idempotency-Key": "order-77"}
        first = await http.post("/api/v1/bookings", json=body, headers=keyed)
        again = await http.post("/api/v1/bookings", json=body, headers=keyed)
        assert first.status_code == again.status_code == 200
        assert again.json()["data"] == first.json()["data"]
        assert await free_seats(runtime, flight["id"]) == 8

        other_user = await http.post("/api/v1/bookings", json={**body, "userId": 2},
                                     headers={**as_user(2), "Idempotency-Key": "order-77"})
        assert other_user.status_code == 200
        assert other_user.json()["data"]["id"] != first.json()["data"]["id"]
        changed = await http.post("/api/v1/bookings", json={**body, "NoOfSeats": 3}, headers=keyed)
        assert_refused(changed, 409)
        too_long = {**as_user(1), "Idempotency-Key": "k" * 256}
        assert_refused(await http.post("/api/v1/bookings", json=body, headers=too_long),
                       400, "Idempotency-Key")
        assert await free_seats(runtime, flight["id"]) == 6
        kinds = [row["kind"] for row in await outbox_rows(runtime)]
        assert kinds.count("confirmation") == 2  # one per booking, none for the retry


async def test_concurrent_retries_book_once(tmp_path: Path, database_url: str) -> None:
    async with booking_runtime(tmp_path, database_url) as (runtime, http):
        flight = await create_flight(runtime, capacity=100)
        keyed = {**as_user(1), "Idempotency-Key": "double-click"}
        answers = await asyncio.gather(*(
            http.post("/api/v1/bookings", json=order(flight["id"], 3), headers=keyed)
            for _ in range(12)
        ))
        assert [answer.status_code for answer in answers] == [200] * 12
        assert len({answer.json()["data"]["id"] for answer in answers}) == 1
        assert await free_seats(runtime, flight["id"]) == 97
        count = sa.select(sa.func.count()).select_from(bookings)
        assert await runtime.database("booking").fetch_val(count) == 1


async def test_the_seats_go_back_when_the_booking_cannot_be_written(
    tmp_path: Path, database_url: str
) -> None:
    async with booking_runtime(tmp_path, database_url) as (runtime, http):
        flight = await create_flight(runtime, capacity=10)
        database = runtime.database("booking")
        # as a server would: the 500 answer, not the exception (which ASGITransport re-raises)
        transport = httpx.ASGITransport(runtime.apps["booking"], raise_app_exceptions=False)
        await database.execute("ALTER TABLE bookings RENAME TO bookings_away")
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as server:
                answer = await server.post("/api/v1/bookings", json=order(flight["id"], 4),
                                           headers=as_user(1))
        finally:
            await database.execute("ALTER TABLE bookings_away RENAME TO bookings")
        assert answer.status_code == 500 and answer.json()["success"] is False
        assert await free_seats(runtime, flight["id"]) == 10
        assert await outbox_rows(runtime) == []


async def test_without_the_email_header_auth_tells_the_email(
    tmp_path: Path, database_url: str
) -> None:
    services = (auth.SERVICE, flights.SERVICE, BOOKING)
    async with booking_runtime(tmp_path, database_url, services) as (runtime, http):
        async with client(runtime.apps["auth"]) as auth_http:
            signup = {"email": "grace@example.com", "password": "secret99"}
            user = (await auth_http.post("/api/v1/signup", json=signup)).json()["data"]
            looked_up = await auth_http.get(f"/api/v1/users/{user['id']}")
            assert looked_up.json()["data"] == user
            assert_refused(await auth_http.get("/api/v1/users/999"), 404)
            # (the gateway does not forward this route: see test_gateway.py)
        flight = await create_flight(runtime, capacity=10)
        await book(http, flight["id"], 1, user_id=user["id"], headers={})
        bodies = [json.loads(row["body"]) for row in await outbox_rows(runtime)]
        assert {body["data"]["recepientEmail"] for body in bodies} == {"grace@example.com"}

        answer = await http.post("/api/v1/bookings", json=order(flight["id"], 1, user_id=999))
        assert_refused(answer, 404)
        assert answer.json()["message"] == "user not found"
        assert await free_seats(runtime, flight["id"]) == 9


async def test_flights_unreachable_is_503(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    booking_only = booking_runtime(tmp_path, None, (BOOKING,), AIRBOURNE_FLIGHTS_URL=closed)
    async with booking_only as (runtime, http):
        answer = await http.post("/api/v1/bookings", json=order(1, 1), headers=as_user(1))
        assert_refused(answer, 503)
        assert answer.json()["message"].startswith("flights service unavailable: ")
        assert await outbox_rows(runtime) == []
