"""The `Mailer` interface, and the one way Airbourne builds an email.

A mailer takes a complete `EmailMessage` (sender and recipient are in its headers) and either
hands it over or raises `MailError`. What a failure means (try again later, give up after
`max_attempts`) is the caller's decision, not the transport's.
"""

from __future__ import annotations

from datetime import datetime, timezone
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from typing import Protocol


class MailError(Exception):
    """The message was not handed over. The text says why, fit for a ticket's `lastError`."""


class Mailer(Protocol):
    async def send(self, message: EmailMessage) -> None:
        """Hand `message` over for delivery, or raise `MailError`."""


def is_address(text: str) -> bool:
    """Whether `text` is one plain address (`user@example.com`) an email header can carry.

    Stricter than a pattern match: `a,b@example.com` would be two recipients in a `To` header,
    and a line break would start a new header.
    """
    try:
        Address(addr_spec=text)
    except ValueError:  # email's header defects are ValueErrors too
        return False
    return "@" in text


def compose(sender: str, recipient: str, subject: str, body: str) -> EmailMessage:
    """A plain-text email from `sender` (`Name <address>` or an address) to `recipient`.

    Line breaks in `subject` become spaces: a header is one line.
    """
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = " ".join(subject.splitlines())
    message["Date"] = format_datetime(datetime.now(timezone.utc))
    # make_msgid() without a domain asks the resolver for this host's name: slow, and it
    # says nothing useful. The sender's domain is what mail clients expect to see.
    domain = parseaddr(sender)[1].rpartition("@")[2] or "airbourne.local"
    message["Message-ID"] = make_msgid(domain=domain)
    message.set_content(body)
    return message
