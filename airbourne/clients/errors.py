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
    """`service` could not be reached or failed (refused, reset, a 5xx): nothing was done."""

    status_code = 503

    def __init__(self, service: str, reason: str) -> None:
        super().__init__(self.status_code, f"{service} service unavailable: {reason}")
        self.service = service
        self.reason = reason


class ServiceTimeout(ServiceUnavailable):
    """`service` did not answer in time: whether it did the work is unknown."""

    status_code = 504


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
    `ServiceUnavailable` (`ServiceTimeout` when the request may have been processed)."""
    with reaching(service, timeout):
        answer = await http.request(method, url, json=json, timeout=timeouts(timeout))
    if answer.status_code >= 500:
        raise ServiceUnavailable(service, f"{method} {url} answered {answer.status_code}")
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
    no answer came) or `ServiceUnavailable` (nothing was done)."""
    try:
        yield
    except (httpx.ReadTimeout, httpx.WriteTimeout) as exc:
        raise ServiceTimeout(service, f"no answer within {timeout:g} s") from exc
    except httpx.HTTPError as exc:
        raise ServiceUnavailable(service, str(exc) or type(exc).__name__) from exc
