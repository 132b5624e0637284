"""Plain helpers for tests: configuration, a started runtime, an ASGI client, an app on a
real server, free ports."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path
from typing import AsyncIterator, Iterable

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
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
