"""Email over SMTP (aiosmtplib) to the force's relay: plain text and HTML, a ``Message-ID`` made from the
notification id (its outside reference: ``reference``), and an outcome that says exactly how far a failed send got.

SMTP cannot be asked afterwards whether a message went (``lookup`` raises ``CannotLookUp``), so the one
question that matters is whether the message's content had started to go when something broke:

- before the DATA command (connecting, TLS, login, ``MAIL FROM``, ``RCPT TO``) nothing can have been
  delivered: a 5xx reply to ``RCPT`` (no such mailbox) is permanent, anything else temporary (a 5xx to our
  login or our sender is our configuration, not the person's address: retrying is right once it is fixed);
- a reply to DATA or to the content (4xx, 5xx) is the server's definite "not taken": temporary or permanent;
- the connection lost or a timeout once DATA was sent is **uncertain**: the relay may have queued the
  message before the reply was lost, and a blind resend could reach the person twice. The service never
  repeats it and tells the facilitator "delivery uncertain". (A loss between the DATA command and the relay's
  354 would be safe to retry, but aiosmtplib sends the two together; treating it as uncertain costs one
  facilitator's look, never a duplicate.)

Connections are kept open and reused (up to ``NOTIFY_SMTP_CONNECTIONS``, each for ``NOTIFY_SMTP_IDLE_S``
idle): a TLS handshake and login per message would cost more than the message. A kept connection the relay
has closed meanwhile fails before anything is sent, so the send is retried once on a fresh one.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.headerregistry import Address
from email.utils import format_datetime
from pathlib import Path
from typing import Literal

import aiosmtplib
import structlog
from aiosmtplib import SMTPException, SMTPResponseException

from schemas.common import Channel
from services.notify.channels import CannotLookUp, ChannelConfigError, Outbound, Outcome, SendResult
from services.notify.channels.mime import mime_email
from services.notify.channels.reference import References
from services.runtime.settings import Settings

log = structlog.get_logger()


TlsMode = Literal["none", "starttls", "tls"]

_LOST = (SMTPException, OSError, asyncio.TimeoutError)
"""A connection that broke or timed out (aiosmtplib's disconnects and timeouts are OSErrors too)."""


class _Refused(Exception):
    """A definite reply refusing a step: its code and the step (never the server's text, which may echo the
    address)."""

    def __init__(self, code: int, stage: str) -> None:
        super().__init__(f"smtp {code} on {stage}")
        self.code = code
        self.stage = stage


@dataclass
class _Kept:
    smtp: aiosmtplib.SMTP
    idle_since: float


@dataclass
class SmtpSender:
    """Sends email through one SMTP relay, reusing connections."""

    host: str
    port: int
    from_address: str
    tls: TlsMode = "starttls"
    username: str = ""
    password: str = field(default="", repr=False)
    message_id_domain: str = ""
    references: References | None = field(default=None, repr=False)
    ca_file: Path | None = None
    timeout_s: float = 15.0
    connections: int = 4
    idle_s: float = 30.0
    channel: Channel = Channel.email
    _idle: list[_Kept] = field(default_factory=list, init=False, repr=False)
    _slots: asyncio.Semaphore | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.references is None:
            raise ChannelConfigError("email over SMTP needs NOTIFY_REFERENCE_KEY (its Message-IDs are made with it)")
        self.from_address = _parse_address(self.from_address).addr_spec
        if not self.message_id_domain:
            self.message_id_domain = _parse_address(self.from_address).domain

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpSender:
        return cls(
            host=settings.notify_smtp_host,
            port=settings.notify_smtp_port,
            from_address=settings.notify_from_address,
            tls=settings.notify_smtp_tls,
            username=settings.notify_smtp_username,
            password=settings.notify_smtp_password.get_secret_value(),
            message_id_domain=settings.notify_message_id_domain,
            references=References.from_settings(settings),
            ca_file=settings.notify_smtp_ca_file,
            timeout_s=settings.notify_smtp_timeout_s,
            connections=settings.notify_smtp_connections,
            idle_s=settings.notify_smtp_idle_s,
        )

    def message_id(self, notification_id: str) -> str:
        """The Message-ID of the email with this notification id: the id's outside reference (``reference``),
        never the id itself."""
        assert self.references is not None
        return f"<{self.references.of(notification_id)}@{self.message_id_domain}>"

    def compose(self, message: Outbound) -> bytes:
        """The email's bytes: text and HTML alternatives (``mime.mime_email``). Raises ``ValueError`` for an address
        that is not one, or a header value with a line break (header injection is refused, never sent)."""
        return self._compose(message, _parse_address(message.to).addr_spec, self.message_id(message.notification_id))

    def _compose(self, message: Outbound, recipient: str, message_id: str) -> bytes:
        return mime_email(
            sender=self.from_address,
            recipient=recipient,
            recipient_name=message.recipient_name or "",
            subject=message.rendered.subject,
            date=format_datetime(datetime.now(UTC)),
            message_id=message_id,
            text=message.rendered.text,
            html=message.rendered.html,
        )

    async def send(self, message: Outbound) -> SendResult:
        if message.channel is not Channel.email:
            raise ValueError(f"the SMTP sender sends email, not {message.channel}")
        message_id = self.message_id(message.notification_id)
        try:
            recipient = _parse_address(message.to).addr_spec
            content = self._compose(message, recipient, message_id)  # the address and Message-ID worked out once
        except ValueError:
            return SendResult(Outcome.permanent_failure, detail="not a valid email address or subject")
        options = [] if recipient.isascii() else ["SMTPUTF8"]
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.connections)
        async with self._slots:
            result = await self._send_on_a_connection(recipient, options, content)
        # The Message-ID is what a relay's logs are searched by: worth keeping wherever the message may have gone.
        went = result.outcome in (Outcome.sent, Outcome.uncertain)
        result = SendResult(result.outcome, message_id if went else None, result.detail)
        if result.outcome is not Outcome.sent:
            log.warning("smtp_not_sent", notification_id=message.notification_id, outcome=result.outcome,
                        detail=result.detail)  # fmt: skip
        return result

    async def _send_on_a_connection(self, recipient: str, options: list[str], content: bytes) -> SendResult:
        for attempt in range(2):
            try:
                smtp, reused = await self._take()
            except SMTPResponseException as exc:  # greeting, EHLO, STARTTLS or login refused
                return SendResult(Outcome.temporary_failure, detail=f"smtp {exc.code} on connect")
            except _LOST as exc:
                return SendResult(Outcome.temporary_failure, detail=f"smtp connect failed: {type(exc).__name__}")
            try:
                await _step(smtp.mail(self.from_address, options=options), "MAIL FROM")
                await _step(smtp.rcpt(recipient), "RCPT TO")
            except _Refused as refused:
                await self._reset(smtp)
                permanent = refused.code >= 500 and refused.stage == "RCPT TO"
                return SendResult(Outcome.permanent_failure if permanent else Outcome.temporary_failure,
                                  detail=str(refused))  # fmt: skip
            except _LOST as exc:
                smtp.close()
                if reused and attempt == 0:
                    continue  # the relay closed a kept connection: nothing was sent, try a fresh one
                return SendResult(Outcome.temporary_failure, detail=f"smtp connection lost before DATA: {_name(exc)}")
            try:
                await _step(smtp.data(content), "DATA")
            except _Refused as refused:
                await self._reset(smtp)
                outcome = Outcome.permanent_failure if refused.code >= 500 else Outcome.temporary_failure
                return SendResult(outcome, detail=str(refused))
            except _LOST as exc:
                smtp.close()
                return SendResult(Outcome.uncertain, detail=f"smtp connection lost after DATA: {_name(exc)}")
            self._idle.append(_Kept(smtp, time.monotonic()))
            return SendResult(Outcome.sent)
        raise AssertionError("unreachable: the second attempt returns")

    async def _take(self) -> tuple[aiosmtplib.SMTP, bool]:
        """A connection: the most recently used kept one still fresh, else a new one (connected, TLS, logged
        in). Whether it was kept."""
        now = time.monotonic()
        while self._idle:
            kept = self._idle.pop()
            if kept.smtp.is_connected and now - kept.idle_since < self.idle_s:
                return kept.smtp, True
            await _quit(kept.smtp)
        smtp = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            use_tls=self.tls == "tls",
            start_tls=self.tls == "starttls",
            tls_context=ssl.create_default_context(cafile=self.ca_file) if self.tls != "none" else None,
            username=self.username or None,
            password=(self.password or None) if self.username else None,
            timeout=self.timeout_s,
        )
        try:
            await smtp.connect()
        except BaseException:
            smtp.close()
            raise
        return smtp, False

    async def _reset(self, smtp: aiosmtplib.SMTP) -> None:
        """After a refused transaction: RSET and keep the connection, or drop it if that fails too."""
        try:
            await smtp.rset()
        except _LOST:
            smtp.close()
            return
        self._idle.append(_Kept(smtp, time.monotonic()))

    async def lookup(self, notification_id: str) -> SendResult | None:
        raise CannotLookUp("an SMTP relay cannot be asked whether it took a message")

    async def close(self) -> None:
        """Say QUIT on every kept connection."""
        idle, self._idle = self._idle, []
        for kept in idle:
            await _quit(kept.smtp)


async def _step(call: Awaitable[object], stage: str) -> None:
    """Await one SMTP step; a refusing reply becomes ``_Refused`` (code and step only)."""
    try:
        await call
    except SMTPResponseException as exc:
        raise _Refused(exc.code, stage) from None


async def _quit(smtp: aiosmtplib.SMTP) -> None:
    try:
        await smtp.quit()
    except _LOST:
        smtp.close()


def _name(exc: BaseException) -> str:
    return type(exc).__name__


def _parse_address(text: str, display_name: str = "") -> Address:
    """``text`` as one email address (``ValueError`` if it is not one: no domain, spaces, line breaks)."""
    address = Address(display_name=display_name, addr_spec=text.strip())
    if not address.username or not address.domain:
        raise ValueError("not an email address")
    return address
