"""Meetings and what they need: the case's participants and readiness as the consent service reports them,
registered facilitators and venues, availability, and proposing, booking, rescheduling, cancelling and
recording meetings against the shared resource calendar.

Rule 1 (nothing about a meeting without the current consent of every required participant): a meeting is
proposed, booked, rescheduled or recorded only on a case the consent service called ready, and only while this
service has seen no later decline or withdrawal of participation by a required participant (``_without_consent``).

A meeting's facilitators (lead and co-facilitator) must be among those the consent service assigned to the
case (``CaseReadyForMeeting.facilitator_ids``, and ``FacilitatorAssigned`` for any assigned later).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from schemas.commands import Command
from schemas.common import Actor
from schemas.consent import (
    PARTICIPATION,
    CaseReadyForMeeting,
    ConsentGiven,
    FacilitatorAssigned,
    ParticipantAdded,
    RecordedThrough,
)
from schemas.envelope import EventData
from schemas.referral import CaseAccepted, CaseParticipant, Role
from schemas.scheduling import (
    AvailabilityRecorded,
    BookMeeting,
    CancellationReason,
    CancelMeeting,
    FacilitatorRegistered,
    MeetingBooked,
    MeetingCancelled,
    MeetingHeld,
    MeetingKind,
    MeetingPlan,
    MeetingProposed,
    MeetingRescheduled,
    MeetingStatus,
    ProposeMeeting,
    RecordAvailability,
    RecordMeetingHeld,
    RegisterFacilitator,
    RegisterVenue,
    RescheduleMeeting,
    VenueKind,
    VenueRegistered,
    WeeklyHours,
)
from services.runtime.decision import Emit, in_the_future, not_a_participant
from services.scheduling.domain.indirect_state import conference_refusal
from services.scheduling.domain.model import (
    Availability,
    CaseSchedule,
    FacilitatorProfile,
    Meeting,
    Outcome,
    ResourceBook,
    VenueProfile,
    _refusal,
    _reject,
    _without_consent,
    answer,
    facilitator_key,
    for_actor,
    person_key,
    speaker_refusal,
    venue_key,
    without_stops_that_cannot_stop,
)

# --- events from other services -----------------------------------------------------------------


def on_case_accepted(
    case: CaseSchedule | None, book: ResourceBook, event: CaseAccepted, *, command_id: str, now: datetime
) -> Outcome:
    """Learn who takes part; the case may already be known from consent facts that overtook this one (its
    readiness, or a participant staff added), and what they said stands."""
    case = case or CaseSchedule(case_id=event.case_id)
    if any(p.role in (Role.victim, Role.offender) for p in case.participants):
        # known from the readiness fact already: only the force is new
        return (case if case.force else replace(case, force=event.force)), book, []
    case = replace(case, force=event.force, specialist_required=event.specialist_required)
    for participant in event.participants:
        case = with_participant(case, participant)
    return without_stops_that_cannot_stop(case), book, []


def on_participant_added(
    case: CaseSchedule | None, book: ResourceBook, event: ParticipantAdded, *, command_id: str, now: datetime
) -> Outcome:
    """Staff added someone for a participant: they attend meetings once they consent; a parent or guardian of a
    victim or offender is required (the consent service says so in ``required``)."""
    case = with_participant(case or CaseSchedule(case_id=event.case_id), event.participant)
    # The verdict on the add we followed (``closure.on_add_command``): readiness lost, if it was, came just before.
    case = answer(case, event.command_id, could_be_pending=event.participant.role is Role.parent_guardian)
    return without_stops_that_cannot_stop(case), book, []


def with_participant(case: CaseSchedule, participant: CaseParticipant) -> CaseSchedule:
    if case.participant(participant.person_id) is not None:
        return case
    return replace(case, participants=(*case.participants, participant))


def on_consent_given(
    case: CaseSchedule | None, book: ResourceBook, event: ConsentGiven, *, command_id: str, now: datetime
) -> Outcome:
    case = case or CaseSchedule(case_id=event.case_id)
    if event.through is RecordedThrough.participant:
        case = case.heard_from(event.person_id)  # they are in touch: not uncontactable (``closure``)
    if event.purpose != PARTICIPATION or case.closure is not None:
        return case, book, []
    return replace(case, consenting=case.consenting | {event.person_id}), book, []


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
    return without_stops_that_cannot_stop(case), book, []


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
        email=command.email,
        display_name=command.display_name,
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
        address=command.address,
        arrival=command.arrival,
    )
    return replace(book, venues=(*others, profile)), [Emit(fact, f"venue-registered:{command_id}")]


# --- case commands ------------------------------------------------------------------------------


def record_availability(
    case: CaseSchedule | None, book: ResourceBook, command: RecordAvailability, *, command_id: str, now: datetime
) -> Outcome:
    # A participant records only their own availability, and learns nothing else from a refusal (rule 3).
    refusal = (
        speaker_refusal(command, command.person_id)
        or _refusal(case, command, books_nothing=True)
        or not_a_participant(case, command.person_id)
    )
    if refusal is not None:
        return _reject(case, book, command, command_id, now, for_actor(command, refusal))
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
    refusal = _refusal(case, command, books_nothing=True) or _not_booked(existing, command.meeting_id)
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
        elif (future := in_the_future("held_at", command.held_at, now)) is not None:
            refusal = future
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


# --- the resource calendar ----------------------------------------------------------------------


def _describe(resource: str) -> str:
    kind, _, name = resource.partition(":")
    return f"{'participant' if kind == 'person' else kind} {name}"


def _within_weekly(windows: Iterable[WeeklyHours], zone: str, starts_at: datetime, ends_at: datetime) -> bool:
    start, end = starts_at.astimezone(ZoneInfo(zone)), ends_at.astimezone(ZoneInfo(zone))
    return start.date() == end.date() and any(
        w.weekday == start.weekday() and w.start <= start.time() and end.time() <= w.end for w in windows
    )


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
    if (refusal := conference_refusal(case.indirect, plan.kind)) is not None:
        return refusal
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


# --- cancelling ---------------------------------------------------------------------------------


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


# --- guards -------------------------------------------------------------------------------------


def _not_booked(meeting: Meeting | None, meeting_id: str) -> str | None:
    if meeting is None:
        return f"no meeting {meeting_id} on this case"
    if meeting.status is not MeetingStatus.booked:
        return f"meeting {meeting_id} is {meeting.status}, not booked"
    return None
