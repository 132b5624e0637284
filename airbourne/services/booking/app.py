"""The booking service's routes: book seats on a flight, read and cancel bookings.

A call that carries `x-user-id` came through the gateway on behalf of that user, who may
only book for, read and cancel their own bookings; without it the caller is trusted (the
internal port, see API.md's trust model).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from datetime import datetime, timedelta
from typing import Iterable

from starlette.applications import Starlette
from starlette.datastructures import State
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from airbourne import validate
from airbourne.clients.auth import auth_client
from airbourne.clients.errors import ServiceUnavailable
from airbourne.clients.flights import FlightNotFound, NotEnoughSeats, Reservation, flights_client
from airbourne.http import (
    JSON,
    RETRY_SOON,
    ApiError,
    conflict,
    exception_handlers,
    not_found,
    ok,
    read_json,
)
from airbourne.ids import unique_hex
from airbourne.runtime import Runtime
from airbourne.services.booking import outbox, store
from airbourne.services.booking.ids import BookingIds
from airbourne.services.booking.notifications import Notifications
from airbourne.services.booking.schema import CANCELLED

logger = logging.getLogger("airbourne.booking")

USER_ID_HEADER = "x-user-id"
USER_EMAIL_HEADER = "x-user-email"
IDEMPOTENCY_HEADER = "idempotency-key"
MAX_SEATS = 1000
PAGE = 50
MAX_PAGE = 500
WRITTEN_PAUSES = (0.0, 0.2, 0.5, 1.0, 2.0, 4.0)
"""Pauses before each look at whether a booking whose COMMIT got no answer was written,
while its request waits (within the runtime's `FINISH_SECONDS`)."""
SETTLE_PAUSES = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
"""Pauses between the looks after that, in the background, the last one repeated."""


async def create_booking(request: Request) -> Response:
    body = await read_json(request)
    flight_id = validate.integer(body, "flightId")
    user_id = validate.integer(body, "userId")
    seats = validate.integer(body, "NoOfSeats", maximum=MAX_SEATS)
    key = _idempotency_key(request)
    _require_owner(request, user_id)
    state = request.app.state
    if key is not None:
        earlier = await store.find_by_key(state.database, user_id, key)
        if earlier is not None:
            return _replay(earlier, flight_id, seats)
    email = await _email(request, user_id)
    try:
        booking = await asyncio.shield(
            state.finish(_book(state, flight_id, user_id, seats, key, email))
        )
    except store.KeyAlreadyUsed:
        # A concurrent request with the same key booked first: answer with its booking.
        assert key is not None  # only a keyed booking raises KeyAlreadyUsed
        earlier = await store.find_by_key(state.database, user_id, key)
        if earlier is None:
            raise conflict(f"a booking with {IDEMPOTENCY_HEADER} {key} is being made") from None
        return _replay(earlier, flight_id, seats)
    state.outbox_wakeup.set(outbox.PUBLISH)
    return ok(booking, "Successfully booked the seats")


async def _book(
    state: State, flight_id: int, user_id: int, seats: int, key: str | None, email: str
) -> store.Booking:
    """Reserve the seats and write the booking, or give the seats back if it was not
    written. Run shielded from the request, and waited for by the runtime's stop
    (`Runtime.finish`): a request cancelled meanwhile (a shutdown past uvicorn's grace
    period) must neither leave seats taken with no booking nor give back the seats of a
    booking whose COMMIT had gone out."""
    reservation = await _reserve(state, flight_id, seats)

    def messages(booking: store.Booking, now: datetime) -> list[outbox.OutboxMessage]:
        return state.notifications.booked(
            booking, reservation.flight_number, reservation.departure_time, email, now
        )

    try:
        return await state.bookings.write(store.NewBooking(
            flight_id, user_id, seats, total_cost=reservation.price * seats,
            idempotency_key=key, reservation_key=reservation.key, messages=messages,
        ))
    except store.MaybeWritten as unknown:
        written = await _written(state, unknown.booking, WRITTEN_PAUSES)
        if written:
            return unknown.booking
        if written is None:
            logger.error(
                "booking %d (%d seats of flight %d): no answer to its COMMIT and the database"
                " cannot be asked whether it was written; its seats stay taken until it can",
                unknown.booking["id"], seats, flight_id,
            )
            made = unknown.booking
            state.spawn(f"booking:settle {made['id']}", lambda: _settle(state, made, reservation))
            raise ApiError(
                503, "the database did not confirm the booking and cannot be reached to"
                " check: it may have been made. Retry with the same Idempotency-Key, or list"
                " your bookings before booking again", headers=RETRY_SOON,
            ) from None
        await _give_back(state, reservation)
        raise ApiError(
            503, "the connection to the database broke: the booking was not made and its"
            " seats are free again; try again", headers=RETRY_SOON,
        ) from None
    except BaseException:  # KeyAlreadyUsed too: the booking that won has its own seats
        await _give_back(state, reservation)
        raise


async def _written(
    state: State, booking: store.Booking, pauses: Iterable[float]
) -> bool | None:
    """Whether a booking whose COMMIT got no answer was written, asking after each of
    `pauses`; None if no answer came."""
    for pause in pauses:
        await asyncio.sleep(pause)
        try:
            return await store.was_written(state.database, booking)
        except Exception as exc:
            logger.warning("booking %d: cannot check it was written: %s", booking["id"], exc)
    return None


async def _settle(state: State, booking: store.Booking, reservation: Reservation) -> None:
    """Ask, in the background, until the database tells whether `booking` was written, and
    give its seats back if it was not. Until then they stay taken: the safe direction, as
    the booking may exist. A stop meanwhile leaves them taken, and says so."""
    pauses = itertools.chain(SETTLE_PAUSES, itertools.repeat(SETTLE_PAUSES[-1]))
    try:
        written = await _written(state, booking, pauses)
    except asyncio.CancelledError:
        logger.error(
            "booking %d: still unknown at shutdown whether it was written; its %d seats of"
            " flight %d stay taken", booking["id"], reservation.seats, reservation.flight_id,
        )
        raise
    if written:
        logger.warning("booking %d was written after all; it keeps its seats", booking["id"])
        return
    await _give_back(state, reservation)
    logger.warning(
        "booking %d was not written; its %d seats of flight %d are given back",
        booking["id"], reservation.seats, reservation.flight_id,
    )


async def list_bookings(request: Request) -> Response:
    query = request.query_params
    caller = _caller(request)
    user_id = validate.integer(
        query, "userId", required=caller is None, default=caller, text=True
    )
    _require_owner(request, user_id)
    limit = validate.integer(
        query, "limit", maximum=MAX_PAGE, required=False, default=PAGE, text=True
    )
    offset = validate.integer(query, "offset", minimum=0, required=False, default=0, text=True)
    bookings = await store.list_bookings(request.app.state.database, user_id, limit, offset)
    return ok(bookings, "Successfully fetched the bookings")


async def get_booking(request: Request) -> Response:
    return ok(await _own_booking(request), "Successfully fetched the booking")


async def cancel_booking(request: Request) -> Response:
    """Cancel a `Booked` booking; cancelling it again answers the same, doing nothing.
    The seats go back to the flight through the outbox, so a flights outage delays that
    but does not fail the cancellation."""
    booking = await _own_booking(request)
    if booking["status"] == CANCELLED:
        return ok(booking, "The booking is cancelled")
    state = request.app.state
    email = await _email(request, booking["userId"])

    def messages(booking: store.Booking, now: datetime) -> list[outbox.OutboxMessage]:
        release = outbox.release_seats(
            booking["flightId"], booking["NoOfSeats"], booking["reservationKey"]
        )
        return [release, *state.notifications.cancelled(booking, email, now)]

    cancelled = await store.cancel_booking(state.database, booking["id"], messages)
    state.outbox_wakeup.set()
    return ok(cancelled, "The booking is cancelled")


async def info(request: Request) -> Response:
    return JSON({"message": "Response from routes"})


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    return validate.string({"Idempotency-Key": key}, "Idempotency-Key")


def _caller(request: Request) -> int | None:
    """The user the gateway vouches for, or None for a trusted internal call."""
    return validate.integer(
        request.headers, USER_ID_HEADER, required=False, default=None, text=True
    )


def _require_owner(request: Request, user_id: int) -> None:
    caller = _caller(request)
    if caller is not None and caller != user_id:
        raise ApiError(
            403, f"user {caller} may not act on the bookings of user {user_id}",
            {"field": "userId", "problem": "must be the signed-in user"},
        )


async def _own_booking(request: Request) -> store.Booking:
    booking_id = validate.path_id(request)
    booking = await store.get_booking(request.app.state.database, booking_id)
    if booking is None:
        raise not_found(f"booking {booking_id}")
    _require_owner(request, booking["userId"])
    return booking


async def _email(request: Request, user_id: int) -> str:
    """Where the user's notifications go: the gateway's header, else ask auth."""
    email = request.headers.get(USER_EMAIL_HEADER)
    return email or await request.app.state.auth.user_email(user_id)


async def _reserve(state: State, flight_id: int, seats: int) -> Reservation:
    key = unique_hex()
    try:
        return await state.flights.reserve_seats(flight_id, seats, key)
    except FlightNotFound:
        raise not_found(f"flight {flight_id}") from None
    except NotEnoughSeats:
        raise conflict(f"flight {flight_id} has fewer than {seats} free seats") from None
    except ServiceUnavailable as exc:
        if exc.maybe_done:
            # Flights, in another process, may have taken the seats without our learning it
            # (a timeout, a lost answer): undo the reservation under its key, whatever it did.
            await _release_later(state, flight_id, seats, key)
        raise


async def _give_back(state: State, reservation: Reservation) -> None:
    """Return the seats of a booking that was not written; left to the outbox if flights
    cannot take them now."""
    flight_id, seats, key = reservation.flight_id, reservation.seats, reservation.key
    flights = state.flights
    try:
        if key is None:
            await asyncio.shield(flights.release_seats(flight_id, seats))
        else:
            await asyncio.shield(flights.release_reservation(flight_id, key))
    except Exception:
        if key is None:  # unkeyed, a release sent again could give the seats back twice
            logger.exception(
                "could not give back %d seats of flight %d after a failed booking",
                seats, flight_id,
            )
            return
        await _release_later(state, flight_id, seats, key)


async def _release_later(state: State, flight_id: int, seats: int, key: str) -> None:
    """Leave the release of reservation `key` to the outbox relay, which retries until
    flights takes it: released twice, a keyed reservation gives its seats back once."""
    release = outbox.release_seats(flight_id, seats, key)
    try:
        await asyncio.shield(store.add_messages(state.database, [release]))
    except Exception:
        logger.exception(
            "could not give back %d seats of flight %d (reservation %s), nor leave it to"
            " the outbox", seats, flight_id, key,
        )
        return
    state.outbox_wakeup.set(outbox.RELEASE)


def _replay(earlier: store.Booking, flight_id: int, seats: int) -> Response:
    """The answer to a retry: the booking the key made first, if the request is the same."""
    if (earlier["flightId"], earlier["NoOfSeats"]) != (flight_id, seats):
        raise conflict(f"{IDEMPOTENCY_HEADER} was already used for a different booking")
    return ok(earlier, "Successfully booked the seats")


def create_app(runtime: Runtime) -> Starlette:
    settings = runtime.config["booking"]
    app = Starlette(
        routes=[
            Mount(
                "/api/v1",
                routes=[
                    Route("/info", info, methods=["GET"]),
                    Route("/bookings", create_booking, methods=["POST"]),
                    Route("/bookings", list_bookings, methods=["GET"]),
                    Route("/bookings/{id}", get_booking, methods=["GET"]),
                    Route("/bookings/{id}/cancel", cancel_booking, methods=["POST"]),
                ],
            )
        ],
        exception_handlers=exception_handlers,
    )
    app.state.database = runtime.database("booking")
    app.state.bookings = store.Writer(app.state.database, BookingIds())
    app.state.finish = runtime.finish
    app.state.spawn = runtime.spawn
    app.state.flights = flights_client(runtime)
    app.state.auth = auth_client(runtime)
    app.state.notifications = Notifications(
        routing_key=runtime.config["broker"]["reminder_binding_key"],
        reminder_lead=timedelta(hours=settings["reminder_before_departure_hours"]),
    )
    app.state.outbox_wakeup = outbox.Wakeup()  # set after each commit that wrote outbox rows
    return app
