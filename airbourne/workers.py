"""Several worker processes serving the same ports, so one host uses all its cores.

The parent binds the sockets and migrates the databases once, then forks; every worker
serves every requested service on the inherited sockets (the kernel spreads the
connections). Background jobs (the outbox relay, the reminder's consumer and sender) run
in worker 0 only: the outbox and the tickets live in the database, so one relay and one
sender see every worker's rows, and on the memory broker a message is published and
consumed in the same process. SIGINT or SIGTERM to the parent is passed to every worker;
if a worker dies, the others are stopped too and the exit code says so.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Callable

logger = logging.getLogger("airbourne.workers")


def run(count: int, work: Callable[[int], int]) -> int:
    """Run `work(index)` in `count` forked processes; return the worst exit code."""
    children: dict[int, int] = {}
    stopping = False

    def stop(signum: int = signal.SIGTERM, frame: object = None) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    for index in range(count):
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                code = work(index)
            except KeyboardInterrupt:
                code = 0
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        children[pid] = index

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    worst = 0
    while children:
        pid, status = os.wait()
        index = children.pop(pid, None)
        if index is None:
            continue
        code = os.waitstatus_to_exitcode(status)
        if not stopping:
            logger.error("worker %d stopped unexpectedly (exit code %d): stopping the others",
                         index, code)
            worst = worst or _positive(code)
            stop()
        elif code != 0:
            worst = worst or _positive(code)
    return worst


def _positive(code: int) -> int:
    """An exit code for the parent: a worker killed by a signal (-N) counts as 128 + N."""
    return 128 - code if code < 0 else code or 1
