"""The embedded transport: each message becomes a `.eml` file in a folder.

Nothing is lost and nothing needs a mail server: a developer opens the files in a mail
client, a test parses them with `email.message_from_bytes`, and an operator can hand the
folder to a real relay later. A file is written under a hidden temporary name and renamed
into place, so whoever watches the folder never reads half a message. `send` returns once
the file and its name are on disk (the file, then the folder, fsynced): a crash right after
cannot lose a message the reminder has marked sent.
"""

from __future__ import annotations

import os
import time
from email.message import Message
from pathlib import Path
from typing import BinaryIO

import anyio

from airbourne.batch import Batch
from airbourne.ids import unique_hex
from airbourne.mail.base import MailError


class OutboxMailer:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        # Messages sent together are written by one call in a worker thread: a hand-off to
        # a thread per message cost the event loop as much as the write itself.
        self._writes = Batch(self._write_in_thread, f"outbox mailer: {folder}")
        self._new_folder = False  # created, and its own name not yet on disk

    async def send(self, message: Message) -> None:
        try:
            await self._writes.submit(message.as_bytes())
        except OSError as exc:
            raise MailError(f"outbox {self.folder}: {exc}") from exc

    async def close(self) -> None:
        """Nothing is kept open between messages."""

    def messages(self) -> list[Path]:
        """The messages written so far, oldest first."""
        if not self.folder.is_dir():
            return []
        return sorted(self.folder.glob("*.eml"))

    async def _write_in_thread(self, messages: list[bytes]) -> list[Path | OSError]:
        return await anyio.to_thread.run_sync(self._write_all, messages)

    def _write_all(self, messages: list[bytes]) -> list[Path | OSError]:
        """Write each message to a file of its own, or say why it could not be. A file is
        on disk (fsync) before it gets its name, and the names are on disk (the folder's
        fsync, once for the batch) before any is reported written. Writing them all before
        the first fsync lets the file system flush them together."""
        try:
            self.folder.mkdir(parents=True)  # the first message, or removed since
            self._new_folder = True
        except FileExistsError:
            pass  # as usual (a file in its place fails each message's open below)
        except OSError as exc:
            return [exc] * len(messages)
        drafts = [self._draft(data) for data in messages]
        finished = [_finish(draft) for draft in drafts]
        if any(isinstance(outcome, Path) for outcome in finished):
            try:
                _sync_folder(self.folder)
                if self._new_folder:
                    _sync_folder(self.folder.parent)
                    self._new_folder = False
            except OSError as exc:
                # The names may not survive a crash: reported failed, the messages are sent
                # again later (and may then be written twice, never lost).
                return [exc] * len(messages)
        return finished

    def _draft(self, data: bytes) -> tuple[BinaryIO, Path] | OSError:
        """`data` written, not yet flushed to disk, under a hidden temporary name."""
        # Time first so a plain `ls` lists messages in the order they were sent.
        name = f"{time.time_ns():020d}-{unique_hex()}.eml"
        temporary = self.folder / f".{name}.tmp"
        try:
            file = open(temporary, "wb")
        except OSError as exc:
            return exc
        try:
            file.write(data)
            file.flush()
        except OSError as exc:
            _discard(file, temporary)
            return exc
        return file, temporary


def _finish(draft: tuple[BinaryIO, Path] | OSError) -> Path | OSError:
    """Flush the draft to disk, then give it its name."""
    if isinstance(draft, OSError):
        return draft
    file, temporary = draft
    final = temporary.with_name(temporary.name[1:].removesuffix(".tmp"))
    try:
        with file:
            os.fsync(file.fileno())
        os.replace(temporary, final)
    except OSError as exc:
        _discard(file, temporary)
        return exc
    return final


def _sync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _discard(file: BinaryIO, temporary: Path) -> None:
    file.close()
    temporary.unlink(missing_ok=True)
