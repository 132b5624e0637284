"""Publish with confirms and consume, on the embedded broker or on RabbitMQ: messages
published from `--concurrency` tasks at once, consumed by one subscriber. Reports the
publish rate and latency (until the broker confirms) and the end-to-end latency (from the
start of the publish to the handler), and this process's CPU time per message: with
RabbitMQ, what publishing and consuming cost the client library (the broker's own CPU is
not counted).

    python -m bench.hotpaths.queue --seconds 5 --concurrency 16
    python -m bench.hotpaths.queue --broker amqp://guest:guest@127.0.0.1:5672/

The exchange and the queue get names of their own; on RabbitMQ they (and their dead-letter
pair) are deleted afterwards. The other broker settings are the defaults (prefetch 64).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from typing import Sequence

import aio_pika

from airbourne import broker as brokers
from airbourne import config
from airbourne.broker import Broker, Message
from bench.hotpaths import common

CONNECT_SECONDS = 10.0
DRAIN_SECONDS = 30.0
"""How long the subscriber may take, after the last publish, to receive everything."""

TICKET = {
    "subject": "Booking 1 confirmed: flight BX1234",
    "content": "Your booking 1 is confirmed: 2 seats on flight BX1234, departing "
               "2030-10-10 10:00 UTC. Total cost: 10000.",
    "recepientEmail": "bench@example.com",
    "notificationTime": "2030-10-09T10:00:00.000Z",
    "bookingId": 1,
}
"""A body the size and shape of a booking's notification."""


async def connected(broker: Broker) -> None:
    deadline = time.monotonic() + CONNECT_SECONDS
    while not broker.connected:
        if time.monotonic() > deadline:
            raise SystemExit(f"broker not connected after {CONNECT_SECONDS:.0f} s")
        await asyncio.sleep(0.05)


async def delete_topology(url: str, exchange: str, queue: str) -> None:
    """Remove what `RabbitBroker` declared for `exchange` and `queue`."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for name in (queue, f"{queue}.dead"):
            await channel.queue_delete(name)
        for name in (exchange, f"{exchange}.dlx"):
            await channel.exchange_delete(name)


async def drained(sent: dict[str, float], arrivals: dict[str, float]) -> None:
    """Wait until every message sent has arrived, at most `DRAIN_SECONDS`."""
    deadline = time.monotonic() + DRAIN_SECONDS
    while len(arrivals) < len(sent) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


async def measure(args: argparse.Namespace) -> None:
    name = f"airbourne.bench.{uuid.uuid4().hex[:12]}"
    settings = {**config.load(environ={})["broker"], "url": args.broker, "exchange": name}
    broker = brokers.create(settings)
    body = json.dumps({"service": "CREATE_TICKET", "data": TICKET}).encode()
    sent: dict[str, float] = {}
    arrivals: dict[str, float] = {}  # the first delivery of each message

    async def handler(message: Message) -> None:
        arrivals.setdefault(message.message_id, time.perf_counter())

    async def publish() -> None:
        message_id = uuid.uuid4().hex
        sent[message_id] = time.perf_counter()
        await broker.publish(name, body, message_id=message_id)

    await broker.start()
    try:
        await connected(broker)
        await broker.subscribe(name, name, handler)
        with common.profiled(args.profile):
            cpu = common.cpu_seconds()
            timings = await common.drive(publish, args.seconds, args.concurrency)
            await drained(sent, arrivals)
            cpu = common.cpu_seconds() - cpu
    finally:
        await broker.close()
        if args.broker.startswith("amqp"):
            await delete_topology(args.broker, name, name)
    end_to_end = [(arrived - sent[key]) * 1000.0 for key, arrived in arrivals.items()]
    span = max(arrivals.values(), default=0.0) - min(sent.values())
    kind = "memory" if args.broker.startswith("memory") else "RabbitMQ"
    print(f"publish and consume on {kind}, concurrency {args.concurrency}, "
          f"{timings.seconds:.1f} s (measured on this machine, as busy as it is)")
    print(common.header())
    print(common.line("publish", timings.latencies, timings.seconds))
    print(common.line("end-to-end", end_to_end, span))
    if len(arrivals) != len(sent):
        raise SystemExit(
            f"check FAILED: {len(sent)} published, {len(arrivals)} received "
            f"within {DRAIN_SECONDS:.0f} s of the last publish"
        )
    print(f"check: {len(sent)} published, {len(arrivals)} received: as expected")
    print(f"CPU time of this process: {cpu / len(sent) * 1e6:.0f} µs per message,"
          " published and consumed")


def main(argv: Sequence[str] | None = None) -> None:
    parser = common.parser(__spec__.name, __doc__)
    parser.add_argument(
        "--broker", default="memory://",
        help="memory:// (default) or amqp://guest:guest@127.0.0.1:5672/",
    )
    common.run(measure(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
