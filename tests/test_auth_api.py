"""The auth service over HTTP: sign-up, sign-in, token and role checks, and their failures.

Every answer in this module goes through `_no_hash_in_body`, so no test can get a password
hash back without failing.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import AsyncIterator

import anyio
import httpx
import pytest
import sqlalchemy as sa

from airbourne import db
from airbourne.runtime import Runtime
from airbourne.services.auth import SERVICE, store
from airbourne.services.auth.schema import roles, users
from airbourne.tokens import Tokens, load_secret
from support import client, make_config, started

pytestmark = pytest.mark.anyio

EMAIL = "ada@example.com"
PASSWORD = "password123"
Api = tuple[httpx.AsyncClient, Runtime]


async def _no_hash_in_body(response: httpx.Response) -> None:
    await response.aread()
    assert "$argon2" not in response.text, "a password hash was sent to a client"


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, database_url: str | None = None) -> AsyncIterator[Api]:
    async with started(make_config(tmp_path, database_url), [SERVICE]) as runtime:
        hooks = {"response": [_no_hash_in_body]}
        async with client(runtime.apps["auth"], event_hooks=hooks) as http:
            yield http, runtime


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    """The auth service on SQLite."""
    async with serving(tmp_path) as pair:
        yield pair


@pytest.fixture
async def http(api: Api) -> httpx.AsyncClient:
    return api[0]


async def signup(http: httpx.AsyncClient, email: str = EMAIL) -> dict:
    answer = await http.post("/api/v1/signup", json={"email": email, "password": PASSWORD})
    assert answer.status_code == 201, answer.text
    return answer.json()["data"]


async def signin(http: httpx.AsyncClient, email: str = EMAIL) -> dict:
    answer = await http.post("/api/v1/signin", json={"email": email, "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


async def new_user(http: httpx.AsyncClient) -> tuple[dict, dict]:
    """A signed-up user and the headers that carry their token."""
    user = await signup(http)
    return user, {"x-access-token": (await signin(http))["token"]}


def assert_failure(answer: httpx.Response, status: int, field: str | None = None) -> dict:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["success"] is False and body["data"] == {} and body["message"]
    if field is not None:
        assert body["err"]["field"] == field, body
    return body


# --- the whole flow, on SQLite and MariaDB -----------------------------------------------


async def test_signup_signin_and_roles_on_each_database(tmp_path: Path, database_url: str) -> None:
    async with serving(tmp_path, database_url) as (http, runtime):
        mixed_case = {"email": " Ada@Example.com ", "password": PASSWORD}
        answer = await http.post("/api/v1/signup", json=mixed_case)
        assert answer.status_code == 201
        assert answer.json()["success"] is True and answer.json()["err"] == {}
        user = answer.json()["data"]
        assert set(user) == {"id", "email", "createdAt", "updatedAt"}
        assert user["email"] == EMAIL
        assert user["createdAt"] == user["updatedAt"] and user["createdAt"].endswith("Z")

        taken = {"email": "ADA@example.com", "password": "another1"}
        assert_failure(await http.post("/api/v1/signup", json=taken), 409)

        session = await signin(http, "ADA@EXAMPLE.COM")
        assert session["id"] == user["id"]
        headers = {"x-access-token": session["token"]}
        answer = await http.get("/api/v1/isAuthenticated", headers=headers)
        assert answer.status_code == 200 and answer.json()["data"] == user["id"]

        async def is_admin(user_id: int) -> httpx.Response:
            return await http.get("/api/v1/isAdmin", params={"id": user_id}, headers=headers)

        assert (await is_admin(user["id"])).json()["data"] is False
        await store.grant_role(runtime.database("auth"), EMAIL, "ADMIN")
        await store.grant_role(runtime.database("auth"), EMAIL, "ADMIN")
        answer = await is_admin(user["id"])
        assert answer.status_code == 200 and answer.json()["data"] is True
        assert_failure(await is_admin(user["id"] + 1), 404)


async def test_concurrent_signups_with_one_email_make_one_user(
    tmp_path: Path, database_url: str
) -> None:
    async with serving(tmp_path, database_url) as (http, runtime):
        statuses: list[int | str] = []

        async def attempt(email: str) -> None:
            # An error escaping the app is recorded, not raised: raising would cancel the
            # other attempts in the middle of their queries.
            try:
                body = {"email": email, "password": PASSWORD}
                statuses.append((await http.post("/api/v1/signup", json=body)).status_code)
            except Exception as exc:
                statuses.append(repr(exc))

        async with anyio.create_task_group() as group:
            for email in ["bo@example.com", "BO@example.com", "Bo@Example.com", "bo@EXAMPLE.com"]:
                group.start_soon(attempt, email)
        assert sorted(statuses, key=str) == [201, 409, 409, 409]
        count = sa.select(sa.func.count()).select_from(users)
        assert await runtime.database("auth").fetch_val(count) == 1


# --- signup ----------------------------------------------------------------------------


async def test_signup_stores_an_argon2id_hash_not_the_password(api: Api) -> None:
    http, runtime = api
    user = await signup(http)
    query = sa.select(users.c.password).where(users.c.id == user["id"])
    stored = await runtime.database("auth").fetch_val(query)
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert PASSWORD not in stored


async def test_signup_accepts_passwords_of_4_and_50_characters(http) -> None:
    for number, password in enumerate(["abcd", "p" * 50]):
        body = {"email": f"u{number}@example.com", "password": password}
        assert (await http.post("/api/v1/signup", json=body)).status_code == 201
        assert (await http.post("/api/v1/signin", json=body)).status_code == 200


async def test_signup_accepts_an_email_of_254_characters(http) -> None:
    email = "a" * 242 + "@example.com"
    assert len(email) == 254
    assert (await signup(http, email))["email"] == email


@pytest.mark.parametrize(
    "body, field",
    [
        ({"password": PASSWORD}, "email"),
        ({"email": EMAIL}, "password"),
        ({"email": None, "password": PASSWORD}, "email"),
        ({"email": 5, "password": PASSWORD}, "email"),
        ({"email": [EMAIL], "password": PASSWORD}, "email"),
        ({"email": "not-an-email", "password": PASSWORD}, "email"),
        ({"email": "ada@example", "password": PASSWORD}, "email"),
        ({"email": "a,b@example.com", "password": PASSWORD}, "email"),  # two recipients
        ({"email": "a" * 243 + "@example.com", "password": PASSWORD}, "email"),
        ({"email": EMAIL, "password": 12345678}, "password"),
        ({"email": EMAIL, "password": "abc"}, "password"),
        ({"email": EMAIL, "password": "p" * 51}, "password"),
        ({"email": EMAIL, "password": "p" * 10_000}, "password"),
    ],
)
async def test_signup_refuses_bad_fields(http, body: dict, field: str) -> None:
    body = assert_failure(await http.post("/api/v1/signup", json=body), 400, field)
    assert field in body["message"]


@pytest.mark.parametrize(
    "content", [b"{not json", b"[1, 2]", b'"ada@example.com"', b"null", b"", b"\xff\xfe"]
)
async def test_signup_refuses_a_body_that_is_not_a_json_object(http, content: bytes) -> None:
    answer = await http.post(
        "/api/v1/signup", content=content, headers={"content-type": "application/json"}
    )
    assert_failure(answer, 400, "body")


async def test_signup_with_a_taken_email_is_409(http) -> None:
    await signup(http)
    again = await http.post("/api/v1/signup", json={"email": EMAIL, "password": "other1"})
    assert EMAIL in assert_failure(again, 409)["message"]


async def test_a_new_user_is_a_customer(api: Api) -> None:
    http, runtime = api
    user = await signup(http)
    assert await store.roles_of(runtime.database("auth"), user["id"]) == {"CUSTOMER"}


# --- signin ----------------------------------------------------------------------------


async def test_signin_returns_a_token_for_the_user(api: Api) -> None:
    http, runtime = api
    user = await signup(http)
    answer = await http.post("/api/v1/signin", json={"email": EMAIL, "password": PASSWORD})
    assert answer.status_code == 200
    body = answer.json()
    assert body["success"] is True and body["err"] == {} and set(body["data"]) == {"token", "id"}
    assert body["data"]["id"] == user["id"]
    claims = Tokens(load_secret(runtime.config), 3600).verify(body["data"]["token"])
    assert (claims.id, claims.email) == (user["id"], EMAIL)


async def test_wrong_password_and_unknown_email_get_the_same_401(http) -> None:
    await signup(http)
    wrong_password = {"email": EMAIL, "password": "password124"}
    unknown_email = {"email": "bob@example.com", "password": PASSWORD}
    first = assert_failure(await http.post("/api/v1/signin", json=wrong_password), 401)
    second = assert_failure(await http.post("/api/v1/signin", json=unknown_email), 401)
    assert first == second


@pytest.mark.parametrize(
    "body, field",
    [
        ({"password": PASSWORD}, "email"),
        ({"email": EMAIL}, "password"),
        ({"email": EMAIL, "password": ""}, "password"),
        ({"email": EMAIL, "password": True}, "password"),
        ({"email": {"$gt": ""}, "password": PASSWORD}, "email"),
        ({"email": EMAIL, "password": "p" * 51}, "password"),
    ],
)
async def test_signin_refuses_missing_or_mistyped_fields(http, body: dict, field: str) -> None:
    assert_failure(await http.post("/api/v1/signin", json=body), 400, field)


@pytest.mark.parametrize("content", [b"{", b"[]", b"42"])
async def test_signin_refuses_a_body_that_is_not_a_json_object(http, content: bytes) -> None:
    assert_failure(await http.post("/api/v1/signin", content=content), 400, "body")


# --- isAuthenticated -------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/isAuthenticated", "/api/v1/isauthenticated"])
async def test_is_authenticated_answers_the_user_id(http, path: str) -> None:
    user, headers = await new_user(http)
    answer = await http.get(path, headers=headers)
    assert answer.status_code == 200
    body = answer.json()
    assert (body["data"], body["success"], body["err"]) == (user["id"], True, {})


@pytest.mark.parametrize("headers", [{}, {"x-access-token": ""}])
async def test_is_authenticated_without_a_token_is_401(http, headers: dict) -> None:
    answer = await http.get("/api/v1/isAuthenticated", headers=headers)
    assert_failure(answer, 401, "x-access-token")


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "eyJhbGciOiJub25lIn0.eyJpZCI6MX0."])
async def test_is_authenticated_with_a_bad_token_is_401(http, token: str) -> None:
    answer = await http.get("/api/v1/isAuthenticated", headers={"x-access-token": token})
    assert_failure(answer, 401, "x-access-token")


async def test_is_authenticated_with_an_expired_token_is_401(api: Api) -> None:
    http, runtime = api
    user = await signup(http)
    expired = Tokens(load_secret(runtime.config), -60).issue(user["id"], user["email"])
    answer = await http.get("/api/v1/isAuthenticated", headers={"x-access-token": expired})
    assert "expired" in assert_failure(answer, 401, "x-access-token")["message"]


async def test_is_authenticated_with_another_secret_is_401(http) -> None:
    user = await signup(http)
    forged = Tokens("someone-else's-secret-of-a-decent-length", 3600)
    headers = {"x-access-token": forged.issue(user["id"], user["email"])}
    answer = await http.get("/api/v1/isAuthenticated", headers=headers)
    assert_failure(answer, 401, "x-access-token")


async def test_is_authenticated_for_a_deleted_user_is_401(api: Api) -> None:
    http, runtime = api
    user, headers = await new_user(http)
    await runtime.database("auth").execute(users.delete().where(users.c.id == user["id"]))
    answer = await http.get("/api/v1/isAuthenticated", headers=headers)
    assert_failure(answer, 401, "x-access-token")


# --- isAdmin ---------------------------------------------------------------------------


async def test_is_admin_takes_the_id_from_the_query_or_a_json_body(api: Api) -> None:
    http, runtime = api
    user, headers = await new_user(http)
    await store.grant_role(runtime.database("auth"), EMAIL, "ADMIN")
    path = "/api/v1/isAdmin"
    from_query = await http.get(path, params={"id": str(user["id"])}, headers=headers)
    from_body = await http.request("GET", path, json={"id": user["id"]}, headers=headers)
    for answer in (from_query, from_body):
        assert answer.status_code == 200, answer.text
        assert answer.json()["data"] is True and answer.json()["success"] is True


async def test_is_admin_is_false_for_an_airline_business_user(api: Api) -> None:
    http, runtime = api
    user, headers = await new_user(http)
    await store.grant_role(runtime.database("auth"), EMAIL, "AIRLINE_BUSINESS")
    answer = await http.get("/api/v1/isAdmin", params={"id": user["id"]}, headers=headers)
    assert answer.status_code == 200 and answer.json()["data"] is False


@pytest.mark.parametrize("headers", [{}, {"x-access-token": "nonsense"}])
async def test_is_admin_needs_a_valid_token(http, headers: dict) -> None:
    user = await signup(http)
    answer = await http.get("/api/v1/isAdmin", params={"id": user["id"]}, headers=headers)
    assert_failure(answer, 401, "x-access-token")


@pytest.mark.parametrize("params", [{}, {"id": "abc"}, {"id": "0"}, {"id": "-3"}, {"id": "1.5"}])
async def test_is_admin_refuses_a_bad_id(http, params: dict) -> None:
    _, headers = await new_user(http)
    assert_failure(await http.get("/api/v1/isAdmin", params=params, headers=headers), 400, "id")


@pytest.mark.parametrize(
    "content, field",
    [
        (b'{"id": "x"}', "id"),
        (b'{"id": "7"}', "id"),  # a number as text: JSON bodies take numbers only
        (b'{"id": true}', "id"),
        (b"[1]", "body"),
        (b"{oops", "body"),
    ],
)
async def test_is_admin_refuses_a_bad_body(http, content: bytes, field: str) -> None:
    _, headers = await new_user(http)
    answer = await http.request("GET", "/api/v1/isAdmin", content=content, headers=headers)
    assert_failure(answer, 400, field)


async def test_is_admin_for_an_unknown_user_is_404(http) -> None:
    _, headers = await new_user(http)
    answer = await http.get("/api/v1/isAdmin", params={"id": 4242}, headers=headers)
    assert "4242" in assert_failure(answer, 404)["message"]


# --- the rest --------------------------------------------------------------------------


async def test_dummy_answers_ok(http) -> None:
    answer = await http.get("/api/v1/dummy")
    assert answer.status_code == 200 and answer.json() == {"message": "OK"}


async def test_wrong_method_and_unknown_path_get_the_envelope(http) -> None:
    assert_failure(await http.get("/api/v1/signup"), 405)
    assert_failure(await http.get("/api/v1/nothing"), 404)


async def test_roles_are_seeded_once_across_restarts(tmp_path: Path) -> None:
    for _ in range(2):
        async with serving(tmp_path) as (_, runtime):
            database = runtime.database("auth")
            assert await db.migrate(database, "auth", SERVICE.migrations) == []
            names = [row[0] for row in await database.fetch_all(sa.select(roles.c.name))]
            assert sorted(names) == ["ADMIN", "AIRLINE_BUSINESS", "CUSTOMER"]


async def test_grant_role_names_what_is_unknown(api: Api) -> None:
    http, runtime = api
    await signup(http)
    database = runtime.database("auth")
    with pytest.raises(LookupError, match="^no user with email bob@example.com$"):
        await store.grant_role(database, "bob@example.com", "ADMIN")
    roles_are = "^no role named PILOT; roles are ADMIN, AIRLINE_BUSINESS, CUSTOMER$"
    with pytest.raises(LookupError, match=roles_are):
        await store.grant_role(database, EMAIL, "PILOT")
