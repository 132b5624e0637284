"""Rate limits per client address, counted with the `limits` library.

Fixed windows: one counter increment per limit and request, the cheapest strategy `limits`
has, so the check costs microseconds on the hot path. The counters live in `memory://` (one
process) or in Redis (`redis://host:6379`) when several gateways must share them. If that
storage fails, requests go through: a broken counter store should not take the gateway down.
"""

from __future__ import annotations

import logging
import math
import time

from limits import RateLimitItem, parse_many
from limits.aio.storage import Storage
from limits.aio.strategies import FixedWindowRateLimiter
from limits.errors import ConfigurationError, StorageError
from limits.storage import storage_from_string
from starlette.types import ASGIApp, Receive, Scope, Send

from airbourne.config import ConfigError
from airbourne.http import failure

logger = logging.getLogger("airbourne.gateway")

Limit = tuple[RateLimitItem, str]
"""A limit and the namespace of its counters."""


class RateLimits:
    """`every` counts each request, `strict` counts the sensitive ones (sign-in) on top.

    Both are in limits' notation (`"100/second"`, `"5/minute;100/hour"`); an empty string
    means no limit.
    """

    def __init__(self, every: str, strict: str, storage_url: str) -> None:
        self._every = _parse(every, "gateway.rate_limit", "request")
        self._strict = self._every + _parse(strict, "gateway.signin_rate_limit", "signin")
        self._limiter = FixedWindowRateLimiter(_storage(storage_url))

    async def retry_after(self, address: str, strict: bool = False) -> int | None:
        """Count one request from `address`: None if it may go on, else the seconds to wait."""
        wait = 0
        try:
            for item, namespace in self._strict if strict else self._every:
                if not await self._limiter.hit(item, namespace, address):
                    stats = await self._limiter.get_window_stats(item, namespace, address)
                    wait = max(wait, math.ceil(stats.reset_time - time.time()), 1)
        except StorageError as exc:
            logger.warning("rate limit storage failed, request let through: %s", exc.storage_error)
            return None
        return wait or None


def _parse(value: str, key: str, namespace: str) -> list[Limit]:
    if not value.strip():
        return []
    try:
        items = parse_many(value)
    except ValueError:
        raise ConfigError(
            f"{key} is not a rate limit: {value!r} (write e.g. '100/second' or '5/minute;100/hour')"
        ) from None
    if any(item.amount < 1 for item in items):
        raise ConfigError(f"{key} must allow at least one request per window, got {value!r}")
    return [(item, namespace) for item in items]


def _storage(url: str) -> Storage:
    """limits' async storage for `url` (`memory://`, `redis://...`): its `async+` variant."""
    scheme = url if url.startswith("async+") else f"async+{url}"
    try:
        return storage_from_string(scheme, wrap_exceptions=True)
    except ConfigurationError as exc:
        raise ConfigError(f"gateway.rate_limit_storage {url!r} cannot be used: {exc}") from None


class RateLimitMiddleware:
    """Answers 429 with `Retry-After` once a client address is over its limits.

    `strict_route` (method, path) is the route that also counts against the strict limits.
    """

    def __init__(self, app: ASGIApp, limits: RateLimits, strict_route: tuple[str, str]) -> None:
        self.app = app
        self.limits = limits
        self.strict_route = strict_route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            client = scope.get("client")
            address = client[0] if client else "unknown"
            method, path = self.strict_route
            strict = scope["method"] == method and scope["path"].rstrip("/") == path
            wait = await self.limits.retry_after(address, strict)
            if wait is not None:
                message = f"too many requests from {address}: retry in {wait} s"
                response = failure(429, message, headers={"Retry-After": str(wait)})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
