"""Forward one HTTP request to a service and bring its whole answer back (the gateway's client).

`LocalProxy` calls the service's ASGI app in this process: no socket, no HTTP parsing, just a
scope and two callables. `HttpProxy` sends the request over the runtime's pooled HTTP client.
Both take and give the same things, so the gateway cannot tell them apart. They forward
headers as given (the caller decides which ones go) and drop the hop-by-hop headers of the
answer, which describe the connection they came over, not the message.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol
from urllib.parse import unquote

import aiohttp
from yarl import URL

from airbourne.clients.errors import reaching, timeouts

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message

    from airbourne.runtime import Runtime

Headers = list[tuple[bytes, bytes]]
"""Lower-case names and raw values, as in an ASGI scope."""

HOP_BY_HOP = frozenset(
    {
        b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization",
        b"proxy-connection", b"te", b"trailer", b"trailers", b"transfer-encoding", b"upgrade",
    }
)
"""Headers about one connection (RFC 9110 7.6.1), never passed on by a proxy."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: Headers
    """End-to-end headers only; `content-length` is the upstream's, kept for HEAD."""
    body: bytes


class Proxy(Protocol):
    async def forward(
        self, method: str, path: str, query: bytes, headers: Headers, body: bytes
    ) -> Answer:
        """Send `method path?query` with `headers` and `body`; `path` is as on the wire
        (percent-encoded). Raises `ServiceUnavailable`, or `ServiceTimeout`, when no answer
        comes."""
        ...


def end_to_end(headers: Headers, drop: frozenset[bytes] = frozenset()) -> Headers:
    """`headers` without the hop-by-hop ones, those named in `connection`, and `drop`."""
    unwanted = HOP_BY_HOP | drop
    for name, value in headers:
        if name == b"connection":
            listed = {token.strip().lower() for token in value.split(b",")}
            unwanted = unwanted | listed
    return [(name, value) for name, value in headers if name not in unwanted]


class LocalProxy:
    """Calls a Starlette app of this process directly: the hot path under `--services all`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def forward(
        self, method: str, path: str, query: bytes, headers: Headers, body: bytes
    ) -> Answer:
        scope = {
            "type": "http",
            "asgi": _ASGI,
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": unquote(path) if "%" in path else path,
            "raw_path": path.encode("latin-1"),
            "query_string": query,
            "root_path": "",
            "headers": headers,
            "client": None,
            "server": None,
        }
        exchange = _Exchange(body)
        try:
            await self.app(scope, exchange.receive, exchange.send)
        except Exception:
            # Starlette re-raises after its error handler has answered 500; that answer
            # stands. Without a complete answer the service is broken: let it show.
            if not exchange.complete:
                raise
        if not exchange.complete:
            raise RuntimeError(f"the app returned without a complete answer to {method} {path}")
        body = b"" if method == "HEAD" else b"".join(exchange.chunks)  # as a server would
        return Answer(exchange.status, end_to_end(exchange.headers), body)


_ASGI = {"version": "3.0", "spec_version": "2.4"}
"""2.4: responses need not listen for a disconnect (none comes: the gateway waits for all)."""


class _Exchange:
    """The receive and send channels of one in-process call."""

    __slots__ = ("body", "status", "headers", "chunks", "complete", "_done")

    def __init__(self, body: bytes) -> None:
        self.body: bytes | None = body
        self.status = 0
        self.headers: Headers = []
        self.chunks: list[bytes] = []
        self.complete = False
        self._done: asyncio.Event | None = None

    async def receive(self) -> Message:
        if self.body is not None:
            body, self.body = self.body, None
            return {"type": "http.request", "body": body, "more_body": False}
        # Asked again after the body: the client "disconnects" once the answer is complete.
        if not self.complete:
            if self._done is None:
                self._done = asyncio.Event()
            await self._done.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = list(message.get("headers", ()))
        elif message["type"] == "http.response.body":
            self.chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                self.complete = True
                if self._done is not None:
                    self._done.set()


class HttpProxy:
    """Sends the request to a service in another process over the pooled `client`."""

    def __init__(
        self, client: aiohttp.ClientSession, base_url: str, timeout: float,
        service: str = "upstream",
    ) -> None:
        self.client = client
        self.base_url = base_url.rstrip("/")
        self.service = service
        self._timeout = timeouts(timeout)
        self._seconds = timeout

    async def forward(
        self, method: str, path: str, query: bytes, headers: Headers, body: bytes
    ) -> Answer:
        # encoded=True: the path and query go out as the client wrote them (%2F stays).
        url = URL(self.base_url + path + ("?" + query.decode("latin-1") if query else ""),
                  encoded=True)
        sent = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers]
        with reaching(self.service, self._seconds):
            async with self.client.request(
                method, url, headers=sent, data=body or None, timeout=self._timeout,
                # Only the caller's headers (and Host): none of aiohttp's own defaults.
                skip_auto_headers=_AUTO_HEADERS, allow_redirects=False,
            ) as response:
                # Raw bytes (the session does not decompress): a compressed answer stays
                # compressed, matching its headers.
                content = await response.read()
        answer = [(name.lower(), value) for name, value in response.raw_headers]
        return Answer(response.status, end_to_end(answer), content)


_AUTO_HEADERS = frozenset({"User-Agent", "Accept", "Accept-Encoding", "Content-Type"})


def proxy_for(runtime: Runtime, name: str, timeout: float) -> Proxy:
    """A proxy to service `name`: in-process when it runs here, else at its configured URL.

    Call it once the runtime has started: `runtime.apps` is complete only then.
    """
    if runtime.runs(name):
        return LocalProxy(runtime.apps[name])
    return HttpProxy(runtime.http, runtime.config.services[name].url, timeout, service=name)


class Proxies:
    """`proxies[name]`: the proxy to service `name`, made at its first use.

    Not at start-up: the runtime creates apps in service order, so an app that proxies to
    services created after it would not find them in `runtime.apps` yet.
    """

    def __init__(self, runtime: Runtime, timeout: float) -> None:
        self._runtime = runtime
        self._timeout = timeout
        self._made: dict[str, Proxy] = {}

    def __getitem__(self, name: str) -> Proxy:
        proxy = self._made.get(name)
        if proxy is None:
            proxy = self._made[name] = proxy_for(self._runtime, name, self._timeout)
        return proxy

