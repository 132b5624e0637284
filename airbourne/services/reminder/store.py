"""The reminder's SQL: tickets, their claims by sender runs, and the outcome of each send."""

from __future__ import annotations

import contextlib
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any, Mapping, Sequence

import sqlalchemy as sa
from databases import Database
from databases.core import Connection

from airbourne import db, retention
from airbourne.ids import unique_hex
from airbourne.services.reminder.schema import CANCELLED, ERROR_MAX, FAILED, PENDING, SUCCESS, tickets

PUBLIC = ("id", "subject", "content", "recepientEmail", "status", "notificationTime",
          "attempts", "lastError", "createdAt", "updatedAt")
"""The fields of a ticket in responses."""

_public_columns = [tickets.c[name] for name in PUBLIC]


def public(ticket: Mapping[str, Any]) -> dict[str, Any]:
    """A ticket as clients see it: the wire fields, times in ISO 8601."""
    return {name: db.iso(ticket[name]) if isinstance(ticket[name], datetime) else ticket[name]
            for name in PUBLIC}


async def create_ticket(
    database: Database,
    fields: Mapping[str, Any],
    *,
    message_id: str | None = None,
    claim_token: str | None = None,
    claimed_until: datetime | None = None,
) -> dict[str, Any] | None:
    """Insert a ticket and return all its columns, or None if a ticket was already made from
    broker message `message_id`. With `claim_token` the ticket is born claimed, for a caller
    that sends it at once. Either way a ticket of a cancelled booking is then cancelled."""
    values = _row(fields, message_id, claim_token, claimed_until)
    async with database.connection() as conn:
        try:
            insert = db.insert_sql(tickets, tuple(values))
            ticket_id = (await db.run(conn, insert, values)).lastrowid
        except db.IntegrityErrors:
            if message_id is None:
                raise
            ticket_id = None  # the unique messageId: this message was handled before
        # Also for a ticket made before: its own check may not have run (see _check_taken).
        await _cancel_if_booking_cancelled(conn, [values])
    return None if ticket_id is None else {"id": ticket_id, **values}


async def create_tickets(
    database: Database, made_from: Sequence[tuple[Mapping[str, Any], str | None]]
) -> list[dict[str, Any] | None]:
    """Insert the tickets of several broker messages, given as (fields, message id), with
    one statement; what `create_ticket` returns for each, but without the `id`. Like
    `create_ticket`, the tickets of a booking cancelled before are then cancelled.

    A message id that is already taken (a redelivery: after a lost connection, every
    message the reminder had not acknowledged, up to the prefetch count of batches) fails
    the statement. The rows whose ids are taken are then found with one SELECT and the
    others inserted with one statement; only if that fails too (another process took an id
    meanwhile) does each go alone, through `create_ticket`.
    """
    rows = [_row(fields, message_id) for fields, message_id in made_from]
    try:
        await _insert(database, rows)
        return list(rows)
    except db.IntegrityErrors:
        pass
    taken = await _taken(database, [row["messageId"] for row in rows])
    if taken:
        try:
            await _insert(database, [row for row in rows if row["messageId"] not in taken])
        except db.IntegrityErrors:
            pass
        else:
            await _check_taken(database, [row for row in rows if row["messageId"] in taken])
            return [None if row["messageId"] in taken else row for row in rows]
    return [await create_ticket(database, fields, message_id=message_id)
            for fields, message_id in made_from]


async def _insert(database: Database, rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        return
    async with database.connection() as conn:
        # SQLite runs the statement once per row: all rows go in one transaction (and one
        # commit). MySQL sends a multi-row INSERT, cut into several past about 1 MB, each
        # committed alone: those before one that fails stay written, unchecked until the
        # messages come again (_check_taken).
        atomic = db.transaction(conn) if db.is_sqlite(database) else contextlib.nullcontext()
        async with atomic:
            await db.run_many(conn, db.insert_sql(tickets, tuple(rows[0])), rows)
            await _cancel_if_booking_cancelled(conn, rows)


async def _taken(database: Database, message_ids: Sequence[str | None]) -> set[str]:
    """Which of `message_ids` tickets have already been made from."""
    async with database.connection() as conn:
        return await _present(conn, "tickets", "messageId", message_ids)


async def _present(conn: Connection, table: str, column: str, values: Sequence[Any]) -> set[Any]:
    """Which of `values` (None left out) some row of `table` holds in `column`: one SELECT
    per `db.IN_LIST_MAX` of them, by the column's index."""
    wanted = sorted({value for value in values if value is not None})
    present: set[Any] = set()
    for listed, named in db.in_lists("value", wanted):
        rows = await db.fetch_all(
            conn, f"SELECT {column} FROM {table} WHERE {column} IN {listed}", named
        )
        present.update(row[column] for row in rows)
    return present


async def _check_taken(database: Database, rows: Sequence[dict[str, Any]]) -> None:
    """Check the tickets of messages delivered again for cancelled bookings. A ticket is
    written, then checked: on MySQL in two statements, and a connection that broke or a
    process that stopped between them left the ticket unchecked, its message unacknowledged,
    to come again."""
    async with database.connection() as conn:
        await _cancel_if_booking_cancelled(conn, rows)


def _row(
    fields: Mapping[str, Any],
    message_id: str | None,
    claim_token: str | None = None,
    claimed_until: datetime | None = None,
) -> dict[str, Any]:
    now = db.utcnow()
    return {
        "subject": fields["subject"],
        "content": fields["content"],
        "recepientEmail": fields["recepientEmail"],
        "status": fields["status"],
        "notificationTime": fields["notificationTime"],
        "bookingId": fields.get("bookingId"),
        "mailFrom": fields.get("mailFrom"),
        "attempts": 0,
        "lastError": None,
        "nextAttemptAt": fields["notificationTime"],
        "claimToken": claim_token,
        "claimedUntil": claimed_until,
        "messageId": message_id,
        "createdAt": now,
        "updatedAt": now,
    }


async def get_ticket(database: Database, ticket_id: int) -> dict[str, Any] | None:
    row = await database.fetch_one(sa.select(*_public_columns).where(tickets.c.id == ticket_id))
    return None if row is None else public(row._mapping)


async def list_tickets(
    database: Database, status: str | None, limit: int, offset: int
) -> list[dict[str, Any]]:
    rows = await database.fetch_all(page_query(status, limit, offset))
    return [public(row._mapping) for row in rows]


def page_query(status: str | None, limit: int, offset: int) -> sa.Select:
    """A page of tickets in id order, of one status or all (read off `ix_tickets_status`)."""
    query = sa.select(*_public_columns).order_by(tickets.c.id).limit(limit).offset(offset)
    return query if status is None else query.where(tickets.c.status == status)


async def cancel_booking_tickets(database: Database, booking_id: int) -> None:
    """Mark the PENDING tickets of booking `booking_id` CANCELLED, having first recorded the
    booking as cancelled, so that a ticket of it written after this is cancelled too.

    A ticket is written, then the record looked for (`_cancel_if_booking_cancelled`); a
    cancel records, then cancels. However these interleave, in one process or several, a
    ticket written before the cancel's UPDATE is cancelled by it, and one written after
    that UPDATE finds the record, written before it. So a message delivered again after a
    failure, or handled apart from its booking's cancel, cannot make a reminder of a
    cancelled booking. The two statements are not one transaction: on MySQL the record
    must be visible to others before the UPDATE runs. A sender's claim skips a ticket whose
    booking is recorded, for the moment between its INSERT and its check (`claim_due`).
    """
    now = db.utcnow()
    async with database.connection() as conn:
        await db.run(conn, _RECORD_CANCEL[database.url.dialect], {"id": booking_id, "now": now})
        listed, values = db.in_list("booking", [booking_id])
        await db.run(conn, _CANCEL_PENDING.format(listed=listed), {**values, **_cancelled(now)})


_RECORD_CANCEL = {
    "mysql": "INSERT INTO cancelled_bookings (bookingId, cancelledAt) VALUES (:id, :now)"
    " ON DUPLICATE KEY UPDATE cancelledAt = cancelledAt",  # INSERT IGNORE: a warning each time
    "sqlite": "INSERT OR IGNORE INTO cancelled_bookings (bookingId, cancelledAt)"
    " VALUES (:id, :now)",
}
"""Recorded once, however often the cancel is delivered."""

_CANCEL_PENDING = (
    "UPDATE tickets SET status = :cancelled, updatedAt = :now"
    " WHERE bookingId IN {listed} AND status = :pending"
)


def _cancelled(now: datetime) -> dict[str, Any]:
    return {"cancelled": CANCELLED, "pending": PENDING, "now": now}


async def _cancel_if_booking_cancelled(
    conn: Connection, written: Sequence[dict[str, Any]]
) -> None:
    """Cancel the tickets just `written` whose booking was cancelled before (see
    `cancel_booking_tickets`), and say so in `written`. Usually none was: one read of the
    records by their key, which locks nothing, and an UPDATE only for the bookings found."""
    pending = [row["bookingId"] for row in written if row["status"] == PENDING]
    found = await _present(conn, "cancelled_bookings", "bookingId", pending)
    for listed, values in db.in_lists("booking", sorted(found)):
        await db.run(
            conn, _CANCEL_PENDING.format(listed=listed), {**values, **_cancelled(db.utcnow())}
        )
    for row in written:
        if row["bookingId"] in found and row["status"] == PENDING:
            row["status"] = CANCELLED


# --- sending ---------------------------------------------------------------------------------


_CLAIMABLE = (
    "status = :pending AND nextAttemptAt <= :now"
    " AND (claimToken IS NULL OR claimedUntil < :now)"
)
"""PENDING, due, and claimed by nobody (or by a run whose claim has expired)."""

_NOT_CANCELLED = (
    "NOT EXISTS (SELECT 1 FROM cancelled_bookings c WHERE c.bookingId = tickets.bookingId)"
)
"""Not a ticket of a booking recorded cancelled (one just written, not yet checked). In the
UPDATE only: there MariaDB looks each up by key, where in the SELECT it would read the whole
table of records first."""

_TIMES = ("notificationTime", "nextAttemptAt", "claimedUntil", "createdAt", "updatedAt")


async def claim_due(
    database: Database, now: datetime, limit: int, lease: timedelta
) -> list[dict[str, Any]]:
    """Claim up to `limit` due tickets for one sender run and return them, all with the
    run's `claimToken`.

    The SELECT only proposes candidates; the UPDATE checks the condition again row by row
    (MySQL locks each row and reads its latest version, SQLite has one writer at a time),
    so of two runs proposing the same ticket exactly one gets it. The rows are then read back
    by their ids and the run's own token: by the ids so that the primary key finds them, as
    there is no index on the token and the table keeps every ticket ever sent; on MySQL in
    the same trip as the UPDATE. Plain SQL: under load this runs for every few bookings.
    The UPDATE leaves out tickets of bookings recorded cancelled (`cancel_booking_tickets`).
    """
    values = {"pending": PENDING, "now": now, "limit": limit}
    async with database.connection() as conn:
        candidates = await db.fetch_all(
            conn,
            f"SELECT id FROM tickets WHERE {_CLAIMABLE} ORDER BY nextAttemptAt LIMIT :limit",
            values,
        )
        if not candidates:
            return []
        listed, ids = db.in_list("id", [row["id"] for row in candidates])
        claim = {**values, **ids, "token": unique_hex(), "until": now + lease}
        _, claimed = await db.run_then_fetch(
            conn,
            "UPDATE tickets SET claimToken = :token, claimedUntil = :until"
            f" WHERE id IN {listed} AND {_CLAIMABLE} AND {_NOT_CANCELLED}",
            f"SELECT * FROM tickets WHERE id IN {listed} AND claimToken = :token",
            claim, _TIMES,
        )
        return claimed


async def mark_sent(database: Database, tickets_sent: Sequence[Mapping[str, Any]]) -> None:
    """Record that the claimed `tickets_sent` were sent, and release their claims: one
    statement for a whole batch (the tickets of a run share its token)."""
    if not tickets_sent:
        return
    by_token: dict[str, list[int]] = defaultdict(list)
    for ticket in tickets_sent:
        by_token[ticket["claimToken"]].append(ticket["id"])
    async with database.connection() as conn:
        for token, ids in by_token.items():
            listed, values = db.in_list("id", ids)
            await db.run(
                conn,
                "UPDATE tickets SET status = :success, attempts = attempts + 1,"
                " claimToken = NULL, claimedUntil = NULL, updatedAt = :now"
                f" WHERE id IN {listed} AND claimToken = :token",
                {**values, "success": SUCCESS, "now": db.utcnow(), "token": token},
            )


async def mark_failed(
    database: Database, ticket: Mapping[str, Any], error: str, *, retry_at: datetime | None
) -> None:
    """Record a failed send of the claimed `ticket` and release the claim: due again at
    `retry_at`, or FAILED for good when `retry_at` is None. A ticket cancelled meanwhile
    stays cancelled."""
    changes: dict[str, Any] = {"status": FAILED} if retry_at is None else {"nextAttemptAt": retry_at}
    await database.execute(
        tickets.update()
        .where(tickets.c.id == ticket["id"], tickets.c.claimToken == ticket["claimToken"],
               tickets.c.status == PENDING)
        .values(attempts=ticket["attempts"] + 1, lastError=error[:ERROR_MAX], claimToken=None,
                claimedUntil=None, updatedAt=db.utcnow(), **changes)
    )


# --- retention -------------------------------------------------------------------------------


async def prune_tickets(
    database: Database, finished_before: datetime, batch: int = retention.BATCH
) -> int:
    """Delete the tickets SUCCESS or CANCELLED since before `finished_before`; returns how
    many. PENDING tickets wait for their time and FAILED ones for an operator: both stay."""
    done = "status IN (:success, :cancelled) AND updatedAt < :before"
    values = {"success": SUCCESS, "cancelled": CANCELLED, "before": finished_before}
    return await retention.delete_done(database, "tickets", done, values, batch)


async def prune_cancelled_bookings(
    database: Database, cancelled_before: datetime, batch: int = retention.BATCH
) -> int:
    """Delete the records of bookings cancelled before `cancelled_before`; returns how many.
    Kept as long as finished tickets: a ticket that comes later than that is not waited for."""
    return await retention.delete_done(
        database, "cancelled_bookings", "cancelledAt < :before", {"before": cancelled_before},
        batch, key="bookingId",
    )
