"""Email over SMTP against a real SMTP server in process (aiosmtpd): what arrives, and how every way a send can
fail is classified (a refused mailbox is permanent, a 4xx or a relay that is down temporary, a connection lost
once the content went uncertain), over plain, STARTTLS with login, and implicit TLS."""

from __future__ import annotations

import email
import email.policy
import ipaddress
import ssl
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from schemas.common import Channel
from services.notify.channels import CannotLookUp, Outbound, Outcome, senders_from_settings
from services.notify.channels.smtp import SmtpSender
from services.notify.messages import Rendered
from services.runtime.devstack import free_port
from services.runtime.settings import Settings
from tests.support.notify_standin import REFERENCE_KEY, REFERENCES
from tests.support.smtp import smtp_server

pytestmark = pytest.mark.integration

RECIPIENT = "victim.marker-7781@example.org"
NAME = "Vivienne Marker-7781"


class Relay:
    """An SMTP server's handler that records what it takes and misbehaves on demand: ``rcpt_reply`` and
    ``data_reply`` replace the 250s; ``drop_after_data`` takes the content, then closes without a reply."""

    def __init__(self) -> None:
        self.received: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.sessions: set[int] = set()
        self.rcpt_reply: str | None = None
        self.data_reply: str | None = None
        self.drop_after_data = False

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.sessions.add(id(session))
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        if self.data_reply:
            return self.data_reply
        self.received.append(message)  # taken: from here on the relay may deliver it
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        if self.drop_after_data:
            server.transport.close()
        return "250 OK queued"


@pytest.fixture
def relay() -> Iterator[tuple[Relay, int]]:
    handler = Relay()
    with smtp_server(handler) as port:
        yield handler, port


def sender(port: int, **overrides: Any) -> SmtpSender:
    fields: dict[str, Any] = {
        "host": "127.0.0.1", "port": port, "from_address": "rj-hub@hub.example", "tls": "none", "references": REFERENCES
    }  # fmt: skip
    return SmtpSender(**(fields | overrides))


def outbound(**overrides: Any) -> Outbound:
    fields: dict[str, Any] = {
        "notification_id": str(uuid.uuid4()),
        "channel": Channel.email,
        "to": RECIPIENT,
        "recipient_name": NAME,
        "rendered": Rendered(
            subject="Your restorative justice meeting",
            text="Dear Vivienne,\nYour meeting is on Saturday.",
            html="<p>Dear Vivienne,</p><p>Your meeting is on <strong>Saturday</strong>.</p>",
            sms="Your meeting is on Saturday.",
        ),
    }
    return Outbound(**(fields | overrides))


def assert_safe_to_log(detail: str) -> None:
    assert RECIPIENT not in detail and "@" not in detail and "Marker" not in detail, detail


async def test_an_email_arrives_as_text_and_html_with_a_message_id_made_from_the_notification_ids_reference(
    relay: tuple[Relay, int],
) -> None:
    handler, port = relay
    smtp = sender(port, message_id_domain="notify.hub.example")
    message = outbound()
    result = await smtp.send(message)
    await smtp.close()

    assert result.outcome is Outcome.sent
    assert result.provider_id == f"<{REFERENCES.of(message.notification_id)}@notify.hub.example>"
    [got] = handler.received
    assert handler.envelopes == [("rj-hub@hub.example", [RECIPIENT])]
    assert got["Message-ID"] == result.provider_id
    assert got["To"].addresses[0].addr_spec == RECIPIENT
    assert got["To"].addresses[0].display_name == NAME
    assert got["Subject"] == "Your restorative justice meeting"
    assert got["Auto-Submitted"] == "auto-generated"
    text = got.get_body(preferencelist=("plain",))
    html = got.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    assert "Your meeting is on Saturday." in text.get_content()
    assert "<strong>Saturday</strong>" in html.get_content()


async def test_the_message_id_domain_defaults_to_the_from_addresses(relay: tuple[Relay, int]) -> None:
    handler, port = relay
    message = outbound()
    result = await sender(port).send(message)
    assert result.provider_id == f"<{REFERENCES.of(message.notification_id)}@hub.example>"
    assert handler.received[0]["Message-ID"] == result.provider_id


async def test_emails_in_a_row_share_one_kept_connection(relay: tuple[Relay, int]) -> None:
    handler, port = relay
    smtp = sender(port)
    results = [await smtp.send(outbound()) for _ in range(3)]
    await smtp.close()
    assert [r.outcome for r in results] == [Outcome.sent] * 3
    assert len(handler.received) == 3
    assert len(handler.sessions) == 1


async def test_a_kept_connection_the_relay_closed_is_replaced_and_the_email_still_goes() -> None:
    handler = Relay()
    with smtp_server(handler) as port:
        smtp = sender(port)
        assert (await smtp.send(outbound())).outcome is Outcome.sent
    try:
        with smtp_server(handler, port=port):  # the relay restarts: the connection kept from the first email is dead
            second = outbound()
            result = await smtp.send(second)
    finally:
        await smtp.close()
    assert result.outcome is Outcome.sent
    assert [m["Message-ID"] for m in handler.received][-1] == f"<{REFERENCES.of(second.notification_id)}@hub.example>"
    assert len(handler.received) == 2


async def test_a_mailbox_the_relay_refuses_is_a_permanent_failure_and_nothing_is_delivered(
    relay: tuple[Relay, int],
) -> None:
    handler, port = relay
    handler.rcpt_reply = f"550 5.1.1 <{RECIPIENT}>: Recipient address rejected"
    smtp = sender(port)
    result = await smtp.send(outbound())
    assert result.outcome is Outcome.permanent_failure
    assert result.provider_id is None
    assert_safe_to_log(result.detail)
    assert handler.received == []
    handler.rcpt_reply = None  # the connection was reset and kept: the next email goes on it
    assert (await smtp.send(outbound())).outcome is Outcome.sent
    await smtp.close()


async def test_a_4xx_to_the_recipient_or_the_content_is_a_temporary_failure(relay: tuple[Relay, int]) -> None:
    handler, port = relay
    smtp = sender(port)
    handler.rcpt_reply = "450 4.2.0 mailbox busy"
    on_rcpt = await smtp.send(outbound())
    handler.rcpt_reply, handler.data_reply = None, "451 4.3.0 try again later"
    on_data = await smtp.send(outbound())
    await smtp.close()
    assert (on_rcpt.outcome, on_data.outcome) == (Outcome.temporary_failure, Outcome.temporary_failure)
    assert on_rcpt.detail == "smtp 450 on RCPT TO" and on_data.detail == "smtp 451 on DATA"
    assert handler.received == []


async def test_a_5xx_to_the_content_is_a_permanent_failure(relay: tuple[Relay, int]) -> None:
    handler, port = relay
    handler.data_reply = "554 5.7.1 message refused"
    result = await sender(port).send(outbound())
    assert result.outcome is Outcome.permanent_failure
    assert result.detail == "smtp 554 on DATA"


async def test_a_connection_lost_after_the_content_went_is_uncertain_and_cannot_be_looked_up(
    relay: tuple[Relay, int],
) -> None:
    handler, port = relay
    handler.drop_after_data = True
    smtp = sender(port)
    message = outbound()
    result = await smtp.send(message)

    assert result.outcome is Outcome.uncertain
    assert result.provider_id == f"<{REFERENCES.of(message.notification_id)}@hub.example>"  # what the relay's logs show
    assert_safe_to_log(result.detail)
    # The relay did take it: resending would deliver it twice. Nobody can be asked.
    assert [m["Message-ID"] for m in handler.received] == [result.provider_id]
    with pytest.raises(CannotLookUp):
        await smtp.lookup(message.notification_id)


async def test_a_relay_that_is_down_is_a_temporary_failure() -> None:
    result = await sender(free_port()).send(outbound())
    assert result.outcome is Outcome.temporary_failure
    assert result.detail.startswith("smtp connect failed")


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        ({"to": "not an address"}, "no @"),
        ({"to": f"{RECIPIENT}\r\nBcc: someone@elsewhere.example"}, "a header smuggled into the address"),
        (
            # Rendered itself refuses a subject of two lines; one built around it must still be refused here.
            {
                "rendered": Rendered.model_construct(
                    subject="Hello\r\nBcc: someone@elsewhere.example", text="t", html="h", sms="s"
                )
            },
            "a header smuggled into the subject",
        ),
    ],
)
async def test_a_bad_address_or_subject_is_refused_before_anything_is_sent(
    relay: tuple[Relay, int], overrides: dict[str, Any], why: str
) -> None:
    handler, port = relay
    result = await sender(port).send(outbound(**overrides))
    assert result.outcome is Outcome.permanent_failure, why
    assert_safe_to_log(result.detail)
    assert handler.received == [] and handler.sessions == set()


# --- TLS and login -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA), and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rj test relay")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_file, key_file = folder / "relay.pem", folder / "relay.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


def server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


class Accounts:
    """aiosmtpd's authenticator: one account."""

    def __init__(self) -> None:
        self.logins: list[str] = []

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        if isinstance(data, LoginPassword) and (data.login, data.password) == (b"rj-hub", b"s3cret"):
            self.logins.append(data.login.decode())
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False)


async def test_starttls_with_a_login_sends_over_an_encrypted_connection(certificate: tuple[Path, Path]) -> None:
    handler, accounts = Relay(), Accounts()
    with smtp_server(
        handler, tls_context=server_context(certificate), require_starttls=True, authenticator=accounts,
        auth_required=True,
    ) as port:  # fmt: skip
        good = sender(port, tls="starttls", username="rj-hub", password="s3cret", ca_file=certificate[0])
        sent = await good.send(outbound())
        await good.close()
        refused = await sender(port, tls="starttls", username="rj-hub", password="wrong", ca_file=certificate[0]).send(
            outbound()
        )
        untrusted = await sender(port, tls="starttls", username="rj-hub", password="s3cret").send(outbound())
    assert sent.outcome is Outcome.sent and accounts.logins == ["rj-hub"]
    assert len(handler.received) == 1
    # Our login or our trust refused is our configuration, not the person's address: try again once fixed.
    assert refused.outcome is Outcome.temporary_failure and refused.detail == "smtp 535 on connect"
    assert untrusted.outcome is Outcome.temporary_failure, untrusted  # a certificate we do not trust: nothing sent
    assert "SSL" in untrusted.detail or "Certificate" in untrusted.detail, untrusted.detail


async def test_implicit_tls_sends(certificate: tuple[Path, Path]) -> None:
    handler = Relay()
    with smtp_server(handler, ssl_context=server_context(certificate)) as port:
        smtp = sender(port, tls="tls", ca_file=certificate[0])
        result = await smtp.send(outbound())
        await smtp.close()
    assert result.outcome is Outcome.sent
    assert len(handler.received) == 1


async def test_settings_choose_smtp_for_email_by_default(relay: tuple[Relay, int]) -> None:
    handler, port = relay
    settings = Settings(
        notify_smtp_host="127.0.0.1", notify_smtp_port=port, notify_smtp_tls="none",
        notify_from_address="rj-hub@hub.example", notify_message_id_domain="mid.hub.example",
        notify_reference_key=SecretStr(REFERENCE_KEY),
    )  # fmt: skip
    senders = senders_from_settings(settings, pool=None)  # type: ignore[arg-type]  # no letter is sent here
    assert Channel.sms not in senders  # no GOV.UK Notify key: no SMS can go
    message = outbound()
    result = await senders[Channel.email].send(message)
    assert result.outcome is Outcome.sent
    assert handler.received[0]["Message-ID"] == f"<{REFERENCES.of(message.notification_id)}@mid.hub.example>"
