"""A TCP relay in front of a server (MariaDB, RabbitMQ) that a test can take down and bring
back, the way a network cut or a failover does. `CommitCutter` (commit_cutter.py) also
reads what the clients send and cuts a connection at a chosen moment."""

from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncIterator, Awaitable, Callable

PASS, CUT, CUT_AFTER_ANSWER = "pass", "cut", "cut after answer"
"""What to do with what a client sent: relay it; cut the connection before it reaches the
server; relay it and cut the connection when the server answers, before the client hears."""


class Relay:
    def __init__(self, host: str, port: int, *, down: bool = False) -> None:
        self.host, self.port = host, port
        self.down = down
        """Whether connections are refused (accepted and closed at once), as by a server
        that is away."""
        self._server: asyncio.Server | None = None
        self._open: set[Callable[[], None]] = set()  # closes each relayed connection
        self._pumps: set[asyncio.Task] = set()

    @property
    def listening(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    def go_down(self) -> None:
        """Cut every connection and refuse new ones until `come_back`."""
        self.down = True
        for close in list(self._open):
            close()

    def come_back(self) -> None:
        self.down = False

    def client_sent(self, data: bytes, unread: bytearray) -> str:
        """What to do with `data` from a client: `PASS` here; see `CommitCutter`. `unread` is
        the connection's own buffer, for reading messages that span several reads."""
        return PASS

    def answer_swallowed(self) -> None:
        """Called when a connection is cut after the server's answer."""

    def answer_complete(self, data: bytes, unread: bytearray) -> bool:
        """Whether `data` from the server completes the answer a cut waits for (here its
        first bytes do; see `CommitCutter`). `unread` as in `client_sent`."""
        return True

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self.down:
            client_w.close()
            return
        server_r, server_w = await asyncio.open_connection(self.host, self.port)
        swallow = asyncio.Event()  # the server's next answer is not passed on

        def close() -> None:
            client_w.close()
            server_w.close()
            self._open.discard(close)

        self._open.add(close)

        async def upstream() -> None:
            unread = bytearray()
            while data := await client_r.read(65536):
                verdict = self.client_sent(data, unread)
                if verdict == CUT:
                    return
                if verdict == CUT_AFTER_ANSWER:
                    swallow.set()
                server_w.write(data)
                await server_w.drain()

        async def downstream() -> None:
            unread = bytearray()
            while data := await server_r.read(65536):
                if swallow.is_set():
                    if not self.answer_complete(data, unread):
                        continue  # the server is still answering: the cut waits for all of it
                    self.answer_swallowed()
                    return
                client_w.write(data)
                await client_w.drain()

        async def pumped(pump: Awaitable[None]) -> None:
            try:
                await pump
            except ConnectionError:  # a side that went away: close the other too
                pass
            finally:
                close()

        for pump in (pumped(upstream()), pumped(downstream())):
            task = asyncio.ensure_future(pump)
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Relay]:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        try:
            yield self
        finally:
            self.go_down()
            self._server.close()
            for task in list(self._pumps):
                task.cancel()
            await asyncio.gather(*self._pumps, return_exceptions=True)
