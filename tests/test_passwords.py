"""Password hashing on its own fixed set of threads (see passwords.py for why)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import anyio
import pytest

from airbourne.services.auth import passwords
from airbourne.services.auth.passwords import Passwords

pytestmark = pytest.mark.anyio


async def test_hashes_and_verifies() -> None:
    hashing = Passwords()
    hashed = await hashing.hash("password123")
    assert hashed.startswith("$argon2id$")
    assert await hashing.verify(hashed, "password123")
    assert not await hashing.verify(hashed, "password124")
    assert not await hashing.verify(None, "password123")  # no such user
    assert not await hashing.verify("not a hash", "password123")


async def test_a_burst_runs_on_at_most_the_given_threads(monkeypatch) -> None:
    """Twelve hashes at once, three at a time, on the same three threads of hashing's own:
    the set that bounds the memory hashing keeps. The second burst finds them still there."""
    used: set[str] = set()
    running = 0
    most = 0
    lock = threading.Lock()
    hash_one = passwords._hasher.hash

    def counted(password: str) -> str:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
            used.add(threading.current_thread().name)
        try:
            return hash_one(password)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(passwords, "_hasher", SimpleNamespace(hash=counted))
    hashing = Passwords(threads=3)
    for _ in range(2):
        async with anyio.create_task_group() as group:
            for n in range(12):
                group.start_soon(hashing.hash, f"password{n}")
    assert most == 3
    assert len(used) == 3
    assert all(name.startswith("argon2") for name in used), used  # not anyio's shared pool
