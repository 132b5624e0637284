"""The auth service's routes: sign-up, sign-in, and the token and role checks."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from airbourne import validate
from airbourne.http import JSON, ApiError, created, exception_handlers, not_found, ok, read_json
from airbourne.runtime import Runtime
from airbourne.services.auth import store
from airbourne.services.auth.passwords import Passwords
from airbourne import tokens



async def signup(request: Request) -> Response:
    body = await read_json(request)
    email = validate.email(body)
    password = validate.string(body, "password", min_length=4, max_length=50)
    password_hash = await request.app.state.passwords.hash(password)
    user = await store.create_user(request.app.state.database, email, password_hash)
    return created(user, "Successfully created a new user")


async def signin(request: Request) -> Response:
    body = await read_json(request)
    email = validate.email(body)
    password = validate.string(body, "password", max_length=50)
    state = request.app.state
    found = await store.find_credentials(state.database, email)
    user_id, password_hash = found if found else (None, None)
    if not await state.passwords.verify(password_hash, password):
        raise ApiError(401, "wrong email or password")
    token = state.tokens.issue(user_id, email)
    return ok({"token": token, "id": user_id}, "Successfully signed in")


async def is_authenticated(request: Request) -> Response:
    return ok(await _authenticated_user(request), "User is authenticated and token is valid")


async def is_admin(request: Request) -> Response:
    await _authenticated_user(request)
    user_id = await _id_of_query_or_body(request)
    roles = await store.roles_of(request.app.state.database, user_id)
    if roles is None:
        raise not_found(f"user {user_id}")
    return ok("ADMIN" in roles, "Successfully checked the user's roles")


async def get_user(request: Request) -> Response:
    """For internal callers (the booking service); the gateway does not forward it."""
    user_id = validate.path_id(request)
    user = await store.get_user(request.app.state.database, user_id)
    if user is None:
        raise not_found(f"user {user_id}")
    return ok(user, "Successfully fetched the user")


async def dummy(request: Request) -> Response:
    return JSON({"message": "OK"})


async def _authenticated_user(request: Request) -> int:
    """The id of the user whose token is in the `x-access-token` header, or a 401."""
    token = request.headers.get(tokens.HEADER)
    if not token:
        raise tokens.unauthorized("no token provided", "is required")
    claims = tokens.verified(request.app.state.tokens, token)
    if not await store.user_exists(request.app.state.database, claims.id):
        raise tokens.unauthorized("the token's user no longer exists", "names an unknown user")
    return claims.id


async def _id_of_query_or_body(request: Request) -> int:
    """`id` from the query string, or from the JSON body when the query has none and a body
    was sent (the old platform read it from the body of this GET). In the body it must be a
    JSON number, as in every other body; only the query string's text is converted."""
    query = request.query_params
    headers = request.headers
    has_body = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
    if "id" in query or not has_body:
        return validate.integer(query, "id", text=True)
    return validate.integer(await read_json(request), "id")


def create_app(runtime: Runtime) -> Starlette:
    config = runtime.config
    app = Starlette(
        routes=[
            Mount(
                "/api/v1",
                routes=[
                    Route("/signup", signup, methods=["POST"]),
                    Route("/signin", signin, methods=["POST"]),
                    Route("/isAuthenticated", is_authenticated, methods=["GET"]),
                    Route("/isauthenticated", is_authenticated, methods=["GET"]),
                    Route("/isAdmin", is_admin, methods=["GET"]),
                    Route("/dummy", dummy, methods=["GET"]),
                    Route("/users/{id}", get_user, methods=["GET"]),
                ],
            )
        ],
        exception_handlers=exception_handlers,
    )
    app.state.database = runtime.database("auth")
    app.state.tokens = tokens.Tokens(tokens.load_secret(config), config["auth"]["token_lifetime_seconds"])
    app.state.passwords = Passwords()
    return app
