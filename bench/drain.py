"""How fast bookings are done with everything they set off, not only answered.

The closed loop measures how fast bookings are answered. Behind them the outbox relay, the
reminder's consumer and its sender carry each booking's notifications to a confirmation
email, and at full speed they fall behind. This runs the closed loop, then waits until every
booking answered 200 has its confirmation email in the outbox folder (the embedded mail
transport, `mail.transport = "outbox"`), and prints:

- bookings/s while booking, and how many seconds the notifications needed after the load;
- bookings/s with all their work done (bookings / (load + drain));
- the server's CPU time per booking over the whole run (user + system, from /proc).

    airbourne serve --services all &
    python -m bench.drain --pid $! --outbox data/outbox --duration 15

Give `--pid` once per process to count (with `--workers N`: the workers' pids). With
`--peer NAME=PID` (repeatable) it also counts processes the bookings make work for, such as
the database and the broker on the same machine, adds its own CPU time (the load), and
prints what a booking costs the machine in all: the machine's cores divided by that is as
many bookings per second as it could finish, however the work were spread.

    python -m bench.drain --pid $PID --outbox data/outbox \
        --peer mariadb=$(pgrep -x mariadbd) --peer rabbitmq=$(pgrep -f beam.smp)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Sequence

from bench.hotpaths.common import cpu_seconds as cpu_seconds_of_this_process
from bench.profiles import CLOSED_VUS, named
from bench.scenario import booking_test, run

POLL_SECONDS = 0.2
CONFIRMATIONS_MARK = ".eml"


def cpu_seconds(pids: Sequence[int]) -> float:
    """User plus system CPU time the processes `pids` have used so far."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


def peer(text: str) -> tuple[str, int]:
    """`NAME=PID` from the command line."""
    name, _, pid = text.partition("=")
    if not name or not pid.isdigit():
        raise argparse.ArgumentTypeError(f"expected NAME=PID, got {text!r}")
    return name, int(pid)


def emails(outbox: Path) -> int:
    return sum(1 for path in outbox.glob("*" + CONFIRMATIONS_MARK)) if outbox.is_dir() else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.drain", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pid", type=int, action="append", required=True,
                        help="a server process to count CPU time of (repeat for workers)")
    parser.add_argument("--outbox", type=Path, required=True, help="the mail outbox folder")
    parser.add_argument("--peer", type=peer, action="append", default=[], metavar="NAME=PID",
                        help="another process to count CPU time of, e.g. mariadb=1234")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of load")
    parser.add_argument("--vus", type=int, default=CLOSED_VUS)
    parser.add_argument("--gateway", default="http://127.0.0.1:3005")
    parser.add_argument("--auth", default="http://127.0.0.1:3001")
    parser.add_argument("--flights", default="http://127.0.0.1:3002")
    parser.add_argument("--setup-flights", type=int, default=50, metavar="N")
    parser.add_argument("--setup-users", type=int, default=50, metavar="N")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="give up waiting for the emails after this many seconds")
    args = parser.parse_args(argv)

    before, cpu_before = emails(args.outbox), cpu_seconds(args.pid)
    peers_before = {name: cpu_seconds([pid]) for name, pid in args.peer}
    own_before = cpu_seconds_of_this_process()
    urls = {"gateway": args.gateway, "auth": args.auth, "flights": args.flights}
    started = time.perf_counter()
    profile = named("closed", args.duration, args.vus)
    summary = run(booking_test(profile, urls, args.setup_flights, args.setup_users))
    loaded = time.perf_counter()
    booked = int(summary.metrics["checks{check:booking_success}"]["passes"])
    while emails(args.outbox) - before < booked:
        if time.perf_counter() - loaded > args.timeout:
            print(f"gave up: {emails(args.outbox) - before} of {booked} emails after "
                  f"{args.timeout:.0f} s", file=sys.stderr)
            return 1
        time.sleep(POLL_SECONDS)
    done = time.perf_counter()
    cpu = cpu_seconds(args.pid) - cpu_before
    load, drain = loaded - started, done - loaded
    print(f"bookings {booked}  while booking {booked / load:.0f}/s  drain {drain:.1f} s  "
          f"all done {booked / (load + drain):.0f}/s  server CPU {1000 * cpu / booked:.2f} ms "
          f"per booking")
    if args.peer:
        costs = {"airbourne": cpu}
        costs.update({name: cpu_seconds([pid]) - peers_before[name] for name, pid in args.peer})
        costs["load"] = cpu_seconds_of_this_process() - own_before
        total = sum(costs.values()) / booked
        cores = len(os.sched_getaffinity(0))
        print("CPU per booking: " + ", ".join(
            f"{name} {1000 * seconds / booked:.2f} ms" for name, seconds in costs.items()
        ) + f"; in all {1000 * total:.2f} ms: at most {cores / total:.0f} bookings/s "
            f"on {cores} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
