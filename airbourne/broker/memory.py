"""The embedded broker: RabbitMQ's semantics inside one process, on asyncio queues.

One direct exchange routes a message to every queue bound with its routing key; a queue
keeps its messages until a consumer takes them, so a message published before anyone
subscribes is delivered when a consumer comes, as long as the queue was declared (and the
publisher still waits: see below). A message with no bound queue is refused ("unroutable").
A handler that fails gets the message again after a pause; one that raises `Reject` sends it
to `dead_letters(queue)`.

Nothing is kept outside process memory, so `publish` confirms a message only once it has
been handled: the consumer of every queue it was routed to returned (or rejected it). A
publisher that keeps its message until `publish` returns (the booking outbox) therefore loses
nothing when the process stops or dies with messages still queued: they were never
confirmed, and it publishes them again. A message not handled within `confirm_seconds` (no
consumer, or one that keeps failing) is withdrawn: it stays queued but consumers skip it
(a handler already running finishes), and `publish` raises `BrokerUnavailable`, as when
RabbitMQ does not confirm. Delivery stays at least once: a message handled just as its
publisher gave up comes again, and handlers are idempotent.

Tests simulate an outage with `set_available(False)`: `publish` then raises
`BrokerUnavailable`, `connected` is False and consumers take no new messages (queued ones
wait), until `set_available(True)`.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import defaultdict
from dataclasses import dataclass

from airbourne.broker.base import BrokerUnavailable, Handler, Message
from airbourne.broker.delivery import Outcome, Pauses, handle
from airbourne.ids import unique_hex

CONFIRM_SECONDS = 10.0


@dataclass
class Delivery:
    """A message in one queue, and the future its publisher waits on. The future is done
    once the message is handled there; done before that (cancelled when the publisher gave
    up, failed when the broker closed), the message is withdrawn: consumers skip it, and a
    handler already running finishes but does not queue it again."""

    message: Message
    handled: asyncio.Future[None]

    @property
    def withdrawn(self) -> bool:
        return self.handled.done()

    def settle(self) -> None:
        if not self.handled.done():
            self.handled.set_result(None)


class MemoryBroker:
    def __init__(
        self, exchange: str, prefetch: int = 64, confirm_seconds: float = CONFIRM_SECONDS
    ) -> None:
        self.exchange = exchange
        self.prefetch = prefetch
        self.confirm_seconds = confirm_seconds
        self._bindings: dict[str, set[str]] = defaultdict(set)  # binding key -> queue names
        self._queues: dict[str, asyncio.Queue[Delivery]] = {}
        self._unconfirmed: set[asyncio.Future[None]] = set()  # publishes waiting
        self._dead: dict[str, list[Message]] = {}
        self._consumers: list[asyncio.Task] = []
        self._started = False
        self._available = True
        self._up = asyncio.Event()  # set while connected: consumers wait on it
        # A failing handler is tried again at least four times within a publisher's wait:
        # after an outage of what it needs (the reminder's database), a message is handled
        # while its publisher still waits, instead of after a pause (up to 30 s) that
        # outlasts the wait and sends the publisher into its own backoff.
        self._pauses = Pauses(cap=confirm_seconds / 4)

    async def start(self) -> None:
        self._started = True
        self._update()

    async def close(self) -> None:
        self._started = False
        self._update()
        consumers, self._consumers = self._consumers, []
        for task in consumers:
            task.cancel()
        await asyncio.gather(*consumers, return_exceptions=True)
        for handled in self._unconfirmed:  # their messages are lost with the process
            if not handled.done():
                handled.set_exception(BrokerUnavailable(f"memory broker {self.exchange!r} closed"))

    @property
    def connected(self) -> bool:
        return self._up.is_set()

    def set_available(self, available: bool) -> None:
        """Simulate the broker going away (False) and coming back (True)."""
        self._available = available
        self._update()

    def dead_letters(self, queue: str) -> list[Message]:
        """The messages of `queue` that a handler rejected, oldest first."""
        return list(self._dead.get(queue, ()))

    def pending(self, queue: str) -> int:
        """How many messages wait in `queue` (not those being handled; withdrawn ones until a
        consumer skips them)."""
        return self._queues[queue].qsize() if queue in self._queues else 0

    async def declare(self, queue: str, binding_key: str) -> None:
        self._queues.setdefault(queue, asyncio.Queue())
        self._dead.setdefault(queue, [])
        self._bindings[binding_key].add(queue)

    async def publish(
        self, routing_key: str, body: bytes, *, message_id: str | None = None
    ) -> None:
        if not self.connected:
            state = "is closed" if not self._started else "is unavailable"
            raise BrokerUnavailable(f"memory broker {self.exchange!r} {state}")
        queues = self._bindings.get(routing_key)
        if not queues:
            raise BrokerUnavailable(
                f"unroutable: no queue bound to {routing_key!r} on exchange {self.exchange!r}"
            )
        message = Message(body, routing_key, message_id or unique_hex())
        loop = asyncio.get_running_loop()
        deliveries = [Delivery(message, loop.create_future()) for _ in queues]
        for queue, delivery in zip(queues, deliveries):
            self._queues[queue].put_nowait(delivery)
            self._unconfirmed.add(delivery.handled)
        try:
            async with asyncio.timeout(self.confirm_seconds):
                await asyncio.gather(*(delivery.handled for delivery in deliveries))
        except TimeoutError:
            raise BrokerUnavailable(
                f"memory broker {self.exchange!r}: message {message.message_id} not handled"
                f" within {self.confirm_seconds:g} s (no consumer, or it keeps failing);"
                " withdrawn"
            ) from None
        finally:
            for delivery in deliveries:  # withdraw it wherever it was not handled
                delivery.handled.cancel()
                self._unconfirmed.discard(delivery.handled)

    async def subscribe(self, queue: str, binding_key: str, handler: Handler) -> None:
        await self.declare(queue, binding_key)
        task = asyncio.create_task(self._consume(queue, handler), name=f"broker: consume {queue}")
        self._consumers.append(task)

    def _update(self) -> None:
        if self._started and self._available:
            self._up.set()
        else:
            self._up.clear()

    async def _consume(self, queue: str, handler: Handler) -> None:
        """Take messages while connected, handling up to `prefetch` of them at once."""
        source = self._queues[queue]
        slots = asyncio.Semaphore(self.prefetch)
        async with asyncio.TaskGroup() as group:
            while True:
                await slots.acquire()
                await self._up.wait()
                delivery = await source.get()
                if delivery.withdrawn:  # its publisher gave up and will publish it again
                    slots.release()
                    continue
                group.create_task(self._deliver(queue, handler, delivery, slots))

    async def _deliver(
        self, queue: str, handler: Handler, delivery: Delivery, slots: asyncio.Semaphore
    ) -> None:
        outcome = Outcome.REQUEUE  # if cancelled by close(), keep it like an unacked message
        try:
            outcome = await handle(queue, handler, delivery.message, self._pauses)
        finally:
            slots.release()
            if outcome is Outcome.REJECT:
                self._dead[queue].append(delivery.message)
            if outcome is not Outcome.REQUEUE:
                delivery.settle()
            elif not delivery.withdrawn:
                again = dataclasses.replace(delivery.message, redelivered=True)
                self._queues[queue].put_nowait(Delivery(again, delivery.handled))
