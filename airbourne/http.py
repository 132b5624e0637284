"""The JSON envelope, client errors and request bodies, shared by every service.

Every answer except the small `{"message": ...}` ones has the old platform's envelope:
`{"data", "success", "message", "err"}`. Routes raise `ApiError`; one exception handler turns
it (and anything unexpected) into the envelope, so no route formats errors itself and no
traceback ever reaches a client.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from airbourne import db

logger = logging.getLogger("airbourne.http")

MAX_BODY_BYTES = 64 * 1024
RETRY_SOON = {"Retry-After": "1"}


class ApiError(Exception):
    """A request that cannot be served, with the status and message the client gets."""

    def __init__(self, status: int, message: str, err: Any = None, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.err = err if err is not None else {}
        self.headers = headers


def bad_request(field: str, problem: str) -> ApiError:
    """400 naming the field: `err` is `{"field": ..., "problem": ...}`."""
    return ApiError(400, f"{field} {problem}", {"field": field, "problem": problem})


def not_found(what: str) -> ApiError:
    return ApiError(404, f"{what} not found")


def conflict(message: str) -> ApiError:
    return ApiError(409, message)


def dumps(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


class JSON(Response):
    """A JSON response using the one serializer above."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content)


def ok(data: Any, message: str = "Successfully completed the request", status: int = 200) -> JSON:
    return JSON({"data": data, "success": True, "message": message, "err": {}}, status)


def created(data: Any, message: str = "Successfully created") -> JSON:
    return ok(data, message, 201)


def failure(status: int, message: str, err: Any = None, headers: dict | None = None) -> JSON:
    body = {"data": {}, "success": False, "message": message, "err": err or {}}
    return JSON(body, status, headers=headers)


async def read_body(request: Request) -> bytes:
    """The whole request body, or a 413 once it passes `MAX_BODY_BYTES`."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise _too_large()
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise _too_large()
    return body


async def read_json(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, or a 400/413 that says what is wrong with it."""
    body = await read_body(request)
    if not body.strip():
        raise ApiError(400, "request body is empty: send a JSON object", {"field": "body"})
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        raise ApiError(400, "request body is not valid JSON", {"field": "body"}) from None
    if not isinstance(payload, dict):
        raise ApiError(400, "request body must be a JSON object", {"field": "body"})
    return payload


def _too_large() -> ApiError:
    return ApiError(413, f"request body is larger than {MAX_BODY_BYTES} bytes", {"field": "body"})


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return failure(exc.status, exc.message, exc.err, exc.headers)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"no route for {request.method} {request.url.path}"
    else:
        message = exc.detail
    return failure(exc.status_code, message, headers=exc.headers)


async def _unexpected(request: Request, exc: Exception) -> Response:
    if isinstance(exc, db.CommitUnknown):
        logger.error("%s %s: %s", request.method, request.url.path, exc)
        return failure(503, "the database did not confirm the change, which may have been"
                       " made: try again", headers=RETRY_SOON)
    if db.unavailable(exc):
        logger.error("%s %s: database unavailable: %s", request.method, request.url.path, exc)
        return failure(503, "the database is unavailable: try again", headers=RETRY_SOON)
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return failure(500, "internal error: the request was not completed")


exception_handlers = {
    ApiError: _api_error,
    HTTPException: _http_exception,
    Exception: _unexpected,
}
