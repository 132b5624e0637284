"""The gateway over HTTP: routing, the token check, what it forwards, and rate limits."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import AsyncIterator, Iterable, Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from airbourne.config import Config, ConfigError
from airbourne.runtime import Runtime
from airbourne.service import Service
from airbourne.services import auth, booking, flights, gateway, reminder
from airbourne.tokens import Tokens, load_secret
from support import client, free_port, make_config, started
from test_proxy import served

pytestmark = pytest.mark.anyio

PASSWORD = "password123"
NO_TOKEN = {"message": "No token provided"}


@contextlib.asynccontextmanager
async def running(
    config: Config, services: Iterable[Service], address: str = "127.0.0.1"
) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    """A started runtime with `services` and the gateway, and a client of the gateway."""
    async with started(config, [*services, gateway.SERVICE]) as runtime:
        async with as_client(runtime, address) as http:
            yield http, runtime


def as_client(runtime: Runtime, address: str) -> httpx.AsyncClient:
    """A client of the gateway calling from `address`."""
    transport = httpx.ASGITransport(app=runtime.apps["gateway"], client=(address, 4321))
    return httpx.AsyncClient(transport=transport, base_url="http://gateway")


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    """Every service behind the gateway, on SQLite."""
    services = [auth.SERVICE, flights.SERVICE, booking.SERVICE, reminder.SERVICE]
    async with running(make_config(tmp_path), services) as pair:
        yield pair


@pytest.fixture
async def http(api: tuple[httpx.AsyncClient, Runtime]) -> httpx.AsyncClient:
    return api[0]


async def sign_up_and_in(http: httpx.AsyncClient, email: str = "ada@example.com") -> dict:
    """Signs a new user up and in through the gateway; the session's headers and user id."""
    body = {"email": email, "password": PASSWORD}
    assert (await http.post("/auth/api/v1/signup", json=body)).status_code == 201
    answer = await http.post("/auth/api/v1/signin", json=body)
    assert answer.status_code == 200, answer.text
    session = answer.json()["data"]
    return {"headers": {"x-access-token": session["token"]}, "id": session["id"]}


def assert_failure(answer: httpx.Response, status: int) -> dict:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["success"] is False and body["data"] == {} and body["message"], body
    return body


# --- routing --------------------------------------------------------------------------------


async def test_health_answers_itself(http: httpx.AsyncClient) -> None:
    answer = await http.get("/health")
    assert answer.status_code == 200 and answer.json() == {"message": "OK"}


@pytest.mark.parametrize(
    "path", ["/nope/api/v1/city", "/flightsx/api/v1/city", "/flights", "/", "/api/v1/city"]
)
async def test_an_unknown_prefix_is_404(http: httpx.AsyncClient, path: str) -> None:
    assert_failure(await http.get(path), 404)


async def test_auth_passes_through_unchanged(tmp_path: Path, database_url: str) -> None:
    config = make_config(tmp_path, database_url)
    async with running(config, [auth.SERVICE, flights.SERVICE]) as (http, runtime):
        body = {"email": "ada@example.com", "password": PASSWORD}
        created = await http.post("/auth/api/v1/signup", json=body)
        assert created.status_code == 201
        assert created.json()["data"]["email"] == "ada@example.com"

        async with client(runtime.apps["auth"]) as direct:
            for method, path, payload in [
                ("POST", "/api/v1/signup", body),  # taken: 409
                ("POST", "/api/v1/signin", {**body, "password": "wrong-one"}),  # 401
                ("POST", "/api/v1/signin", {"email": "ada@example.com"}),  # 400
                ("GET", "/api/v1/dummy", None),
                ("GET", "/api/v1/isAuthenticated", None),  # no token: auth's own 401
            ]:
                through = await http.request(method, "/auth" + path, json=payload)
                straight = await direct.request(method, path, json=payload)
                assert through.status_code == straight.status_code
                assert through.json() == straight.json()
                assert through.headers["content-type"] == straight.headers["content-type"]

        signed_in = await http.post("/auth/api/v1/signin", json=body)
        assert signed_in.status_code == 200
        session = signed_in.json()["data"]
        assert session["id"] == created.json()["data"]["id"] and session["token"]
        token = {"x-access-token": session["token"]}
        checked = await http.get("/auth/api/v1/isAuthenticated", headers=token)
        assert checked.status_code == 200 and checked.json()["data"] == session["id"]


# --- the token --------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["/flights", "/reminder", "/bookingservice"])
async def test_a_missing_token_is_401_with_the_old_body(
    http: httpx.AsyncClient, prefix: str
) -> None:
    for headers in ({}, {"x-access-token": ""}):
        answer = await http.get(prefix + "/api/v1/anything", headers=headers)
        assert answer.status_code == 401 and answer.json() == NO_TOKEN


async def test_bad_tokens_are_401(api: tuple[httpx.AsyncClient, Runtime]) -> None:
    http, runtime = api
    secret = load_secret(runtime.config)
    other_secret = "another-secret-of-a-decent-length-0123456789"
    wrong_secret = Tokens(other_secret, 3600).issue(1, "ada@example.com")
    expired = Tokens(secret, -60).issue(1, "ada@example.com")
    for token, reason in [
        ("garbage", None), ("a.b.c", None), (wrong_secret, None), (expired, "expired"),
    ]:
        answer = await http.get("/flights/api/v1/city", headers={"x-access-token": token})
        body = assert_failure(answer, 401)
        assert body["err"]["field"] == "x-access-token"
        if reason:
            assert reason in body["message"]
    valid = Tokens(secret, 60).issue(1, "ada@example.com")
    answer = await http.get("/flights/api/v1/airplane", headers={"x-access-token": valid})
    assert answer.status_code == 200


async def test_auth_routes_need_no_token(http: httpx.AsyncClient) -> None:
    answer = await http.get("/auth/api/v1/dummy")
    assert answer.status_code == 200 and answer.json() == {"message": "OK"}


# --- flights through the gateway ---------------------------------------------------------------


async def test_flights_through_the_gateway(api: tuple[httpx.AsyncClient, Runtime]) -> None:
    http, runtime = api
    session = await sign_up_and_in(http)
    headers = session["headers"]
    created = await http.post("/flights/api/v1/city", json={"name": "Pretoria"}, headers=headers)
    assert created.status_code == 201, created.text
    city = created.json()["data"]
    assert created.json()["success"] is True and city["name"] == "Pretoria"
    await http.post("/flights/api/v1/city", json={"name": "Prague"}, headers=headers)

    async with client(runtime.apps["flights"]) as direct:
        for method, path, payload in [
            ("GET", "/api/v1/city?name=Pre", None),  # the query string passes: only Pretoria
            ("GET", f"/api/v1/city/{city['id']}", None),
            ("POST", "/api/v1/city", {"name": "Pretoria"}),  # taken: 409
            ("POST", "/api/v1/city", {}),  # 400
            ("GET", "/api/v1/city/abc", None),  # 400
        ]:
            through = await http.request(method, "/flights" + path, json=payload, headers=headers)
            straight = await direct.request(method, path, json=payload)
            assert (through.status_code, through.json()) == (straight.status_code, straight.json())
    found = (await http.get("/flights/api/v1/city?name=Pre", headers=headers)).json()["data"]
    assert [each["name"] for each in found] == ["Pretoria"]


async def test_method_and_status_pass_through(http: httpx.AsyncClient) -> None:
    headers = (await sign_up_and_in(http))["headers"]
    answer = await http.post("/flights/api/v1/city", json={"name": "Lisbon"}, headers=headers)
    city = answer.json()["data"]
    path = f"/flights/api/v1/city/{city['id']}"
    patched = await http.patch(path, json={"name": "Lisboa"}, headers=headers)
    assert patched.status_code == 200 and patched.json()["data"]["name"] == "Lisboa"
    assert (await http.delete(path, headers=headers)).status_code == 200
    assert_failure(await http.get(path, headers=headers), 404)
    assert_failure(await http.delete(path, headers=headers), 404)


async def test_reminder_through_the_gateway(http: httpx.AsyncClient) -> None:
    headers = (await sign_up_and_in(http))["headers"]
    ticket = {
        "subject": "Your flight", "content": "Gate G7", "recepientEmail": "ada@example.com",
        "notificationTime": "2030-10-09T10:00:00Z",
    }
    answer = await http.post("/reminder/api/v1/tickets", json=ticket, headers=headers)
    assert answer.status_code == 201 and answer.json()["data"]["subject"] == "Your flight"


async def test_a_booking_is_for_the_token_user(http: httpx.AsyncClient) -> None:
    ada = await sign_up_and_in(http, "ada@example.com")
    bo = await sign_up_and_in(http, "bo@example.com")
    headers = ada["headers"]
    flight = await create_flight(http, headers)

    # Ada books for Bo, even claiming to be Bo: the token decides.
    for claimed in ({}, {"x-user-id": str(bo["id"]), "x-user-email": "bo@example.com"}):
        answer = await http.post(
            "/bookingservice/api/v1/bookings",
            json={"flightId": flight["id"], "userId": bo["id"], "NoOfSeats": 1},
            headers={**headers, **claimed},
        )
        assert_failure(answer, 403)

    answer = await http.post(
        "/bookingservice/api/v1/bookings",
        json={"flightId": flight["id"], "userId": ada["id"], "NoOfSeats": 2},
        headers={**headers, "idempotency-key": "first-booking"},
    )
    assert answer.status_code == 200, answer.text
    booked = answer.json()["data"]
    assert (booked["userId"], booked["NoOfSeats"], booked["status"]) == (ada["id"], 2, "Booked")
    assert booked["totalCost"] == 2 * flight["price"]
    again = await http.post(  # the idempotency key passes through: the same booking again
        "/bookingservice/api/v1/bookings",
        json={"flightId": flight["id"], "userId": ada["id"], "NoOfSeats": 2},
        headers={**headers, "idempotency-key": "first-booking"},
    )
    assert again.status_code == 200 and again.json()["data"]["id"] == booked["id"]

    mine = await http.get("/bookingservice/api/v1/bookings", headers=headers)
    assert [each["id"] for each in mine.json()["data"]] == [booked["id"]]
    theirs = await http.get("/bookingservice/api/v1/bookings", headers=bo["headers"])
    assert theirs.status_code == 200 and theirs.json()["data"] == []
    path = f"/bookingservice/api/v1/bookings/{booked['id']}"
    assert_failure(await http.get(path, headers=bo["headers"]), 403)
    answer = await http.get(f"/flights/api/v1/flights/{flight['id']}", headers=headers)
    assert answer.json()["data"]["totalSeats"] == flight["totalSeats"] - 2


async def create_flight(http: httpx.AsyncClient, headers: dict) -> dict:
    """A flight between two new airports, made through the gateway."""

    async def create(path: str, body: dict) -> dict:
        answer = await http.post("/flights/api/v1/" + path, json=body, headers=headers)
        assert answer.status_code == 201, answer.text
        return answer.json()["data"]

    city = await create("city", {"name": "Lisbon"})
    departure = await create("airports", {"name": "LIS", "address": "Lisbon", "cityId": city["id"]})
    arrival = await create("airports", {"name": "OPO", "address": "Porto", "cityId": city["id"]})
    airplane = await create("airplane", {"modelNumber": "A320", "capacity": 10})
    return await create("flights", {
        "flightNumber": "TP123", "airplaneId": airplane["id"],
        "departureAirportID": departure["id"], "arrivalAirportId": arrival["id"],
        "departureTime": "2031-05-01T10:00:00Z", "arrivalTime": "2031-05-01T11:00:00Z",
        "price": 120,
    })


@pytest.mark.parametrize(
    "path",
    [
        "/flights/api/v1/flights/{id}/seats/reserve",
        "/flights/api/v1/flights/{id}/seats/release",
        "/flights/api/v1/flights/{id}/seats%2Freserve",
        "/flights/api/v1/flights/{id}/seats/reserve/",
    ],
)
async def test_seat_inventory_is_not_reachable_through_the_gateway(
    http: httpx.AsyncClient, path: str
) -> None:
    """Only the booking service may take or give back seats: a customer with a token must
    not be able to empty a flight, or refill one, behind its bookings' back."""
    ada = await sign_up_and_in(http)
    flight = await create_flight(http, ada["headers"])
    answer = await http.post(path.format(id=flight["id"]), json={"seats": 5}, headers=ada["headers"])
    assert_failure(answer, 404)
    seats = await http.get(f"/flights/api/v1/flights/{flight['id']}", headers=ada["headers"])
    assert seats.json()["data"]["totalSeats"] == flight["totalSeats"]


async def test_users_by_id_are_not_reachable_through_the_gateway(http: httpx.AsyncClient) -> None:
    ada = await sign_up_and_in(http)
    answer = await http.get(f"/auth/api/v1/users/{ada['id']}", headers=ada["headers"])
    assert_failure(answer, 404)
    assert "ada@example.com" not in answer.text


async def test_a_body_over_the_limit_is_413(http: httpx.AsyncClient) -> None:
    answer = await http.post("/auth/api/v1/signup", content=b"x" * (65 * 1024))
    assert_failure(answer, 413)


# --- what the services receive ---------------------------------------------------------------


async def echo(request: Request) -> Response:
    """Tells what the gateway sent: method, path, query, every header, body."""
    seen = {
        "method": request.method,
        "path": request.scope["raw_path"].decode(),
        "query": request.scope["query_string"].decode(),
        "headers": [[name.decode(), value.decode()] for name, value in request.scope["headers"]],
        "body": (await request.body()).decode(),
    }
    response = Response(json.dumps(seen), 207, media_type="application/json")
    response.headers.append("set-cookie", "a=1")
    response.headers.append("set-cookie", "b=2")
    response.headers["connection"] = "x-hop"
    response.headers["x-hop"] = "dropped"
    return response


ECHO = Starlette(routes=[Route("/{path:path}", echo, methods=["GET", "PUT", "POST"])])
ECHO_AS_FLIGHTS = Service(name="flights", create_app=lambda runtime: ECHO, uses_database=False)
"""A stand-in flights service that shows what reached it."""


@contextlib.asynccontextmanager
async def echoing(tmp_path: Path, mode: str) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    """The gateway with the echo as its flights service: in this process or over HTTP."""
    if mode == "local":
        async with running(make_config(tmp_path), [ECHO_AS_FLIGHTS]) as pair:
            yield pair
    else:
        async with served(ECHO) as url:
            async with running(make_config(tmp_path, AIRBOURNE_FLIGHTS_URL=url), []) as pair:
                yield pair


@pytest.mark.parametrize("mode", ["local", "http"])
async def test_what_reaches_the_service(tmp_path: Path, mode: str) -> None:
    async with echoing(tmp_path, mode) as (http, runtime):
        token = Tokens(load_secret(runtime.config), 60).issue(42, "ada@example.com")
        answer = await http.put(
            "/flights/api/v1/a%20b/%2Fc",
            params={"name": "Pre", "x": "é"},
            content=b'{"seats": 2}',
            headers=[
                ("x-access-token", token), ("content-type", "application/json"),
                ("idempotency-key", "k-1"), ("accept", "application/json"),
                ("x-user-id", "999"), ("x-user-email", "mallory@example.com"),
                ("x-forwarded-for", "10.0.0.9"), ("connection", "keep-alive, x-secret"),
                ("x-secret", "per-hop"), ("keep-alive", "timeout=5"), ("te", "trailers"),
                ("proxy-authorization", "Basic eA=="),
            ],
        )
        assert answer.status_code == 207
        assert answer.headers.get_list("set-cookie") == ["a=1", "b=2"]
        assert "x-hop" not in answer.headers and "connection" not in answer.headers
        assert int(answer.headers["content-length"]) == len(answer.content)
        seen = answer.json()
        assert (seen["method"], seen["path"]) == ("PUT", "/api/v1/a%20b/%2Fc")
        assert seen["query"] == "name=Pre&x=%C3%A9"
        assert seen["body"] == '{"seats": 2}'
        headers: dict[str, list[str]] = {}
        for name, value in seen["headers"]:
            headers.setdefault(name, []).append(value)
        assert headers["x-user-id"] == ["42"], "the client's x-user-id was not replaced"
        assert headers["x-user-email"] == ["ada@example.com"]
        assert headers["x-forwarded-for"] == ["10.0.0.9, 127.0.0.1"]
        assert headers["content-length"] == ["12"]
        for kept in ("x-access-token", "content-type", "idempotency-key", "accept"):
            assert len(headers[kept]) == 1, kept
        hop_by_hop = {"connection", "keep-alive", "te", "x-secret", "proxy-authorization"}
        assert not hop_by_hop & headers.keys()


async def test_auth_routes_carry_no_user_headers(tmp_path: Path) -> None:
    echo_as_auth = Service(name="auth", create_app=lambda runtime: ECHO, uses_database=False)
    async with running(make_config(tmp_path), [echo_as_auth]) as (http, runtime):
        claimed = {"x-user-id": "1", "x-user-email": "a@b.c"}
        answer = await http.get("/auth/api/v1/x", headers=claimed)
        names = {name for name, _ in answer.json()["headers"]}
        assert not {"x-user-id", "x-user-email"} & names


# --- services elsewhere ---------------------------------------------------------------------


async def test_an_unreachable_service_is_502(tmp_path: Path) -> None:
    config = make_config(tmp_path, AIRBOURNE_REMINDER_URL=f"http://127.0.0.1:{free_port()}")
    async with running(config, []) as (http, runtime):
        token = Tokens(load_secret(runtime.config), 60).issue(1, "ada@example.com")
        answer = await http.get("/reminder/api/v1/tickets", headers={"x-access-token": token})
        body = assert_failure(answer, 502)
        assert body["message"] == "reminder service unreachable"


async def test_a_service_that_does_not_answer_is_504(tmp_path: Path) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        config = make_config(
            tmp_path,
            AIRBOURNE_BOOKING_URL="http://127.0.0.1:%d" % silent.getsockname()[1],
            AIRBOURNE_GATEWAY_UPSTREAM_TIMEOUT_SECONDS="0.2",
        )
        async with running(config, []) as (http, runtime):
            token = Tokens(load_secret(runtime.config), 60).issue(1, "ada@example.com")
            headers = {"x-access-token": token}
            answer = await http.get("/bookingservice/api/v1/info", headers=headers)
            body = assert_failure(answer, 504)
            assert "booking" in body["message"]


# --- rate limits ----------------------------------------------------------------------------


async def test_over_the_limit_is_429_with_retry_after(tmp_path: Path) -> None:
    config = make_config(tmp_path, AIRBOURNE_GATEWAY_RATE_LIMIT="3/minute")
    async with running(config, []) as (http, runtime):
        for _ in range(3):
            assert (await http.get("/health")).status_code == 200
        for path in ("/health", "/auth/api/v1/dummy", "/nope"):
            answer = await http.get(path)
            body = assert_failure(answer, 429)
            assert "retry" in body["message"]
            assert 1 <= int(answer.headers["retry-after"]) <= 60
        async with as_client(runtime, "10.1.2.3") as other:  # limits are per client address
            assert (await other.get("/health")).status_code == 200


async def test_signin_is_limited_more_strictly(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        AIRBOURNE_GATEWAY_RATE_LIMIT="20/minute",
        AIRBOURNE_GATEWAY_SIGNIN_RATE_LIMIT="2/minute",
    )
    async with running(config, [auth.SERVICE]) as (http, runtime):
        attempt = {"email": "ada@example.com", "password": "wrong-password"}
        for _ in range(2):
            assert (await http.post("/auth/api/v1/signin", json=attempt)).status_code == 401
        refused = await http.post("/auth/api/v1/signin", json=attempt)
        assert_failure(refused, 429)
        assert int(refused.headers["retry-after"]) >= 1
        assert (await http.get("/auth/api/v1/dummy")).status_code == 200
        signup = {"email": "bo@example.com", "password": PASSWORD}
        assert (await http.post("/auth/api/v1/signup", json=signup)).status_code == 201


async def test_an_empty_limit_means_no_limit(tmp_path: Path) -> None:
    config = make_config(
        tmp_path, AIRBOURNE_GATEWAY_RATE_LIMIT="", AIRBOURNE_GATEWAY_SIGNIN_RATE_LIMIT=""
    )
    async with running(config, []) as (http, runtime):
        for _ in range(50):
            assert (await http.get("/health")).status_code == 200
        # more sign-ins than the default sign-in limit (60/minute) allows: none is refused
        # for the rate (auth does not run here, so they fail otherwise, never with 429)
        for _ in range(70):
            answer = await http.post("/auth/api/v1/signin", json={})
            assert answer.status_code != 429, answer.text


@pytest.mark.parametrize(
    "key, value",
    [
        ("RATE_LIMIT", "lots"), ("RATE_LIMIT", "10/fortnight"), ("RATE_LIMIT", "0/second"),
        ("SIGNIN_RATE_LIMIT", "5 per"), ("RATE_LIMIT_STORAGE", "nosuch://host"),
    ],
)
async def test_a_bad_gateway_setting_stops_start_up(tmp_path: Path, key: str, value: str) -> None:
    config = make_config(tmp_path, **{f"AIRBOURNE_GATEWAY_{key}": value})
    with pytest.raises(ConfigError, match=f"gateway.{key.lower()}"):
        async with started(config, [gateway.SERVICE]):
            pass


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A throw-away redis-server on a free port."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


async def test_gateways_sharing_redis_share_the_limit(tmp_path: Path) -> None:
    with redis_server() as url:
        env = {
            "AIRBOURNE_GATEWAY_RATE_LIMIT": "3/minute",
            "AIRBOURNE_GATEWAY_RATE_LIMIT_STORAGE": url,
        }
        async with running(make_config(tmp_path / "a", **env), []) as (first, _):
            async with running(make_config(tmp_path / "b", **env), []) as (second, _):
                for http in (first, second, first):
                    assert (await http.get("/health")).status_code == 200
                refused = await second.get("/health")
                assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1


async def test_a_failing_limit_storage_lets_requests_through(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"redis://127.0.0.1:{free_port()}"
    config = make_config(tmp_path, AIRBOURNE_GATEWAY_RATE_LIMIT_STORAGE=url)
    async with running(config, []) as (http, runtime):
        assert (await http.get("/health")).status_code == 200
    # the request went through because the Redis counter failed, not because it was unused
    assert "rate limit storage failed" in caplog.text
