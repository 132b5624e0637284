"""The transactional outbox: work written in the same transaction as the booking change that
calls for it, and the relay that carries it out afterwards.

A booking commits its row and its messages together, so a message exists exactly when the
booking does; the relay then publishes the messages to the broker (those it takes together
as one broker message, see `batch_body`), or for `release_seats` gives the seats of a
cancelled booking back to the flights service, and marks the row sent once the broker has
confirmed it (RabbitMQ: stored; the memory broker, which keeps nothing past the process:
handled by the reminder).
A broker or flights outage only delays rows: they stay unsent and are tried again with a
backoff, while bookings go on. Delivery is at least once: a row whose work was done but not
yet marked sent (a crash in between) is done again, which the reminder tolerates by
ignoring message ids it has seen, and flights by giving seats back once per key.

One relay per booking database is assumed: two relays would both take the same rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from databases import Database

from airbourne.broker import Broker, BrokerUnavailable
from airbourne.clients.errors import ServiceUnavailable
from airbourne.clients.flights import Conflict, FlightNotFound, FlightsClient
from airbourne import db, retention
from airbourne.db import utcnow
from airbourne.http import dumps
from airbourne.ids import unique_hex
from airbourne.services.booking.schema import outbox

if TYPE_CHECKING:
    from airbourne.runtime import Runtime

logger = logging.getLogger("airbourne.booking.outbox")

RELEASE_SEATS = "release_seats"
BATCH_SIZE = 200
MAX_BACKOFF_SECONDS = 30.0
GATHER_SECONDS = 0.02
"""How long a lane woken by a commit lets the rows of other commits arrive before it reads a
batch: at a moderate pace every booking would otherwise be a batch of its own, with its own
SELECT and UPDATE. A notification waits this much longer; a booking does not."""
CONNECT_WAIT_SECONDS = 2.0
"""How long the publish lane waits at start for the broker's first connection (RabbitMQ on
the same network connects in well under a second)."""

PUBLISH = "publish"
RELEASE = "release"
"""The two lanes of work, each with its own backoff, so that a broker outage does not hold up
seat releases and a flights outage does not hold up notifications."""


@dataclass(frozen=True)
class OutboxMessage:
    kind: str
    routing_key: str
    body: str


def release_seats(flight_id: int, seats: int, key: str | None = None) -> OutboxMessage:
    """Give back `seats` of the flight, or with `key` the seats reserved under it. Either
    way once: a row done again (a crash before it was marked sent) gives nothing more."""
    release: dict[str, Any] = {"flightId": flight_id, "seats": seats}
    if key is not None:
        release["reservation"] = key
    return OutboxMessage(RELEASE_SEATS, routing_key="", body=dumps(release).decode())


async def add(tx: db.Transaction, messages: Sequence[OutboxMessage], now: datetime) -> None:
    """Insert `messages` with one statement, in the caller's transaction (on MySQL with its
    next statement or its COMMIT)."""
    rows = [
        {
            "messageId": unique_hex(),
            "kind": message.kind,
            "routingKey": message.routing_key,
            "body": message.body,
            "createdAt": now,
            "attempts": 0,
        }
        for message in messages
    ]
    await tx.insert(outbox, rows)


class Wakeup:
    """Wakes the relay's lanes after a commit that wrote outbox rows: `set()` all of them,
    `set(PUBLISH)` only the one with work (a booking writes no seat release)."""

    def __init__(self) -> None:
        self.lanes = {PUBLISH: asyncio.Event(), RELEASE: asyncio.Event()}

    def set(self, *lanes: str) -> None:
        for lane in lanes or self.lanes:
            self.lanes[lane].set()


async def relay(runtime: Runtime) -> None:
    """Carry out unsent rows until cancelled, each lane in its own loop: a release must not
    wait for publishes the broker has not yet confirmed (the memory broker confirms once the
    reminder has handled a message), nor notifications for an unreachable flights service."""
    if runtime.config["broker"]["url"].startswith("memory:") and not runtime.runs("reminder"):
        logger.warning(
            "outbox: the memory broker delivers only within this process, and the reminder"
            " does not run here: notifications stay in the outbox until it does (or use"
            " RabbitMQ, broker.url)"
        )
    async with asyncio.TaskGroup() as lanes:
        lanes.create_task(_relay_lane(runtime, PUBLISH))
        lanes.create_task(_relay_lane(runtime, RELEASE))


async def _relay_lane(runtime: Runtime, lane: str) -> None:
    """Relay the rows of `lane` in batches. Wakes when a commit sets the app's
    `outbox_wakeup`, or every `outbox_interval_seconds` to pick up rows left over."""
    state = runtime.apps["booking"].state
    wakeup: asyncio.Event = state.outbox_wakeup.lanes[lane]
    interval = runtime.config["booking"]["outbox_interval_seconds"]
    queue = runtime.config["broker"]["notification_queue"]
    binding_key = runtime.config["broker"]["reminder_binding_key"]
    together = runtime.config["booking"]["batch_notifications"]
    backoff = Backoff(interval)
    declared: Broker | None = None
    if lane == PUBLISH:
        await _first_connection(runtime.broker, CONNECT_WAIT_SECONDS)
    while True:
        wakeup.clear()
        more = False
        if backoff.ready():
            broker = runtime.broker
            try:
                if lane == PUBLISH and broker is not declared:
                    # Keep messages published before the reminder ever subscribed.
                    await broker.declare(queue, binding_key)
                    declared = broker
                taken, failed = await relay_batch(
                    state.database, broker, state.flights, {lane}, together=together
                )
            except Exception:
                logger.exception("outbox: relay step failed (%s)", lane)
                taken, failed = 0, {lane}
            backoff.record(failed=bool(failed))
            more = taken == BATCH_SIZE and not failed
        if not more:
            pause = interval if backoff.ready() else min(interval, backoff.remaining())
            if await _nap(wakeup, pause):
                await asyncio.sleep(GATHER_SECONDS)


async def _first_connection(broker: Broker, within: float) -> None:
    """Wait up to `within` seconds for `broker` to connect. Rows left unsent before a
    restart would otherwise be tried, and logged as failed, while it is still connecting."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within):
            while not broker.connected:
                await asyncio.sleep(0.05)


async def relay_batch(
    database: Database,
    broker: Broker,
    flights: FlightsClient,
    lanes: Iterable[str] = (PUBLISH, RELEASE),
    size: int = BATCH_SIZE,
    together: bool = True,
) -> tuple[int, set[str]]:
    """Carry out up to `size` unsent rows of `lanes`, oldest first, all at once; mark the
    ones done as sent with one UPDATE. With `together`, the messages to one routing key go
    as one broker message (`batch_body`), else one each. Returns the number of rows taken
    and the lanes that had a failure."""
    rows = await _unsent(database, set(lanes), size)
    if not rows:
        return 0, set()
    groups = _groups(rows, together)
    outcomes = await asyncio.gather(*(_carry_out(group, broker, flights) for group in groups))
    rows = [row for group in groups for row in group]
    errors = [error for group, error in zip(groups, outcomes) for _ in group]
    await _record(database, rows, errors)
    failed = {_lane(row["kind"]) for row, error in zip(rows, errors) if error is not None}
    if failed:
        count = sum(error is not None for error in errors)
        first = next(error for error in errors if error is not None)
        logger.warning("outbox: %d of %d rows not done, will retry: %s", count, len(rows), first)
    return len(rows), failed


class Backoff:
    """When a lane may try again: `first` seconds after a failure, doubling with each
    failure in a row, at most `cap`; at once after a success."""

    def __init__(self, first: float, cap: float = MAX_BACKOFF_SECONDS) -> None:
        self.first = first
        self.cap = max(cap, first)
        self.failures = 0
        self._until = 0.0

    def ready(self) -> bool:
        return self.remaining() <= 0

    def remaining(self) -> float:
        return self._until - time.monotonic()

    def record(self, failed: bool) -> None:
        if not failed:
            self.failures, self._until = 0, 0.0
            return
        self.failures += 1
        self._until = time.monotonic() + min(self.first * 2 ** (self.failures - 1), self.cap)


def _lane(kind: str) -> str:
    return RELEASE if kind == RELEASE_SEATS else PUBLISH


_UNSENT = (
    "SELECT id, messageId, kind, routingKey, body FROM outbox"
    " WHERE sentAt IS NULL{lanes} ORDER BY id LIMIT :size"
)
_LANE_ONLY = {PUBLISH: " AND kind <> :release", RELEASE: " AND kind = :release"}


async def _unsent(database: Database, lanes: set[str], size: int) -> list[dict[str, Any]]:
    """Up to `size` unsent rows of `lanes`, oldest first. Plain SQL, as on the booking path:
    under load the relay runs a batch for every few bookings."""
    only = _LANE_ONLY[next(iter(lanes))] if len(lanes) == 1 else ""
    async with database.connection() as conn:
        return await db.fetch_all(
            conn, _UNSENT.format(lanes=only), {"size": size, "release": RELEASE_SEATS}
        )


def _groups(rows: list[dict[str, Any]], together: bool) -> list[list[dict[str, Any]]]:
    """The rows carried out as one: with `together`, all messages to one routing key; else,
    and for every seat release, each row alone."""
    if not together:
        return [[row] for row in rows]
    groups: list[list[dict[str, Any]]] = []
    by_key: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row["kind"] == RELEASE_SEATS:
            groups.append([row])
        elif row["routingKey"] in by_key:
            by_key[row["routingKey"]].append(row)
        else:
            by_key[row["routingKey"]] = [row]
            groups.append(by_key[row["routingKey"]])
    return groups


def batch_body(rows: Sequence[dict[str, Any]]) -> bytes:
    """One broker message holding the messages of `rows`, each with its own message id,
    in the reminder's `BATCH` format (see services/reminder/consumer.py). Built from the
    bodies as stored, which are JSON already."""
    items = ",".join(
        f'{{"messageId":"{row["messageId"]}","message":{row["body"]}}}' for row in rows
    )
    return f'{{"service":"BATCH","data":{{"messages":[{items}]}}}}'.encode()


async def _carry_out(
    rows: list[dict[str, Any]], broker: Broker, flights: FlightsClient
) -> str | None:
    """Do what `rows` ask (a group of `_groups`); None when done, else why not."""
    row = rows[0]
    try:
        if row["kind"] == RELEASE_SEATS:
            release = json.loads(row["body"])
            flight_id, key = release["flightId"], release.get("reservation")
            if key is not None:
                await flights.release_reservation(flight_id, key)
            else:  # taken in-process: given back once per row, however often it is done
                await flights.release_seats_once(flight_id, release["seats"], row["messageId"])
        elif len(rows) == 1:
            body, message_id = row["body"].encode(), row["messageId"]
            await broker.publish(row["routingKey"], body, message_id=message_id)
        else:
            await broker.publish(row["routingKey"], batch_body(rows))
    except (FlightNotFound, Conflict) as exc:
        # Trying again cannot help: the flight is gone, its seats are all free already, or
        # the reservation key names another flight's seats.
        logger.error("outbox: row %d: seats not released: %s", row["id"], exc)
    except (BrokerUnavailable, ServiceUnavailable) as exc:
        return str(exc)
    except Exception as exc:
        logger.exception("outbox: %s (%s) failed", _named(rows), row["kind"])
        return repr(exc)
    return None


def _named(rows: Sequence[dict[str, Any]]) -> str:
    return f"row {rows[0]['id']}" if len(rows) == 1 else f"{len(rows)} rows from {rows[0]['id']}"


async def _record(
    database: Database, rows: Sequence[dict[str, Any]], errors: Sequence[str | None]
) -> None:
    """Count the attempt on every row; mark the done ones sent and keep each failure's error."""
    outcomes: dict[str | None, list[int]] = defaultdict(list)
    for row, error in zip(rows, errors):
        outcomes[None if error is None else error[:500]].append(row["id"])
    now = utcnow()
    async with database.connection() as conn:
        for error, ids in outcomes.items():
            listed, values = db.in_list("id", ids)
            change = "sentAt = :now" if error is None else "lastError = :error"
            await db.run(
                conn,
                f"UPDATE outbox SET attempts = attempts + 1, {change} WHERE id IN {listed}",
                {**values, "now": now, "error": error},
            )


async def prune_periodically(runtime: Runtime) -> None:
    """Every hour, delete the rows sent more than `booking.outbox_keep_days` ago: two rows
    per booking would otherwise grow the table for ever. Unsent rows are never deleted."""
    database = runtime.apps["booking"].state.database
    keep = timedelta(days=runtime.config["booking"]["outbox_keep_days"])

    async def delete() -> int:
        return await prune(database, utcnow() - keep)

    await retention.every_hour(f"outbox rows sent more than {keep} ago", delete, logger)


async def prune(database: Database, sent_before: datetime, batch: int = retention.BATCH) -> int:
    """Delete the rows sent before `sent_before`; returns how many were deleted."""
    done = "sentAt IS NOT NULL AND sentAt < :before"
    return await retention.delete_done(database, "outbox", done, {"before": sent_before}, batch)


async def _nap(wakeup: asyncio.Event, seconds: float) -> bool:
    """Wait until `wakeup` is set or `seconds` pass; whether it was set. Not
    `asyncio.wait_for`: on Python 3.11 it loses a cancellation that comes as the event is
    set, and shutdown would hang."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(seconds, 0.0)):
            await wakeup.wait()
    return wakeup.is_set()
