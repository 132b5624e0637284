"""The booking outbox and its relay: outages of the broker or of flights delay messages and
seat releases, never lose or repeat them, and never fail a booking."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import anyio
import httpx
import pytest

from airbourne.broker import Message
from airbourne.clients.flights import HttpFlights
from airbourne.runtime import Runtime
from airbourne.services.booking.schema import outbox
from booking_support import (
    booking_runtime, collect, create_flight, eventually, free_seats, free_seats_are, outbox_rows,
)
from support import delete_topology, free_port, served

pytestmark = pytest.mark.anyio

DEPARTURE = "2030-10-10T10:00:00Z"


def user(user_id: int) -> dict[str, str]:
    return {"x-user-id": str(user_id), "x-user-email": f"user{user_id}@example.com"}


async def book(http: httpx.AsyncClient, flight_id: int, seats: int, user_id: int) -> dict:
    answer = await http.post("/api/v1/bookings", json={
        "flightId": flight_id, "userId": user_id, "NoOfSeats": seats}, headers=user(user_id))
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


async def all_sent(runtime: Runtime) -> bool:
    return all(row["sentAt"] is not None for row in await outbox_rows(runtime))


async def tried_and_failed(runtime: Runtime, kind: str | None = None) -> bool:
    rows = [row for row in await outbox_rows(runtime) if kind in (None, row["kind"])]
    return bool(rows) and all(row["attempts"] >= 2 and row["lastError"] and row["sentAt"] is None
                              for row in rows)


def bodies(messages: list[Message]) -> list[dict]:
    return [json.loads(message.body) for message in messages]


def assert_once_each(received: list[Message], rows: list[dict]) -> None:
    ids = [message.message_id for message in received]
    assert len(ids) == len(set(ids)), "a message was published twice"
    assert set(ids) == {row["messageId"] for row in rows if row["kind"] != "release_seats"}


async def test_broker_outage_delays_messages_and_loses_none(
    tmp_path: Path, database_url: str
) -> None:
    async with booking_runtime(tmp_path, database_url) as (runtime, http):
        received = await collect(runtime)
        runtime.broker.set_available(False)
        flight = await create_flight(runtime, capacity=100, price=1200, departure=DEPARTURE)
        made = await asyncio.gather(
            *(book(http, flight["id"], 1 + user % 3, user) for user in range(1, 21))
        )

        await eventually(lambda: tried_and_failed(runtime))
        assert received == []
        runtime.broker.set_available(True)
        await eventually(lambda: all_sent(runtime))
        await eventually(lambda: _count_is(received, 40))
        await anyio.sleep(0.3)  # several relay rounds more: nothing is published again
        rows = await outbox_rows(runtime)
        assert len(rows) == 40 and len(received) == 40
        assert_once_each(received, rows)

        by_booking: dict[int, list[dict]] = {}
        for body in bodies(received):
            assert body["service"] == "CREATE_TICKET"
            by_booking.setdefault(body["data"]["bookingId"], []).append(body["data"])
        assert set(by_booking) == {booking["id"] for booking in made}
        for booking in made:
            tickets = sorted(by_booking[booking["id"]], key=lambda data: data["notificationTime"])
            confirmation, reminder = tickets
            text = confirmation["subject"] + " " + confirmation["content"]
            for fact in (flight["flightNumber"], f"{booking['NoOfSeats']} seat",
                         str(booking["totalCost"]), str(booking["id"])):
                assert fact in text
            assert confirmation["recepientEmail"] == f"user{booking['userId']}@example.com"
            assert reminder["notificationTime"] == "2030-10-09T10:00:00.000Z"  # 24 h before
            assert flight["flightNumber"] in reminder["subject"]


@pytest.mark.parametrize("together", [True, False], ids=["together", "one-by-one"])
async def test_notifications_relayed_together_go_as_one_message(
    tmp_path: Path, together: bool
) -> None:
    env = {"AIRBOURNE_BOOKING_BATCH_NOTIFICATIONS": str(together).lower()}
    async with booking_runtime(tmp_path, None, **env) as (runtime, http):
        delivered: list[Message] = []
        received = await collect(runtime, delivered)
        runtime.broker.set_available(False)
        flight = await create_flight(runtime, capacity=100, departure=DEPARTURE)
        for user_id in range(1, 11):
            await book(http, flight["id"], 1, user_id)
        await eventually(lambda: tried_and_failed(runtime))

        runtime.broker.set_available(True)
        await eventually(lambda: all_sent(runtime))
        await eventually(lambda: _count_is(received, 20))
        assert_once_each(received, await outbox_rows(runtime))
        assert len(delivered) == (1 if together else 20)


async def test_the_memory_broker_without_the_reminder_in_process_is_announced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Its messages could reach no one: they stay in the outbox, and the log says why."""
    caplog.set_level(logging.WARNING, logger="airbourne.booking.outbox")
    async with booking_runtime(tmp_path, None) as (runtime, http):
        flight = await create_flight(runtime, departure=DEPARTURE)
        await book(http, flight["id"], 1, 1)

        async def announced() -> bool:
            return "the reminder does not run here" in caplog.text

        await eventually(announced)
        await anyio.sleep(0.5)  # ten relay rounds: a message confirmed unhandled would be sent
        assert not any(row["sentAt"] for row in await outbox_rows(runtime))


async def test_no_reminder_when_departure_is_too_close(tmp_path: Path) -> None:
    soon = datetime.now(timezone.utc) + timedelta(hours=3)
    async with booking_runtime(tmp_path, None) as (runtime, http):
        flight = await create_flight(runtime, departure=soon.isoformat(),
                                     arrival=(soon + timedelta(hours=2)).isoformat())
        await book(http, flight["id"], 1, 1)
        assert [row["kind"] for row in await outbox_rows(runtime)] == ["confirmation"]


async def test_cancellation_sends_its_messages_and_releases_the_seats(
    tmp_path: Path, database_url: str
) -> None:
    async with booking_runtime(tmp_path, database_url) as (runtime, http):
        received = await collect(runtime)
        flight = await create_flight(runtime, capacity=20)
        await book(http, flight["id"], 5, 1)
        booking = await book(http, flight["id"], 3, 2)
        answer = await http.post(f"/api/v1/bookings/{booking['id']}/cancel", headers=user(2))
        assert answer.status_code == 200 and answer.json()["data"]["status"] == "Cancelled"

        await eventually(lambda: all_sent(runtime))
        await eventually(lambda: _count_is(received, 6))
        assert await free_seats(runtime, flight["id"]) == 15
        assert_once_each(received, await outbox_rows(runtime))
        about = [b for b in bodies(received) if b["data"].get("bookingId") == booking["id"]]
        assert {"service": "CANCEL_TICKETS", "data": {"bookingId": booking["id"]}} in about
        notices = [b["data"] for b in bodies(received)
                   if b["data"].get("subject") == f"Booking {booking['id']} cancelled"]
        assert len(notices) == 1 and notices[0]["recepientEmail"] == "user2@example.com"
        assert "bookingId" not in notices[0]  # no cancel of the booking's tickets stops it


async def test_seats_come_back_after_a_flights_outage(tmp_path: Path, database_url: str) -> None:
    async with booking_runtime(tmp_path, database_url) as (runtime, http):
        received = await collect(runtime)
        flight = await create_flight(runtime, capacity=20)
        await book(http, flight["id"], 5, 1)
        booking = await book(http, flight["id"], 3, 2)
        state = runtime.apps["booking"].state
        nobody = f"http://127.0.0.1:{free_port()}"
        state.flights = HttpFlights(runtime.http, nobody)  # flights is down

        answer = await http.post(f"/api/v1/bookings/{booking['id']}/cancel", headers=user(2))
        assert answer.status_code == 200 and answer.json()["data"]["status"] == "Cancelled"
        await eventually(lambda: tried_and_failed(runtime, "release_seats"))
        rows = await outbox_rows(runtime)
        release = next(row for row in rows if row["kind"] == "release_seats")
        assert release["lastError"].startswith("flights service unavailable")
        assert await free_seats(runtime, flight["id"]) == 12
        # the notifications did not wait for flights
        await eventually(lambda: _count_is(received, 6))

        async with served(runtime.apps["flights"]) as url:
            state.flights = HttpFlights(runtime.http, url)  # flights is back
            await eventually(lambda: all_sent(runtime))
            assert await free_seats(runtime, flight["id"]) == 15  # given back once
            await anyio.sleep(0.3)
            assert await free_seats(runtime, flight["id"]) == 15


async def test_seats_come_back_while_notifications_wait_for_the_broker(
    tmp_path: Path, database_url: str
) -> None:
    """Seat releases and notifications are relayed apart: a release does not wait for
    publishes the broker has not confirmed (the memory broker, with no consumer, waits
    `confirm_seconds` before it refuses them)."""
    async with booking_runtime(tmp_path, database_url) as (runtime, http):
        flight = await create_flight(runtime, capacity=20, departure=DEPARTURE)
        booking = await book(http, flight["id"], 3, 1)
        answer = await http.post(f"/api/v1/bookings/{booking['id']}/cancel", headers=user(1))
        assert answer.status_code == 200
        await eventually(lambda: free_seats_are(runtime, flight["id"], 20), seconds=3)
        unsent = [row["kind"] for row in await outbox_rows(runtime) if row["sentAt"] is None]
        assert unsent and "release_seats" not in unsent  # the notifications still wait


@pytest.mark.parametrize("split", [False, True], ids=["in-process", "over-http"])
async def test_a_release_done_again_gives_the_seats_back_once(
    tmp_path: Path, database_url: str, split: bool
) -> None:
    """A crash between giving the seats back and marking the row sent makes the relay do it
    again. Booked in-process on SQLite, the release is keyed by its outbox row; booked
    through flights' HTTP routes (as in split mode) or on MySQL, by the booking's
    reservation key. Either way the seats come back once: 15 free, not 18."""
    async with booking_runtime(tmp_path, database_url) as (runtime, http):
        await collect(runtime)  # the reminder's part: rows are sent once handled
        async with served(runtime.apps["flights"]) as url:
            state = runtime.apps["booking"].state
            if split:
                state.flights = HttpFlights(runtime.http, url)
            flight = await create_flight(runtime, capacity=20)
            await book(http, flight["id"], 5, 1)
            booking = await book(http, flight["id"], 3, 2)
            answer = await http.post(f"/api/v1/bookings/{booking['id']}/cancel", headers=user(2))
            assert answer.status_code == 200
            await eventually(lambda: all_sent(runtime))
            assert await free_seats(runtime, flight["id"]) == 15

            release = next(r for r in await outbox_rows(runtime) if r["kind"] == "release_seats")
            keyed = split or not database_url.startswith("sqlite")
            assert ("reservation" in json.loads(release["body"])) is keyed
            unsent = outbox.update().where(outbox.c.id == release["id"]).values(sentAt=None)
            await runtime.database("booking").execute(unsent)  # as if it had never been marked
            state.outbox_wakeup.set()
            await eventually(lambda: all_sent(runtime))
            assert await free_seats(runtime, flight["id"]) == 15


async def test_rabbitmq_gets_every_message_once_when_it_becomes_reachable(
    tmp_path: Path, amqp_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    tag = f"test_booking_{uuid.uuid4().hex[:10]}"
    names = {"AIRBOURNE_BROKER_EXCHANGE": tag, "AIRBOURNE_BROKER_NOTIFICATION_QUEUE": tag,
             "AIRBOURNE_BROKER_REMINDER_BINDING_KEY": tag}
    nowhere = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    try:
        down = booking_runtime(tmp_path, None, AIRBOURNE_BROKER_URL=nowhere, **names)
        async with down as (runtime, http):
            flight = await create_flight(runtime, capacity=50)
            for n in range(1, 11):
                await book(http, flight["id"], 2, n)
            await eventually(lambda: tried_and_failed(runtime))

        caplog.clear()
        caplog.set_level(logging.WARNING, logger="airbourne.booking.outbox")
        up = booking_runtime(tmp_path, None, AIRBOURNE_BROKER_URL=amqp_url, **names)
        async with up as (runtime, _):
            received = await collect(runtime)
            await eventually(lambda: all_sent(runtime))
            await eventually(lambda: _count_is(received, 20))
            await anyio.sleep(0.3)
            assert len(received) == 20
            assert_once_each(received, await outbox_rows(runtime))
        # The rows left from before were not tried while the broker was still connecting.
        assert "rows not done" not in caplog.text
    finally:
        await delete_topology(amqp_url, tag, [tag])


async def _count_is(received: list, count: int) -> bool:
    assert len(received) <= count, f"{len(received)} messages, expected {count}"
    return len(received) == count


async def test_sent_rows_are_pruned_after_the_keep_time_and_unsent_ones_never(
    tmp_path: Path, database_url: str
) -> None:
    from airbourne.db import utcnow
    from airbourne.services.booking import outbox
    from airbourne.services.booking.schema import outbox as table

    async with booking_runtime(tmp_path, database_url) as (runtime, http):
        await collect(runtime)
        flight = await create_flight(runtime, departure=DEPARTURE)
        for user_id in (1, 2, 3):
            await book(http, flight["id"], 1, user_id)
        await eventually(lambda: all_sent(runtime))
        ids = [row["id"] for row in await outbox_rows(runtime)]
        assert len(ids) == 6  # a confirmation and a reminder per booking
        database = runtime.database("booking")
        long_ago = utcnow() - timedelta(days=30)
        await database.execute(table.update().where(table.c.id.in_(ids[:4])).values(sentAt=long_ago))
        await database.execute(table.update().where(table.c.id == ids[4]).values(sentAt=None))

        assert await outbox.prune(database, utcnow() - timedelta(days=7), batch=3) == 4
        assert [row["id"] for row in await outbox_rows(runtime)] == ids[4:]
        assert await outbox.prune(database, utcnow() - timedelta(days=7), batch=3) == 0


async def test_the_seat_release_lane_reads_its_own_rows_however_long_the_backlog(
    mysql_url: str,
) -> None:
    """While the broker is away, notifications pile up unsent, and the release lane looks
    for its rows every second. It reads them off an index of their own: looking among all
    unsent rows read each of them (374 ms a query with 200,000 waiting, on MariaDB). MariaDB
    counts the rows its handlers read per connection (`Handler_read_%`)."""
    from airbourne import db
    from airbourne.services.booking import outbox as relay
    from airbourne.services.booking.schema import MIGRATIONS

    database = await db.connect(mysql_url)
    try:
        await db.migrate(database, "booking", MIGRATIONS)
        now = db.utcnow()

        def row(n: int, kind: str) -> dict:
            return {"messageId": f"m{n}", "kind": kind, "routingKey": "REMINDER",
                    "body": "{}", "createdAt": now, "attempts": 0}

        rows = [row(n, "confirmation") for n in range(3000)]
        rows[1000] = row(1000, relay.RELEASE_SEATS)
        rows[2500] = row(2500, relay.RELEASE_SEATS)
        async with database.connection() as conn:
            async with db.transaction(conn) as tx:
                await tx.insert(outbox, rows)
        await database.execute("ANALYZE TABLE outbox")

        async with database.connection() as conn:  # _unsent takes this one too: same task

            async def read() -> int:
                found = await conn.fetch_all("SHOW SESSION STATUS LIKE 'Handler_read_%'")
                return sum(int(found_row[1]) for found_row in found)

            before = await read()
            itself = await read() - before  # what SHOW STATUS adds by itself
            releases = await relay._unsent(database, {relay.RELEASE}, 200)
            count = await read() - before - 2 * itself

        assert [found["messageId"] for found in releases] == ["m1000", "m2500"]
        assert count < 50, f"the release lane read {count} rows to find 2"
    finally:
        await db.disconnect(database)
