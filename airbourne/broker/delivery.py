"""What both brokers do with one delivered message: run the handler, then settle the message.

The handler's return acknowledges it, `Reject` dead-letters it, and any other exception
sends it back to its queue after a pause. The pause stops a message that keeps failing (a
database that is down, a bug) from spinning through the consumer as fast as the broker can
deliver it.
"""

from __future__ import annotations

import asyncio
import enum
import logging

from airbourne.broker.base import Handler, Message, Reject

logger = logging.getLogger("airbourne.broker")


class Outcome(enum.Enum):
    ACK = "ack"
    REJECT = "reject"
    REQUEUE = "requeue"


class Pauses:
    """How long to wait before a failed message goes back: `first` seconds, doubled for each
    further failure of the same message id, at most `cap`. Only the last `remembered`
    failing ids are kept, so the memory it needs stays bounded."""

    def __init__(self, first: float = 1.0, cap: float = 30.0, remembered: int = 10_000) -> None:
        self.first = first
        self.cap = cap
        self.remembered = remembered
        self._failures: dict[str, int] = {}

    def after_failure(self, message_id: str | None) -> float:
        if message_id is None:
            return self.first
        failures = self._failures.pop(message_id, 0) + 1
        self._failures[message_id] = failures
        if len(self._failures) > self.remembered:
            del self._failures[next(iter(self._failures))]
        return min(self.first * 2 ** (failures - 1), self.cap)

    def forget(self, message_id: str | None) -> None:
        if message_id is not None:
            self._failures.pop(message_id, None)


async def handle(queue: str, handler: Handler, message: Message, pauses: Pauses) -> Outcome:
    """Run `handler` on `message`; for a failure, wait the pause before answering REQUEUE."""
    try:
        await handler(message)
    except Reject as exc:
        pauses.forget(message.message_id)
        logger.warning("%s: message %s rejected, dead-lettered: %s", queue, message.message_id, exc)
        return Outcome.REJECT
    except Exception:
        pause = pauses.after_failure(message.message_id)
        logger.exception(
            "%s: handler failed on message %s; delivering it again in %.1f s",
            queue, message.message_id, pause,
        )
        await asyncio.sleep(pause)
        return Outcome.REQUEUE
    pauses.forget(message.message_id)
    return Outcome.ACK
