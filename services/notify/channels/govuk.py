"""GOV.UK Notify, which public services in England and Wales use for email, SMS and letters, through its
official client (``notifications-python-client``, synchronous: each call runs in a worker thread).

Our notification id, as its outside reference (an HMAC of it: ``reference``), is Notify's ``reference``: after
a crash between sending and recording, ``lookup`` asks Notify for the notifications under it, and the service
sends again only if Notify never saw it. Each channel uses one generic template the force sets up once
(content ``((subject))``/``((body))``; SMS ``((body))``), so our own templates stay the one place a message's
words live.

What a failure means (``classify``):
- 429 (rate limit: 3,000 requests a minute per key): temporary, with Notify's ``Retry-After`` (else
  ``GOVUK_NOTIFY_RETRY_AFTER_S``); every send of this process then waits that long: hammering a limit only
  extends it. A client-side token bucket (``GOVUK_NOTIFY_RATE_PER_S``) keeps us under it in the first place;
- any other 4xx (400 a bad number or address, a team key's recipient; 403 a refused key): permanent;
- 5xx, a connection lost or a timeout once the request was sent, or an answer we cannot read: uncertain
  (Notify may have created it; ``lookup`` by reference settles it before any retry);
- no connection made at all (refused, unresolvable, connect timeout): temporary, nothing reached Notify.
Details name the status and Notify's error class, never its message (which may quote the recipient).
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import requests
import structlog
from notifications_python_client import NotificationsAPIClient
from notifications_python_client.errors import APIError
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from schemas.common import Channel
from services.notify.channels import (
    ChannelConfigError,
    LookupFailed,
    Outbound,
    Outcome,
    Sender,
    SendResult,
    postal_lines,
)
from services.notify.channels.reference import References
from services.runtime.settings import Settings

log = structlog.get_logger()
# The client logs each failed request with Notify's message, which may quote what was sent; ours says what
# happened without it (``govuk_notify_not_sent``).
logging.getLogger("notifications_python_client").setLevel(logging.ERROR)

T = TypeVar("T")

_UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_API_KEY = re.compile(rf".+-({_UUID})-({_UUID})", re.IGNORECASE)

_SENT = frozenset({"created", "sending", "pending", "sent", "delivered", "accepted", "received", "pending-virus-check"})
_PERMANENT = frozenset({"permanent-failure", "validation-failed", "virus-scan-failed", "cancelled"})
"""Notify's statuses (email, SMS, letters): still on its way or delivered; never going to be (or stopped by
someone in Notify itself: not ours to resend). The rest (``temporary-failure``, ``technical-failure``) did
not go and may be tried again."""


class TokenBucket:
    """At most ``rate_per_s`` acquisitions a second on average, bursts up to ``burst``; ``hold`` stops every
    acquisition until a moment (after a 429). Waiters are served in turn."""

    def __init__(
        self,
        rate_per_s: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rate = rate_per_s
        self.burst = burst if burst is not None else max(1.0, rate_per_s)
        self.clock = clock
        self.sleep = sleep
        self.tokens = self.burst
        self.updated = clock()
        self.held_until = 0.0
        self._lock: asyncio.Lock | None = None

    def hold(self, seconds: float) -> None:
        self.held_until = max(self.held_until, self.clock() + seconds)

    async def acquire(self) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            while True:
                now = self.clock()
                self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
                self.updated = now
                if now < self.held_until:
                    await self.sleep(self.held_until - now)
                elif self.tokens >= 1 - 1e-9:  # a float's rounding must not make a waiter sleep 0 s for ever
                    self.tokens = max(0.0, self.tokens - 1)
                    return
                else:
                    await self.sleep((1 - self.tokens) / self.rate)


@dataclass
class GovukNotify:
    """One Notify service (its API key), shared by the channels that use it: one rate limit between them."""

    api_key: str = field(repr=False)
    base_url: str
    timeout_s: float = 20.0
    retry_after_s: float = 60.0
    limiter: TokenBucket = field(default_factory=lambda: TokenBucket(40.0))
    _clients: threading.local = field(default_factory=threading.local, init=False, repr=False)

    def __post_init__(self) -> None:
        if not _API_KEY.fullmatch(self.api_key):
            raise ChannelConfigError("GOVUK_NOTIFY_API_KEY is not a Notify API key ({name}-{service id}-{secret})")

    @classmethod
    def from_settings(cls, settings: Settings) -> GovukNotify:
        return cls(
            api_key=settings.govuk_notify_api_key.get_secret_value(),
            base_url=settings.govuk_notify_base_url,
            timeout_s=settings.govuk_notify_timeout_s,
            retry_after_s=settings.govuk_notify_retry_after_s,
            limiter=TokenBucket(settings.govuk_notify_rate_per_s),
        )

    def client(self) -> NotificationsAPIClient:
        """This thread's client (the client keeps a ``requests`` session and is not thread-safe)."""
        client: NotificationsAPIClient | None = getattr(self._clients, "client", None)
        if client is None:
            client = self._clients.client = NotificationsAPIClient(
                self.api_key, base_url=self.base_url, timeout=self.timeout_s
            )
        return client

    async def call(self, request: Callable[[NotificationsAPIClient], T]) -> T:
        """``request`` made with a client in a worker thread, once the rate limit allows; a 429 holds every
        later call for its Retry-After."""
        await self.limiter.acquire()
        try:
            return await asyncio.to_thread(lambda: request(self.client()))
        except APIError as exc:
            if _status(exc) == 429:
                self.limiter.hold(self.retry_after(exc))
            raise

    def retry_after(self, exc: APIError) -> float:
        header = exc.response.headers.get("Retry-After") if exc.response is not None else None
        try:
            return max(0.0, float(header)) if header is not None else self.retry_after_s
        except ValueError:  # an HTTP date: rare enough to wait the default
            return self.retry_after_s


@dataclass
class GovukNotifySender:
    """Sends one channel (email, SMS or letters) through Notify's generic template for it."""

    notify: GovukNotify
    channel: Channel
    template_id: str
    references: References = field(repr=False)

    def __post_init__(self) -> None:
        if self.channel not in (Channel.email, Channel.sms, Channel.letter):
            raise ChannelConfigError(f"GOV.UK Notify does not send {self.channel}")
        if not self.template_id:
            raise ChannelConfigError(f"{self.channel} via GOV.UK Notify needs GOVUK_NOTIFY_{self.channel.upper()}"
                                     "_TEMPLATE_ID")  # fmt: skip

    @classmethod
    def from_settings(cls, notify: GovukNotify, channel: Channel, settings: Settings) -> GovukNotifySender:
        template = {
            Channel.email: settings.govuk_notify_email_template_id,
            Channel.sms: settings.govuk_notify_sms_template_id,
            Channel.letter: settings.govuk_notify_letter_template_id,
        }.get(channel, "")
        return cls(notify, channel, template, References.from_settings(settings))

    def request(self, message: Outbound) -> Callable[[NotificationsAPIClient], Any]:
        """The client call that sends ``message``. Raises ``ValueError`` for a letter address Notify would
        refuse by its shape (it takes 3 to 7 lines, the name included)."""
        rendered, reference = message.rendered, self.references.of(message.notification_id)
        if self.channel is Channel.email:
            body = {"subject": rendered.subject, "body": rendered.text}
            return lambda c: c.send_email_notification(message.to, self.template_id, body, reference=reference)
        if self.channel is Channel.sms:
            return lambda c: c.send_sms_notification(message.to, self.template_id, {"body": rendered.sms},
                                                     reference=reference)  # fmt: skip
        lines = postal_lines(message)
        personalisation = {f"address_line_{i}": line for i, line in enumerate(lines, 1)}
        personalisation |= {"subject": rendered.subject, "body": rendered.text}
        return lambda c: c.send_letter_notification(self.template_id, personalisation, reference=reference)

    async def send(self, message: Outbound) -> SendResult:
        if message.channel is not self.channel:
            raise ValueError(f"this Notify sender sends {self.channel}, not {message.channel}")
        try:
            request = self.request(message)
        except ValueError as exc:
            return SendResult(Outcome.permanent_failure, detail=str(exc))
        try:
            answer = await self.notify.call(request)
        except APIError as exc:
            result = classify(exc, self.notify)
            log.warning("govuk_notify_not_sent", notification_id=message.notification_id, channel=self.channel,
                        outcome=result.outcome, detail=result.detail)  # fmt: skip
            return result
        provider_id = answer.get("id") if isinstance(answer, dict) else None
        if not isinstance(provider_id, str):
            return SendResult(Outcome.uncertain, detail="notify answered without a notification id")
        return SendResult(Outcome.sent, provider_id=provider_id)

    def _notifications_under(self, client: NotificationsAPIClient, reference: str) -> Any:
        return client.get_all_notifications(template_type=self.channel.value, reference=reference)

    async def lookup(self, notification_id: str) -> SendResult | None:
        """What Notify holds under this reference for this channel: None if nothing. Raises ``LookupFailed``
        when Notify cannot be asked now."""
        found = []
        for reference in self.references.every(notification_id):  # one a key, while keys are rotated
            try:
                answer = await self.notify.call(partial(self._notifications_under, reference=reference))
            except APIError as exc:
                raise LookupFailed(f"notify lookup failed: {classify(exc, self.notify).detail}") from None
            found += [n for n in (answer or {}).get("notifications", []) if n.get("reference") == reference]
        if not found:
            return None
        for notification in found:
            status = notification.get("status")
            if status in _SENT:
                return SendResult(Outcome.sent, provider_id=notification.get("id"), detail=f"notify {status}")
        last = found[0]
        permanent = any(n.get("status") in _PERMANENT for n in found)
        return SendResult(
            Outcome.permanent_failure if permanent else Outcome.temporary_failure,
            provider_id=last.get("id"),
            detail=f"notify {last.get('status')}",
        )


def classify(exc: APIError, notify: GovukNotify) -> SendResult:
    """A failed call as an outcome (see the module's docstring)."""
    status = _status(exc)
    if status is None:
        if _never_connected(exc):
            return SendResult(Outcome.temporary_failure, detail="notify unreachable: no connection made")
        return SendResult(Outcome.uncertain, detail="notify connection lost after the request was sent")
    what = f"notify {status}{_error_names(exc)}"
    if status == 429:
        return SendResult(Outcome.temporary_failure, detail=what, retry_after_s=notify.retry_after(exc))
    if 400 <= status < 500:
        return SendResult(Outcome.permanent_failure, detail=what)
    return SendResult(Outcome.uncertain, detail=what)  # a 5xx, or a 2xx we could not read


def _status(exc: APIError) -> int | None:
    """The HTTP status Notify answered with, or None when no answer came (the client then says 503)."""
    return exc.response.status_code if exc.response is not None else None


def _error_names(exc: APIError) -> str:
    """Notify's error classes (``ValidationError``, ``RateLimitError``...): never the messages."""
    try:
        errors = exc.response.json().get("errors", []) if exc.response is not None else []
        names = sorted({str(e["error"]) for e in errors if isinstance(e, dict) and "error" in e})
    except (ValueError, AttributeError, TypeError):
        return ""
    return f" ({', '.join(names)})" if names else ""


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and everything it wraps: causes, contexts, exceptions among its args, a retry error's reason."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        wrapped = [e.__cause__, e.__context__, getattr(e, "reason", None), *e.args]
        todo.extend(w for w in wrapped if isinstance(w, BaseException))


def _never_connected(exc: APIError) -> bool:
    """Whether the request failed before a connection was made (so nothing reached Notify)."""
    return any(
        isinstance(e, NewConnectionError | ConnectTimeoutError | requests.exceptions.ConnectTimeout)
        for e in _causes(exc)
    )


@dataclass
class LargePrintToQueue:
    """Letters through Notify, except large print ones, which Notify cannot print (its letters come in its own
    type size): those go to the letter queue, printed here at the size the person needs."""

    notify: GovukNotifySender
    queue: Sender
    channel: Channel = Channel.letter

    async def send(self, message: Outbound) -> SendResult:
        return await (self.queue if message.large_print else self.notify).send(message)

    async def lookup(self, notification_id: str) -> SendResult | None:
        queued = await self.queue.lookup(notification_id)
        return queued if queued is not None else await self.notify.lookup(notification_id)
