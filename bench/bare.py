"""The floor under the booking path: a Starlette app that parses a booking body and answers
JSON, with no database, token or service behind it, served as Airbourne is (uvicorn, uvloop,
httptools). `python -m bench.scenario --target http://127.0.0.1:PORT/api/v1/bookings` against
it shows what the runner and the framework manage alone.

    python -m bench.bare --port 3099
"""

from __future__ import annotations

import argparse
import itertools
import json
from typing import Sequence

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

_ids = itertools.count(1)


async def book(request: Request) -> JSONResponse:
    body = json.loads(await request.body())
    data = {"id": next(_ids), "flightId": body["flightId"], "userId": body["userId"],
            "NoOfSeats": body["NoOfSeats"], "status": "Booked"}
    return JSONResponse({"data": data, "success": True, "message": "Booked", "err": {}})


app = Starlette(routes=[
    Route("/api/v1/bookings", book, methods=["POST"]),
    Route("/bookingservice/api/v1/bookings", book, methods=["POST"]),
])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bare", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3099)
    args = parser.parse_args(argv)
    uvicorn.run(app, host=args.host, port=args.port, loop="uvloop", http="httptools",
                access_log=False, log_level="warning", server_header=False)


if __name__ == "__main__":
    main()
