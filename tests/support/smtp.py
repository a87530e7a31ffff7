"""A real SMTP server for the tests (aiosmtpd), started and stopped in one place, and what the tests share about it."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from services.runtime.devstack import free_port

# Quiet hours that never close: the clock is real, and a test run at 22:00 must not wait for morning.
ALWAYS_OPEN = "mon-sun 00:00-24:00; hol 00:00-24:00"


class Inbox:
    """An SMTP server's handler keeping every message it accepted, and when (one list, appended to at once on
    aiosmtpd's thread: a reader never sees a message without its time)."""

    def __init__(self) -> None:
        self.timed: list[tuple[datetime, EmailMessage]] = []

    @property
    def received(self) -> list[EmailMessage]:
        return [m for _, m in list(self.timed)]

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        self.take(envelope)
        return "250 OK queued"

    def take(self, envelope: Any) -> EmailMessage:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.timed.append((datetime.now(UTC), message))
        return message

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.received if m["To"].addresses[0].addr_spec.lower() == address.lower()]


@contextmanager
def smtp_server(handler: Any, port: int | None = None, **options: Any) -> Iterator[int]:
    """Run an SMTP server on 127.0.0.1 with ``handler`` (and aiosmtpd's ``options``: TLS, logins), yielding its
    port; ``port`` starts it again where an earlier one ran."""
    port = port or free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()
