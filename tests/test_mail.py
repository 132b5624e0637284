"""The mail transports: the outbox folder, a real SMTP server, and the settings that pick one."""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import shutil
import stat
from email._policybase import compat32

import pytest
from aiosmtpd.smtp import AuthResult

from airbourne.config import ConfigError
from airbourne.mail.base import POLICY
from airbourne.mail import MailError, OutboxMailer, SmtpMailer, compose, is_address, mailer_from_config
from certificates import make_certificates
from mailserver import MailServer
from support import free_port, make_config

pytestmark = pytest.mark.anyio

FROM = "Airbourne <no-reply@airbourne.test>"


def reminder_email(**changes: str):
    fields = {"recipient": "ada@example.com", "subject": "Your flight AB123",
              "body": "Boarding at gate G7.\nHave a good flight, Ada."}
    fields.update(changes)
    return compose(FROM, fields["recipient"], fields["subject"], fields["body"])


def test_compose_fills_the_standard_headers():
    message = reminder_email(subject="two\nlines")
    assert message["From"] == FROM
    assert message["To"] == "ada@example.com"
    assert message["Subject"] == "two lines"
    assert message["Date"] and message["Message-ID"].endswith("@airbourne.test>")
    received = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
    assert received.get_content() == "Boarding at gate G7.\nHave a good flight, Ada.\n"
    assert message["Message-ID"] != reminder_email()["Message-ID"]


@pytest.mark.parametrize("value", [
    "Your flight AB123", "Booking confirmed: FN_1_2 departs 2026-11-24 12:00 UTC", "x",
    "", "two  spaces", " leading", "trailing ", "a\ttab", "a;b,c=d", "w" * 80, "word " * 15,
    "word " * 14 + "w", "<179.1.2@airbourne.local>", 'text/plain; charset="us-ascii"',
    "Vol confirmé", "Ünïcode " * 12, "line\nbreak", "line\r\nbreak",
])
@pytest.mark.parametrize("name", ["Subject", "To", "Message-ID", "Content-Type"])
def test_one_line_headers_are_written_as_compat32_writes_them(name, value):
    assert POLICY.fold_binary(name, value) == compat32.fold_binary(name, value)
    assert POLICY.fold(name, value) == compat32.fold(name, value)


@pytest.mark.parametrize(
    "text, valid",
    [("ada@example.com", True), ("ada", False), ("a,b@example.com", False),
     ("a b@example.com", False), ("ada@example.com\nBcc: eve@example.com", False)],
)
def test_is_address(text, valid):
    assert is_address(text) is valid


async def test_outbox_writes_a_standard_eml_file(tmp_path):
    mailer = OutboxMailer(tmp_path / "outbox")
    await mailer.send(reminder_email(body="Grüße aus Lissabon"))
    await mailer.send(reminder_email(recipient="bob@example.com"))

    files = mailer.messages()
    assert len(files) == 2
    assert sorted(p.name for p in (tmp_path / "outbox").iterdir()) == [p.name for p in files]
    first = email.message_from_bytes(files[0].read_bytes(), policy=email.policy.default)
    assert first["To"] == "ada@example.com"
    assert first["Subject"] == "Your flight AB123"
    assert first.get_content() == "Grüße aus Lissabon\n"
    second = email.message_from_bytes(files[1].read_bytes(), policy=email.policy.default)
    assert second["To"] == "bob@example.com"


async def test_outbox_writes_messages_sent_together_each_to_a_file_of_its_own(tmp_path):
    mailer = OutboxMailer(tmp_path / "outbox")
    subjects = [f"Message {n}" for n in range(20)]
    await asyncio.gather(*(mailer.send(reminder_email(subject=subject)) for subject in subjects))

    files = mailer.messages()
    written = [email.message_from_bytes(path.read_bytes())["Subject"] for path in files]
    assert sorted(written) == sorted(subjects)
    assert sorted(p.name for p in (tmp_path / "outbox").iterdir()) == [p.name for p in files]


async def test_outbox_puts_the_names_on_disk_before_send_returns(tmp_path, monkeypatch):
    """Each file is fsynced before its rename, and the folder after the renames, once for
    messages sent together (and the folder's own name the first time): a crash after `send`
    returns keeps every message."""
    folder = tmp_path / "outbox"
    synced: list[str] = []  # "file", or a folder's entries when it was synced
    original = os.fsync

    def recorded(descriptor: int) -> None:
        if stat.S_ISDIR(os.fstat(descriptor).st_mode):
            synced.append(" ".join(sorted(os.listdir(descriptor))))
        else:
            synced.append("file")
        original(descriptor)

    monkeypatch.setattr(os, "fsync", recorded)
    mailer = OutboxMailer(folder)
    await asyncio.gather(*(mailer.send(reminder_email(subject=f"M{n}")) for n in range(5)))
    names = " ".join(path.name for path in mailer.messages())
    assert len(mailer.messages()) == 5 and ".tmp" not in names
    assert synced == ["file"] * 5 + [names, "outbox"]  # one batch, the folder, its parent
    await mailer.send(reminder_email())
    assert synced[7:] == ["file", " ".join(path.name for path in mailer.messages())]
    await mailer.close()


async def test_outbox_folder_made_again_has_its_name_put_on_disk_again(tmp_path, monkeypatch):
    folder = tmp_path / "outbox"
    mailer = OutboxMailer(folder)
    await mailer.send(reminder_email())
    shutil.rmtree(folder)
    synced: list[int] = []  # the inode of each file or folder synced
    original = os.fsync

    def recorded(descriptor: int) -> None:
        synced.append(os.fstat(descriptor).st_ino)
        original(descriptor)

    monkeypatch.setattr(os, "fsync", recorded)
    await mailer.send(reminder_email())
    [message] = mailer.messages()
    inodes = [os.stat(path).st_ino for path in (message, folder, tmp_path)]
    assert synced == inodes  # the file, the folder made again, and its parent


async def test_outbox_that_cannot_be_written_is_a_mail_error(tmp_path):
    blocker = tmp_path / "outbox"
    blocker.write_text("a file where the folder should be")
    with pytest.raises(MailError, match="outbox"):
        await OutboxMailer(blocker).send(reminder_email())


async def test_smtp_delivers_to_a_real_server():
    with MailServer() as server:
        await SmtpMailer("127.0.0.1", server.port, timeout=5).send(reminder_email())
    [received] = server.received
    assert received.recipients == ["ada@example.com"]
    assert received.sender == "no-reply@airbourne.test"
    assert received.message["Subject"] == "Your flight AB123"
    assert received.body == "Boarding at gate G7.\nHave a good flight, Ada."


async def test_smtp_sends_many_messages_on_one_connection():
    with MailServer() as server:
        mailer = SmtpMailer("127.0.0.1", server.port, timeout=5)
        for n in range(5):
            await mailer.send(reminder_email(subject=f"Message {n}"))
        await mailer.close()
    assert [r.message["Subject"] for r in server.received] == [f"Message {n}" for n in range(5)]
    assert len(server.peers) == 1


async def test_smtp_replaces_a_connection_the_server_closed():
    """A server restart (or an idle timeout) closes the kept connection: the next message
    goes out on a new one, no error, no message lost."""
    server = MailServer()
    server.start()
    mailer = SmtpMailer("127.0.0.1", server.port, timeout=5)
    try:
        await mailer.send(reminder_email(subject="Before"))
        server.stop()
        server.start()
        await mailer.send(reminder_email(subject="After"))
    finally:
        await mailer.close()
        server.stop()
    assert [r.message["Subject"] for r in server.received] == ["Before", "After"]
    assert len(server.peers) == 2


async def test_smtp_refused_recipient_is_a_mail_error_and_the_connection_serves_on():
    with MailServer() as server:
        server.refused.add("nobody@example.com")
        mailer = SmtpMailer("127.0.0.1", server.port, timeout=5)
        with pytest.raises(MailError, match="no such mailbox"):
            await mailer.send(reminder_email(recipient="nobody@example.com"))
        await mailer.send(reminder_email(subject="Still here"))
        await mailer.close()
    assert [r.message["Subject"] for r in server.received] == ["Still here"]
    assert len(server.peers) == 1


async def test_smtp_closing_a_new_connection_mid_message_is_a_mail_error():
    """Only a kept connection found closed is retried; a new one closing is the server
    failing, for the sender to record and retry later."""
    import asyncio

    async def greet_then_hang_up(reader, writer):
        writer.write(b"220 flaky.test ESMTP\r\n")
        await reader.readline()  # EHLO
        writer.write(b"250 flaky.test\r\n")
        await reader.readline()  # MAIL FROM: hang up instead of answering
        writer.close()

    server = await asyncio.start_server(greet_then_hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(MailError, match=f"127.0.0.1:{port}"):
            await SmtpMailer("127.0.0.1", port, timeout=5).send(reminder_email())
    finally:
        server.close()


async def test_smtp_down_is_a_mail_error():
    closed_port = free_port()
    with pytest.raises(MailError, match=f"127.0.0.1:{closed_port}"):
        await SmtpMailer("127.0.0.1", closed_port, timeout=5).send(reminder_email())


def _only_ada(server, session, envelope, mechanism, auth_data) -> AuthResult:
    good = auth_data.login == b"ada" and auth_data.password == b"s3cret"
    return AuthResult(success=good, handled=False)


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_smtp_logs_in_with_the_configured_user():
    with MailServer(authenticator=_only_ada, auth_required=True, auth_require_tls=False) as server:
        await SmtpMailer("127.0.0.1", server.port, user="ada", password="s3cret").send(reminder_email())
        with pytest.raises(MailError):
            await SmtpMailer("127.0.0.1", server.port, user="ada", password="wrong").send(reminder_email())
        with pytest.raises(MailError):
            await SmtpMailer("127.0.0.1", server.port).send(reminder_email())
    assert len(server.received) == 1


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_smtp_over_tls_checks_the_servers_certificate(tmp_path, security):
    """The server's certificate is signed by a CA of the test's own: trusted through
    `ca_file`, the message goes over TLS; with the system's CAs the connection is refused,
    as it must be for a certificate nobody vouches for."""
    certificates = make_certificates(tmp_path)
    if security == "starttls":  # plain at first; the server refuses mail until STARTTLS
        options = {"tls_context": certificates.server, "require_starttls": True}
    else:
        options = {"ssl_context": certificates.server}
    with MailServer(**options) as server:
        trusting = SmtpMailer("127.0.0.1", server.port, security=security,
                              ca_file=str(certificates.ca_file))
        await trusting.send(reminder_email())
        await trusting.close()
        with pytest.raises(MailError, match="(?i)certificate"):
            await SmtpMailer("127.0.0.1", server.port, security=security).send(reminder_email())
    assert [received.tls for received in server.received] == [True]


def test_transport_from_settings(tmp_path):
    outbox = mailer_from_config(make_config(tmp_path))
    assert isinstance(outbox, OutboxMailer)
    assert outbox.folder == tmp_path / "data" / "outbox"
    smtp = mailer_from_config(make_config(
        tmp_path, AIRBOURNE_MAIL_TRANSPORT="smtp", AIRBOURNE_MAIL_SMTP_HOST="mail.example.com",
        AIRBOURNE_MAIL_SMTP_PORT="465", AIRBOURNE_MAIL_SMTP_SECURITY="tls",
    ))
    assert isinstance(smtp, SmtpMailer)
    assert (smtp.host, smtp.port, smtp.security) == ("mail.example.com", 465, "tls")


@pytest.mark.parametrize(
    "environ, problem",
    [
        ({"AIRBOURNE_MAIL_TRANSPORT": "pigeon"}, "mail.transport"),
        ({"AIRBOURNE_MAIL_TRANSPORT": "smtp", "AIRBOURNE_MAIL_SMTP_SECURITY": "ssl"}, "mail.smtp_security"),
        ({"AIRBOURNE_MAIL_TRANSPORT": "smtp", "AIRBOURNE_MAIL_SMTP_PORT": "0"}, "mail.smtp_port"),
        ({"AIRBOURNE_MAIL_TRANSPORT": "smtp", "AIRBOURNE_MAIL_SMTP_USER": "ada"}, "mail.smtp_user"),
        ({"AIRBOURNE_MAIL_FROM_ADDRESS": "nobody"}, "mail.from_address"),
        ({"AIRBOURNE_MAIL_TRANSPORT": "smtp", "AIRBOURNE_MAIL_SMTP_SECURITY": "tls",
          "AIRBOURNE_MAIL_SMTP_CA_FILE": "/nowhere/ca.pem"}, "mail.smtp_ca_file"),
        ({"AIRBOURNE_MAIL_TRANSPORT": "smtp", "AIRBOURNE_MAIL_SMTP_CA_FILE": __file__},
         "mail.smtp_ca_file"),
    ],
)
def test_settings_that_cannot_work_are_a_config_error(tmp_path, environ, problem):
    with pytest.raises(ConfigError, match=problem):
        mailer_from_config(make_config(tmp_path, **environ))


def test_non_ascii_subject_sender_and_body_survive_a_round_trip():
    message = compose("Åsa Reisebüro <no-reply@airbourne.test>", "ada@example.com",
                      "Grüße: Flug AB123", "Gute Reise, Ada. Gate G7.")
    received = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
    assert received["Subject"] == "Grüße: Flug AB123"
    assert received["From"].addresses[0].display_name == "Åsa Reisebüro"
    assert received["From"].addresses[0].addr_spec == "no-reply@airbourne.test"
    assert received.get_content() == "Gute Reise, Ada. Gate G7.\n"
    assert message.as_bytes().isascii()  # encoded for any SMTP server
