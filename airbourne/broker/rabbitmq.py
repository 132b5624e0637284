"""The RabbitMQ broker (aio-pika), kept connected by one background task.

`start()` only starts that task. It connects, declares the topology and starts the
consumers; when the connection or channel goes away it connects again, with exponential
backoff up to `reconnect_max_seconds`, and declares and consumes everything again. So a
RabbitMQ that is down at start-up or restarts later delays messages but crashes nothing.

Topology: a durable direct exchange; for each declared queue a durable queue bound to it,
whose rejected messages go through the durable direct exchange `<exchange>.dlx` to the
durable queue `<queue>.dead` (the queue's name is their routing key there, so queues that
share a binding key keep their dead letters apart). RabbitMQ refuses to redeclare an existing
queue with other arguments: a queue created by something else must be deleted first.

Publishing uses publisher confirms and `mandatory`, so `publish` returns only once RabbitMQ
has taken responsibility for the message, and a message no queue would receive is an error.
Publishes from many tasks share the channel and wait for their confirms concurrently.

aio-pika connects, declares and keeps the topology; each publish and each delivery goes
through its protocol layer, aiormq, as aio-pika's own calls do underneath. aio-pika's
`Exchange.publish` with a timeout puts each of a publish's four waits through
`asyncio.wait_for` and waits for the frames to be written before the next publish may
write, and each delivery became an `IncomingMessage` and a second task: together 266-300 µs
of CPU per message published and consumed (`python -m bench.hotpaths.queue --broker
amqp://... --concurrency 200`), 143-181 µs through aiormq.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Iterator

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractQueue,
)
from aio_pika.exceptions import DeliveryError, PublishError
import aiormq.abc
from aiormq import spec
from yarl import URL

from airbourne.broker.base import BrokerUnavailable, Handler, Message
from airbourne.broker.delivery import Outcome, Pauses, handle
from airbourne.ids import unique_hex

logger = logging.getLogger("airbourne.broker")

FIRST_RETRY_SECONDS = 0.5


class RabbitBroker:
    def __init__(
        self,
        url: str,
        *,
        exchange: str,
        prefetch: int = 64,
        reconnect_max_seconds: float = 30.0,
        timeout: float = 5.0,
    ) -> None:
        self.url = url
        self.exchange = exchange
        self.prefetch = prefetch
        self.reconnect_max_seconds = reconnect_max_seconds
        self.timeout = timeout  # for a publisher confirm and for each declaration
        self._where = _without_password(url)
        self._bindings: dict[str, list[str]] = {}  # queue -> binding keys
        self._consumers: list[tuple[str, Handler]] = []
        self._lock = asyncio.Lock()  # the topology is applied whole, not beside a declare
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._publisher: aiormq.abc.AbstractChannel | None = None  # the channel's protocol layer
        self._task: asyncio.Task | None = None
        self._pauses = Pauses()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._stay_connected(), name="broker: rabbitmq")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        while not (await asyncio.wait({task}, timeout=self.timeout))[0]:
            # A cancel can be lost inside aio-pika (see _session): never wait for ever.
            logger.warning("broker: still stopping after %.1f s; cancelling again", self.timeout)
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    @property
    def connected(self) -> bool:
        return self._exchange is not None and not self._exchange.channel.is_closed

    async def declare(self, queue: str, binding_key: str) -> None:
        async with self._lock:
            self._remember(queue, binding_key)
            if self.connected:
                with _retried_after_reconnect():
                    await self._declare_queue(queue, [binding_key])

    async def publish(
        self, routing_key: str, body: bytes, *, message_id: str | None = None
    ) -> None:
        channel = self._publisher
        if channel is None or channel.is_closed:
            raise BrokerUnavailable(f"not connected to RabbitMQ at {self._where}")
        properties = spec.Basic.Properties(
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message_id or unique_hex(),
        )
        # aiormq numbers a publish before it has written it: a publish cancelled in between
        # would pair every later confirm with the message before it. So the publish is a
        # task of its own that is never cancelled here; the timeout ends only the wait.
        published = asyncio.ensure_future(channel.basic_publish(
            body, exchange=self.exchange, routing_key=routing_key,
            properties=properties, mandatory=True, wait=False,
        ))
        published.add_done_callback(_retrieve)
        try:
            async with asyncio.timeout(self.timeout):
                await asyncio.shield(published)
        except PublishError as exc:
            raise BrokerUnavailable(
                f"unroutable: no queue bound to {routing_key!r} on exchange {self.exchange!r}"
            ) from exc
        except DeliveryError as exc:
            raise BrokerUnavailable(f"RabbitMQ did not accept the message: {exc.frame}") from exc
        except TimeoutError as exc:
            raise BrokerUnavailable(f"RabbitMQ did not confirm within {self.timeout} s") from exc
        except asyncio.CancelledError:
            # aiormq cancels the pending confirms of a channel that closes; only a
            # cancellation of this task itself is a cancellation.
            if asyncio.current_task().cancelling():
                raise
            raise BrokerUnavailable("the connection closed before RabbitMQ confirmed") from None
        except Exception as exc:
            raise BrokerUnavailable(f"publish failed: {exc!r}") from exc

    async def subscribe(self, queue: str, binding_key: str, handler: Handler) -> None:
        async with self._lock:
            self._remember(queue, binding_key)
            self._consumers.append((queue, handler))
            if self.connected:
                with _retried_after_reconnect():
                    await self._consume(await self._declare_queue(queue, [binding_key]), handler)

    def _remember(self, queue: str, binding_key: str) -> None:
        keys = self._bindings.setdefault(queue, [])
        if binding_key not in keys:
            keys.append(binding_key)

    async def _stay_connected(self) -> None:
        first = pause = min(FIRST_RETRY_SECONDS, self.reconnect_max_seconds)
        attempt = 0
        while True:
            attempt += 1
            logger.info("broker: connecting to %s (attempt %d)", self._where, attempt)
            try:
                await self._session()
            except Exception as exc:
                logger.warning(
                    "broker: cannot connect to %s (attempt %d): %s; retrying in %.1f s",
                    self._where, attempt, _reason(exc), pause,
                )
                await asyncio.sleep(pause)
                pause = min(pause * 2, self.reconnect_max_seconds)
            else:  # it was connected, then lost: try again at once
                pause, attempt = first, 0

    async def _session(self) -> None:
        """Connect and set up; return when the connection is lost, raise if it never was up."""
        connection = await aio_pika.connect(self.url, timeout=self.timeout)
        try:
            lost = await self._open(connection)
            if asyncio.current_task().cancelling():
                # A stop that lands while aio-pika opens the channel can be swallowed on the
                # way (the channel is closed, the open carries on): waiting on `lost` then
                # never ends, nor did the runtime's stop.
                raise asyncio.CancelledError
            logger.info("broker: connected to %s, exchange %r", self._where, self.exchange)
            reason = await lost
            logger.warning(
                "broker: connection to %s lost (%s); reconnecting", self._where, _reason(reason)
            )
        finally:
            self._channel = self._exchange = self._publisher = None
            await asyncio.gather(
                asyncio.wait_for(connection.close(), self.timeout), return_exceptions=True
            )

    async def _open(self, connection: AbstractConnection) -> asyncio.Future:
        """Open the channel and apply the remembered topology; the future is done, with the
        reason, when the connection or the channel closes."""
        lost = asyncio.get_running_loop().create_future()

        def on_close(_: object, reason: BaseException | None = None) -> None:
            if not lost.done():
                lost.set_result(reason)

        connection.close_callbacks.add(on_close)
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        channel.close_callbacks.add(on_close)
        await channel.set_qos(prefetch_count=self.prefetch, timeout=self.timeout)
        exchange = await channel.declare_exchange(
            self.exchange, aio_pika.ExchangeType.DIRECT, durable=True, timeout=self.timeout
        )
        await channel.declare_exchange(
            f"{self.exchange}.dlx", aio_pika.ExchangeType.DIRECT, durable=True, timeout=self.timeout
        )
        async with self._lock:
            self._channel = channel
            declared = {
                queue: await self._declare_queue(queue, keys)
                for queue, keys in self._bindings.items()
            }
            for queue, handler in self._consumers:
                await self._consume(declared[queue], handler)
            self._exchange = exchange
            self._publisher = await channel.get_underlay_channel()
        if channel.is_closed:
            on_close(channel)
        return lost

    async def _declare_queue(self, queue: str, binding_keys: list[str]) -> AbstractQueue:
        assert self._channel is not None
        channel, timeout = self._channel, self.timeout
        dead = await channel.declare_queue(f"{queue}.dead", durable=True, timeout=timeout)
        await dead.bind(f"{self.exchange}.dlx", routing_key=queue, timeout=timeout)
        arguments = {
            "x-dead-letter-exchange": f"{self.exchange}.dlx",
            "x-dead-letter-routing-key": queue,
        }
        declared = await channel.declare_queue(
            queue, durable=True, arguments=arguments, timeout=timeout
        )
        for key in binding_keys:
            await declared.bind(self.exchange, routing_key=key, timeout=timeout)
        return declared

    async def _consume(self, declared: AbstractQueue, handler: Handler) -> None:
        assert self._channel is not None
        queue = declared.name
        channel = await self._channel.get_underlay_channel()

        async def on_message(delivered: aiormq.abc.DeliveredMessage) -> None:
            delivery, properties = delivered.delivery, delivered.header.properties
            message = Message(
                body=delivered.body,
                routing_key=delivery.routing_key or "",
                message_id=properties.message_id,
                redelivered=bool(delivery.redelivered),
                headers=dict(properties.headers or {}),
            )
            outcome = await handle(queue, handler, message, self._pauses)
            try:
                if outcome is Outcome.ACK:
                    await channel.basic_ack(delivery.delivery_tag, wait=False)
                elif outcome is Outcome.REJECT:
                    await channel.basic_reject(delivery.delivery_tag, requeue=False)
                else:
                    await channel.basic_nack(delivery.delivery_tag, requeue=True)
            except Exception as exc:
                # The channel closed: RabbitMQ delivers the unsettled message again.
                logger.warning(
                    "%s: could not %s message %s: %s", queue, outcome.value, message.message_id, exc
                )

        await channel.basic_consume(queue, on_message, timeout=self.timeout)


@contextlib.contextmanager
def _retried_after_reconnect() -> Iterator[None]:
    """A declaration that fails means the channel is gone or closing (RabbitMQ closes the
    channel on any refusal); the reconnect applies it again, so it is logged, not raised."""
    try:
        yield
    except Exception as exc:
        logger.warning("broker: %s; will retry after reconnecting", _reason(exc))


def _retrieve(task: asyncio.Future) -> None:
    """Take the outcome of a publish nobody waits for any more (it timed out), so that
    asyncio does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()


def _reason(exc: BaseException | None) -> str:
    return (str(exc) or type(exc).__name__) if exc is not None else "closed"


def _without_password(url: str) -> str:
    parsed = URL(url)
    return str(parsed.with_password("***")) if parsed.password else url
