"""Calls between services: the runtime's HTTP session posting a booking body to the bare
endpoint (`bench.bare`), as booking calls flights in split mode. Prints the call rate and
latency and this process's CPU time per call, the figure that decides split mode's speed;
`--client httpx` makes the same calls through httpx (the `test` extra), the client before.

    python -m bench.bare --port 3099 &
    python -m bench.hotpaths.client --url http://127.0.0.1:3099 --concurrency 64
    python -m bench.hotpaths.client --url http://127.0.0.1:3099 --concurrency 64 --client httpx
"""

from __future__ import annotations

import argparse
from typing import Sequence

from airbourne.clients.errors import call, session
from bench.hotpaths import common

BOOKING = {"flightId": 1, "userId": 1, "NoOfSeats": 2}


async def measure(args: argparse.Namespace) -> None:
    url = args.url.rstrip("/") + "/api/v1/bookings"
    if args.client == "httpx":
        import httpx  # the test extra

        client = httpx.AsyncClient(  # as the runtime had it
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64)
        )

        async def post() -> None:
            answer = await client.post(url, json=BOOKING)
            assert answer.status_code == 200, answer.status_code

    else:
        client = session()

        async def post() -> None:
            answer = await call(client, "bare", "POST", url, json=BOOKING)
            assert answer.status_code == 200, answer.status_code

    try:
        with common.profiled(args.profile):
            started = common.cpu_seconds()
            timings = await common.drive(post, args.seconds, args.concurrency)
            cpu = common.cpu_seconds() - started
    finally:
        await (client.aclose() if args.client == "httpx" else client.close())
    calls = len(timings.latencies)
    print(f"{args.client} to {url}, concurrency {args.concurrency}, {timings.seconds:.1f} s "
          f"(measured on this machine, as busy as it is)")
    print(common.header())
    print(common.line("call", timings.latencies, timings.seconds))
    print(f"CPU time of this process: {cpu / calls * 1e6:.0f} µs per call (the untimed first "
          f"round of {args.concurrency} included)")


def main(argv: Sequence[str] | None = None) -> None:
    parser = common.parser(__spec__.name, __doc__)
    parser.add_argument("--url", default="http://127.0.0.1:3099", help="where bench.bare runs")
    parser.add_argument("--client", choices=("aiohttp", "httpx"), default="aiohttp")
    common.run(measure(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
