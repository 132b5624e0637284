"""Reading a booking body (`read_json`) and rendering the answer's envelope (`ok`): the
framework's share of a booking request, without a loop, a socket or a database."""

from __future__ import annotations

import json
from typing import Any, Coroutine

from starlette.requests import Request
from starlette.types import Message

from airbourne.http import JSON, ok, read_json

BODY = b'{"flightId":12,"userId":7,"NoOfSeats":2}'
STAMP = "2030-10-10T10:00:00.000Z"


def booking_request(body: bytes) -> Request:
    scope = {
        "type": "http", "method": "POST", "path": "/api/v1/bookings", "query_string": b"",
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
    }

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(scope, receive)


def finished(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """The result of a coroutine that never has to wait (its `receive` answers at once),
    run without an event loop so the loop's cost stays out of the figure."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError("the coroutine waited for something")


def test_parse_body_and_render_envelope(benchmark) -> None:
    def parse_and_answer() -> JSON:
        payload = finished(read_json(booking_request(BODY)))
        booking = {"id": 1, **payload, "totalCost": 10000, "status": "Booked",
                   "createdAt": STAMP, "updatedAt": STAMP}
        return ok(booking, "Successfully booked the seats")

    response = benchmark(parse_and_answer)

    assert response.status_code == 200
    assert json.loads(response.body) == {
        "data": {"id": 1, "flightId": 12, "userId": 7, "NoOfSeats": 2, "totalCost": 10000,
                 "status": "Booked", "createdAt": STAMP, "updatedAt": STAMP},
        "success": True, "message": "Successfully booked the seats", "err": {},
    }
