"""Fixtures of the microbenchmarks (pytest-benchmark), which live outside `tests/` so the
default `pytest` run never collects them:

    pytest bench/micro --benchmark-only

Async code runs on one event loop kept for the whole test, `loop.run_until_complete(...)`
per round, so a round pays for its own work and one loop turn, not for a new loop.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Callable, Iterator, Sequence

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # bench/ is a folder of the repository, not of the package

from airbourne import config  # noqa: E402
from airbourne.runtime import Runtime  # noqa: E402
from airbourne.service import Service  # noqa: E402

try:
    from uvloop import new_event_loop  # what uvicorn runs the services on
except ImportError:  # no uvloop on Windows
    from asyncio import new_event_loop


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = new_event_loop()
    yield loop
    loop.close()


@pytest.fixture
def settings(tmp_path: Path) -> config.Config:
    """The defaults, with the data folder in `tmp_path` and a gateway rate limit that many
    thousand rounds a second never reach (the counting itself still happens)."""
    return config.load(environ={
        "AIRBOURNE_SERVER_DATA_DIR": str(tmp_path / "data"),
        "AIRBOURNE_GATEWAY_RATE_LIMIT": "100000000/second",
    })


@pytest.fixture
def start(
    loop: asyncio.AbstractEventLoop, settings: config.Config
) -> Iterator[Callable[[Sequence[Service]], Runtime]]:
    """`start(services)`: a runtime of `services` started on `loop`, stopped after the test."""
    started: list[Runtime] = []

    def start(services: Sequence[Service]) -> Runtime:
        runtime = Runtime(settings, services)
        loop.run_until_complete(runtime.start())
        started.append(runtime)
        return runtime

    yield start
    for runtime in started:
        loop.run_until_complete(runtime.stop())
