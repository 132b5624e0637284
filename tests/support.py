"""Plain helpers for tests: configuration, a started runtime, an ASGI client, an app on a
real server, free ports."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from pathlib import Path
from typing import AsyncIterator, Iterable

import aio_pika
import httpx
import uvicorn

from airbourne import config as config_module
from airbourne.config import Config
from airbourne.runtime import Runtime
from airbourne.service import Service


def make_config(tmp_path: Path, database_url: str | None = None, **environ: str) -> Config:
    """The embedded defaults in `tmp_path`, with `AIRBOURNE_*` overrides in `environ`."""
    env = {"AIRBOURNE_SERVER_DATA_DIR": str(tmp_path / "data")}
    if database_url:
        env["AIRBOURNE_DATABASE_URL"] = database_url
    env.update(environ)
    return config_module.load(environ=env)


@contextlib.asynccontextmanager
async def started(config: Config, services: Iterable[Service]) -> AsyncIterator[Runtime]:
    """A started runtime for `services`; stopped on exit."""
    runtime = Runtime(config, services)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()


def client(app, **kwargs) -> httpx.AsyncClient:
    """An HTTP client that calls the ASGI `app` directly."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test", **kwargs)


def free_port() -> int:
    """A port nothing listens on, never the same twice in a test run.

    Drawn below the kernel's ephemeral range: a port the kernel hands out (`bind(0)`) and
    that is free when probed can become the source port of an outgoing connection (to
    MariaDB, RabbitMQ, another test's server) before the server binds it; CI saw `port ...
    is already in use`. Below that range the kernel gives out no port of its own."""
    while True:
        port = _random.randrange(_PORTS_FROM, max(_ephemeral_start(), _PORTS_FROM + 1000))
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # another program's
        _handed_out.add(port)
        return port


_PORTS_FROM = 10_000  # above the well-known ports of the servers tests talk to
_handed_out: set[int] = set()
_random = random.Random()


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


@contextlib.asynccontextmanager
async def served(app) -> AsyncIterator[str]:
    """`app` on a real uvicorn server on a free port, for the test's duration; its URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(
        app, host="127.0.0.1", port=port, lifespan="off", log_config=None,
        server_header=False, date_header=False,
    ))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def delete_topology(amqp_url: str, exchange: str, queues: Iterable[str]) -> None:
    """Delete a test's exchange and queues from RabbitMQ, with the dead-letter exchange and
    queues the broker declared beside them, so that test runs leave nothing behind."""
    async with await aio_pika.connect(amqp_url) as connection:
        channel = await connection.channel()
        for queue in queues:
            await channel.queue_delete(queue)
            await channel.queue_delete(f"{queue}.dead")
        await channel.exchange_delete(exchange)
        await channel.exchange_delete(f"{exchange}.dlx")


def calls_of(monkeypatch, owner: object, name: str) -> list[tuple]:
    """The arguments of every call to `owner.name` from now on, in order; the calls still
    go through (an async function's coroutine is handed back to be awaited)."""
    calls: list[tuple] = []
    original = getattr(owner, name)

    def recorded(*args):
        calls.append(args)
        return original(*args)

    monkeypatch.setattr(owner, name, recorded)
    return calls
