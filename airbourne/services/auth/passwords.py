"""Password hashing: argon2id with OWASP's minimum parameters, off the event loop.

Each hash takes tens of milliseconds and 19 MiB, so it runs in a worker thread, and a
capacity limiter keeps a burst of sign-ups from running more than a few at once.
"""

from __future__ import annotations

import functools
import secrets

import anyio
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


class Passwords:
    def __init__(self, threads: int = 4) -> None:
        self._limiter = anyio.CapacityLimiter(threads)

    async def hash(self, password: str) -> str:
        return await anyio.to_thread.run_sync(_hasher.hash, password, limiter=self._limiter)

    async def verify(self, hashed: str | None, password: str) -> bool:
        """Whether `password` matches `hashed`. With no hash (no such user) the work is done
        against a dummy hash all the same, so the answer takes as long either way and does
        not tell which emails have an account."""
        return await anyio.to_thread.run_sync(
            _verify, hashed, password, limiter=self._limiter
        )


def _verify(hashed: str | None, password: str) -> bool:
    try:
        return _hasher.verify(hashed or _dummy_hash(), password) and hashed is not None
    except (VerificationError, InvalidHashError):
        return False


@functools.cache
def _dummy_hash() -> str:
    return _hasher.hash(secrets.token_urlsafe(16))
