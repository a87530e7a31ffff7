"""Scheduling decisions, pure: meetings on ready cases, the resource calendar, agreements, closure.

Two kinds of state:
- ``CaseSchedule``, one per case: who takes part and who currently consents to take part, whether the
  consent service says the case is ready, availability, meetings, the agreement, the closure.
- ``ResourceBook``, shared by every case: registered facilitators and venues, and every booking of a
  resource by time interval. A resource is named by a key: ``facilitator:<id>``, ``venue:<id>``,
  ``person:<id>`` (see ``resources_touched`` for which keys a message needs).

Every decision is ``(case, book, message) -> (new case, new book, [Emit])``. A command that is not
allowed changes nothing and emits one ``CommandRejected`` saying why.

Rule 1 (nothing about a meeting without the current consent of every required participant) is held
twice over: a meeting is proposed, booked, rescheduled or recorded only on a case the consent service
called ready, and only while this service has seen no later decline or withdrawal of participation by a
required participant. A withdrawal cancels every pending meeting at once, releases its bookings, and
closes the case; a booking that arrives afterwards finds the case closed and is rejected. A required
participant who declines after having consented has withdrawn: the case closes as ``withdrawn``. Who
withdrew is learnt from the staff-only consent facts and kept in the case's state for staff
(``CaseClosure.withdrawn_by``); the closure (``CaseClosed``) is participant-facing and never says it.

A meeting's facilitators (lead and co-facilitator) must be among those the consent service assigned to the
case (``CaseReadyForMeeting.facilitator_ids``, and ``FacilitatorAssigned`` for any assigned later).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from schemas.commands import Command
from schemas.common import Actor
from schemas.consent import (
    PARTICIPATION,
    CaseParticipant,
    CaseReadinessLost,
    CaseReadyForMeeting,
    CaseWithdrawalReason,
    CaseWithdrawn,
    ConsentDeclined,
    ConsentGiven,
    ConsentWithdrawn,
    FacilitatorAssigned,
)
from schemas.envelope import EventData
from schemas.pii import Pii
from schemas.referral import CaseAccepted
from schemas.scheduling import (
    CLOSABLE_BY_COMMAND,
    SYSTEM_SCHEDULING,
    AgreementItemCompleted,
    AgreementRecorded,
    AvailabilityRecorded,
    BookMeeting,
    CancellationReason,
    CancelMeeting,
    CaseClosed,
    CloseCase,
    ClosureReason,
    CompleteAgreementItem,
    FacilitatorRegistered,
    ItemKind,
    MeetingAttendeeRemoved,
    MeetingBooked,
    MeetingCancelled,
    MeetingHeld,
    MeetingKind,
    MeetingPlan,
    MeetingProposed,
    MeetingRescheduled,
    MeetingStatus,
    PaymentRecorded,
    ProposeMeeting,
    RecordAgreement,
    RecordAvailability,
    RecordMeetingHeld,
    RecordPayment,
    RegisterFacilitator,
    RegisterVenue,
    RegistrationCommand,
    RescheduleMeeting,
    TimeWindow,
    VenueKind,
    VenueRegistered,
    VisitSlot,
    WeeklyHours,
)
from services.runtime.decision import Emit, JsonState, rejection

SERVICE = "scheduling"

CLOCK_TOLERANCE = timedelta(minutes=5)
"""How far in the future a stated time (``held_at``) may lie: clocks differ a little."""


# --- the resource calendar ----------------------------------------------------------------------


def facilitator_key(facilitator_id: str) -> str:
    return f"facilitator:{facilitator_id}"


def venue_key(venue_id: str) -> str:
    return f"venue:{venue_id}"


def person_key(person_id: str) -> str:
    return f"person:{person_id}"


def _describe(resource: str) -> str:
    kind, _, name = resource.partition(":")
    return f"{'participant' if kind == 'person' else kind} {name}"


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


def _within_weekly(windows: Iterable[WeeklyHours], zone: str, starts_at: datetime, ends_at: datetime) -> bool:
    start, end = starts_at.astimezone(ZoneInfo(zone)), ends_at.astimezone(ZoneInfo(zone))
    return start.date() == end.date() and any(
        w.weekday == start.weekday() and w.start <= start.time() and end.time() <= w.end for w in windows
    )


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


# --- events from other services -----------------------------------------------------------------


def on_case_accepted(
    case: CaseSchedule | None, book: ResourceBook, event: CaseAccepted, *, command_id: str, now: datetime
) -> Outcome:
    """Learn who takes part; the case may already be known from consent facts that overtook this one."""
    case = case or CaseSchedule(case_id=event.case_id)
    if case.participants:
        return case, book, []
    participants = tuple(event.participants)
    return replace(case, participants=participants, specialist_required=event.specialist_required), book, []


def on_consent_given(
    case: CaseSchedule | None, book: ResourceBook, event: ConsentGiven, *, command_id: str, now: datetime
) -> Outcome:
    case = case or CaseSchedule(case_id=event.case_id)
    if event.purpose != PARTICIPATION or case.closure is not None:
        return case, book, []
    return replace(case, consenting=case.consenting | {event.person_id}), book, []


def on_consent_declined(
    case: CaseSchedule | None, book: ResourceBook, event: ConsentDeclined, *, command_id: str, now: datetime
) -> Outcome:
    """Declining after having consented to take part is a withdrawal; before that, a decline."""
    had_consented = case is not None and event.person_id in case.consenting
    reason = ClosureReason.withdrawn if had_consented else ClosureReason.declined
    return _participation_ended(case, book, event.case_id, event.purpose, event.person_id, reason, command_id, now)


def on_consent_withdrawn(
    case: CaseSchedule | None, book: ResourceBook, event: ConsentWithdrawn, *, command_id: str, now: datetime
) -> Outcome:
    reason = ClosureReason.withdrawn
    return _participation_ended(case, book, event.case_id, event.purpose, event.person_id, reason, command_id, now)


def on_facilitator_assigned(
    case: CaseSchedule | None, book: ResourceBook, event: FacilitatorAssigned, *, command_id: str, now: datetime
) -> Outcome:
    """The consent service assigned a facilitator to the case: they may now lead or co-facilitate its meetings."""
    case = case or CaseSchedule(case_id=event.case_id)
    return replace(case, facilitator_ids=case.facilitator_ids | {event.facilitator_id}), book, []


def on_case_ready(
    case: CaseSchedule | None, book: ResourceBook, event: CaseReadyForMeeting, *, command_id: str, now: datetime
) -> Outcome:
    case = case or CaseSchedule(case_id=event.case_id)
    if case.closure is not None:
        return case, book, []
    required = {p.person_id for p in event.participants if p.required}
    case = replace(
        case,
        participants=tuple(event.participants),
        specialist_required=event.specialist_required,
        facilitator_ids=case.facilitator_ids | set(event.facilitator_ids),
        consenting=case.consenting | required,
        ready=True,
    )
    return case, book, []


def on_readiness_lost(
    case: CaseSchedule | None, book: ResourceBook, event: CaseReadinessLost, *, command_id: str, now: datetime
) -> Outcome:
    """Not ready any more (unsafe on re-assessment): every pending meeting is called off, the case stays open."""
    case = case or CaseSchedule(case_id=event.case_id)
    if case.closure is not None:
        return case, book, []
    case, book, emits = _cancel_pending(case, book, CancellationReason.readiness_lost, SYSTEM_SCHEDULING, None, now)
    return replace(case, ready=False), book, emits


def on_case_withdrawn(
    case: CaseSchedule | None, book: ResourceBook, event: CaseWithdrawn, *, command_id: str, now: datetime
) -> Outcome:
    """The consent service's case-level fact. Its staff-only fact (who withdrew or declined) comes first on the
    case's partition and has already stopped the case; this one names no one, so should it ever come alone,
    the case still stops, without knowing who."""
    case = case or CaseSchedule(case_id=event.case_id)
    declined = event.reason is CaseWithdrawalReason.consent_declined
    reason = ClosureReason.declined if declined else ClosureReason.withdrawn
    return _stop(case, book, reason, None, now)


# --- registering resources ----------------------------------------------------------------------


def register_facilitator(
    book: ResourceBook, command: RegisterFacilitator, *, command_id: str, now: datetime
) -> tuple[ResourceBook, list[Emit]]:
    """Register or update a facilitator. Bookings already made stand."""
    profile = FacilitatorProfile(
        command.facilitator_id, command.specialist, tuple(command.working_hours), command.timezone
    )
    others = tuple(f for f in book.facilitators if f.facilitator_id != command.facilitator_id)
    fact = FacilitatorRegistered(
        facilitator_id=command.facilitator_id,
        specialist=command.specialist,
        working_hours=command.working_hours,
        timezone=command.timezone,
        registered_at=now,
        registered_by=command.actor,
    )
    return replace(book, facilitators=(*others, profile)), [Emit(fact, f"facilitator-registered:{command_id}")]


def register_venue(
    book: ResourceBook, command: RegisterVenue, *, command_id: str, now: datetime
) -> tuple[ResourceBook, list[Emit]]:
    """Register or update a venue (a prison with its named visit slots). Bookings already made stand."""
    profile = VenueProfile(command.venue_id, command.kind, command.name, tuple(command.visit_slots), command.timezone)
    others = tuple(v for v in book.venues if v.venue_id != command.venue_id)
    fact = VenueRegistered(
        venue_id=command.venue_id,
        kind=command.kind,
        name=command.name,
        visit_slots=command.visit_slots,
        timezone=command.timezone,
        registered_at=now,
        registered_by=command.actor,
    )
    return replace(book, venues=(*others, profile)), [Emit(fact, f"venue-registered:{command_id}")]


# --- case commands ------------------------------------------------------------------------------


def record_availability(
    case: CaseSchedule | None, book: ResourceBook, command: RecordAvailability, *, command_id: str, now: datetime
) -> Outcome:
    refusal = _refusal(case, command) or _not_a_participant(case, command.person_id)
    if refusal is not None:
        return _reject(case, book, command, command_id, now, refusal)
    assert case is not None
    others = tuple(a for a in case.availability if a.person_id != command.person_id)
    case = replace(case, availability=(*others, Availability(command.person_id, tuple(command.windows))))
    fact = AvailabilityRecorded(
        case_id=case.case_id,
        person_id=command.person_id,
        windows=command.windows,
        recorded_at=now,
        recorded_by=command.actor,
    )
    return case, book, [Emit(fact, f"availability-recorded:{command_id}")]


def propose_meeting(
    case: CaseSchedule | None, book: ResourceBook, command: ProposeMeeting, *, command_id: str, now: datetime
) -> Outcome:
    """Check a plan against every rule, as a booking would, and offer it; nothing is held."""
    planned = _plan(case, book, command, command, existing=None, now=now)
    if isinstance(planned, str):
        return _reject(case, book, command, command_id, now, planned)
    assert case is not None
    fact = MeetingProposed(**_plan_facts(case, planned), proposed_at=now, proposed_by=command.actor)
    return case, book, [Emit(fact, f"meeting-proposed:{command_id}")]


def book_meeting(
    case: CaseSchedule | None, book: ResourceBook, command: BookMeeting, *, command_id: str, now: datetime
) -> Outcome:
    planned = _plan(case, book, command, command, existing=None, now=now)
    if isinstance(planned, str):
        return _reject(case, book, command, command_id, now, planned)
    assert case is not None
    fact = MeetingBooked(**_plan_facts(case, planned), booked_at=now, booked_by=command.actor)
    return (
        case.with_meeting(planned),
        book.hold(case.case_id, planned),
        [Emit(fact, f"meeting-booked:{planned.meeting_id}")],
    )


def reschedule_meeting(
    case: CaseSchedule | None, book: ResourceBook, command: RescheduleMeeting, *, command_id: str, now: datetime
) -> Outcome:
    """Move a booked meeting (and perhaps its venue); attendees are re-derived from current consents."""
    existing = case.meeting(command.meeting_id) if case is not None else None
    refusal = _refusal(case, command) or _not_booked(existing, command.meeting_id)
    if refusal is not None:
        return _reject(case, book, command, command_id, now, refusal)
    assert case is not None and existing is not None
    plan = _Plan(
        meeting_id=existing.meeting_id,
        kind=existing.kind,
        starts_at=command.starts_at,
        ends_at=command.ends_at,
        lead_facilitator_id=existing.lead_facilitator_id,
        co_facilitator_id=next((f for f in existing.facilitator_ids if f != existing.lead_facilitator_id), None),
        venue_id=command.venue_id or existing.venue_id,
        visit_slot=command.visit_slot if command.venue_id or command.visit_slot else existing.visit_slot,
    )
    planned = _plan(case, book, command, plan, existing=existing, now=now)
    if isinstance(planned, str):
        return _reject(case, book, command, command_id, now, planned)
    fact = MeetingRescheduled(
        **_plan_facts(case, planned),
        previous_starts_at=existing.starts_at,
        previous_ends_at=existing.ends_at,
        rescheduled_at=now,
        rescheduled_by=command.actor,
        reason=command.reason,
    )
    return (
        case.with_meeting(planned),
        book.hold(case.case_id, planned),
        [Emit(fact, f"meeting-rescheduled:{command_id}")],
    )


def cancel_meeting(
    case: CaseSchedule | None, book: ResourceBook, command: CancelMeeting, *, command_id: str, now: datetime
) -> Outcome:
    """Cancelling stops something, so it needs no consent; it does need a reason."""
    existing = case.meeting(command.meeting_id) if case is not None else None
    refusal = _refusal(case, command) or _not_booked(existing, command.meeting_id)
    if refusal is None and not (command.reason or "").strip():
        refusal = "a cancellation needs a reason"
    if refusal is not None:
        return _reject(case, book, command, command_id, now, refusal)
    assert case is not None and existing is not None
    return _cancel(case, book, existing, CancellationReason.requested, command.actor, command.reason, now)


def record_meeting_held(
    case: CaseSchedule | None, book: ResourceBook, command: RecordMeetingHeld, *, command_id: str, now: datetime
) -> Outcome:
    """Record that a booked meeting took place: only once it has started, at a time between its start and now."""
    existing = case.meeting(command.meeting_id) if case is not None else None
    refusal = _refusal(case, command) or _without_consent(case) or _not_booked(existing, command.meeting_id)
    if refusal is None and existing is not None:
        starts = existing.starts_at.isoformat()
        if now < existing.starts_at:
            refusal = (
                f"meeting {existing.meeting_id} starts at {starts}: "
                f"it cannot be recorded as held before it starts (now is {now.isoformat()})"
            )
        elif command.held_at > now + CLOCK_TOLERANCE:
            refusal = f"held_at {command.held_at.isoformat()} is in the future (now is {now.isoformat()})"
        elif command.held_at < existing.starts_at:
            refusal = f"meeting {existing.meeting_id} starts at {starts}: not held before then"
    if refusal is not None:
        return _reject(case, book, command, command_id, now, refusal)
    assert case is not None and existing is not None
    fact = MeetingHeld(
        case_id=case.case_id,
        meeting_id=existing.meeting_id,
        kind=existing.kind,
        held_at=command.held_at,
        recorded_at=now,
        recorded_by=command.actor,
    )
    # The bookings stay: the resources were in use over that interval.
    case = case.with_meeting(replace(existing, status=MeetingStatus.held))
    return case, book, [Emit(fact, f"meeting-held:{existing.meeting_id}")]


def record_agreement(
    case: CaseSchedule | None, book: ResourceBook, command: RecordAgreement, *, command_id: str, now: datetime
) -> Outcome:
    """Saved only with every required participant's recorded consent to it."""
    refusal = _refusal(case, command) or _without_consent(case) or _agreement_refusal(case, command)
    if refusal is not None:
        return _reject(case, book, command, command_id, now, refusal)
    assert case is not None
    items = tuple(AgreementItem(i.item_id, i.kind, i.owner_id, i.due_date, i.amount_pence) for i in command.items)
    case = replace(case, agreement=Agreement(command.meeting_id, items, tuple(command.consented_by), now))
    fact = AgreementRecorded(
        case_id=case.case_id,
        meeting_id=command.meeting_id,
        items=command.items,
        consented_by=command.consented_by,
        recorded_at=now,
        recorded_by=command.actor,
    )
    return case, book, [Emit(fact, "agreement-recorded")]


def record_payment(
    case: CaseSchedule | None, book: ResourceBook, command: RecordPayment, *, command_id: str, now: datetime
) -> Outcome:
    """A payment towards a reparation; the item is done when the payments reach its amount."""
    item = case.agreement.item(command.item_id) if case is not None and case.agreement is not None else None
    refusal = _refusal(case, command) or _item_refusal(case, item, command.item_id)
    if refusal is None and item is not None and item.kind is not ItemKind.reparation:
        refusal = f"item {command.item_id} is {item.kind}, not a reparation: it takes no payments"
    if refusal is not None:
        return _reject(case, book, command, command_id, now, refusal)
    assert case is not None and case.agreement is not None and item is not None and item.amount_pence is not None
    paid = item.paid_pence + command.amount_pence
    case = _with_item(case, replace(item, paid_pence=paid))
    fact = PaymentRecorded(
        case_id=case.case_id,
        item_id=item.item_id,
        amount_pence=command.amount_pence,
        paid_at=command.paid_at,
        total_paid_pence=paid,
        amount_due_pence=item.amount_pence,
        recorded_at=now,
        recorded_by=command.actor,
    )
    emits = [Emit(fact, f"payment-recorded:{command_id}")]
    if paid < item.amount_pence:
        return case, book, emits
    return _complete_item(case, book, item.item_id, command.actor, by_payments=True, emits=emits, now=now)


def complete_agreement_item(
    case: CaseSchedule | None, book: ResourceBook, command: CompleteAgreementItem, *, command_id: str, now: datetime
) -> Outcome:
    item = case.agreement.item(command.item_id) if case is not None and case.agreement is not None else None
    refusal = _refusal(case, command) or _item_refusal(case, item, command.item_id, repeat_ok=True)
    if refusal is not None:
        return _reject(case, book, command, command_id, now, refusal)
    assert case is not None and item is not None
    if item.completed_at is not None:
        return case, book, []  # already done: a repeat is harmless
    return _complete_item(case, book, item.item_id, command.actor, by_payments=False, emits=[], now=now)


def close_case(
    case: CaseSchedule | None, book: ResourceBook, command: CloseCase, *, command_id: str, now: datetime
) -> Outcome:
    """Close a case that will not proceed; whatever is pending is cancelled."""
    refusal = _refusal(case, command)
    if refusal is None and command.closure_reason not in CLOSABLE_BY_COMMAND:
        allowed = ", ".join(sorted(CLOSABLE_BY_COMMAND))
        refusal = (
            f"a case is closed by command only as {allowed}; {command.closure_reason} follows from the process itself"
        )
    unmet = command.closure_reason is ClosureReason.agreement_not_met
    if refusal is None and unmet and case is not None and case.agreement is None:
        refusal = "there is no agreement on this case to be unmet"
    if refusal is not None:
        return _reject(case, book, command, command_id, now, refusal)
    assert case is not None
    case, book, emits = _cancel_pending(case, book, CancellationReason.case_closed, command.actor, None, now)
    return _close(case, book, command.closure_reason, command.actor, emits, now, detail=command.reason)


# --- dispatch -----------------------------------------------------------------------------------

Handler = Callable[..., Outcome]

HANDLERS: dict[type[EventData], Handler] = {
    CaseAccepted: on_case_accepted,
    ConsentGiven: on_consent_given,
    ConsentDeclined: on_consent_declined,
    ConsentWithdrawn: on_consent_withdrawn,
    CaseReadyForMeeting: on_case_ready,
    CaseReadinessLost: on_readiness_lost,
    CaseWithdrawn: on_case_withdrawn,
    FacilitatorAssigned: on_facilitator_assigned,
    RecordAvailability: record_availability,
    ProposeMeeting: propose_meeting,
    BookMeeting: book_meeting,
    RescheduleMeeting: reschedule_meeting,
    CancelMeeting: cancel_meeting,
    RecordMeetingHeld: record_meeting_held,
    RecordAgreement: record_agreement,
    RecordPayment: record_payment,
    CompleteAgreementItem: complete_agreement_item,
    CloseCase: close_case,
}

REGISTRATIONS: dict[type[EventData], Callable[..., tuple[ResourceBook, list[Emit]]]] = {
    RegisterFacilitator: register_facilitator,
    RegisterVenue: register_venue,
}

CONSUMES: frozenset[str] = frozenset(model.event_type for model in (*HANDLERS, *REGISTRATIONS))
"""``rj.case.accepted`` (rj.referral); consent facts, facilitator assignments and readiness (rj.consent); its
commands (rj.commands)."""


def subject_of(message: EventData) -> str:
    """What a message is about, and so the subject of what it causes: a case id, or a facilitator or venue id."""
    if isinstance(message, RegisterFacilitator):
        return message.facilitator_id
    if isinstance(message, RegisterVenue):
        return message.venue_id
    return message.case_id  # type: ignore[attr-defined, no-any-return]


def handle(
    case: CaseSchedule | None, book: ResourceBook, message: EventData, *, command_id: str, now: datetime
) -> Outcome:
    """Apply any message in ``CONSUMES``; a registration leaves ``case`` (pass ``None``) as it is."""
    if isinstance(message, RegistrationCommand):
        book, emits = REGISTRATIONS[type(message)](book, message, command_id=command_id, now=now)
        return case, book, emits
    return HANDLERS[type(message)](case, book, message, command_id=command_id, now=now)


def resources_touched(case: CaseSchedule | None, message: EventData) -> frozenset[str]:
    """The resource keys a message may read or change: load (and lock) at least the bookings of these, and the
    profiles of the facilitators and venues among them, into the ``ResourceBook`` passed to ``handle``."""
    keys: set[str] = set()
    if case is not None:
        keys |= {r for m in case.pending for r in m.resources}
        keys |= {person_key(p.person_id) for p in case.participants}
    if isinstance(message, MeetingPlan):
        keys |= {facilitator_key(message.lead_facilitator_id)}
        keys |= {facilitator_key(message.co_facilitator_id)} if message.co_facilitator_id else set()
        keys |= {venue_key(message.venue_id)} if message.venue_id else set()
    if isinstance(message, RescheduleMeeting) and message.venue_id:
        keys.add(venue_key(message.venue_id))
    return frozenset(keys)


# --- planning a meeting -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    meeting_id: str
    kind: MeetingKind
    starts_at: datetime
    ends_at: datetime
    lead_facilitator_id: str
    co_facilitator_id: str | None
    venue_id: str | None
    visit_slot: str | None


def _plan(
    case: CaseSchedule | None,
    book: ResourceBook,
    command: Command,
    plan: _Plan | MeetingPlan,
    *,
    existing: Meeting | None,
    now: datetime,
) -> Meeting | str:
    """The meeting ``plan`` describes if every rule allows it, else why not."""
    refusal = _refusal(case, command) or _without_consent(case)
    if refusal is not None:
        return refusal
    assert case is not None
    if existing is None and case.meeting(plan.meeting_id) is not None:
        return f"meeting {plan.meeting_id} already exists on this case"
    if plan.ends_at <= plan.starts_at:
        return "a meeting must end after it starts"
    if plan.starts_at < now:
        return "a meeting cannot be booked in the past"
    if (refusal := _staffing_refusal(case, book, plan)) is not None:
        return refusal
    if (refusal := _place_refusal(case, book, plan)) is not None:
        return refusal
    attendees: tuple[str, ...] = ()
    if plan.kind is MeetingKind.conference:
        attendees = tuple(p.person_id for p in case.participants if p.person_id in case.consenting)
    for person_id in attendees:
        windows = case.windows_of(person_id)
        inside = windows is None or any(w.starts_at <= plan.starts_at and plan.ends_at <= w.ends_at for w in windows)
        if not inside:
            return f"participant {person_id} is not available at that time"
    facilitators = (plan.lead_facilitator_id, *([plan.co_facilitator_id] if plan.co_facilitator_id else []))
    meeting = Meeting(
        meeting_id=plan.meeting_id,
        kind=plan.kind,
        status=MeetingStatus.booked,
        starts_at=plan.starts_at,
        ends_at=plan.ends_at,
        lead_facilitator_id=plan.lead_facilitator_id,
        facilitator_ids=facilitators,
        venue_id=plan.venue_id,
        visit_slot=plan.visit_slot,
        attendee_ids=attendees,
    )
    taken = [
        _describe(r)
        for r in meeting.resources
        if book.clashes(r, meeting.starts_at, meeting.ends_at, meeting=(case.case_id, meeting.meeting_id))
    ]
    if taken:
        verb = "is" if len(taken) == 1 else "are"
        return f"double booking: {', '.join(taken)} {verb} already booked at an overlapping time"
    return meeting


def _staffing_refusal(case: CaseSchedule, book: ResourceBook, plan: _Plan | MeetingPlan) -> str | None:
    if plan.kind is MeetingKind.conference:
        if plan.co_facilitator_id is None or plan.co_facilitator_id == plan.lead_facilitator_id:
            return "a conference needs two facilitators: a lead and a co-facilitator"
    elif plan.co_facilitator_id is not None or plan.venue_id is not None:
        return "indirect RJ has one facilitator and no venue"
    for facilitator_id in filter(None, (plan.lead_facilitator_id, plan.co_facilitator_id)):
        if facilitator_id not in case.facilitator_ids:
            return f"facilitator {facilitator_id} is not assigned to this case"
        profile = book.facilitator(facilitator_id)
        if profile is None:
            return f"facilitator {facilitator_id} is not registered"
        if not _within_weekly(profile.working_hours, profile.timezone, plan.starts_at, plan.ends_at):
            return f"facilitator {facilitator_id} does not work at that time"
    lead = book.facilitator(plan.lead_facilitator_id)
    if case.specialist_required and lead is not None and not lead.specialist:
        return f"this case is sensitive and needs a specialist lead facilitator; {lead.facilitator_id} is not one"
    return None


def _place_refusal(case: CaseSchedule, book: ResourceBook, plan: _Plan | MeetingPlan) -> str | None:
    if plan.kind is MeetingKind.indirect:
        return None
    if plan.venue_id is None:
        return "a conference needs a venue, or a prison visit when the offender is in custody"
    venue = book.venue(plan.venue_id)
    if venue is None:
        return f"venue {plan.venue_id} is not registered"
    if venue.kind is VenueKind.prison:
        if not case.in_custody:
            return f"{plan.venue_id} is a prison, and nobody on this case is in custody: no prison visit is possible"
        slot = venue.slot(plan.visit_slot) if plan.visit_slot else None
        if slot is None:
            return f"a prison visit needs one of {venue.venue_id}'s visit slots: " + ", ".join(
                s.name for s in venue.visit_slots
            )
        if not _within_weekly([slot], venue.timezone, plan.starts_at, plan.ends_at):
            return f"the meeting falls outside visit slot {slot.name} of {venue.venue_id}"
        return None
    if case.in_custody:
        return f"the offender is in custody: a conference must be a prison visit, not community venue {venue.venue_id}"
    if plan.visit_slot is not None:
        return f"{venue.venue_id} is not a prison: a visit slot does not apply"
    return None


def _plan_facts(case: CaseSchedule, meeting: Meeting) -> dict[str, Any]:
    return {
        "case_id": case.case_id,
        "meeting_id": meeting.meeting_id,
        "kind": meeting.kind,
        "starts_at": meeting.starts_at,
        "ends_at": meeting.ends_at,
        "lead_facilitator_id": meeting.lead_facilitator_id,
        "facilitator_ids": list(meeting.facilitator_ids),
        "venue_id": meeting.venue_id,
        "visit_slot": meeting.visit_slot,
        "attendee_ids": list(meeting.attendee_ids),
    }


# --- stopping -----------------------------------------------------------------------------------


def _participation_ended(
    case: CaseSchedule | None,
    book: ResourceBook,
    case_id: str,
    purpose: str,
    person_id: str,
    reason: ClosureReason,
    command_id: str,
    now: datetime,
) -> Outcome:
    """Someone declined or withdrew: a required participant stops the case, anyone else gives up their place.

    ``command_id`` (the consent fact's id) is part of each removal's identity: the same person may be removed,
    re-added and removed again, and each removal is a fact of its own."""
    case = case or CaseSchedule(case_id=case_id)
    if purpose != PARTICIPATION or case.closure is not None:
        return case, book, []
    case = replace(case, consenting=case.consenting - {person_id})
    participant = case.participant(person_id)
    if participant is not None and participant.required:
        return _stop(case, book, reason, person_id, now)
    emits = []
    for meeting in case.pending:
        if person_id in meeting.attendee_ids:
            attendees = tuple(a for a in meeting.attendee_ids if a != person_id)
            case = case.with_meeting(replace(meeting, attendee_ids=attendees))
            book = book.release(case.case_id, meeting.meeting_id, [person_key(person_id)])
            fact = MeetingAttendeeRemoved(
                case_id=case.case_id,
                meeting_id=meeting.meeting_id,
                person_id=person_id,
                removed_at=now,
                removed_by=SYSTEM_SCHEDULING,
            )
            emits.append(Emit(fact, f"attendee-removed:{meeting.meeting_id}:{person_id}:{command_id}"))
    return case, book, emits


def _stop(
    case: CaseSchedule, book: ResourceBook, reason: ClosureReason, person_id: str | None, now: datetime
) -> Outcome:
    """A withdrawal takes effect at once: every pending meeting is cancelled and the case closes. Who withdrew
    (``None`` when not known) is kept in this service's state for staff, never in a fact."""
    if case.closure is not None:
        return case, book, []  # already stopped: by this withdrawal's other fact, or before it
    case = replace(case, consenting=case.consenting - {person_id}, ready=False)
    # The cancellations and the closure say only that the case was withdrawn, never by whom (DOMAIN rule 2).
    case, book, emits = _cancel_pending(case, book, CancellationReason.case_withdrawn, SYSTEM_SCHEDULING, None, now)
    return _close(case, book, reason, SYSTEM_SCHEDULING, emits, now, withdrawn_by=person_id)


def _cancel(
    case: CaseSchedule,
    book: ResourceBook,
    meeting: Meeting,
    code: CancellationReason,
    by: Actor,
    reason: str | None,
    now: datetime,
) -> tuple[CaseSchedule, ResourceBook, list[Emit]]:
    fact = MeetingCancelled(
        case_id=case.case_id,
        meeting_id=meeting.meeting_id,
        reason_code=code,
        reason=reason,
        cancelled_at=now,
        cancelled_by=by,
    )
    return (
        case.with_meeting(replace(meeting, status=MeetingStatus.cancelled)),
        book.release(case.case_id, meeting.meeting_id),
        [Emit(fact, f"meeting-cancelled:{meeting.meeting_id}")],
    )


def _cancel_pending(
    case: CaseSchedule, book: ResourceBook, code: CancellationReason, by: Actor, reason: str | None, now: datetime
) -> tuple[CaseSchedule, ResourceBook, list[Emit]]:
    emits: list[Emit] = []
    for meeting in case.pending:
        case, book, cancelled = _cancel(case, book, meeting, code, by, reason, now)
        emits += cancelled
    return case, book, emits


def _close(
    case: CaseSchedule,
    book: ResourceBook,
    reason: ClosureReason,
    by: Actor,
    emits: list[Emit],
    now: datetime,
    *,
    withdrawn_by: str | None = None,
    detail: str | None = None,
) -> Outcome:
    case = replace(case, closure=CaseClosure(reason, now, withdrawn_by), ready=False)
    # Who withdrew stays in the state above: the closure is participant-facing (``CaseClosed``).
    fact = CaseClosed(case_id=case.case_id, reason=reason, closed_at=now, closed_by=by, detail=detail)
    return case, book, [*emits, Emit(fact, "case-closed")]


# --- the agreement ------------------------------------------------------------------------------


def _agreement_refusal(case: CaseSchedule | None, command: RecordAgreement) -> str | None:
    assert case is not None
    if case.agreement is not None:
        return "an agreement is already recorded on this case"
    meeting = case.meeting(command.meeting_id)
    if meeting is None or meeting.status is not MeetingStatus.held:
        return f"meeting {command.meeting_id} has not been held on this case"
    ids = [i.item_id for i in command.items]
    if len(set(ids)) != len(ids):
        return "agreement item ids must be unique"
    for item in command.items:
        if case.participant(item.owner_id) is None:
            return f"item {item.item_id}: its owner {item.owner_id} is not a participant in this case"
        if item.kind is ItemKind.reparation and item.amount_pence is None:
            return f"item {item.item_id}: a reparation needs an amount"
        if item.kind is not ItemKind.reparation and item.amount_pence is not None:
            return f"item {item.item_id}: only a reparation has an amount"
    strangers = [p for p in command.consented_by if case.participant(p) is None]
    if strangers:
        return f"{', '.join(strangers)} not a participant in this case"
    missing = [p.person_id for p in case.participants if p.required and p.person_id not in command.consented_by]
    if missing:
        return f"the agreement needs the recorded consent of every party; missing: {', '.join(missing)}"
    return None


def _item_refusal(
    case: CaseSchedule | None, item: AgreementItem | None, item_id: str, *, repeat_ok: bool = False
) -> str | None:
    assert case is not None
    if case.agreement is None:
        return "no agreement is recorded on this case"
    if item is None:
        return f"the agreement has no item {item_id}"
    if item.completed_at is not None and not repeat_ok:
        return f"item {item_id} is already completed"
    return None


def _with_item(case: CaseSchedule, item: AgreementItem) -> CaseSchedule:
    assert case.agreement is not None
    items = tuple(item if i.item_id == item.item_id else i for i in case.agreement.items)
    return replace(case, agreement=replace(case.agreement, items=items))


def _complete_item(
    case: CaseSchedule,
    book: ResourceBook,
    item_id: str,
    by: Actor,
    *,
    by_payments: bool,
    emits: list[Emit],
    now: datetime,
) -> Outcome:
    """Mark an item done; the last one done closes the case as completed."""
    assert case.agreement is not None
    item = case.agreement.item(item_id)
    assert item is not None
    case = _with_item(case, replace(item, completed_at=now))
    fact = AgreementItemCompleted(
        case_id=case.case_id,
        item_id=item_id,
        kind=item.kind,
        by_payments=by_payments,
        completed_at=now,
        completed_by=by,
    )
    emits = [*emits, Emit(fact, f"item-completed:{item_id}")]
    assert case.agreement is not None
    if any(i.completed_at is None for i in case.agreement.items):
        return case, book, emits
    case, book, cancelled = _cancel_pending(case, book, CancellationReason.case_closed, SYSTEM_SCHEDULING, None, now)
    return _close(case, book, ClosureReason.completed, SYSTEM_SCHEDULING, [*emits, *cancelled], now)


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


def _not_a_participant(case: CaseSchedule | None, person_id: str) -> str | None:
    if case is not None and case.participant(person_id) is None:
        return f"{person_id} is not a participant in this case"
    return None


def _not_booked(meeting: Meeting | None, meeting_id: str) -> str | None:
    if meeting is None:
        return f"no meeting {meeting_id} on this case"
    if meeting.status is not MeetingStatus.booked:
        return f"meeting {meeting_id} is {meeting.status}, not booked"
    return None


def _reject(
    case: CaseSchedule | None, book: ResourceBook, command: Command, command_id: str, now: datetime, reason: str
) -> Outcome:
    return case, book, [rejection(SERVICE, command, command_id, reason, now)]
