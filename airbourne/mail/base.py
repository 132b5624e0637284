"""The `Mailer` interface, and the one way Airbourne builds an email.

A mailer takes a complete `Message` (sender and recipient are in its headers) and either
hands it over or raises `MailError`. What a failure means (try again later, give up after
`max_attempts`) is the caller's decision, not the transport's.
"""

from __future__ import annotations

import functools
import re
from datetime import datetime, timezone
from email.charset import QP, Charset
from email.header import Header
from email.headerregistry import Address
from email.message import Message
from email.mime.text import MIMEText
from email.policy import Compat32
from email.utils import format_datetime, formataddr, make_msgid, parseaddr
from typing import Protocol

_UTF8 = Charset("utf-8")
_UTF8.body_encoding = QP  # quoted-printable: a person opening the .eml can still read it

_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")
"""Addresses that are plainly fine, accepted without the full (slow) header parser."""


class _OneLineHeaders(Compat32):
    """`compat32`, but a header that already fits on one line in ASCII is written as it is.

    `compat32` folds every header through `email.header.Header`, even one with nothing to
    fold: that was a third of sending a confirmation email. Anything else (non-ASCII, too
    long, a line break) still goes through it, so the bytes are the same.
    """

    def _fold(self, name: str, value: object, sanitize: bool) -> str:
        if (
            isinstance(value, str)
            and value.isascii()
            and len(name) + 2 + len(value) <= self.max_line_length
            and _ONE_LINE.fullmatch(value)
        ):
            return f"{name}: {value}{self.linesep}"
        return super()._fold(name, value, sanitize)


_ONE_LINE = re.compile(r"[!-~]+(?: [!-~]+)*")
"""Printable words with single spaces between them: text `Header` would write unchanged."""
POLICY = _OneLineHeaders()


class MailError(Exception):
    """The message was not handed over. The text says why, fit for a ticket's `lastError`."""


class Mailer(Protocol):
    async def send(self, message: Message) -> None:
        """Hand `message` over for delivery, or raise `MailError`."""

    async def close(self) -> None:
        """Let go of what the transport keeps open (at shutdown)."""


def is_address(text: str) -> bool:
    """Whether `text` is one plain address (`user@example.com`) an email header can carry.

    Stricter than a pattern match: `a,b@example.com` would be two recipients in a `To` header,
    and a line break would start a new header.
    """
    if _PLAIN_ADDRESS.fullmatch(text):
        return True
    try:
        Address(addr_spec=text)
    except ValueError:  # email's header defects are ValueErrors too
        return False
    return "@" in text


def compose(sender: str, recipient: str, subject: str, body: str) -> Message:
    """A plain-text email from `sender` (`Name <address>` or an address) to `recipient`.

    Line breaks in `subject` become spaces: a header is one line. Built as a classic
    `MIMEText`, whose headers are stored as given: the `email` package's default policy
    parses every header through its registry, which profiling showed to cost more than
    the rest of a booking's work. Non-ASCII text is encoded (RFC 2047) explicitly.
    """
    text = body if body.endswith("\n") else body + "\n"
    message = MIMEText(text, "plain", "us-ascii" if text.isascii() else _UTF8, policy=POLICY)
    from_header, domain = _sender(sender)
    message["From"] = from_header
    message["To"] = recipient
    message["Subject"] = _header(" ".join(subject.splitlines()))
    message["Date"] = format_datetime(datetime.now(timezone.utc))
    message["Message-ID"] = make_msgid(domain=domain)
    return message


@functools.lru_cache(maxsize=64)
def _sender(sender: str) -> tuple[str, str]:
    """The `From` header for `sender` (a non-ASCII display name encoded) and the domain of
    its message ids. Parsed once per sender, not twice per message: a handful of senders
    send every email, and parsing was a fifth of composing one."""
    name, address = parseaddr(sender)
    # make_msgid() without a domain asks the resolver for this host's name: slow, and it
    # says nothing useful. The sender's domain is what mail clients expect to see.
    return formataddr((name, address)), address.rpartition("@")[2] or "airbourne.local"


def _header(text: str) -> str | Header:
    return text if text.isascii() else Header(text, "utf-8")
