"""Message broker: one interface, an in-memory implementation and a RabbitMQ one."""

from __future__ import annotations

from typing import Any, Mapping

from airbourne.config import ConfigError
from airbourne.broker.base import Broker, BrokerUnavailable, Handler, Message, Reject

__all__ = ["Broker", "BrokerUnavailable", "Handler", "Message", "Reject", "create"]


def create(settings: Mapping[str, Any]) -> Broker:
    """The broker named by the `[broker]` settings: `memory://` or `amqp://...`."""
    url: str = settings["url"]
    if url.startswith("memory:"):
        from airbourne.broker.memory import MemoryBroker

        return MemoryBroker(exchange=settings["exchange"], prefetch=settings["prefetch"])
    if url.startswith(("amqp:", "amqps:")):
        from airbourne.broker.rabbitmq import RabbitBroker

        return RabbitBroker(
            url,
            exchange=settings["exchange"],
            prefetch=settings["prefetch"],
            reconnect_max_seconds=settings["reconnect_max_seconds"],
        )
    raise ConfigError(f"broker.url must start with memory:// or amqp://, got {url!r}")
