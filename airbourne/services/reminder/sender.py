"""Sending due tickets: claim them, send them, record the outcome.

Any number of sender runs (this process's loop, a test's `send_due`, another process) may
work on the same table. A run first claims tickets with one conditional UPDATE that writes
its own token where a ticket is PENDING, due and unclaimed (store.claim_due), then sends only
the rows that carry its token, so no email goes out twice. A claim expires after
`CLAIM_SECONDS` in case its process dies mid-send; the ticket is then sent by another run.

A failed send is tried again after `retry_base_seconds * 2^(attempts-1)` and the ticket is
FAILED once `max_attempts` sends have failed.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Mapping

import anyio
from databases import Database

from airbourne import db, retention
from airbourne.config import Config
from airbourne.mail import Mailer, MailError, compose
from airbourne.services.reminder import store
from airbourne.services.reminder.schema import PENDING

if TYPE_CHECKING:
    from airbourne.runtime import Runtime

logger = logging.getLogger("airbourne.reminder")

CLAIM_SECONDS = 300.0
"""How long a claim lasts: far longer than sending one batch, each send bounded by the SMTP
timeout."""

MAX_RETRY_DELAY = timedelta(days=1)

CLAIM_ROUNDS = 10
"""A run claims `concurrency * CLAIM_ROUNDS` tickets at once and sends them `concurrency` at a
time, so under load the claim and the UPDATE that records the sends run once per hundred
emails, not once per ten. Ten rounds of sends that each run into a 30 s timeout still end
within `CLAIM_SECONDS`."""


class Sender:
    def __init__(
        self,
        database: Database,
        mailer: Mailer,
        *,
        from_address: str,
        max_attempts: int = 5,
        retry_base_seconds: float = 30.0,
        concurrency: int = 10,
        interval_seconds: float = 10.0,
    ) -> None:
        self.database = database
        self.mailer = mailer
        self.from_address = from_address
        self.max_attempts = max_attempts
        self.retry_base_seconds = retry_base_seconds
        self.concurrency = concurrency
        self.interval_seconds = interval_seconds
        self._due_now = asyncio.Event()

    @classmethod
    def from_config(cls, database: Database, mailer: Mailer, config: Config) -> Sender:
        settings = config["reminder"]
        return cls(
            database,
            mailer,
            from_address=config["mail"]["from_address"],
            max_attempts=settings["max_attempts"],
            retry_base_seconds=settings["retry_base_seconds"],
            concurrency=settings["send_concurrency"],
            interval_seconds=settings["send_interval_seconds"],
        )

    def notice(self, ticket: Mapping[str, Any]) -> None:
        """Wake the loop if the new `ticket` is due already, so a booking confirmation goes
        out now rather than at the next tick."""
        if ticket["status"] == PENDING and ticket["nextAttemptAt"] <= db.utcnow():
            self._due_now.set()

    async def run(self) -> None:
        """Send due tickets every `interval_seconds`, or sooner when woken, until cancelled;
        then close the mailer's connections."""
        try:
            while True:
                self._due_now.clear()
                try:
                    await self.send_due()
                except Exception:  # the database is away: keep the loop, try at the next tick
                    logger.exception("sending due tickets failed; trying again in %.1f s",
                                     self.interval_seconds)
                with anyio.move_on_after(self.interval_seconds):
                    await self._due_now.wait()
        finally:
            await self.mailer.close()

    async def send_due(self, now: datetime | None = None) -> int:
        """Send every ticket due at `now` (default: the current time), `concurrency` at a
        time; returns how many were sent."""
        now = now or db.utcnow()
        lease = timedelta(seconds=CLAIM_SECONDS)
        sent = 0
        slots = asyncio.Semaphore(self.concurrency)

        async def send(ticket: Mapping[str, Any]) -> bool:
            async with slots:
                return await self._send(ticket, now)

        size = self.concurrency * CLAIM_ROUNDS
        while batch := await store.claim_due(self.database, now, size, lease):
            # Every send of the batch finishes and records its outcome before an error (the
            # database went away) is raised.
            outcomes = await asyncio.gather(
                *(send(ticket) for ticket in batch), return_exceptions=True
            )
            done = [ticket for ticket, outcome in zip(batch, outcomes) if outcome is True]
            await store.mark_sent(self.database, done)
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
            sent += len(done)
        return sent

    async def deliver(self, ticket: Mapping[str, Any], now: datetime | None = None) -> bool:
        """Send one claimed ticket and record the outcome; True if it was sent."""
        if sent := await self._send(ticket, now):
            await store.mark_sent(self.database, [ticket])
        return sent

    async def _send(self, ticket: Mapping[str, Any], now: datetime | None) -> bool:
        """Send one claimed ticket; a failure is recorded here, a success by the caller
        (`store.mark_sent` takes a batch at once)."""
        try:
            message = compose(
                ticket["mailFrom"] or self.from_address,
                ticket["recepientEmail"],
                ticket["subject"],
                ticket["content"],
            )
            await self.mailer.send(message)
        except (MailError, ValueError) as exc:  # ValueError: email refused a header
            await self._failed(ticket, str(exc) or type(exc).__name__, now or db.utcnow())
            return False
        return True

    async def _failed(self, ticket: Mapping[str, Any], error: str, now: datetime) -> None:
        attempts = ticket["attempts"] + 1
        if attempts >= self.max_attempts:
            logger.warning("ticket %s FAILED after %d attempts: %s", ticket["id"], attempts, error)
            retry_at = None
        else:
            delay = self.retry_base_seconds * 2 ** min(attempts - 1, 32)
            retry_at = now + min(timedelta(seconds=delay), MAX_RETRY_DELAY)
            logger.info("ticket %s not sent (attempt %d), next try at %s: %s",
                        ticket["id"], attempts, db.iso(retry_at), error)
        await store.mark_failed(self.database, ticket, error, retry_at=retry_at)


def sender_of(runtime: Runtime) -> Sender:
    """The reminder's sender in `runtime` (made with its app)."""
    return runtime.apps["reminder"].state.sender


async def send_due(runtime: Runtime, now: datetime | None = None) -> int:
    """One sending round of the reminder in `runtime`, without waiting for its interval."""
    return await sender_of(runtime).send_due(now)


async def send_periodically(runtime: Runtime) -> None:
    await sender_of(runtime).run()


async def prune_periodically(runtime: Runtime) -> None:
    """Every hour, delete the tickets sent or cancelled more than `reminder.ticket_keep_days`
    ago: two per booking would otherwise grow the table for ever."""
    database = sender_of(runtime).database
    keep = timedelta(days=runtime.config["reminder"]["ticket_keep_days"])

    async def delete() -> int:
        before = db.utcnow() - keep
        tickets = await store.prune_tickets(database, before)
        if records := await store.prune_cancelled_bookings(database, before):
            logger.info("deleted %d records of bookings cancelled more than %s ago", records, keep)
        return tickets

    await retention.every_hour(f"tickets sent or cancelled more than {keep} ago", delete, logger)
