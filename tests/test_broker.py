"""The two brokers behave alike: each shared test runs on the memory broker and on RabbitMQ.

Every test uses its own exchange and queues (unique names), deleted from RabbitMQ afterwards.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import Counter
from typing import AsyncIterator, Callable

import aio_pika
import anyio
import pytest
from yarl import URL

from airbourne import broker as broker_module
from airbourne.broker import Broker, BrokerUnavailable, Message, Reject
from airbourne.broker.delivery import Pauses
from airbourne.broker.memory import MemoryBroker
from airbourne.broker.rabbitmq import RabbitBroker
from relay import Relay
from support import delete_topology, free_port

pytestmark = pytest.mark.anyio

KEY = "REMINDER"


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    with anyio.fail_after(seconds):
        while not condition():
            await anyio.sleep(0.01)


class Recorder:
    """A handler that keeps every message it is given."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)

    def bodies(self) -> list[bytes]:
        return [message.body for message in self.messages]


class Backend:
    """Brokers on names unique to one test, and a look at what the interface does not show."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.exchange = f"test-{uuid.uuid4().hex[:12]}"
        self.queues: list[str] = []
        self.brokers: list[Broker] = []

    def queue(self) -> str:
        self.queues.append(f"{self.exchange}-q{len(self.queues)}")
        return self.queues[-1]

    def create(self, url: str | None = None) -> Broker:
        settings = {
            "url": url or self.url,
            "exchange": self.exchange,
            "prefetch": 64,
            "reconnect_max_seconds": 0.2,
        }
        self.brokers.append(broker_module.create(settings))
        return self.brokers[-1]

    async def started(self) -> Broker:
        broker = self.create()
        await broker.start()
        await until(lambda: broker.connected)
        return broker

    async def dead_letters(self, broker: Broker, queue: str) -> list[Message]:
        raise NotImplementedError

    async def left_after_close(self, broker: Broker, queue: str) -> int:
        """Messages still in `queue` once `broker` is closed (unacknowledged ones go back)."""
        raise NotImplementedError

    async def cleanup(self) -> None:
        for broker in self.brokers:
            await broker.close()


class MemoryBackend(Backend):
    async def dead_letters(self, broker: MemoryBroker, queue: str) -> list[Message]:
        return broker.dead_letters(queue)

    async def left_after_close(self, broker: MemoryBroker, queue: str) -> int:
        """Counted before closing: closing withdraws every message left (it was never
        confirmed, so its publisher keeps it)."""
        left = broker.pending(queue)
        await broker.close()
        return left


class RabbitBackend(Backend):
    async def dead_letters(self, broker: RabbitBroker, queue: str) -> list[Message]:
        async with await aio_pika.connect(self.url) as connection:
            dead = await (await connection.channel()).get_queue(f"{queue}.dead")
            messages = []
            while (incoming := await dead.get(no_ack=True, fail=False)) is not None:
                messages.append(Message(incoming.body, incoming.routing_key, incoming.message_id))
            return messages

    async def left_after_close(self, broker: RabbitBroker, queue: str) -> int:
        await broker.close()
        async with await aio_pika.connect(self.url) as connection:
            declared = await (await connection.channel()).get_queue(queue)
            return declared.declaration_result.message_count

    async def cleanup(self) -> None:
        await super().cleanup()
        await delete_topology(self.url, self.exchange, self.queues)


@pytest.fixture(params=["memory", pytest.param("rabbitmq", marks=pytest.mark.amqp)])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "memory":
        backend: Backend = MemoryBackend("memory://")
    else:
        backend = RabbitBackend(request.getfixturevalue("amqp_url"))
    yield backend
    await backend.cleanup()


async def test_publish_then_consume(backend: Backend) -> None:
    broker, queue, received = await backend.started(), backend.queue(), Recorder()
    await broker.subscribe(queue, KEY, received)

    await broker.publish(KEY, b'{"bookingId": 1}', message_id="booking-1")
    await broker.publish(KEY, b'{"bookingId": 2}')

    await until(lambda: len(received.messages) == 2)
    first, second = sorted(received.messages, key=lambda message: message.body)
    assert (first.body, first.message_id, first.routing_key) == (
        b'{"bookingId": 1}', "booking-1", KEY
    )
    assert not first.redelivered
    assert len(second.message_id) == 32  # a uuid4 in hex, made up by publish


async def test_message_waits_in_a_declared_queue_for_a_later_consumer(backend: Backend) -> None:
    broker, queue, received = await backend.started(), backend.queue(), Recorder()
    await broker.declare(queue, KEY)

    # The memory broker confirms a message once it is handled, so publish as a task.
    publishing = asyncio.create_task(broker.publish(KEY, b'"early"', message_id="early"))
    await anyio.sleep(0.1)
    await broker.subscribe(queue, KEY, received)

    await until(lambda: len(received.messages) == 1)
    assert received.messages[0].message_id == "early"
    await publishing


async def test_a_failed_message_is_delivered_again_then_acknowledged(backend: Backend) -> None:
    broker, queue = await backend.started(), backend.queue()
    deliveries: list[Message] = []

    async def fails_once(message: Message) -> None:
        deliveries.append(message)
        if len(deliveries) == 1:
            raise RuntimeError("database is down")

    await broker.subscribe(queue, KEY, fails_once)
    await broker.publish(KEY, b'"retry me"', message_id="retry-1")

    await until(lambda: len(deliveries) == 2)
    assert [message.message_id for message in deliveries] == ["retry-1", "retry-1"]
    assert deliveries[1].body == b'"retry me"' and deliveries[1].redelivered
    assert await backend.left_after_close(broker, queue) == 0
    assert len(deliveries) == 2


async def test_reject_dead_letters_and_the_consumer_goes_on(backend: Backend) -> None:
    broker, queue, received = await backend.started(), backend.queue(), Recorder()

    async def refuses_poison(message: Message) -> None:
        if message.body == b'"poison"':
            raise Reject("cannot ever be processed")
        await received(message)

    await broker.subscribe(queue, KEY, refuses_poison)
    await broker.publish(KEY, b'"poison"', message_id="poison-1")
    await broker.publish(KEY, b'"good"', message_id="good-1")

    await until(lambda: received.bodies() == [b'"good"'])
    dead: list[Message] = []
    with anyio.fail_after(10):
        while not dead:
            await anyio.sleep(0.01)
            dead = await backend.dead_letters(broker, queue)
    assert [(message.body, message.message_id) for message in dead] == [(b'"poison"', "poison-1")]
    assert await backend.left_after_close(broker, queue) == 0


async def test_unroutable_publish_is_an_error(backend: Backend) -> None:
    broker = await backend.started()
    with pytest.raises(BrokerUnavailable, match="unroutable"):
        await broker.publish(f"nobody-{uuid.uuid4().hex}", b"{}")

    queue, received = backend.queue(), Recorder()  # the broker still works afterwards
    await broker.subscribe(queue, KEY, received)
    await broker.publish(KEY, b'"after"')
    await until(lambda: received.bodies() == [b'"after"'])


async def test_publish_without_a_connection_is_an_error(backend: Backend) -> None:
    never_started = backend.create()
    with pytest.raises(BrokerUnavailable):
        await never_started.publish(KEY, b"{}")

    broker = await backend.started()
    await broker.subscribe(backend.queue(), KEY, Recorder())
    await broker.publish(KEY, b"{}")
    await broker.close()
    assert not broker.connected
    with pytest.raises(BrokerUnavailable):
        await broker.publish(KEY, b"{}")


async def test_concurrent_publishes_are_each_consumed_once(backend: Backend) -> None:
    broker, queue, received = await backend.started(), backend.queue(), Recorder()
    await broker.subscribe(queue, KEY, received)
    ids = [f"m-{n}" for n in range(500)]

    await asyncio.gather(
        *(broker.publish(KEY, json.dumps(n).encode(), message_id=ids[n]) for n in range(500))
    )

    await until(lambda: len(received.messages) >= 500)
    counts = Counter(message.message_id for message in received.messages)
    assert set(counts) == set(ids)
    assert set(counts.values()) == {1}


def test_pauses_grow_for_the_same_message_and_are_capped() -> None:
    pauses = Pauses(first=1.0, cap=5.0)
    assert [pauses.after_failure("a") for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert pauses.after_failure("b") == 1.0
    pauses.forget("a")
    assert pauses.after_failure("a") == 1.0


async def test_memory_outage_refuses_publishes_and_holds_deliveries() -> None:
    broker, received = MemoryBroker(exchange="airbourne"), Recorder()
    await broker.start()
    await broker.subscribe("notifications", KEY, received)

    broker.set_available(False)
    assert not broker.connected
    with pytest.raises(BrokerUnavailable):
        await broker.publish(KEY, b"{}")

    broker.set_available(True)
    await broker.publish(KEY, b'"back"')
    await until(lambda: received.bodies() == [b'"back"'])
    await broker.close()


async def test_memory_confirms_a_message_once_its_handler_has_returned() -> None:
    """Nothing outlives the process, so a confirmed message must already be handled: the
    outbox marks a row sent when `publish` returns."""
    broker, release, handled = MemoryBroker(exchange="airbourne"), asyncio.Event(), []

    async def slow(message: Message) -> None:
        await release.wait()
        handled.append(message.message_id)

    await broker.start()
    await broker.subscribe("notifications", KEY, slow)
    publishing = asyncio.create_task(broker.publish(KEY, b"{}", message_id="m-1"))
    await anyio.sleep(0.2)
    assert not publishing.done() and handled == []
    release.set()
    await publishing
    assert handled == ["m-1"]
    await broker.close()


async def test_memory_withdraws_a_message_no_consumer_handled_in_time() -> None:
    broker, received = MemoryBroker(exchange="airbourne", confirm_seconds=0.2), Recorder()
    await broker.start()
    await broker.declare("notifications", KEY)

    with pytest.raises(BrokerUnavailable, match="not handled within 0.2 s"):
        await broker.publish(KEY, b'"unseen"', message_id="m-1")
    await broker.subscribe("notifications", KEY, received)
    await broker.publish(KEY, b'"seen"', message_id="m-2")
    assert received.bodies() == [b'"seen"']  # the withdrawn one is not delivered as well
    await broker.close()


async def test_memory_close_fails_the_publishes_still_waiting() -> None:
    """A stop with messages queued or being handled: their publishers learn they were not
    confirmed (and the outbox keeps them) instead of the messages vanishing."""
    broker, never = MemoryBroker(exchange="airbourne"), asyncio.Event()

    async def stuck(message: Message) -> None:
        await never.wait()

    await broker.start()
    await broker.subscribe("notifications", KEY, stuck)
    publishing = [
        asyncio.create_task(broker.publish(KEY, b"{}", message_id=f"m-{n}")) for n in range(100)
    ]
    await anyio.sleep(0.2)  # 64 being handled (the prefetch), 36 queued
    await broker.close()
    outcomes = await asyncio.gather(*publishing, return_exceptions=True)
    assert all(isinstance(outcome, BrokerUnavailable) for outcome in outcomes)


async def test_memory_a_failing_handler_keeps_the_publisher_waiting_until_it_succeeds() -> None:
    broker, tries = MemoryBroker(exchange="airbourne"), []

    async def fails_once(message: Message) -> None:
        tries.append(message.redelivered)
        if len(tries) == 1:
            raise RuntimeError("database is down")

    await broker.start()
    await broker.subscribe("notifications", KEY, fails_once)
    await broker.publish(KEY, b"{}", message_id="m-1")  # one pause of a second in between
    assert tries == [False, True]
    await broker.close()


async def test_memory_a_handler_that_keeps_failing_is_tried_again_within_the_wait() -> None:
    """Pauses between tries stay within a quarter of the publisher's confirm window, so a
    handler whose database comes back is tried again while the publisher still waits."""
    broker, tries = MemoryBroker(exchange="airbourne", confirm_seconds=2.0), []

    async def fails_three_times(message: Message) -> None:
        tries.append(message.redelivered)
        if len(tries) <= 3:
            raise RuntimeError("database is down")

    await broker.start()
    await broker.subscribe("notifications", KEY, fails_three_times)
    await broker.publish(KEY, b"{}", message_id="m-1")  # three pauses of 0.5 s, not 1 + 2 + 4
    assert tries == [False, True, True, True]
    await broker.close()


async def test_rabbitmq_unreachable_at_start(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="airbourne.broker")
    broker = RabbitBroker(
        f"amqp://guest:secret@127.0.0.1:{free_port()}/", exchange="airbourne",
        reconnect_max_seconds=0.05,
    )
    with anyio.fail_after(2):
        await broker.start()
        await broker.subscribe("notifications", KEY, Recorder())  # kept for when it connects
        await until(lambda: caplog.text.count("cannot connect") >= 3)

    assert not broker.connected
    assert "secret" not in caplog.text
    with pytest.raises(BrokerUnavailable, match="not connected"):
        await broker.publish(KEY, b"{}")
    with anyio.fail_after(2):
        await broker.close()


@pytest.mark.amqp
async def test_a_stop_at_any_moment_of_connecting_to_rabbitmq_ends(amqp_url: str) -> None:
    """aio-pika can swallow a cancel that lands while it opens the channel: the broker's
    task then waited for a connection loss that never came, and the stop with it. Stops
    0 to 100 ms after the start cover the whole connection and its set-up."""
    exchange = f"test-stop-{uuid.uuid4().hex[:8]}"
    try:
        for step in range(50):
            broker = RabbitBroker(amqp_url, exchange=exchange)
            await broker.start()
            await broker.declare(exchange, KEY)  # set up, as a service's broker is
            await asyncio.sleep(step * 0.002)
            with anyio.fail_after(15):
                await broker.close()
    finally:
        await delete_topology(amqp_url, exchange, [exchange])


@pytest.mark.amqp
async def test_rabbitmq_messages_are_persistent_json(amqp_url: str) -> None:
    backend = RabbitBackend(amqp_url)
    try:
        broker, queue = await backend.started(), backend.queue()
        await broker.declare(queue, KEY)
        await broker.publish(KEY, b"{}", message_id="stored-1")
        async with await aio_pika.connect(amqp_url) as connection:
            declared = await (await connection.channel()).get_queue(queue)
            incoming = await declared.get(no_ack=True)
        assert incoming.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert (incoming.content_type, incoming.message_id) == ("application/json", "stored-1")
    finally:
        await backend.cleanup()


@pytest.mark.amqp
async def test_rabbitmq_connects_late_and_reconnects_with_its_consumers(amqp_url: str) -> None:
    backend, rabbitmq = RabbitBackend(amqp_url), URL(amqp_url)
    async with Relay(rabbitmq.host, rabbitmq.port, down=True).running() as relay:
        try:
            url = rabbitmq.with_host("127.0.0.1").with_port(relay.listening)
            broker = backend.create(str(url))
            queue, received = backend.queue(), Recorder()
            await broker.start()
            await broker.subscribe(queue, KEY, received)
            with pytest.raises(BrokerUnavailable):
                await broker.publish(KEY, b'"too early"')

            relay.come_back()  # RabbitMQ comes up late
            await until(lambda: broker.connected)
            await broker.publish(KEY, b'"first"')
            await until(lambda: received.bodies() == [b'"first"'])

            relay.go_down()  # and goes away
            await until(lambda: not broker.connected)
            with pytest.raises(BrokerUnavailable):
                await broker.publish(KEY, b'"while down"')

            relay.come_back()  # and comes back: the consumer is restored
            await until(lambda: broker.connected)
            await broker.publish(KEY, b'"second"')
            await until(lambda: received.bodies() == [b'"first"', b'"second"'])
        finally:
            await backend.cleanup()


@pytest.mark.amqp
async def test_rabbitmq_publishes_that_time_out_leave_later_confirms_paired(amqp_url: str) -> None:
    """A publish whose confirm does not come in time fails, but is never cut off half
    written: aiormq numbers a publish before writing it, and one cancelled in between
    would pair every later confirm with the message before it, so that the next publish
    waited for a confirm that never comes."""
    backend = RabbitBackend(amqp_url)
    try:
        broker, queue = await backend.started(), backend.queue()
        await broker.declare(queue, KEY)
        broker.timeout = 0.001  # shorter than a confirm takes, long enough to start writing
        outcomes = await asyncio.gather(
            *(broker.publish(KEY, b"{}", message_id=f"late-{n}") for n in range(300)),
            return_exceptions=True,
        )
        late = [outcome for outcome in outcomes if outcome is not None]
        assert late and all(isinstance(outcome, BrokerUnavailable) for outcome in late)
        assert all("did not confirm" in str(outcome) for outcome in late)

        broker.timeout = 5.0
        with anyio.fail_after(10):
            await broker.publish(KEY, b"{}", message_id="on-time")
        async with await aio_pika.connect(amqp_url) as connection:
            declared = await (await connection.channel()).get_queue(queue)
            # Each publish that timed out was written all the same (its retry would be a
            # duplicate, which the reminder ignores by message id).
            assert declared.declaration_result.message_count == 301
    finally:
        await backend.cleanup()
