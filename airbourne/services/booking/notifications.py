"""The messages a booking and a cancellation send to the reminder service, as outbox rows.

Bodies follow API.md's reminder section (and the old platform): `CREATE_TICKET` carries a
ticket (`recepientEmail` spelled as it always was), `CANCEL_TICKETS` stops the pending
tickets of a booking so a cancelled booking gets no departure reminder.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Mapping

from airbourne.db import iso
from airbourne.http import dumps
from airbourne.services.booking.outbox import OutboxMessage

CONFIRMATION = "confirmation"
DEPARTURE_REMINDER = "departure_reminder"
CANCEL_TICKETS = "cancel_tickets"
CANCELLATION = "cancellation"


class Notifications:
    def __init__(self, routing_key: str, reminder_lead: timedelta) -> None:
        self.routing_key = routing_key
        self.reminder_lead = reminder_lead
        """How long before departure the reminder email goes out."""

    def booked(
        self,
        booking: Mapping[str, Any],
        flight_number: str,
        departure: datetime,
        email: str,
        now: datetime,
    ) -> list[OutboxMessage]:
        """A confirmation due now, and a reminder due `reminder_lead` before departure
        unless that moment has already passed."""
        seats, booking_id = booking["NoOfSeats"], booking["id"]
        leaves = _when(departure)
        confirmation = self._ticket(
            CONFIRMATION, booking_id, email, now,
            subject=f"Booking {booking_id} confirmed: flight {flight_number}",
            content=(
                f"Your booking {booking_id} is confirmed: {_seats(seats)} on flight "
                f"{flight_number}, departing {leaves}. Total cost: {booking['totalCost']}."
            ),
        )
        remind_at = departure - self.reminder_lead
        if remind_at <= now:
            return [confirmation]
        reminder = self._ticket(
            DEPARTURE_REMINDER, booking_id, email, remind_at,
            subject=f"Reminder: flight {flight_number} departs {leaves}",
            content=(
                f"Your flight {flight_number} departs {leaves}. "
                f"Booking {booking_id}, {_seats(seats)}."
            ),
        )
        return [confirmation, reminder]

    def cancelled(
        self, booking: Mapping[str, Any], email: str, now: datetime
    ) -> list[OutboxMessage]:
        """Stop the booking's pending tickets, then tell the user. The notice names no
        `bookingId`, so that no cancel of the booking's tickets can stop it, whatever the
        order in which the reminder handles the two."""
        booking_id = booking["id"]
        stop = self._message(CANCEL_TICKETS, "CANCEL_TICKETS", {"bookingId": booking_id})
        notice = self._ticket(
            CANCELLATION, None, email, now,
            subject=f"Booking {booking_id} cancelled",
            content=(
                f"Your booking {booking_id} ({_seats(booking['NoOfSeats'])} on flight id "
                f"{booking['flightId']}) is cancelled and its seats are released."
            ),
        )
        return [stop, notice]

    def _ticket(
        self,
        kind: str,
        booking_id: int | None,
        email: str,
        due: datetime,
        *,
        subject: str,
        content: str,
    ) -> OutboxMessage:
        ticket: dict[str, Any] = {
            "subject": subject,
            "content": content,
            "recepientEmail": email,
            "notificationTime": iso(due),
        }
        if booking_id is not None:
            ticket["bookingId"] = booking_id
        return self._message(kind, "CREATE_TICKET", ticket)

    def _message(self, kind: str, service: str, data: dict[str, Any]) -> OutboxMessage:
        body = dumps({"service": service, "data": data}).decode()
        return OutboxMessage(kind, self.routing_key, body)


def _seats(count: int) -> str:
    return f"{count} seat" if count == 1 else f"{count} seats"


def _when(moment: datetime) -> str:
    return moment.isoformat(" ", "minutes") + " UTC"
