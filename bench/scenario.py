"""The seed's booking load test (the last k6 script of shared/seed.md) in one asyncio process.

    python -m bench.scenario --profile load            # or stress, spike, smoke, closed
    python -m bench.scenario --target URL --vus 64     # one endpoint, no pauses

Setup as in the seed: 2 cities, 2 airports, an airplane of 100000 seats, 50 flights, 50 users
signed up and signed in. Then each virtual user (VU) loops: pick a random user, book 1-3 times
a random flight with 1-4 seats, 0.3 s apart, then pause 1-3 s (`closed`: no pauses). Every
request goes through one pooled keep-alive session and is timed under its operation (setup,
login, booking). The exit status is 99 when a threshold fails, as k6's.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from random import choice, randint, random
from typing import Awaitable, Callable, Mapping, Sequence

import aiohttp
from yarl import URL

try:
    from uvloop import run  # the runner shares the machine with the server: spare it
except ImportError:  # no uvloop on Windows
    from asyncio import run

from bench.metrics import Check, Series, Summary, evaluate, render, slowest, summarize
from bench.profiles import CLOSED_VUS, PROFILES, Profile, closed, named

# The seed's thresholds and checks, as written there.
THRESHOLDS: dict[str, list[str]] = {
    "http_req_duration{operation:login}": ["p(95)<300"],
    "http_req_duration{operation:booking}": ["p(95)<2000", "p(99)<5000"],
    "http_req_duration{operation:setup}": ["p(95)<500"],
    "http_req_failed{operation:booking}": ["rate<0.05"],
    "checks{check:booking_success}": ["rate>0.95"],
}
CHECKS: dict[str, Check] = {
    "booking_success": Check("booking", lambda status, ms: status in (200, 201)),
    "booking_fast": Check("booking", lambda status, ms: ms < 1000),
    "booking_no_timeout": Check("booking", lambda status, ms: status != 0),
}
TARGET_THRESHOLDS: dict[str, list[str]] = {"http_req_failed{operation:target}": ["rate<0.05"]}

PASSWORD = "password123"
REQUEST_TIMEOUT = 60.0  # k6's default
GRACEFUL_STOP = 30.0  # k6's default: how long running iterations may finish after the end
PROGRESS_EVERY = 10.0
JSON_HEADERS = {"Content-Type": "application/json"}
ISO_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


class SetupError(Exception):
    """The system under test refused a setup request: the test cannot start."""


class Client:
    """One pooled keep-alive session; times every request into `series[operation]`."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.series: dict[str, Series] = defaultdict(Series)

    async def post(
        self, operation: str, url: URL, body: bytes, headers: Mapping[str, str] = JSON_HEADERS
    ) -> tuple[int, bytes]:
        """`(status, body)`; status 0 when no answer came (refused, reset, timed out)."""
        samples = self.series[operation]
        started = time.perf_counter()
        try:
            async with self.session.post(url, data=body, headers=headers) as response:
                answer = await response.read()
                status = response.status
        except (aiohttp.ClientError, asyncio.TimeoutError):
            status, answer = 0, b""
        samples.add(started, time.perf_counter(), status)
        return status, answer

    async def create(self, operation: str, url: URL, payload: dict) -> dict:
        """POST `payload` and return the answer's `data`, or raise `SetupError`."""
        status, answer = await self.post(operation, url, json.dumps(payload).encode())
        if status not in (200, 201):
            answered = f"answered {status}: {answer[:300]!r}" if status else "got no answer"
            raise SetupError(f"POST {url} {json.dumps(payload)} {answered}")
        return json.loads(answer)["data"]


def session(connections: int = 0) -> aiohttp.ClientSession:
    """Keep-alive connections, at most `connections` (0: one per concurrent request, as k6's
    VUs each keep their own)."""
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=0, ttl_dns_cache=None)
    return aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    )


@dataclass(frozen=True)
class User:
    id: int
    headers: Mapping[str, str]
    """Content type and the user's `x-access-token`, built once."""


@dataclass(frozen=True)
class World:
    """What the setup made: the flights to book and the signed-in users who book them."""

    flight_ids: Sequence[int]
    users: Sequence[User]


def flight_times(index: int, year: int) -> tuple[str, str]:
    """The seed's schedule (one flight an hour from 10 October, two hours long) in strict
    ISO 8601. The seed writes hours unpadded ("T9:00") and past midnight ("T25:00");
    Airbourne accepts those too (tests/test_flights_api.py), the runner need not send them."""
    departure = datetime(year, 10, 10, tzinfo=timezone.utc) + timedelta(hours=index)
    arrival = departure + timedelta(hours=2)
    return departure.strftime(ISO_FORMAT), arrival.strftime(ISO_FORMAT)


async def setup(client: Client, flights_url: URL, auth_url: URL, flights: int = 50,
                users: int = 50) -> World:
    """The seed's setup, one request after another as in k6's `setup()`. Flights leave next
    year, so that, as in the seed's run, departures and their reminders lie in the future."""
    run = uuid.uuid4().hex[:8]
    api = flights_url / "api/v1"
    cities = [
        await client.create("setup", api / "city", {"name": f"City_{run}_{n}"}) for n in (1, 2)
    ]
    airports = [
        await client.create("setup", api / "airports", {
            "name": f"{kind}Airport_{run}", "address": f"Address_{run}_{kind}",
            "cityId": city["id"],
        })
        for kind, city in zip(("Dep", "Arr"), cities)
    ]
    airplane = await client.create("setup", api / "airplane",
                                   {"modelNumber": f"Boeing_{run}", "capacity": 100000})
    year = datetime.now(timezone.utc).year + 1
    flight_ids = []
    for index in range(flights):
        departure, arrival = flight_times(index, year)
        flight = await client.create("setup", api / "flights", {
            "flightNumber": f"FN_{run}_{index}", "airplaneId": airplane["id"],
            "departureAirportID": airports[0]["id"], "arrivalAirportId": airports[1]["id"],
            "departureTime": departure, "arrivalTime": arrival,
            "price": 5000 + index * 100, "boardingGate": f"Gate_{index}",
        })
        flight_ids.append(flight["id"])
    signed_in = []
    for index in range(users):
        credentials = {"email": f"user_{run}_{index}@test.com", "password": PASSWORD}
        await client.create("setup", auth_url / "api/v1/signup", credentials)
        token = await client.create("login", auth_url / "api/v1/signin", credentials)
        signed_in.append(User(token["id"], {**JSON_HEADERS, "x-access-token": token["token"]}))
    return World(flight_ids, signed_in)


async def book(client: Client, bookings_url: URL, world: World, think: bool) -> None:
    """One iteration of the seed's VU: 1-3 bookings of 1-4 seats by one random user."""
    user = choice(world.users)
    count = randint(1, 3)
    for index in range(count):
        body = b'{"flightId":%d,"userId":%d,"NoOfSeats":%d}' % (
            choice(world.flight_ids), user.id, randint(1, 4))
        await client.post("booking", bookings_url, body, user.headers)
        if think and index < count - 1:
            await asyncio.sleep(0.3)
    if think:
        await asyncio.sleep(1 + random() * 2)


async def drive(profile: Profile, iteration: Callable[[], Awaitable[object]],
                grace: float = GRACEFUL_STOP) -> int:
    """Loop `iteration` on as many VUs as `profile` asks for at each moment; returns the
    number of iterations completed. A VU the ramp no longer wants finishes its iteration
    first, as in k6; at the end, running iterations get `grace` seconds."""
    wanted = 0
    running: dict[int, asyncio.Task] = {}
    completed = 0

    async def virtual_user(index: int) -> None:
        nonlocal completed
        try:
            while index < wanted:
                await iteration()
                completed += 1
        finally:
            del running[index]

    loop = asyncio.get_running_loop()
    start = loop.time()
    async with asyncio.TaskGroup() as group:
        reporter = group.create_task(_progress(start, lambda: (wanted, completed)))
        for offset, vus in profile.steps():
            await asyncio.sleep(start + offset - loop.time())
            wanted = vus
            for index in range(vus):
                if index not in running:
                    running[index] = group.create_task(virtual_user(index))
        await asyncio.sleep(start + profile.duration - loop.time())
        wanted = 0
        reporter.cancel()
        if running:
            _, late = await asyncio.wait(list(running.values()), timeout=grace)
            for task in late:
                task.cancel()
    return completed


async def _progress(start: float, state: Callable[[], tuple[int, int]]) -> None:
    """A line on stderr now and then, so a long run shows it is alive."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(PROGRESS_EVERY)
        vus, completed = state()
        print(f"{loop.time() - start:6.0f} s  {vus:4d} VUs  {completed} iterations",
              file=sys.stderr, flush=True)


async def booking_test(profile: Profile, urls: Mapping[str, str], flights: int = 50,
                       users: int = 50) -> Summary:
    async with session() as http:
        client = Client(http)
        world = await setup(client, URL(urls["flights"]), URL(urls["auth"]), flights, users)
        bookings_url = URL(urls["gateway"]) / "bookingservice/api/v1/bookings"
        iteration = functools.partial(book, client, bookings_url, world, profile.think)
        return await _finish(profile, client, iteration, THRESHOLDS, CHECKS)


async def target_test(url: str, duration: float, vus: int) -> Summary:
    """POST a booking body to `url` on `vus` connections, no pauses: what the runner and one
    bare endpoint manage, to set beside the booking path."""
    profile = closed(duration, vus)
    body = b'{"flightId":1,"userId":1,"NoOfSeats":2}'
    async with session(vus) as http:
        client = Client(http)
        iteration = functools.partial(client.post, "target", URL(url), body)
        return await _finish(profile, client, iteration, TARGET_THRESHOLDS, {})


async def _finish(profile: Profile, client: Client, iteration: Callable[[], Awaitable[object]],
                  thresholds: Mapping[str, Sequence[str]], checks: Mapping[str, Check]) -> Summary:
    started = time.perf_counter()
    iterations = await drive(profile, iteration)
    seconds = time.perf_counter() - started
    metrics = summarize(client.series, checks)
    wall_clock = time.time() - time.perf_counter()
    return Summary(profile.name, seconds, profile.max_vus, iterations, list(client.series),
                   metrics, evaluate(thresholds, metrics),
                   slowest(client.series, clock_offset=wall_clock))


def _parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="python -m bench.scenario", description=__doc__.split("\n\n")[0],
        epilog="Exit status: 0 all thresholds passed, 99 one failed, 1 setup failed.",
    )
    parser.add_argument("--profile", default="load", choices=[*PROFILES, "closed"])
    parser.add_argument("--duration", type=float, default=60.0,
                        help="seconds, for --profile closed and --target (default 60)")
    parser.add_argument("--vus", type=int, default=CLOSED_VUS,
                        help=f"VUs, for --profile closed and --target (default {CLOSED_VUS})")
    parser.add_argument("--gateway", default=env("GATEWAY_URL", "http://127.0.0.1:3005"))
    parser.add_argument("--auth", default=env("AUTH_URL", "http://127.0.0.1:3001"))
    parser.add_argument("--flights", default=env("FLIGHTS_URL", "http://127.0.0.1:3002"))
    parser.add_argument("--setup-flights", type=int, default=50, metavar="N")
    parser.add_argument("--setup-users", type=int, default=50, metavar="N")
    parser.add_argument("--target", metavar="URL",
                        help="drive only POST URL (e.g. python -m bench.bare) with --vus "
                             "connections for --duration seconds, no setup, no pauses")
    parser.add_argument("--json", metavar="FILE", help="also write the summary as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.target:
        test = target_test(args.target, args.duration, args.vus)
    else:
        urls = {"gateway": args.gateway, "auth": args.auth, "flights": args.flights}
        profile = named(args.profile, args.duration, args.vus)
        test = booking_test(profile, urls, args.setup_flights, args.setup_users)
    try:
        summary = run(test)
    except SetupError as exc:
        print(f"setup failed: {exc}", file=sys.stderr)
        return 1
    print(render(summary))
    if args.json:
        with open(args.json, "w") as file:
            json.dump(summary.as_json(), file, indent=2)
    return 0 if summary.passed else 99


if __name__ == "__main__":
    sys.exit(main())
