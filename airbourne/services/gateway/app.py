"""The gateway's routes: the public entry that checks tokens and forwards to the services.

`/auth/**` goes to auth as is; `/flights/**`, `/reminder/**` and `/bookingservice/**` need a
valid token in `x-access-token`, checked here from the signature and expiry alone, and reach
their service with the verified user in `x-user-id` and `x-user-email`. Every request first
passes the rate limits (see ratelimit.py).
"""

from __future__ import annotations

import re
from functools import partial
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from airbourne.clients.errors import ServiceTimeout, ServiceUnavailable
from airbourne.clients.proxy import Answer, Headers, Proxies, end_to_end
from airbourne.http import JSON, ApiError, exception_handlers, read_body
from airbourne.runtime import Runtime
from airbourne.services.gateway.ratelimit import RateLimitMiddleware, RateLimits
from airbourne import tokens
from airbourne.tokens import Claims


UPSTREAMS = (
    # path prefix, service, token required
    ("/auth", "auth", False),
    ("/flights", "flights", True),
    ("/reminder", "reminder", True),
    ("/bookingservice", "booking", True),
)

INTERNAL = re.compile(r"^/(auth/api/v1/users|flights/api/v1/flights/[^/]+/seats)(/|$)")
"""Routes for the services' own callers only (a user's email by id, raw seat inventory):
behind the gateway they do not exist. Matched on the decoded path, the one services route on."""

SIGNIN = ("POST", "/auth/api/v1/signin")
"""The route that also counts against `signin_rate_limit`."""

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

REPLACED = frozenset(
    {b"host", b"content-length", b"x-user-id", b"x-user-email", b"x-forwarded-for"}
)
"""Request headers the gateway sets itself (the user ones only from a verified token)."""

RECOMPUTED = frozenset({b"content-length", b"date"})
"""Answer headers the gateway's own response and server set."""


async def health(request: Request) -> Response:
    return JSON({"message": "OK"})


async def forward(request: Request, prefix: str, service: str, guarded: bool) -> Response:
    if INTERNAL.match(request.scope["path"]):
        raise HTTPException(404)  # formatted as any unknown route
    user = None
    if guarded:
        token = request.headers.get(tokens.HEADER)
        if not token:
            return JSON({"message": "No token provided"}, 401)  # the old gateway's exact answer
        user = tokens.verified(request.app.state.tokens, token)
    body = await read_body(request)
    headers = _outgoing_headers(request, user, body)
    path = _path_after(request, prefix)
    try:
        answer = await request.app.state.proxies[service].forward(
            request.method, path, request.scope["query_string"], headers, body
        )
    except ServiceTimeout:
        raise
    except ServiceUnavailable as exc:
        raise ApiError(502, f"{service} service unreachable", {"reason": exc.reason}) from None
    return _relay(answer, request.method)


def _outgoing_headers(request: Request, user: Claims | None, body: bytes) -> Headers:
    """The client's end-to-end headers minus REPLACED, then the gateway's own."""
    headers = end_to_end(request.scope["headers"], REPLACED)
    client = request.client.host if request.client else "unknown"
    forwarded_for = ", ".join([*request.headers.getlist("x-forwarded-for"), client])
    headers.append((b"x-forwarded-for", forwarded_for.encode("latin-1")))
    if body or "content-length" in request.headers:
        headers.append((b"content-length", str(len(body)).encode()))
    if user is not None:
        headers.append((b"x-user-id", str(user.id).encode()))
        headers.append((b"x-user-email", user.email.encode()))
    return headers


def _path_after(request: Request, prefix: str) -> str:
    """The path after `prefix` as the client wrote it, percent-encoding kept."""
    raw = request.scope.get("raw_path")
    if raw and raw.startswith(prefix.encode() + b"/"):
        return raw[len(prefix):].decode("latin-1")
    return quote(request.scope["path"][len(prefix):])  # the prefix was percent-encoded


def _relay(answer: Answer, method: str) -> Response:
    """The service's answer as the gateway's; the gateway's server adds its own `date`."""
    response = Response(answer.body, answer.status)
    if method == "HEAD":  # no body: the service's content-length is the meaningful one
        response.raw_headers = [(name, value) for name, value in answer.headers if name != b"date"]
    else:
        kept = [(name, value) for name, value in answer.headers if name not in RECOMPUTED]
        response.raw_headers = kept + response.raw_headers
    return response


def create_app(runtime: Runtime) -> Starlette:
    config = runtime.config["gateway"]
    timeout = config["upstream_timeout_seconds"]
    limits = RateLimits(
        config["rate_limit"], config["signin_rate_limit"], config["rate_limit_storage"]
    )
    routes = [Route("/health", health, methods=["GET"])]
    for prefix, service, guarded in UPSTREAMS:
        endpoint = partial(forward, prefix=prefix, service=service, guarded=guarded)
        routes.append(Route(prefix + "/{path:path}", endpoint, methods=METHODS))
    app = Starlette(
        routes=routes,
        exception_handlers=exception_handlers,
        middleware=[Middleware(RateLimitMiddleware, limits=limits, strict_route=SIGNIN)],
    )
    app.router.redirect_slashes = False  # a proxy passes paths on; it does not correct them
    app.state.tokens = tokens.Tokens(tokens.load_secret(runtime.config))  # it only verifies
    app.state.proxies = Proxies(runtime, timeout)
    return app
