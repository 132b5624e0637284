"""What the hot-path scripts share: their options, a timed run of concurrent workers, the
summary, and the optional pyinstrument profile.

A run is closed: `concurrency` tasks call the operation back to back for `seconds`, so the
rate is what the path sustains at that concurrency and the latencies include the waits for
a pool connection, the SQLite writer or a publisher confirm.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable, Iterator, Sequence

from bench.metrics import percentile

try:
    from uvloop import run  # what uvicorn runs the services on
except ImportError:  # no uvloop on Windows
    from asyncio import run

__all__ = [
    "Operation", "Timings", "cpu_seconds", "drive", "header", "line", "parser", "profiled", "run",
]

Operation = Callable[[], Awaitable[object]]

POINTS = (50, 90, 95, 99)


def cpu_seconds() -> float:
    """User plus system CPU time of this process so far, all its threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def parser(module: str, doc: str) -> argparse.ArgumentParser:
    """The options every script takes; `doc` is the script's docstring (its first paragraph
    is the description, the rest the examples)."""
    description, _, examples = doc.partition("\n\n")
    parser = argparse.ArgumentParser(
        prog=f"python -m {module}", description=description, epilog=examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--seconds", type=_positive(float), default=5.0, help="length of the timed run"
    )
    parser.add_argument(
        "--concurrency", type=_positive(int), default=16, help="operations in flight at once"
    )
    parser.add_argument(
        "--profile", type=Path, metavar="OUT.html",
        help="write a pyinstrument HTML profile of the timed run",
    )
    return parser


def _positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its error message
    return parse


@dataclass
class Timings:
    """Latencies in milliseconds and the wall-clock seconds they were taken over."""

    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, started: float, ended: float) -> None:
        self.latencies.append((ended - started) * 1000.0)


async def drive(operation: Operation, seconds: float, concurrency: int) -> Timings:
    """Call `operation` from `concurrency` tasks until `seconds` have passed; time each call.

    One untimed round goes first, so pools have opened their connections before timing
    starts. Each worker yields to the loop between calls, so an operation that never waits
    (the memory broker's publish) cannot starve the other workers and the consumers. An
    operation that raises stops the run: a hot path that fails is not measured.
    """
    await asyncio.gather(*(operation() for _ in range(concurrency)))
    timings = Timings()
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while (started := time.perf_counter()) < deadline:
            await operation()
            timings.add(started, time.perf_counter())
            await asyncio.sleep(0)

    began = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    timings.seconds = time.perf_counter() - began
    return timings


def header() -> str:
    columns = "".join(f"{'p' + str(point):>9}" for point in POINTS)
    return f"{'':<12}{'count':>9}{'ops/s':>10}{columns}{'max':>9}  (ms)"


def line(name: str, latencies: Sequence[float], seconds: float) -> str:
    """One row under `header()`: how many, how fast, and the latency percentiles."""
    ordered = sorted(latencies)
    if not ordered:
        return f"{name:<12}{0:>9}  no samples"
    points = "".join(f"{percentile(ordered, point / 100):>9.3f}" for point in POINTS)
    return f"{name:<12}{len(ordered):>9}{len(ordered) / seconds:>10.1f}{points}{ordered[-1]:>9.3f}"


@contextlib.contextmanager
def profiled(path: Path | None) -> Iterator[None]:
    """Profile the block with pyinstrument into the HTML file `path` (nothing if None).

    Enter it inside the coroutine being measured: in async mode pyinstrument follows that
    task and the tasks it starts, and charges the time spent awaiting to the `await`. Work
    in other threads (aiosqlite's, the SMTP sink's) shows only as that wait.
    """
    if path is None:
        yield
        return
    from pyinstrument import Profiler  # the `bench` extra: only needed with --profile

    profiler = Profiler(async_mode="enabled")
    profiler.start()
    try:
        yield
    finally:
        profiler.stop()
        profiler.write_html(path)
        print(f"profile written to {path}")
