"""The scheduling service's state, and the guards every decision starts with.

Two kinds of state:
- ``CaseSchedule``, one per case: who takes part and who currently consents to take part, whether the
  consent service says the case is ready, availability, meetings, the agreement, the closure.
- ``ResourceBook``, shared by every case: registered facilitators and venues, and every booking of a
  resource by time interval. A resource is named by a key: ``facilitator:<id>``, ``venue:<id>``,
  ``person:<id>`` (see ``resources_touched`` for which keys a message needs).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Annotated

from schemas.commands import Command
from schemas.consent import (
    CaseParticipant,
)
from schemas.pii import Pii
from schemas.scheduling import (
    ClosureReason,
    ItemKind,
    MeetingKind,
    MeetingStatus,
    TimeWindow,
    VenueKind,
    VisitSlot,
    WeeklyHours,
)
from services.runtime.decision import Emit, JsonState, rejection

SERVICE = "scheduling"

# --- the resource calendar ----------------------------------------------------------------------


def facilitator_key(facilitator_id: str) -> str:
    return f"facilitator:{facilitator_id}"


def venue_key(venue_id: str) -> str:
    return f"venue:{venue_id}"


def person_key(person_id: str) -> str:
    return f"person:{person_id}"


@dataclass(frozen=True)
class FacilitatorProfile:
    facilitator_id: str
    specialist: bool
    working_hours: tuple[WeeklyHours, ...]
    timezone: str


@dataclass(frozen=True)
class VenueProfile:
    venue_id: str
    kind: VenueKind
    name: str
    visit_slots: tuple[VisitSlot, ...]
    timezone: str

    def slot(self, name: str) -> VisitSlot | None:
        return next((s for s in self.visit_slots if s.name == name), None)


@dataclass(frozen=True)
class Booking:
    """One resource held by one meeting over ``[starts_at, ends_at)``."""

    resource: str
    case_id: str
    meeting_id: str
    starts_at: datetime
    ends_at: datetime

    def overlaps(self, starts_at: datetime, ends_at: datetime) -> bool:
        return self.starts_at < ends_at and starts_at < self.ends_at


@dataclass(frozen=True)
class ResourceBook(JsonState):
    facilitators: tuple[FacilitatorProfile, ...] = ()
    venues: tuple[VenueProfile, ...] = ()
    bookings: tuple[Booking, ...] = ()

    def facilitator(self, facilitator_id: str) -> FacilitatorProfile | None:
        return next((f for f in self.facilitators if f.facilitator_id == facilitator_id), None)

    def venue(self, venue_id: str) -> VenueProfile | None:
        return next((v for v in self.venues if v.venue_id == venue_id), None)

    def clashes(self, resource: str, starts_at: datetime, ends_at: datetime, *, meeting: tuple[str, str]) -> bool:
        """Whether ``resource`` is held by another meeting (``meeting`` is ``(case_id, meeting_id)``) then."""
        return any(
            b.resource == resource and (b.case_id, b.meeting_id) != meeting and b.overlaps(starts_at, ends_at)
            for b in self.bookings
        )

    def hold(self, case_id: str, meeting: Meeting) -> ResourceBook:
        interval = (meeting.starts_at, meeting.ends_at)
        held = tuple(Booking(r, case_id, meeting.meeting_id, *interval) for r in meeting.resources)
        return replace(self, bookings=(*self.release(case_id, meeting.meeting_id).bookings, *held))

    def release(self, case_id: str, meeting_id: str, resources: Iterable[str] | None = None) -> ResourceBook:
        """Free what the meeting holds (only ``resources`` of it, when given)."""
        only = None if resources is None else set(resources)
        kept = tuple(
            b
            for b in self.bookings
            if (b.case_id, b.meeting_id) != (case_id, meeting_id) or (only is not None and b.resource not in only)
        )
        return replace(self, bookings=kept)


# --- one case -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Meeting:
    meeting_id: str
    kind: MeetingKind
    status: MeetingStatus
    starts_at: datetime
    ends_at: datetime
    lead_facilitator_id: str
    facilitator_ids: tuple[str, ...]
    venue_id: str | None
    visit_slot: str | None
    attendee_ids: tuple[str, ...]

    @property
    def resources(self) -> tuple[str, ...]:
        venue = (venue_key(self.venue_id),) if self.venue_id else ()
        return (
            *(facilitator_key(f) for f in self.facilitator_ids),
            *venue,
            *(person_key(p) for p in self.attendee_ids),
        )


@dataclass(frozen=True)
class Availability:
    person_id: str
    windows: Annotated[tuple[TimeWindow, ...], Pii]


@dataclass(frozen=True)
class AgreementItem:
    item_id: str
    kind: ItemKind
    owner_id: str
    due_date: date
    amount_pence: int | None = None
    paid_pence: int = 0
    completed_at: datetime | None = None


@dataclass(frozen=True)
class Agreement:
    meeting_id: str
    items: tuple[AgreementItem, ...]
    consented_by: tuple[str, ...]
    recorded_at: datetime

    def item(self, item_id: str) -> AgreementItem | None:
        return next((i for i in self.items if i.item_id == item_id), None)


@dataclass(frozen=True)
class CaseClosure:
    reason: ClosureReason
    closed_at: datetime
    withdrawn_by: Annotated[str | None, Pii] = None  # for staff and audit only, never in a fact (DOMAIN rule 2)


@dataclass(frozen=True)
class CaseSchedule(JsonState):
    case_id: str
    participants: tuple[CaseParticipant, ...] = ()
    specialist_required: bool = False
    facilitator_ids: frozenset[str] = frozenset()  # assigned to the case by the consent service, as we heard
    consenting: frozenset[str] = frozenset()  # people whose participation consent is current, as we heard
    ready: bool = False  # as the consent service last said
    availability: tuple[Availability, ...] = ()
    meetings: tuple[Meeting, ...] = ()
    agreement: Agreement | None = None
    closure: CaseClosure | None = None

    def participant(self, person_id: str) -> CaseParticipant | None:
        return next((p for p in self.participants if p.person_id == person_id), None)

    def meeting(self, meeting_id: str) -> Meeting | None:
        return next((m for m in self.meetings if m.meeting_id == meeting_id), None)

    def with_meeting(self, meeting: Meeting) -> CaseSchedule:
        others = tuple(m for m in self.meetings if m.meeting_id != meeting.meeting_id)
        return replace(self, meetings=(*others, meeting))

    @property
    def pending(self) -> tuple[Meeting, ...]:
        return tuple(m for m in self.meetings if m.status is MeetingStatus.booked)

    @property
    def in_custody(self) -> bool:
        return any(p.in_custody for p in self.participants)

    def windows_of(self, person_id: str) -> tuple[TimeWindow, ...] | None:
        return next((a.windows for a in self.availability if a.person_id == person_id), None)


Outcome = tuple[CaseSchedule | None, ResourceBook, list[Emit]]


# --- guards -------------------------------------------------------------------------------------


def _refusal(case: CaseSchedule | None, command: Command) -> str | None:
    if case is None:
        return f"unknown case {command.case_id}"
    if case.closure is not None:
        return f"case is closed ({case.closure.reason})"
    return None


def _without_consent(case: CaseSchedule | None) -> str | None:
    """Rule 1: why nothing about a meeting may happen now, if so."""
    assert case is not None
    if not case.ready:
        return "case is not ready for a meeting: the consent service has not confirmed every required consent"
    missing = [p.person_id for p in case.participants if p.required and p.person_id not in case.consenting]
    if missing:
        return f"participation consent is not current for {', '.join(missing)}"
    return None


def _reject(
    case: CaseSchedule | None, book: ResourceBook, command: Command, command_id: str, now: datetime, reason: str
) -> Outcome:
    return case, book, [rejection(SERVICE, command, command_id, reason, now)]
