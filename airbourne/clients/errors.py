"""Calls to a service in another process: the pooled session, one call, and what a client
raises when the service cannot answer (the one place where HTTP failures become errors).

They are `ApiError`s, so a route that lets one through answers 503 (504 for a timeout) with
the envelope and a message naming the service; background jobs catch them and try again.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any, Iterator

import aiohttp

from airbourne.http import ApiError

TIMEOUT_SECONDS = 5.0
"""Default limit for one call to a service in another process."""

CONNECT_TIMEOUT_SECONDS = 2.0


class ServiceUnavailable(ApiError):
    """`service` could not be reached or failed (refused, reset, a 5xx). `maybe_done`: the
    request had gone out (the connection failed after it, or a 5xx came back), so the work
    may have been done; False only when no connection was made."""

    status_code = 503

    def __init__(self, service: str, reason: str, maybe_done: bool = False) -> None:
        super().__init__(self.status_code, f"{service} service unavailable: {reason}")
        self.service = service
        self.reason = reason
        self.maybe_done = maybe_done


class ServiceTimeout(ServiceUnavailable):
    """`service` did not answer in time: whether it did the work is unknown."""

    status_code = 504

    def __init__(self, service: str, reason: str) -> None:
        super().__init__(service, reason, maybe_done=True)


def session() -> aiohttp.ClientSession:
    """A pooled keep-alive session for calls between services (call it in the event loop).

    aiohttp, not httpx: httpx spent about 1 ms of CPU per call with 8 calls at once and 7 ms
    with 64 (its pool checks every connection for each request), aiohttp 0.1 ms
    (`python -m bench.hotpaths.client`); in split mode that was most of a booking's CPU."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=256, limit_per_host=0),
        # One session serves every user: a cookie set in one answer must never ride along
        # on another user's request, so the jar keeps none.
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=timeouts(TIMEOUT_SECONDS),
        auto_decompress=False,  # the gateway passes answers on as they came
    )


@dataclass(frozen=True, slots=True)
class Reply:
    """A whole answer of another service: read before the connection goes back to the pool."""

    status_code: int
    body: bytes
    reason: str

    def json(self) -> Any:
        return json.loads(self.body)


async def call(
    http: aiohttp.ClientSession,
    service: str,
    method: str,
    url: str,
    *,
    timeout: float = TIMEOUT_SECONDS,
    json: Any = None,
) -> Reply:
    """Send one request to `service`; a failure to get an answer, or a 5xx answer, raises
    `ServiceUnavailable` (`ServiceTimeout` when no answer came in time)."""
    with reaching(service, timeout):
        async with http.request(method, url, json=json, timeout=timeouts(timeout)) as answer:
            reply = Reply(answer.status, await answer.read(), answer.reason or "")
    if reply.status_code >= 500:
        # Maybe done: a proxy in between answers 502 or 504 for a service that went quiet.
        reason = f"{method} {url} answered {reply.status_code}"
        raise ServiceUnavailable(service, reason, maybe_done=True)
    return reply


def unexpected(service: str, method: str, url: str, answer: Reply) -> ServiceUnavailable:
    """For an answer the caller has no meaning for (a 4xx it does not expect): the calling
    service sent something the other refused, no fault of the end client, so it is that
    service failing the call, with the status and the message it gave."""
    return ServiceUnavailable(service, f"{method} {url} answered {answer.status_code}: {_message(answer)}")


def _message(answer: Reply) -> str:
    try:
        return str(answer.json()["message"])
    except (ValueError, KeyError, TypeError):
        return answer.reason or "no message"


def timeouts(seconds: float) -> aiohttp.ClientTimeout:
    """`seconds` for the whole call, at most `CONNECT_TIMEOUT_SECONDS` of it to connect."""
    return aiohttp.ClientTimeout(total=seconds, sock_connect=min(CONNECT_TIMEOUT_SECONDS, seconds))


@contextlib.contextmanager
def reaching(service: str, timeout: float) -> Iterator[None]:
    """Turn aiohttp's failures inside the block into `ServiceUnavailable` (no connection, so
    nothing was done; or the connection failed after the request went out, and it may have
    been) or `ServiceTimeout` (no answer in time)."""
    try:
        yield
    except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
        raise ServiceUnavailable(service, str(exc) or type(exc).__name__) from exc
    except TimeoutError as exc:  # aiohttp's own timeouts are TimeoutErrors too
        raise ServiceTimeout(service, f"no answer within {timeout:g} s") from exc
    except aiohttp.ClientError as exc:
        reason = str(exc) or type(exc).__name__
        raise ServiceUnavailable(service, reason, maybe_done=True) from exc
