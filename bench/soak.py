"""Round after round of the seed's load profile against one server: does anything grow?

    airbourne serve --services all &
    python -m bench.soak --pid $! --rounds 3

Runs `--rounds` rounds of a profile (the five-minute `load` by default) back to back, each
with its own setup (50 new users and flights, as `bench.scenario` makes them), and reads the
server's resident memory (`VmRSS` in /proc, summed over every `--pid`) every `--every`
seconds. Prints a line per round: bookings, failures, booking p50/p95/p99/max, and resident
memory at the round's start, end and highest; then the memory after the first round (the
warm-up: pools, caches, the first requests) against the last. `--json FILE` also writes the
rounds and every sample.

A step in resident memory is not yet a leak: an allocator keeps the high-water mark of its
heap. A leak keeps growing round after round at the same pace; run enough rounds to tell.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Sequence

from bench.profiles import PROFILES
from bench.scenario import SetupError, booking_test, run

BOOKING = "http_req_duration{operation:booking}"
LATENCY = {"p50": "med", "p95": "p(95)", "p99": "p(99)", "max": "max"}
"""Our names of the booking latencies, and k6's."""


def resident_mb(pids: Sequence[int]) -> float:
    """Resident memory of the processes `pids`, in MB (10^6 bytes)."""
    kilobytes = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                kilobytes += int(line.split()[1])
    return kilobytes * 1024 / 1e6


async def soak(args: argparse.Namespace) -> dict:
    urls = {"gateway": args.gateway, "auth": args.auth, "flights": args.flights}
    started = time.perf_counter()
    samples: list[tuple[float, float]] = []

    async def sample() -> None:
        while True:
            samples.append((time.perf_counter() - started, resident_mb(args.pid)))
            await asyncio.sleep(args.every)

    sampler = asyncio.create_task(sample())
    rounds = []
    try:
        for number in range(1, args.rounds + 1):
            first = len(samples)
            begin = resident_mb(args.pid)
            summary = await booking_test(PROFILES[args.profile], urls)
            end = resident_mb(args.pid)
            during = [mb for _, mb in samples[first:]]
            latency = summary.metrics[BOOKING]
            rounds.append({
                "round": number,
                "bookings": int(summary.metrics["http_reqs{operation:booking}"]["count"]),
                "failed": summary.metrics["http_req_failed{operation:booking}"]["rate"],
                **{key: latency[k6] for key, k6 in LATENCY.items()},
                "memory_start_mb": begin, "memory_end_mb": end,
                "memory_max_mb": max([begin, end, *during]),
                "slowest": summary.slowest.get("booking", []),
            })
            print(_line(rounds[-1]), flush=True)
    finally:
        sampler.cancel()
    return {"profile": args.profile, "pids": args.pid, "rounds": rounds, "samples": samples}


def _line(result: dict) -> str:
    return (
        f"round {result['round']}: {result['bookings']} bookings, "
        f"{100 * result['failed']:.2f} % failed, booking ms p50 {result['p50']:.1f} "
        f"p95 {result['p95']:.1f} p99 {result['p99']:.1f} max {result['max']:.0f}; "
        f"memory {result['memory_start_mb']:.1f} -> {result['memory_end_mb']:.1f} MB "
        f"(highest {result['memory_max_mb']:.1f})\n  slowest bookings: "
        + (", ".join(f"{ms:.0f} ms at {_clock(start)}" for start, ms in result["slowest"][:5])
           or "none")
    )


def _clock(unix_seconds: float) -> str:
    """A local wall-clock time to the tenth of a second: `vmstat -t` stamps each line with the
    second its sample ends, the server's log to the millisecond."""
    tenths = round(unix_seconds * 10)
    return time.strftime("%H:%M:%S", time.localtime(tenths // 10)) + f".{tenths % 10}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--pid", type=int, action="append", required=True,
                        help="a server process to read the memory of (repeat for workers)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", default="load", choices=list(PROFILES))
    parser.add_argument("--every", type=float, default=30.0, help="seconds between samples")
    parser.add_argument("--gateway", default="http://127.0.0.1:3005")
    parser.add_argument("--auth", default="http://127.0.0.1:3001")
    parser.add_argument("--flights", default="http://127.0.0.1:3002")
    parser.add_argument("--json", metavar="FILE", help="also write the rounds and samples")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.every <= 0:
        parser.error("--rounds must be at least 1 and --every above 0")
    if missing := [pid for pid in args.pid if not Path(f"/proc/{pid}").is_dir()]:
        parser.error(f"no process {', '.join(map(str, missing))}")

    try:
        result = run(soak(args))
    except SetupError as exc:
        print(f"setup failed: {exc}", file=sys.stderr)
        return 1
    first, last = result["rounds"][0], result["rounds"][-1]
    if last is not first:
        print(f"after the first round: {first['memory_end_mb']:.1f} MB; after the last: "
              f"{last['memory_end_mb']:.1f} MB "
              f"({last['memory_end_mb'] - first['memory_end_mb']:+.1f} MB)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
