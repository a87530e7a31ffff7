"""How a case stops: a participant's decline or withdrawal, readiness lost, the consent service's withdrawal
of the case, and closing by command.

A withdrawal cancels every pending meeting at once, releases its bookings, and closes the case; a booking that
arrives afterwards finds the case closed and is rejected. A required participant who declines after having
consented has withdrawn: the case closes as ``withdrawn``. Who withdrew is learnt from the staff-only consent
facts and kept in the case's state for staff (``CaseClosure.withdrawn_by``); the closure (``CaseClosed``) is
participant-facing and never says it.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from schemas.common import Actor
from schemas.consent import (
    PARTICIPATION,
    CaseReadinessLost,
    CaseWithdrawalReason,
    CaseWithdrawn,
    ConsentDeclined,
    ConsentWithdrawn,
)
from schemas.scheduling import (
    CLOSABLE_BY_COMMAND,
    SYSTEM_SCHEDULING,
    CancellationReason,
    CaseClosed,
    CloseCase,
    ClosureReason,
    MeetingAttendeeRemoved,
)
from services.runtime.decision import Emit
from services.scheduling.domain.meetings import (
    _cancel_pending,
)
from services.scheduling.domain.model import (
    CaseClosure,
    CaseSchedule,
    Outcome,
    ResourceBook,
    _refusal,
    _reject,
    person_key,
)

# --- events from other services -----------------------------------------------------------------


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


# --- commands -----------------------------------------------------------------------------------


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
