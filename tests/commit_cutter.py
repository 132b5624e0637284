"""A TCP relay in front of MariaDB that can cut a connection at its next COMMIT, the way a
network failure or a server failover does: after the server has committed and answered
(the client never learns that it committed), or before the COMMIT reaches the server. It
also records every query the clients send, one per trip to the server."""

from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

COM_QUERY = 3


class CommitCutter:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.cut = 0
        """Connections cut so far."""
        self.queries: list[str] = []
        """The text of every query sent through the relay, in order (statements sent in one
        query, separated by `;`, are one entry)."""
        self._armed: bool | None = None  # None: relay everything; else cut after the answer?
        self._then_down = False
        self.down = False
        """Whether the relay refuses connections, as a server that went away."""
        self._open: set[Callable[[], None]] = set()  # closes each relayed connection
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task] = set()

    def cut_next_commit(self, *, answered: bool, then_down: bool = False) -> None:
        """Cut the connection that sends the next COMMIT: once the server has answered it
        (`answered`, so it committed), or before passing it on (so it did not). With
        `then_down`, go down at that moment (`go_down`)."""
        self._armed, self._then_down = answered, then_down

    def go_down(self) -> None:
        """Cut every connection and refuse new ones until `come_back`."""
        self.down = True
        for close in list(self._open):
            close()

    def come_back(self) -> None:
        self.down = False

    def _down_if_asked(self) -> None:
        if self._then_down:
            self._then_down = False
            self.go_down()

    def url(self, mysql_url: str) -> str:
        """`mysql_url` with its host and port replaced by the relay's."""
        parts = urlsplit(mysql_url)
        user = parts.netloc.rpartition("@")[0]
        netloc = f"{user}@127.0.0.1:{self.listening}" if user else f"127.0.0.1:{self.listening}"
        return urlunsplit(parts._replace(netloc=netloc))

    @property
    def listening(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

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
            packets = bytearray()
            while data := await client_r.read(65536):
                packets += data
                queries = _take_queries(packets)
                self.queries += queries
                if self._armed is not None and any(q.endswith("COMMIT") for q in queries):
                    answered, self._armed = self._armed, None
                    self.cut += 1
                    if not answered:
                        self._down_if_asked()
                        return
                    swallow.set()
                server_w.write(data)
                await server_w.drain()

        async def downstream() -> None:
            while data := await server_r.read(65536):
                if swallow.is_set():  # the COMMIT's answer
                    self._down_if_asked()
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
    async def running(self) -> AsyncIterator[CommitCutter]:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        try:
            yield self
        finally:
            self._server.close()
            for task in list(self._pumps):
                task.cancel()
            await asyncio.gather(*self._pumps, return_exceptions=True)


@contextlib.asynccontextmanager
async def commit_cutter(mysql_url: str) -> AsyncIterator[CommitCutter]:
    parts = urlsplit(mysql_url)
    async with CommitCutter(parts.hostname or "127.0.0.1", parts.port or 3306).running() as cutter:
        yield cutter


def _take_queries(packets: bytearray) -> list[str]:
    """Remove the whole MySQL packets at the start of `packets`; the text of the queries
    among them (a command is a packet numbered 0; a query's first byte is COM_QUERY)."""
    queries = []
    while len(packets) >= 4:
        length = int.from_bytes(packets[:3], "little")
        if len(packets) < 4 + length:
            break
        number, payload = packets[3], bytes(packets[4 : 4 + length])
        del packets[: 4 + length]
        if number == 0 and payload[:1] == bytes([COM_QUERY]):
            queries.append(payload[1:].decode("utf-8", "replace"))
    return queries
