"""Sending email as the reminder service does: build a message with `airbourne.mail.compose`
and hand it to the mail transport, `--concurrency` at once.

    python -m bench.hotpaths.email --seconds 5 --concurrency 10
    python -m bench.hotpaths.email --transport smtp --profile email.html

`outbox` (default) writes `.eml` files into a temporary folder. `smtp` sends, on the
connections `SmtpMailer` keeps open between messages, to an SMTP sink that this script starts
on a free port (aiosmtpd, in a thread of this process: the sink's work shares the interpreter
with the client's).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import socket
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from airbourne import config
from airbourne.mail import Mailer, OutboxMailer, SmtpMailer, compose
from bench.hotpaths import common

SUBJECT = "Reminder: flight BX1234 departs 2030-10-10 10:00 UTC"
CONTENT = "Your flight BX1234 departs 2030-10-10 10:00 UTC. Booking {n}, 2 seats."


class Sink:
    """An aiosmtpd handler that accepts every message and counts them."""

    def __init__(self) -> None:
        self.received = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received += 1
        return "250 Message accepted"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def transport(name: str) -> Iterator[tuple[Mailer, Callable[[], int]]]:
    """The mailer for `name` and a function counting the messages it delivered."""
    if name == "outbox":
        with tempfile.TemporaryDirectory(prefix="airbourne-bench-") as folder:
            mailer = OutboxMailer(Path(folder) / "outbox")
            yield mailer, lambda: len(mailer.messages())
        return
    from aiosmtpd.controller import Controller  # the `test` extra: only needed for smtp

    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield SmtpMailer("127.0.0.1", controller.port), lambda: sink.received
    finally:
        controller.stop()


async def measure(args: argparse.Namespace) -> None:
    sender = config.load(environ={})["mail"]["from_address"]
    numbers = itertools.count(1)
    with transport(args.transport) as (mailer, delivered):

        async def send() -> None:
            n = next(numbers)
            message = compose(sender, f"user{n}@example.com", SUBJECT, CONTENT.format(n=n))
            await mailer.send(message)

        with common.profiled(args.profile):
            timings = await common.drive(send, args.seconds, args.concurrency)
        sent = next(numbers) - 1
        arrived = delivered()
    print(f"email through {args.transport}, concurrency {args.concurrency}, "
          f"{timings.seconds:.1f} s (measured on this machine, as busy as it is)")
    print(common.header())
    print(common.line("send", timings.latencies, timings.seconds))
    if arrived != sent:
        raise SystemExit(f"check FAILED: {sent} sent, {arrived} delivered")
    print(f"check: {sent} sent, {arrived} delivered: as expected")


def main(argv: Sequence[str] | None = None) -> None:
    parser = common.parser(__spec__.name, __doc__)
    parser.add_argument("--transport", choices=["outbox", "smtp"], default="outbox")
    common.run(measure(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
