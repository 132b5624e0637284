"""The gateway's proxy client: in-process and over HTTP alike, and what happens when no
answer comes."""

from __future__ import annotations

import json
import socket
from typing import AsyncIterator
from urllib.parse import parse_qs

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from airbourne.clients.errors import ServiceTimeout, ServiceUnavailable, session
from airbourne.clients.proxy import Answer, HttpProxy, LocalProxy, Proxy, end_to_end
from support import free_port, served

pytestmark = pytest.mark.anyio


async def echo(request: Request) -> Response:
    """Tells what it received; answers with the status asked for and a few telling headers."""
    seen = {
        "method": request.method,
        "path": request.url.path,
        "rawPath": request.scope["raw_path"].decode(),
        "query": request.url.query,
        "headers": {name: request.headers.get(name) for name in ("content-type", "x-custom")},
        "body": (await request.body()).decode(),
    }
    response = Response(json.dumps(seen), int(request.query_params.get("status", 200)),
                        media_type="application/json")
    response.headers.append("set-cookie", "a=1")
    response.headers.append("set-cookie", "b=2")
    response.headers["x-custom-answer"] = "yes"
    response.headers["connection"] = "x-per-hop"
    response.headers["x-per-hop"] = "dropped"
    response.headers["keep-alive"] = "timeout=5"
    return response


async def stream(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        for part in (b"one,", b"two,", b"three"):
            yield part

    return StreamingResponse(chunks(), media_type="text/plain")


APP = Starlette(routes=[
    Route("/echo/{rest:path}", echo, methods=["GET", "HEAD", "POST", "PATCH", "DELETE"]),
    Route("/stream", stream),
])


@pytest.fixture
async def proxies() -> AsyncIterator[tuple[Proxy, Proxy]]:
    async with served(APP) as url, session() as client:
        yield LocalProxy(APP), HttpProxy(client, url, timeout=5.0, service="echo")


REQUESTS = [
    ("GET", "/echo/plain", b"", b"", []),
    ("GET", "/echo/query", b"name=Pre&x=%C3%A9&status=202", b"", [(b"x-custom", b"2")]),
    ("POST", "/echo/created", b"status=201", b'{"name": "Lisbon"}',
     [(b"content-type", b"application/json"), (b"content-length", b"18"), (b"x-custom", b"1")]),
    ("PATCH", "/echo/a%20b/%2Fslash", b"", b"{}", [(b"content-length", b"2")]),
    ("DELETE", "/echo/gone", b"status=404", b"", []),
    ("HEAD", "/echo/head", b"", b"", []),
]


@pytest.mark.parametrize(("method", "path", "query", "body", "headers"), REQUESTS)
async def test_local_and_http_proxies_answer_alike(
    proxies: tuple[Proxy, Proxy], method: str, path: str, query: bytes, body: bytes, headers: list
) -> None:
    local, remote = proxies
    in_process = await local.forward(method, path, query, list(headers), body)
    over_http = await remote.forward(method, path, query, list(headers), body)
    assert isinstance(in_process, Answer)
    assert in_process == over_http
    assert in_process.status == int(parse_qs(query.decode()).get("status", ["200"])[0])
    names = [name for name, _ in in_process.headers]
    assert names.count(b"set-cookie") == 2 and b"x-custom-answer" in names
    assert not {b"connection", b"keep-alive", b"x-per-hop"} & set(names), "hop-by-hop passed"
    if method == "HEAD":
        assert in_process.body == b""
        return
    seen = json.loads(in_process.body)
    assert seen["method"] == method
    assert seen["rawPath"] == path, "the percent-encoding of the path was changed"
    assert seen["query"] == query.decode()
    assert seen["body"] == body.decode()
    custom = dict(headers).get(b"x-custom")
    assert seen["headers"]["x-custom"] == (custom.decode() if custom else None)


async def test_a_streamed_answer_arrives_whole(proxies: tuple[Proxy, Proxy]) -> None:
    for proxy in proxies:
        answer = await proxy.forward("GET", "/stream", b"", [], b"")
        assert (answer.status, answer.body) == (200, b"one,two,three")
        assert b"transfer-encoding" not in dict(answer.headers)


async def test_connection_listed_and_hop_by_hop_headers_are_dropped() -> None:
    headers = [
        (b"connection", b"keep-alive, X-Secret"), (b"x-secret", b"1"), (b"te", b"trailers"),
        (b"transfer-encoding", b"chunked"), (b"upgrade", b"h2c"), (b"proxy-authorization", b"x"),
        (b"content-type", b"application/json"), (b"idempotency-key", b"k1"), (b"host", b"a"),
    ]
    kept = end_to_end(headers, drop=frozenset({b"host"}))
    assert kept == [(b"content-type", b"application/json"), (b"idempotency-key", b"k1")]


async def test_closed_port_is_service_unavailable_not_a_timeout() -> None:
    async with session() as client:
        closed = f"http://127.0.0.1:{free_port()}"
        proxy = HttpProxy(client, closed, timeout=30.0, service="flights")
        with pytest.raises(ServiceUnavailable) as raised:
            await proxy.forward("GET", "/api/v1/city", b"", [], b"")
    assert not isinstance(raised.value, ServiceTimeout)
    assert raised.value.service == "flights"


async def test_a_server_that_never_answers_is_a_timeout() -> None:
    with socket.socket() as silent:  # accepts connections (the kernel does) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = "http://127.0.0.1:%d" % silent.getsockname()[1]
        async with session() as client:
            proxy = HttpProxy(client, url, timeout=0.2, service="booking")
            with pytest.raises(ServiceTimeout) as raised:
                await proxy.forward("POST", "/api/v1/bookings", b"", [], b"{}")
    assert raised.value.status == 504 and raised.value.service == "booking"


async def test_an_app_error_comes_back_as_its_500_answer() -> None:
    async def broken(request: Request) -> Response:
        raise RuntimeError("boom")

    async def on_error(request: Request, exc: Exception) -> Response:
        return Response("internal error", 500)

    app = Starlette(routes=[Route("/broken", broken)], exception_handlers={Exception: on_error})
    answer = await LocalProxy(app).forward("GET", "/broken", b"", [], b"")
    assert (answer.status, answer.body) == (500, b"internal error")
