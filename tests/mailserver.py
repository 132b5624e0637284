"""A real SMTP server for tests (aiosmtpd, in a thread) that keeps what it receives."""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import anyio
from aiosmtpd.controller import Controller

from support import free_port


@dataclass(frozen=True)
class Received:
    sender: str
    recipients: list[str]
    message: EmailMessage
    tls: bool = False
    """Whether the message came over TLS (STARTTLS, or TLS from the first byte)."""

    @property
    def body(self) -> str:
        """The text, with the line breaks SMTP sent as CRLF back to `\\n`."""
        return self.message.get_content().replace("\r\n", "\n").rstrip("\n")


class MailServer:
    """`with MailServer() as server:` listens on a free port; `stop()` and `start()` take it
    down and bring it back on the same port."""

    def __init__(self, data_seconds: float = 0.0, **smtp_options: Any) -> None:
        self.port = free_port()
        self.received: list[Received] = []
        self.data_seconds = data_seconds
        """How long accepting each message takes, to make concurrent sends overlap."""
        self.in_flight = self.most_in_flight = 0
        self.peers: set[tuple[str, int]] = set()
        """The client ends that delivered messages: one per connection used."""
        self.refused: set[str] = set()
        """Recipients answered 550."""
        self._smtp_options = smtp_options
        self._controller: Controller | None = None

    def start(self) -> None:
        self._controller = Controller(
            self, hostname="127.0.0.1", port=self.port, **self._smtp_options
        )
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> MailServer:
        self.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    async def until_received(self, count: int, seconds: float = 10.0) -> list[Received]:
        """Wait until `count` messages have arrived (failing after `seconds`)."""
        with anyio.fail_after(seconds):
            while len(self.received) < count:
                await anyio.sleep(0.01)
        return self.received

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:
        if address in self.refused:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope) -> str:
        self.peers.add(session.peer)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await anyio.sleep(self.data_seconds)
        finally:
            self.in_flight -= 1
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        tls = server.transport.get_extra_info("ssl_object") is not None
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message, tls))
        return "250 Message accepted"
