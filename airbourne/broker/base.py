"""The `Broker` interface: publish to an exchange by routing key, consume a durable queue.

Delivery is at-least-once. `publish` returns only once the broker has accepted the message
(publisher confirm: RabbitMQ has stored it; the memory broker, which stores nothing, has seen
it handled) and raises `BrokerUnavailable` otherwise, so a caller that keeps its message
until `publish` returns (the booking outbox) never loses one. A handler acknowledges
by returning; raising `Reject` dead-letters the message (it can never succeed); any other
exception puts the message back to be delivered again after a pause.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Awaitable, Callable, Protocol


class BrokerUnavailable(Exception):
    """The broker is not connected or did not accept the message; try again later."""


class Reject(Exception):
    """Raised by a handler for a message that can never be processed: dead-letter it."""


@dataclass(frozen=True)
class Message:
    body: bytes
    routing_key: str
    message_id: str | None = None
    redelivered: bool = False
    headers: dict = field(default_factory=dict)


Handler = Callable[[Message], Awaitable[None]]


class Broker(Protocol):
    async def start(self) -> None:
        """Begin connecting; returns at once. An unreachable broker is retried with backoff."""

    async def close(self) -> None: ...

    @property
    def connected(self) -> bool: ...

    async def declare(self, queue: str, binding_key: str) -> None:
        """Make sure `queue` exists and is bound, so messages published before any consumer
        starts are kept. Applied again after every reconnect."""

    async def publish(
        self, routing_key: str, body: bytes, *, message_id: str | None = None
    ) -> None:
        """Publish one persistent message; raises `BrokerUnavailable` if not confirmed."""

    async def subscribe(self, queue: str, binding_key: str, handler: Handler) -> None:
        """Consume `queue` with `handler` (declaring it as `declare` does), now and after
        every reconnect."""
