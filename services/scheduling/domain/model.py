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
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Annotated

from schemas.commands import Command
from schemas.consent import (
    PARTICIPATION,
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
from services.runtime.calendar import LONDON
from services.runtime.decision import Emit, JsonState, rejection
from services.scheduling.domain.indirect_state import IndirectRJ

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
    due_soon_flagged_at: datetime | None = None  # when ``rj.agreement-item.due-soon`` was emitted (once)
    overdue_flagged_at: datetime | None = None  # when ``rj.agreement-item.overdue`` was emitted (once)

    def is_overdue(self, today: date) -> bool:
        """Its due date has passed (``today`` is the UK's day: ``local_day``) and it is not completed."""
        return self.completed_at is None and self.due_date < today


@dataclass(frozen=True)
class Agreement:
    meeting_id: str
    items: tuple[AgreementItem, ...]
    consented_by: tuple[str, ...]
    recorded_at: datetime

    def item(self, item_id: str) -> AgreementItem | None:
        return next((i for i in self.items if i.item_id == item_id), None)

    def overdue_item_ids(self, today: date) -> list[str]:
        return [i.item_id for i in self.items if i.is_overdue(today)]


@dataclass(frozen=True)
class CaseClosure:
    reason: ClosureReason
    closed_at: datetime
    withdrawn_by: Annotated[str | None, Pii] = None  # for staff and audit only, never in a fact (DOMAIN rule 2)


@dataclass(frozen=True)
class Unanswered:
    """A person's contact attempts since they were last reached, as the consent service's latest
    ``rj.contact.attempt-recorded`` for them said."""

    person_id: str
    in_a_row: int


@dataclass(frozen=True)
class Policy:
    """The settings scheduling's decisions depend on (``services.runtime.settings``), passed in by the app."""

    uncontactable_after_attempts: int = 3
    item_due_soon_working_days: int = 3


DEFAULT_POLICY = Policy()


@dataclass(frozen=True)
class PendingStop:
    """A command that may stop the case or cost it its readiness, read from ``rj.commands`` in case order, whose
    verdict the consent service has not yet given: a withdrawal or decline of participation by a (possibly)
    required participant, a safeguarding hold, a risk re-assessment that finds the case unsafe, or the addition of
    a parent or guardian (required). While any is pending nothing about a meeting goes ahead."""

    command_id: str
    kind: str  # "withdrawal" | "hold" | "assessment" | "participant"
    person_id: Annotated[str | None, Pii] = None  # who withdrew: staff-only, like ``CaseClosure.withdrawn_by``


@dataclass(frozen=True)
class CaseSchedule(JsonState):
    case_id: str
    force: str | None = None  # whose case it is: every fact about it carries this (``schemas.referral``)
    participants: tuple[CaseParticipant, ...] = ()
    specialist_required: bool = False
    facilitator_ids: frozenset[str] = frozenset()  # assigned to the case by the consent service, as we heard
    consenting: frozenset[str] = frozenset()  # people whose participation consent is current, as we heard
    ready: bool = False  # as the consent service last said
    availability: tuple[Availability, ...] = ()
    meetings: tuple[Meeting, ...] = ()
    indirect: IndirectRJ = field(default_factory=IndirectRJ)  # indirect RJ: contact form, agreements, items
    agreement: Agreement | None = None
    closure: CaseClosure | None = None
    stops_pending: tuple[PendingStop, ...] = ()  # read from rj.commands, awaiting the consent service's verdict
    # Participation withdrawals or declines by participants who cannot stop the case (not required), read from
    # rj.commands and awaiting the verdict: only their own indirect items wait (``indirect.release_refusal``).
    persons_pending: tuple[PendingStop, ...] = ()
    answered: tuple[str, ...] = ()  # verdicts that came before we read their command (the latest few)
    held: bool = False  # on safeguarding hold, as the consent service last said
    unanswered: tuple[Unanswered, ...] = ()  # contact attempts per person, as the consent service last said

    @property
    def skeleton(self) -> bool:
        """Known only from facts about it that overtook the case itself (a consent, an attempt to contact): it
        cannot be closed (``close_case``) until the referral's ``rj.case.accepted`` or the readiness fact says who
        takes part; other commands find it not ready, with no one on it."""
        return self.force is None and not self.participants

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

    @property
    def follow_up_paused(self) -> bool:
        """Whether agreement follow-up facts wait: on hold, a withdrawal or hold awaiting its verdict, or closed."""
        return self.closure is not None or self.held or bool(self.stops_pending)

    def person_pending(self, person_id: str) -> bool:
        """Whether a withdrawal or decline of ``person_id``'s participation awaits the consent service's verdict."""
        return any(s.person_id == person_id for s in (*self.stops_pending, *self.persons_pending))

    def unanswered_in_a_row(self, person_id: str) -> int:
        return next((u.in_a_row for u in self.unanswered if u.person_id == person_id), 0)

    def heard_from(self, person_id: str) -> CaseSchedule:
        """The person acted on the case themself (a consent decision through them, a preparation meeting with
        them): evidently contactable, so their count of unanswered attempts starts again. The consent service
        resets its log on the same facts, so its next ``rj.contact.attempt-recorded`` agrees."""
        if self.unanswered_in_a_row(person_id) == 0:
            return self
        reset = Unanswered(person_id, 0)
        return replace(self, unanswered=tuple(reset if u.person_id == person_id else u for u in self.unanswered))

    def windows_of(self, person_id: str) -> tuple[TimeWindow, ...] | None:
        return next((a.windows for a in self.availability if a.person_id == person_id), None)


Outcome = tuple[CaseSchedule | None, ResourceBook, list[Emit]]


def local_day(moment: datetime) -> date:
    """The day ``moment`` falls on in the UK, which is what agreement items' due dates mean."""
    return moment.astimezone(LONDON).date()


# --- guards -------------------------------------------------------------------------------------


ANSWERED_KEPT = 1024
"""How many verdicts that overtook their command a case remembers until it reads the command. A verdict overtakes
its command only while this service lags on ``rj.commands``; the few that never meet a pending command (a
rejected sharing withdrawal, say) are forgotten oldest first. A case would be held pending for ever only if more
than this many rejected withdrawals of it overtook their commands at once (a flood from a hostile client while
this service lags); the cost of the bound is one id each."""


def could_stop(case: CaseSchedule, purpose: str, person_id: str) -> bool:
    """Whether a withdrawal or decline of ``purpose`` by ``person_id`` can stop the case: participation, by a
    required participant, or by anyone we do not know as a participant yet. The consent service may know them
    already: the case's participants may not have reached us, or staff added a parent or guardian (required)
    whose ``rj.participant.added`` is still on its way while their withdrawal, sent after it, is here."""
    if purpose != PARTICIPATION:
        return False
    participant = case.participant(person_id)
    return participant is None or participant.required


def follow(case: CaseSchedule, stop: PendingStop, *, person_only: bool = False) -> CaseSchedule:
    """A command that may stop the case, read in case order: pending until its verdict, unless that came first.
    ``person_only``: a withdrawal that cannot stop the case, which holds back only that person's indirect items."""
    if stop.command_id in case.answered:
        return passed_over(case, stop.command_id)  # its verdict is in: nothing to wait for
    if person_only:
        return replace(case, persons_pending=(*case.persons_pending, stop))
    return replace(case, stops_pending=(*case.stops_pending, stop))


def answer(case: CaseSchedule, command_id: str | None, *, could_be_pending: bool = True) -> CaseSchedule:
    """The consent service's verdict on a command we follow: it is no longer pending. If we have not read the
    command yet, remember the verdict for when we do."""
    if command_id is None:
        return case
    remaining = tuple(s for s in case.stops_pending if s.command_id != command_id)
    if remaining != case.stops_pending:
        return replace(case, stops_pending=remaining)
    persons = tuple(s for s in case.persons_pending if s.command_id != command_id)
    if persons != case.persons_pending:
        return replace(case, persons_pending=persons)
    if not could_be_pending or command_id in case.answered:
        return case
    return replace(case, answered=(*case.answered, command_id)[-ANSWERED_KEPT:])


def passed_over(case: CaseSchedule, command_id: str) -> CaseSchedule:
    """A followed command that cannot stop the case: forget any verdict on it that came first."""
    if command_id not in case.answered:
        return case
    return replace(case, answered=tuple(a for a in case.answered if a != command_id))


def without_stops_that_cannot_stop(case: CaseSchedule) -> CaseSchedule:
    """Once we know someone as a participant who is not required, their pending withdrawal stops nothing: it
    holds back only their own indirect items until its verdict."""
    kept = tuple(
        s
        for s in case.stops_pending
        if s.kind != "withdrawal" or s.person_id is None or could_stop(case, PARTICIPATION, s.person_id)
    )
    if kept == case.stops_pending:
        return case
    moved = tuple(s for s in case.stops_pending if s not in kept)
    return replace(case, stops_pending=kept, persons_pending=(*case.persons_pending, *moved))


def _refusal(case: CaseSchedule | None, command: Command, *, books_nothing: bool = False) -> str | None:
    """Why no command may act on the case now, if so. While a withdrawal or hold awaits the consent service's
    verdict, or the case is on hold, only what books and decides nothing (``books_nothing``: cancelling a
    meeting, recording availability) goes ahead."""
    if case is None:
        return f"unknown case {command.case_id}"
    if case.closure is not None:
        return f"case is closed ({case.closure.reason})"
    if books_nothing:
        return None
    if case.held:
        return "the case is on hold for a safeguarding concern: nothing goes ahead until it is resumed"
    if any(stop.kind == "withdrawal" for stop in case.stops_pending):
        return "a withdrawal of consent on this case is awaiting the consent service's decision: nothing goes ahead"
    if any(stop.kind == "hold" for stop in case.stops_pending):
        return "a safeguarding hold on this case is awaiting the consent service's decision: nothing goes ahead"
    if any(stop.kind == "assessment" for stop in case.stops_pending):
        return "a risk re-assessment on this case is awaiting the consent service's decision: nothing goes ahead"
    if case.stops_pending:
        return "a parent or guardian added to this case is awaiting the consent service's decision: nothing goes ahead"
    return None


NOT_NOW = "this cannot be done now: your facilitator can tell you more"
"""The one answer a participant gets to a refused command they may send (indirect RJ, their availability), for any
reason but speaking for someone else: a precise reason could tell them whether a case or a person exists, who takes
part on the other side, another person's withdrawal, a hold, or whether something waits for them (DOMAIN rules 2
and 3). Staff get the precise reason."""

ONLY_THEMSELF = "a participant acts only for themself"
"""A participant's command naming someone else: checked first, before anything about the case, so it says the same
whoever the other is and whatever the case."""


def speaker_refusal(command: Command, person_id: str) -> str | None:
    """Why the command's actor may not act for ``person_id``, if so: a participant acts only for themself."""
    if command.actor.kind == "participant" and command.actor.id != person_id:
        return ONLY_THEMSELF
    return None


def for_actor(command: Command, refusal: str) -> str:
    """The refusal as its actor may read it: staff (and systems) the precise reason; a participant
    ``ONLY_THEMSELF`` when they spoke for someone else, else only ``NOT_NOW``."""
    if command.actor.kind != "participant" or refusal == ONLY_THEMSELF:
        return refusal
    return NOT_NOW


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
