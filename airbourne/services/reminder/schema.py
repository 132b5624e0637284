"""The reminder's table of notification tickets, and what a valid ticket is.

A ticket is an email to send at `notificationTime`. The sender's bookkeeping lives beside
the wire fields: `attempts`, `lastError`, `nextAttemptAt` (when the next try is due; equal to
`notificationTime` until a send fails), and `claimToken` / `claimedUntil`, which let one
sender run take a ticket for itself (see sender.py). `messageId` is the broker message the
ticket came from: unique, so a message delivered twice makes one ticket.
"""

from __future__ import annotations

from email.utils import parseaddr
from typing import Any, Mapping

import sqlalchemy as sa

from airbourne import validate
from airbourne.db import Migration, add_indexes, create_tables, record_columns, timestamp_column
from airbourne.http import bad_request
from airbourne.mail import is_address

PENDING, SUCCESS, FAILED, CANCELLED = STATUSES = ("PENDING", "SUCCESS", "FAILED", "CANCELLED")

SUBJECT_MAX = 255
CONTENT_MAX = 10_000
ERROR_MAX = 1000
MESSAGE_ID_MAX = 255  # as long as AMQP's message-id

metadata = sa.MetaData()

tickets = sa.Table(
    "tickets",
    metadata,
    *record_columns(),
    sa.Column("subject", sa.String(SUBJECT_MAX), nullable=False),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("recepientEmail", sa.String(254), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    timestamp_column("notificationTime", nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("lastError", sa.String(ERROR_MAX)),
    timestamp_column("nextAttemptAt", nullable=False),
    sa.Column("claimToken", sa.String(32)),
    timestamp_column("claimedUntil"),
    sa.Column("bookingId", sa.Integer),
    sa.Column("messageId", sa.String(MESSAGE_ID_MAX)),
    sa.Column("mailFrom", sa.String(320)),
    # Set by SEND_BASIC_MAIL's `mailFrom`; None means the configured mail.from_address.
    sa.UniqueConstraint("messageId", name="uq_tickets_message"),
    sa.Index("ix_tickets_due", "status", "nextAttemptAt"),
    sa.Index("ix_tickets_booking", "bookingId"),
    # `GET /tickets?status=` pages through one status in id order: read off this index
    # instead of sorting every ticket of that status (most are SUCCESS, kept for 30 days).
    sa.Index("ix_tickets_status", "status", "id"),
)

cancelled_bookings = sa.Table(
    "cancelled_bookings",
    metadata,
    sa.Column("bookingId", sa.Integer, primary_key=True, autoincrement=False),
    timestamp_column("cancelledAt", nullable=False),
)
"""Bookings whose tickets `CANCEL_TICKETS` cancelled. A ticket of such a booking written
later (its message delivered again after a failure, or handled by another process after the
cancel) is cancelled as it is written. Kept as long as finished tickets (`ticket_keep_days`)."""

MIGRATIONS = [
    Migration(1, "tickets table", create_tables(tickets)),
    Migration(2, "tickets of one status in id order", add_indexes(tickets, "ix_tickets_status")),
    Migration(3, "cancelled bookings", create_tables(cancelled_bookings)),
]


# --- field checks, shared by the HTTP route and the broker consumer --------------------------


def ticket_fields(data: Mapping[str, Any]) -> dict[str, Any]:
    """The columns of a new ticket from a request or message body; 400 naming a bad field."""
    return {
        "subject": validate.string(data, "subject", max_length=SUBJECT_MAX),
        "content": validate.string(data, "content", max_length=CONTENT_MAX),
        "recepientEmail": validate.email(data, "recepientEmail"),
        "notificationTime": validate.timestamp(data, "notificationTime"),
        "status": status(data, "status", required=False, default=PENDING),
    }


def status(data: Mapping[str, Any], name: str, *, required: bool = True, default: Any = None) -> Any:
    value = validate.string(data, name, max_length=16, required=required, default=default)
    if value is not default and value not in STATUSES:
        raise bad_request(name, f"must be one of {', '.join(STATUSES)}")
    return value


def sender(data: Mapping[str, Any], name: str) -> Any:
    """An optional `From`: `user@example.com` or `Name <user@example.com>`, on one line."""
    value = validate.string(data, name, max_length=320, required=False, default=None)
    if value is None:
        return None
    if "\n" in value or "\r" in value or not is_address(parseaddr(value)[1]):
        raise bad_request(name, "must be an email address, optionally with a name")
    return value
