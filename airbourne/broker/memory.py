"""The embedded broker: RabbitMQ's semantics inside one process, on asyncio queues.

One direct exchange routes a message to every queue bound with its routing key; a queue
keeps its messages until a consumer takes them, so a message published before anyone
subscribes is delivered later, as long as the queue was declared. A message with no bound
queue is refused ("unroutable"). A handler that fails gets the message again after a pause;
one that raises `Reject` sends it to `dead_letters(queue)`.

Everything lives in process memory: a message published but not yet consumed is lost if
the process dies. Use RabbitMQ where that matters.

Tests simulate an outage with `set_available(False)`: `publish` then raises
`BrokerUnavailable`, `connected` is False and consumers take no new messages (queued ones
wait), until `set_available(True)`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections import defaultdict

from airbourne.broker.base import BrokerUnavailable, Handler, Message
from airbourne.broker.delivery import Outcome, Pauses, handle


class MemoryBroker:
    def __init__(self, exchange: str, prefetch: int = 64) -> None:
        self.exchange = exchange
        self.prefetch = prefetch
        self._bindings: dict[str, set[str]] = defaultdict(set)  # binding key -> queue names
        self._queues: dict[str, asyncio.Queue[Message]] = {}
        self._dead: dict[str, list[Message]] = {}
        self._consumers: list[asyncio.Task] = []
        self._started = False
        self._available = True
        self._up = asyncio.Event()  # set while connected: consumers wait on it
        self._pauses = Pauses()

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
        """How many messages wait in `queue` (not counting those being handled)."""
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
        message = Message(body, routing_key, message_id or uuid.uuid4().hex)
        for queue in queues:
            self._queues[queue].put_nowait(message)

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
                message = await source.get()
                group.create_task(self._deliver(queue, handler, message, slots))

    async def _deliver(
        self, queue: str, handler: Handler, message: Message, slots: asyncio.Semaphore
    ) -> None:
        outcome = Outcome.REQUEUE  # if cancelled by close(), keep it like an unacked message
        try:
            outcome = await handle(queue, handler, message, self._pauses)
        finally:
            slots.release()
            if outcome is Outcome.REJECT:
                self._dead[queue].append(message)
            elif outcome is Outcome.REQUEUE:
                self._queues[queue].put_nowait(dataclasses.replace(message, redelivered=True))
