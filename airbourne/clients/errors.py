"""What a client raises when the service it calls cannot answer, and the one place where
HTTP failures become those errors.

They are `ApiError`s, so a route that lets one through answers 503 (504 for a timeout) with
the envelope and a message naming the service; background jobs catch them and try again.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import httpx

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


async def call(
    http: httpx.AsyncClient,
    service: str,
    method: str,
    url: str,
    *,
    timeout: float = TIMEOUT_SECONDS,
    json: Any = None,
) -> httpx.Response:
    """Send one request to `service`; a failure to get an answer, or a 5xx answer, raises
    `ServiceUnavailable` (`ServiceTimeout` when no answer came in time)."""
    with reaching(service, timeout):
        answer = await http.request(method, url, json=json, timeout=timeouts(timeout))
    if answer.status_code >= 500:
        # Maybe done: a proxy in between answers 502 or 504 for a service that went quiet.
        reason = f"{method} {url} answered {answer.status_code}"
        raise ServiceUnavailable(service, reason, maybe_done=True)
    return answer


def unexpected(service: str, method: str, url: str, answer: httpx.Response) -> ServiceUnavailable:
    """For an answer the caller has no meaning for (a 4xx it does not expect): the calling
    service sent something the other refused, no fault of the end client, so it is that
    service failing the call, with the status and the message it gave."""
    return ServiceUnavailable(service, f"{method} {url} answered {answer.status_code}: {_message(answer)}")


def _message(answer: httpx.Response) -> str:
    try:
        return str(answer.json()["message"])
    except (ValueError, KeyError, TypeError):
        return answer.reason_phrase or "no message"


def timeouts(seconds: float) -> httpx.Timeout:
    """`seconds` for the whole call, at most `CONNECT_TIMEOUT_SECONDS` of it to connect."""
    return httpx.Timeout(seconds, connect=min(CONNECT_TIMEOUT_SECONDS, seconds))


@contextlib.contextmanager
def reaching(service: str, timeout: float) -> Iterator[None]:
    """Turn httpx's failures inside the block into `ServiceTimeout` (the request went out,
    no answer came) or `ServiceUnavailable` (no connection, so nothing was done; or the
    connection failed after the request went out, and it may have been)."""
    try:
        yield
    except (httpx.ReadTimeout, httpx.WriteTimeout) as exc:
        raise ServiceTimeout(service, f"no answer within {timeout:g} s") from exc
    except httpx.HTTPError as exc:
        unsent = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
        reason = str(exc) or type(exc).__name__
        raise ServiceUnavailable(service, reason, maybe_done=not unsent) from exc
