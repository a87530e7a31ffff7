"""Facts the notify service publishes on ``rj.notify`` (subject and key: the case id), and its one command.

A notification is one message to one person (a participant or a member of staff) on one channel. Its id
(``notification_id``, a UUID) is derived from the event that caused it, the kind, the recipient and the attempt
(``services.notify.domain.notification_id``): a replay decides the same id, the send is keyed by it (GOV.UK
Notify's ``reference``, the SMTP ``Message-ID``), and it is never sent twice. Its life, told by these facts:

``scheduled`` (due now or at the next moment the recipient's quiet hours allow) -> ``sent`` | ``failed`` (with
the next channel tried, if any) | ``uncertain`` (the provider may or may not have it: never sent again, the
facilitator is told) | ``cancelled`` (a withdrawal, hold, cancellation or erasure came first).

No fact carries what a message said or where it went (no content, no address): those are personal data opened
only to send. Who it went to (``recipient_id``) is sealed under the case's key: with the kind, it can tell who
withdrew (``withdrawal_confirmed`` goes to them), which other participants must never learn (DOMAIN rule 2).

``rj.notify.set-preferences`` records how a person wants to be written to (language, format, their own quiet
hours): personal data (needs such as easy read say something about a person), sealed under their key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import time
from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import AfterValidator, AwareDatetime, Field

from schemas.commands import Command
from schemas.common import Actor, Channel
from schemas.envelope import EventData
from schemas.pii import CasePii, Pii

SYSTEM_NOTIFY = Actor(kind="system", id="notify-service")


class NotificationKind(StrEnum):
    """What a message is about (the templates' ``MessageKind``, value for value)."""

    victim_information = "victim_information"
    facilitator_assigned = "facilitator_assigned"
    facilitator_withdrawal = "facilitator_withdrawal"
    facilitator_hold = "facilitator_hold"
    facilitator_delivery_problem = "facilitator_delivery_problem"
    meeting_booked = "meeting_booked"
    meeting_rescheduled = "meeting_rescheduled"
    meeting_cancelled = "meeting_cancelled"
    meeting_reminder = "meeting_reminder"
    item_reminder = "item_reminder"
    item_unmet = "item_unmet"
    indirect_item = "indirect_item"
    process_stopped = "process_stopped"
    withdrawal_confirmed = "withdrawal_confirmed"
    closure = "closure"
    survey_invitation = "survey_invitation"


class RecipientKind(StrEnum):
    participant = "participant"
    staff = "staff"


class MessageLanguage(StrEnum):
    en = "en"
    cy = "cy"  # Welsh (Welsh Language Standards)


class MessageFormat(StrEnum):
    standard = "standard"
    easy_read = "easy_read"
    large_print = "large_print"


class CancelReason(StrEnum):
    withdrawn = "withdrawn"  # a withdrawal or decline (command or fact) stopped the case
    held = "held"  # a safeguarding hold
    meeting_cancelled = "meeting_cancelled"  # the meeting it was about was cancelled
    superseded = "superseded"  # a newer message replaces it (a rescheduled meeting's reminder)
    erased = "erased"  # its recipient was erased: nothing left to send with
    case_closed = "case_closed"  # the case closed before it was due (all but the closure and the survey)
    item_done = "item_done"  # the agreement item it reminds of was completed


class FailureReason(StrEnum):
    no_safe_channel = "no_safe_channel"  # no channel the safe-contact record allows has an address
    rejected = "rejected"  # the provider or server refused it for good (bad address, 5xx)
    gave_up = "gave_up"  # temporary failures went on past the retry limit
    no_address = "no_address"  # the channel chosen has no address on record any more (rectified, erased)
    not_composed = "not_composed"  # the message could not be put into words (a fault): never sent, staff told


# --- quiet hours: the compact form settings and preferences use --------------------------------

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
BANK_HOLIDAY = "hol"
_WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")


@dataclass(frozen=True)
class OpeningHours:
    """When messages may go, in Europe/London local time: for each weekday (0 Monday) the windows ``(start,
    end)`` it has, and the windows of a bank holiday (England and Wales) whatever weekday it falls on. A day not
    listed has none. ``end`` of ``time(0)`` means midnight at the end of the day."""

    weekdays: tuple[tuple[tuple[time, time], ...], ...]
    bank_holidays: tuple[tuple[time, time], ...] = ()


def parse_opening_hours(text: str) -> OpeningHours:
    """``"mon-fri 08:00-20:00; sat 09:00-17:00"``: entries split by ``;``, each days (``mon``, ``mon-fri``,
    ``mon,wed``; ``hol`` for bank holidays) then windows split by ``,``. Days not named have no window: no
    message goes on them. Raises ``ValueError`` saying what is wrong."""
    days: list[list[tuple[time, time]]] = [[] for _ in DAYS]
    holidays: list[tuple[time, time]] = []
    entries = [e.strip() for e in text.strip().lower().split(";") if e.strip()]
    if not entries:
        raise ValueError("quiet hours: no opening hours given")
    for entry in entries:
        head, _, rest = entry.partition(" ")
        windows = [_window(w.strip()) for w in rest.split(",") if w.strip()]
        if not windows:
            raise ValueError(f"quiet hours: {entry!r} names days but no hours")
        for day in _days(head):
            target = holidays if day == BANK_HOLIDAY else days[DAYS.index(day)]
            target.extend(windows)
    return OpeningHours(tuple(tuple(sorted(d)) for d in days), tuple(sorted(holidays)))


def _days(text: str) -> list[str]:
    out: list[str] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        if first == BANK_HOLIDAY and not last:
            out.append(BANK_HOLIDAY)
            continue
        if first not in DAYS or (last and last not in DAYS):
            raise ValueError(f"quiet hours: {part!r} is not a day or a range of days (mon..sun, hol)")
        start, end = DAYS.index(first), DAYS.index(last or first)
        if end < start:
            raise ValueError(f"quiet hours: {part!r} runs backwards")
        out.extend(DAYS[start : end + 1])
    return out


def _window(text: str) -> tuple[time, time]:
    match = _WINDOW.match(text)
    if match is None:
        raise ValueError(f"quiet hours: {text!r} is not a window such as 08:00-20:00")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h2 == 24 and m2 != 0:
        raise ValueError(f"quiet hours: {text!r} ends after midnight")
    start, end = time(h1, m1), time(0) if h2 == 24 else time(h2, m2)
    if end != time(0) and end <= start:
        raise ValueError(f"quiet hours: {text!r} ends before it starts")
    return start, end


def _valid_opening_hours(text: str) -> str:
    parse_opening_hours(text)
    return text


OpeningHoursText = Annotated[
    str,
    Field(min_length=1, max_length=400, examples=["mon-fri 08:00-20:00; sat 09:00-17:00"]),
    AfterValidator(_valid_opening_hours),
]


# --- the command ------------------------------------------------------------------------------


class SetNotifyPreferences(Command):
    """How a person wants to be written to: language, format, and quiet hours of their own (none: the
    service's). Staff record it, having asked the person. Each value is the person's own data, sealed."""

    event_type: ClassVar[str] = "rj.notify.set-preferences"

    person_id: str = Field(min_length=1, max_length=200)
    language: Annotated[MessageLanguage, Pii] = MessageLanguage.en
    format: Annotated[MessageFormat, Pii] = MessageFormat.standard
    quiet_hours: Annotated[OpeningHoursText | None, Pii] = Field(
        default=None, description="When messages may reach them, e.g. 'mon-fri 10:00-16:00'; none: the default"
    )


class NotifyPreferencesRecorded(EventData):
    event_type: ClassVar[str] = "rj.notify.preferences-recorded"

    case_id: str
    person_id: str
    language: Annotated[MessageLanguage, Pii]
    format: Annotated[MessageFormat, Pii]
    quiet_hours: Annotated[str | None, Pii] = None
    recorded_at: AwareDatetime
    recorded_by: Actor
    command_id: str | None = None


# --- the facts about notifications ---------------------------------------------------------------


class _Notification(EventData):
    case_id: str
    notification_id: str = Field(description="Our id of the message: the dedupe key and the provider's reference")
    recipient_id: Annotated[str, CasePii] = Field(
        description="A person id or a facilitator id: sealed under the case's key (with the kind, it can say who "
        "withdrew)"
    )
    recipient_kind: RecipientKind
    kind: NotificationKind
    channel: Channel | None = Field(description="The channel chosen; none when no channel was safe")


class NotificationScheduled(_Notification):
    """A message decided: due at ``due_at`` (now, or the next moment quiet hours allow)."""

    event_type: ClassVar[str] = "rj.notification.scheduled"

    due_at: AwareDatetime
    urgent: bool = Field(description="Goes at once, quiet hours or not (a facilitator told of a withdrawal)")
    cause_event_id: str = Field(description="The event it was decided on")
    scheduled_at: AwareDatetime
    decided_by: Actor


class NotificationSent(_Notification):
    event_type: ClassVar[str] = "rj.notification.sent"

    provider_id: str | None = Field(description="The provider's id of it (Notify's id, the Message-ID, the letter)")
    attempt: int = Field(ge=1)
    sent_at: AwareDatetime
    decided_by: Actor


class NotificationFailed(_Notification):
    event_type: ClassVar[str] = "rj.notification.failed"

    reason_code: FailureReason
    permanent: bool
    next_channel: Channel | None = Field(description="The channel tried next (its own scheduled fact follows)")
    attempt: int = Field(ge=0)
    failed_at: AwareDatetime
    decided_by: Actor


class NotificationUncertain(_Notification):
    """The send may or may not have reached the provider (a crash or a lost connection after it started) and
    the provider cannot be asked (SMTP): it is never sent again, and the facilitator is told."""

    event_type: ClassVar[str] = "rj.notification.uncertain"

    attempt: int = Field(ge=1)
    found_at: AwareDatetime
    decided_by: Actor


class NotificationCancelled(_Notification):
    event_type: ClassVar[str] = "rj.notification.cancelled"

    reason_code: CancelReason
    cancelled_at: AwareDatetime
    decided_by: Actor


NOTIFY_EVENTS: tuple[type[EventData], ...] = (
    NotifyPreferencesRecorded,
    NotificationScheduled,
    NotificationSent,
    NotificationFailed,
    NotificationUncertain,
    NotificationCancelled,
)

NOTIFY_COMMANDS: tuple[type[EventData], ...] = (SetNotifyPreferences,)
