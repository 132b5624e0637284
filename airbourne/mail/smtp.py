"""Sending through an SMTP server with aiosmtplib, on connections kept open between messages.

Opening a connection costs more than sending on one: the greeting, EHLO, and with
`starttls` or `tls` a TLS handshake, with a user a login, before the four exchanges of the
message itself. So a connection that sent a message is kept for the next (at most
`MAX_IDLE` of them). Servers drop idle clients after a few minutes; a kept connection found
closed is replaced by a new one and the message sent there, as the server never took it.
"""

from __future__ import annotations

from email.message import Message

import aiosmtplib

from airbourne.mail.base import MailError

SECURITY = ("none", "starttls", "tls")
"""`none`: plain SMTP; `starttls`: upgrade the connection (required, not opportunistic);
`tls`: TLS from the first byte (usually port 465)."""

MAX_IDLE = 10
"""Connections kept open for later messages: the reminder sends 10 at once by default."""


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
        ca_file: str = "",
    ) -> None:
        if security not in SECURITY:
            raise ValueError(f"security must be one of {', '.join(SECURITY)}, got {security!r}")
        self.host = host
        self.port = port
        self.security = security
        self.user = user
        self.password = password
        self.timeout = timeout
        self.ca_file = ca_file
        """PEM file of the certificate authorities the server's certificate must chain to;
        empty: the system's. Either way the certificate and its host name are checked."""
        self._idle: list[aiosmtplib.SMTP] = []

    async def send(self, message: Message) -> None:
        while self._idle:
            kept = self._idle.pop()
            try:
                await self._send_on(kept, message)
                return
            except aiosmtplib.SMTPServerDisconnected:
                continue  # closed while idle: the message was not taken
        try:
            await self._send_on(await self._connect(), message)
        except aiosmtplib.SMTPServerDisconnected as exc:  # a new connection: a real failure
            raise self._error(exc) from exc

    async def close(self) -> None:
        """Close the kept connections (at shutdown)."""
        while self._idle:
            self._idle.pop().close()

    async def _connect(self) -> aiosmtplib.SMTP:
        client = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            use_tls=self.security == "tls",
            start_tls=self.security == "starttls",
            username=self.user or None,
            password=self.password or None,
            timeout=self.timeout,
            cert_bundle=self.ca_file or None,
        )
        try:
            await client.connect()
        except (aiosmtplib.SMTPException, OSError) as exc:
            client.close()
            raise self._error(exc) from exc
        return client

    async def _send_on(self, client: aiosmtplib.SMTP, message: Message) -> None:
        """Send on `client` and keep it for the next message if it still serves. Raises
        `SMTPServerDisconnected` as it is when `client` turns out closed, `MailError` for the
        rest."""
        try:
            await client.send_message(message, timeout=self.timeout)
        except aiosmtplib.SMTPServerDisconnected:
            client.close()
            raise
        except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused) as exc:
            self._keep(client)  # the server refused this message; aiosmtplib reset the envelope
            raise self._error(exc) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:  # a timeout: the state is unknown
            client.close()
            raise self._error(exc) from exc
        self._keep(client)

    def _keep(self, client: aiosmtplib.SMTP) -> None:
        if len(self._idle) < MAX_IDLE and client.is_connected:
            self._idle.append(client)
        else:
            client.close()

    def _error(self, exc: BaseException) -> MailError:
        reason = str(exc) or type(exc).__name__
        return MailError(f"SMTP {self.host}:{self.port}: {reason}")
