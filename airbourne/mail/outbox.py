"""The embedded transport: each message becomes a `.eml` file in a folder.

Nothing is lost and nothing needs a mail server: a developer opens the files in a mail
client, a test parses them with `email.message_from_bytes`, and an operator can hand the
folder to a real relay later. A file is written under a hidden temporary name and renamed
into place, so whoever watches the folder never reads half a message.
"""

from __future__ import annotations

import os
import time
from email.message import Message
from pathlib import Path

import anyio

from airbourne.ids import unique_hex
from airbourne.mail.base import MailError


class OutboxMailer:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def send(self, message: Message) -> None:
        data = message.as_bytes()
        try:
            await anyio.to_thread.run_sync(self._write, data)
        except OSError as exc:
            raise MailError(f"outbox {self.folder}: {exc}") from exc

    async def close(self) -> None:
        """Nothing is kept open between messages."""

    def messages(self) -> list[Path]:
        """The messages written so far, oldest first."""
        if not self.folder.is_dir():
            return []
        return sorted(self.folder.glob("*.eml"))

    def _write(self, data: bytes) -> Path:
        # Time first so a plain `ls` lists messages in the order they were sent.
        name = f"{time.time_ns():020d}-{unique_hex()}.eml"
        temporary = self.folder / f".{name}.tmp"
        try:
            try:
                file = open(temporary, "wb")
            except FileNotFoundError:  # the first message, or the folder was removed
                self.folder.mkdir(parents=True, exist_ok=True)
                file = open(temporary, "wb")
            with file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.folder / name)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return self.folder / name
