"""Email: one `Mailer` interface, an SMTP transport and an outbox folder for development."""

from __future__ import annotations

from email.utils import parseaddr
from pathlib import Path

from airbourne.config import Config, ConfigError
from airbourne.mail.base import Mailer, MailError, compose, is_address
from airbourne.mail.outbox import OutboxMailer
from airbourne.mail.smtp import SECURITY, SmtpMailer

__all__ = [
    "Mailer", "MailError", "OutboxMailer", "SmtpMailer", "compose", "is_address",
    "mailer_from_config",
]

TRANSPORTS = ("outbox", "smtp")


def mailer_from_config(config: Config) -> Mailer:
    """The transport named by `[mail]`; a setting that cannot work is a `ConfigError`."""
    settings = config["mail"]
    if not is_address(parseaddr(settings["from_address"])[1]):
        raise ConfigError(
            f"mail.from_address must be an address like 'Name <user@example.com>', "
            f"got {settings['from_address']!r}"
        )
    transport = settings["transport"]
    if transport == "outbox":
        return OutboxMailer(config.data_dir / "outbox")
    if transport != "smtp":
        raise ConfigError(f"mail.transport must be one of {', '.join(TRANSPORTS)}, got {transport!r}")
    if settings["smtp_security"] not in SECURITY:
        raise ConfigError(
            f"mail.smtp_security must be one of {', '.join(SECURITY)}, "
            f"got {settings['smtp_security']!r}"
        )
    if not settings["smtp_host"]:
        raise ConfigError("mail.smtp_host is required when mail.transport is 'smtp'")
    if not 1 <= settings["smtp_port"] <= 65535:
        raise ConfigError(f"mail.smtp_port must be between 1 and 65535, got {settings['smtp_port']}")
    if bool(settings["smtp_user"]) != bool(settings["smtp_password"]):
        raise ConfigError("mail.smtp_user and mail.smtp_password must be set together")
    ca_file = settings["smtp_ca_file"]
    if ca_file and settings["smtp_security"] == "none":
        raise ConfigError("mail.smtp_ca_file is set but mail.smtp_security is 'none': no TLS")
    if ca_file and not Path(ca_file).is_file():
        raise ConfigError(f"mail.smtp_ca_file: no such file {ca_file!r}")
    return SmtpMailer(
        settings["smtp_host"],
        settings["smtp_port"],
        security=settings["smtp_security"],
        user=settings["smtp_user"],
        password=settings["smtp_password"],
        timeout=settings["smtp_timeout_seconds"],
        ca_file=ca_file,
    )
