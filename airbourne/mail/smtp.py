"""Sending through an SMTP server with aiosmtplib, one connection per message."""

from __future__ import annotations

from email.message import Message

import aiosmtplib

from airbourne.mail.base import MailError

SECURITY = ("none", "starttls", "tls")
"""`none`: plain SMTP; `starttls`: upgrade the connection (required, not opportunistic);
`tls`: TLS from the first byte (usually port 465)."""


class SmtpMailer:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        security: str = "none",
        user: str = "",
        password: str = "",
        timeout: float = 10.0,
    ) -> None:
        if security not in SECURITY:
            raise ValueError(f"security must be one of {', '.join(SECURITY)}, got {security!r}")
        self.host = host
        self.port = port
        self.security = security
        self.user = user
        self.password = password
        self.timeout = timeout

    async def send(self, message: Message) -> None:
        try:
            await aiosmtplib.send(
                message,
                hostname=self.host,
                port=self.port,
                use_tls=self.security == "tls",
                start_tls=self.security == "starttls",
                username=self.user or None,
                password=self.password or None,
                timeout=self.timeout,
            )
        except (aiosmtplib.SMTPException, OSError) as exc:
            reason = str(exc) or type(exc).__name__
            raise MailError(f"SMTP {self.host}:{self.port}: {reason}") from exc
