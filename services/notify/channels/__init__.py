"""How a rendered message leaves us: the channels' shared vocabulary and which sender serves each channel.

A sender's answer says what happened to one message in four words that decide what the service does next:
``sent`` (the server or provider accepted it), ``permanent_failure`` (this address will never work: try the
person's next allowed channel), ``temporary_failure`` (nothing went: try again later) and ``uncertain`` (it
may or may not have gone: never blindly resend). ``detail`` is a reason safe to log: never an address, a
name or the message's content.

The notification id is the dedupe key everywhere: through its outside reference (an HMAC of it,
``reference.py``) GOV.UK Notify's ``reference`` and an email's ``Message-ID``, and as it is the letter queue's
unique key; ``lookup`` asks a provider what it knows of one, so that a send whose outcome was lost in a crash is
repeated only when the provider never saw it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from schemas.common import Channel
from services.notify.messages import Rendered

if TYPE_CHECKING:
    import asyncpg

    from services.runtime.settings import Settings


class Outcome(StrEnum):
    sent = "sent"  # accepted by the server/provider
    permanent_failure = "permanent_failure"  # will never work on this address (5xx SMTP, 400 from Notify, bad address)
    temporary_failure = "temporary_failure"  # try later (4xx SMTP, 429 from Notify, connection refused)
    uncertain = "uncertain"  # may or may not have gone (connection lost after DATA / after the POST was sent)


@dataclass(frozen=True)
class Outbound:
    """One message to one person on one channel. ``case_id`` and ``person_id`` say whose data it carries: the
    letter queue seals the letter under that person's data key on that case, so erasing them shreds it."""

    notification_id: str  # UUID string: the dedupe key; its HMAC (reference.py) is Notify's reference, the Message-ID
    channel: Channel  # email / sms / letter
    to: str  # email address, phone number, or postal address (lines separated by \n)
    recipient_name: str | None
    rendered: Rendered
    large_print: bool = False
    case_id: str | None = None
    person_id: str | None = None


@dataclass(frozen=True)
class SendResult:
    outcome: Outcome
    provider_id: str | None = None  # Notify's notification id, the SMTP Message-ID, the letter queue id
    detail: str = ""  # a reason safe to log: no addresses, no content
    retry_after_s: float | None = None  # from a 429


class CannotLookUp(Exception):
    """The channel cannot be asked what became of a message (SMTP): a send in doubt stays uncertain."""


class LookupFailed(Exception):
    """The provider could not be asked just now (unreachable, 5xx, rate limited): ask again later, and send
    nothing meanwhile (the message may be there)."""


MIN_ADDRESS_LINES = 3
MAX_ADDRESS_LINES = 7
"""A postal address with the name: at least name, street and postcode; at most what GOV.UK Notify prints and a
DL envelope's window shows."""


def postal_lines(message: Outbound) -> list[str]:
    """The letter's address block: the name, then the address's lines. Raises ``ValueError`` unless there are
    3 to 7 (nothing about the address in the error)."""
    lines = [line.strip() for line in message.to.split("\n") if line.strip()]
    if message.recipient_name and message.recipient_name.strip():
        lines.insert(0, message.recipient_name.strip())
    if not MIN_ADDRESS_LINES <= len(lines) <= MAX_ADDRESS_LINES:
        raise ValueError(f"a postal address needs {MIN_ADDRESS_LINES} to {MAX_ADDRESS_LINES} lines, the name included")
    return lines


class Sender(Protocol):
    channel: Channel

    async def send(self, message: Outbound) -> SendResult: ...

    async def lookup(self, notification_id: str) -> SendResult | None:
        """What the provider knows of a message sent under this reference: None = it never saw it (safe to send),
        a ``SendResult`` = it did. Raises ``CannotLookUp`` (SMTP) or ``LookupFailed`` (ask again later)."""
        ...


class ChannelConfigError(ValueError):
    """Settings ask for a channel that they do not give what it needs (e.g. GOV.UK Notify without an API key)."""


def senders_from_settings(settings: Settings, pool: asyncpg.Pool) -> dict[Channel, Sender]:
    """The sender serving each channel the settings make sendable. Email: SMTP or GOV.UK Notify
    (``NOTIFY_EMAIL_VIA``); SMS: GOV.UK Notify, absent without an API key and an SMS template (no SMS can go: the
    service picks the person's next allowed channel); letters: the queue, or GOV.UK Notify with large print still queued
    (``NOTIFY_LETTERS_VIA``). Phone calls are never automated."""
    from services.notify.channels.govuk import GovukNotify, GovukNotifySender, LargePrintToQueue
    from services.notify.channels.letters import LetterQueue
    from services.notify.channels.smtp import SmtpSender

    notify = GovukNotify.from_settings(settings) if settings.govuk_notify_api_key.get_secret_value() else None

    def via_notify(channel: Channel) -> GovukNotifySender:
        if notify is None:
            raise ChannelConfigError(f"{channel} via GOV.UK Notify needs GOVUK_NOTIFY_API_KEY")
        return GovukNotifySender.from_settings(notify, channel, settings)

    senders: dict[Channel, Sender] = {}
    senders[Channel.email] = (
        SmtpSender.from_settings(settings) if settings.notify_email_via == "smtp" else via_notify(Channel.email)
    )
    if notify is not None and settings.govuk_notify_sms_template_id:
        senders[Channel.sms] = via_notify(Channel.sms)
    queue = LetterQueue(pool)
    senders[Channel.letter] = (
        queue if settings.notify_letters_via == "queue" else LargePrintToQueue(via_notify(Channel.letter), queue)
    )
    return senders
