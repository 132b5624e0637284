"""Password hashing: argon2id with OWASP's minimum parameters, off the event loop.

Each hash takes tens of milliseconds and 19 MiB, so it runs on one of a few threads kept for
this purpose, which also caps how many run at once. They are kept, not borrowed from anyio's
shared pool, for the memory: glibc leaves a freed 19 MiB block in the arena of the thread
that used it, so threads that come and go (anyio's leave after 10 s idle) strand a block per
new arena and the process grew by about 19 MiB per burst of sign-ins. A fixed set of threads
reuses its own blocks: at most `threads` × 19 MiB, reached at the first burst.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

T = TypeVar("T")

_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


class Passwords:
    def __init__(self, threads: int = 4) -> None:
        self._threads = ThreadPoolExecutor(threads, thread_name_prefix="argon2")

    async def hash(self, password: str) -> str:
        return await self._run(_hasher.hash, password)

    async def verify(self, hashed: str | None, password: str) -> bool:
        """Whether `password` matches `hashed`. With no hash (no such user) the work is done
        against a dummy hash all the same, so the answer takes as long either way and does
        not tell which emails have an account."""
        return await self._run(_verify, hashed, password)

    async def _run(self, function: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._threads, function, *args)


def _verify(hashed: str | None, password: str) -> bool:
    try:
        return _hasher.verify(hashed or _dummy_hash(), password) and hashed is not None
    except (VerificationError, InvalidHashError):
        return False


@functools.cache
def _dummy_hash() -> str:
    return _hasher.hash(secrets.token_urlsafe(16))
