"""The shared runtime: what every service in one process shares, and how they are served.

`Runtime` holds the configuration, one database pool per distinct URL, the broker, the HTTP
client for services that run elsewhere, and the background tasks. `serve()` binds every
port first (so a busy port is a one-line error before anything starts), starts the runtime,
runs one uvicorn server per service on the same event loop, and on SIGINT/SIGTERM stops
accepting, lets in-flight requests finish, then closes the pools.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket
from typing import Any, Awaitable, Callable, Iterable, TypeVar

import aiohttp
import uvicorn
from databases import Database
from starlette.applications import Starlette

from airbourne import broker as broker_module
from airbourne import db
from airbourne.clients.errors import session
from airbourne.config import Config
from airbourne.service import Service

logger = logging.getLogger("airbourne")

GC_YOUNG_THRESHOLD = 10_000
"""How many more container objects may be alive than at the collector's last look before it
looks again (CPython's default is 700). Under load the objects of the requests in flight
cross 700 many times a second, and each collection walks all of them, about 0.4 ms a time:
1.0-1.4 s in a 20 s closed loop, 6 % of the event loop. At 10,000 the same run collects
seven or eight times. Garbage in reference cycles waits longer to be freed: up to 10,000
objects of it."""

T = TypeVar("T")

FINISH_SECONDS = 10.0
"""How long `stop()` waits for work that must not be cut off halfway (see `finish`)."""


class StartupError(Exception):
    """Start-up cannot go on; the message is the one line the operator sees."""


class Runtime:
    def __init__(
        self, config: Config, services: Iterable[Service], background: bool = True
    ) -> None:
        self.config = config
        self.background = background
        """Whether this process runs the services' background jobs (see workers.py)."""
        self.services = {service.name: service for service in services}
        self.broker = broker_module.create(config["broker"])
        self.apps: dict[str, Starlette] = {}
        self._databases: dict[str, Database] = {}
        self._http: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task] = set()
        self._finishing: set[asyncio.Task] = set()

    def runs(self, name: str) -> bool:
        """Whether service `name` runs in this process (so callers may call it directly)."""
        return name in self.services

    def database(self, name: str) -> Database:
        return self._databases[self.config.services[name].database_url]

    @property
    def http(self) -> aiohttp.ClientSession:
        """One pooled keep-alive session for every call to a service in another process."""
        if self._http is None:
            self._http = session()
        return self._http

    def spawn(self, name: str, work: Callable[[], Awaitable[Any]]) -> None:
        """Run `work` in the background until it ends or shutdown cancels it; a crash is
        logged, not silent."""
        task = asyncio.create_task(work(), name=name)
        task.add_done_callback(_log_crash)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def finish(self, work: Awaitable[T]) -> asyncio.Task[T]:
        """Run `work` as a task that `stop()` waits for, up to `FINISH_SECONDS`, before it
        closes anything: work that must not be cut off halfway, such as a booking between
        taking its seats and committing, whose request may have stopped waiting for it."""
        task = asyncio.ensure_future(work)
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)
        return task

    async def start(self) -> None:
        await self.open_databases()
        await self.broker.start()
        for service in self.services.values():
            self.apps[service.name] = service.create_app(self)
        for service in self.services.values():
            for job in service.background if self.background else ():
                self.spawn(f"{service.name}:{job.__name__}", lambda job=job: job(self))

    async def open_databases(self) -> None:
        """Open one pool per distinct database URL and apply each service's migrations."""
        database = self.config["database"]
        for service in self.services.values():
            if not service.uses_database:
                continue
            url = self.config.services[service.name].database_url
            if url not in self._databases:
                try:
                    self._databases[url] = await db.connect(
                        url, database["pool_size"], database["busy_timeout_seconds"]
                    )
                except Exception as exc:
                    raise StartupError(f"{service.name}: cannot open database {_safe(url)}: {exc}") from exc
            await db.migrate(self._databases[url], service.name, service.migrations)

    async def stop(self) -> None:
        if self._finishing:
            await asyncio.wait(set(self._finishing), timeout=FINISH_SECONDS)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.broker.close()
        if self._http is not None:
            await self._http.close()
            self._http = None
        for database in self._databases.values():
            await db.disconnect(database)
        self._databases.clear()


def _log_crash(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("background task %s stopped", task.get_name(), exc_info=task.exception())


def _safe(url: str) -> str:
    """`url` without its password, for messages."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"
    return url


def bind(host: str, port: int, name: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        reason = "is already in use" if exc.errno == 98 else f"cannot be bound ({exc.strerror})"
        raise StartupError(f"{name}: port {port} on {host} {reason}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def bind_all(config: Config, names: Iterable[str]) -> dict[str, socket.socket]:
    sockets: dict[str, socket.socket] = {}
    try:
        for name in names:
            service = config.services[name]
            sockets[name] = bind(service.host, service.port, name)
    except StartupError:
        for sock in sockets.values():
            sock.close()
        raise
    return sockets


async def migrate(config: Config, services: Iterable[Service]) -> None:
    """Create or upgrade the tables of `services`, then let go of the databases (done once
    by the parent before it forks workers)."""
    runtime = Runtime(config, [service for service in services if service.uses_database])
    try:
        await runtime.open_databases()
    finally:
        await runtime.stop()


async def serve(
    config: Config,
    services: Iterable[Service],
    sockets: dict[str, socket.socket],
    announce: Callable[[str], None] = print,
    background: bool = True,
) -> None:
    """Run `services` on the already bound `sockets` until SIGINT or SIGTERM."""
    runtime = Runtime(config, services, background)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    servers: list[uvicorn.Server] = []
    ticks: list[asyncio.Task] = []
    try:
        # Inside the try: an app that refuses its settings must still close the databases
        # opened before it, or their threads keep the process alive after the error.
        await runtime.start()
        # Everything loaded so far (modules, apps, tables) lives as long as the process:
        # moved out of the collector's generations, a full collection no longer walks it,
        # which shortens the pauses that make up the latency tail.
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        for name, app in runtime.apps.items():
            server = uvicorn.Server(
                uvicorn.Config(
                    app,
                    lifespan="off",
                    log_config=None,
                    access_log=config["server"]["access_log"],
                    server_header=False,
                    timeout_keep_alive=config["server"]["keep_alive_seconds"],
                    timeout_graceful_shutdown=10,
                )
            )
            server.config.load()
            server.lifespan = server.config.lifespan_class(server.config)  # as Server._serve does
            await server.startup(sockets=[sockets[name]])
            servers.append(server)
            ticks.append(asyncio.create_task(server.main_loop()))  # keeps the Date header fresh
            host, port = sockets[name].getsockname()[:2]
            announce(f"{name:<9} http://{host}:{port}")
        await stop.wait()
        logger.info("stopping: finishing in-flight requests")
    finally:
        for server in servers:
            server.should_exit = True
        await asyncio.gather(*ticks, return_exceptions=True)
        await asyncio.gather(*(server.shutdown() for server in servers))
        await runtime.stop()
        for sock in sockets.values():
            sock.close()
