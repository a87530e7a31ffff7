"""How a case stops: a participant's decline or withdrawal, a safeguarding hold, readiness lost, the consent
service's withdrawal of the case, and closing by command.

Closing by command needs evidence for some reasons: ``agreement_not_met`` needs an agreement item overdue and
not completed (the closure names every such item, by id only), and ``uncontactable`` needs a required
participant whose latest recorded contact attempts (the consent service's ``rj.contact.attempt-recorded``, whose
``unanswered_in_a_row`` we keep per person) went unanswered ``Policy.uncontactable_after_attempts`` times in a
row; an attempt that reached them resets the count, and so does the person acting on the case themself (a
consent decision through them, ``rj.consent.given`` / ``declined`` / ``withdrawn`` with ``through=participant``, or
``rj.preparation-meeting.recorded`` with them): they are evidently contactable. The consent service resets its
own log on the same facts, so the count in its next attempt agrees (or, when the person's act is dated before
attempts already recorded, is higher: we reset to 0 and take its next count, which never closes a case early).

Withdrawal first (DOMAIN "Ordering"): the consent service decides a withdrawal, but its facts travel on another
topic than the booking commands, so a booking sent after a withdrawal could arrive here before consent's
verdict. So this service reads the withdraw, decline and hold commands from ``rj.commands`` itself, in the
case's partition order, and holds the case as pending (``CaseSchedule.stops_pending``) until the verdict:
- a withdrawal or decline of participation by a required participant (a parent or guardian of a victim or
  offender among them), or by someone we do not know as a participant yet (the case's participants, or a
  participant staff added, may not have reached us yet: ``model.could_stop``), is pending; one by a participant
  who is not required cannot stop the case, but holds back that person's indirect items until the verdict
  (``CaseSchedule.persons_pending``); a withdrawal of sharing consent is passed over;
- a hold is pending;
- consent's ``rj.command.rejected`` for that command lifts it: the case goes on;
- consent's facts (``rj.case.withdrawn`` / ``rj.consent.withdrawn`` / ``rj.consent.declined``, ``rj.case.held``)
  stop or hold the case, as below; each names the command it decides (``command_id``).
A verdict can also overtake its command (this service lagging on ``rj.commands``): it is remembered
(``CaseSchedule.answered``) so that the command, read later, is not held pending for ever.
While anything is pending, or the case is held, nothing about a meeting goes ahead (``model._refusal``).

A withdrawal cancels every pending meeting at once, releases its bookings, and closes the case; a booking that
arrives afterwards finds the case closed and is rejected. A required participant who declines after having
consented has withdrawn: the case closes as ``withdrawn``. Who withdrew is learnt from the staff-only consent
facts and kept in the case's state for staff (``CaseClosure.withdrawn_by``); the closure (``CaseClosed``) is
participant-facing and never says it.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from schemas.commands import CommandRejected
from schemas.common import Actor
from schemas.consent import (
    PARTICIPATION,
    AddParticipant,
    CaseHeld,
    CaseReadinessLost,
    CaseResumed,
    CaseWithdrawalReason,
    CaseWithdrawn,
    ConsentDeclined,
    ConsentWithdrawn,
    ContactAttemptRecorded,
    DeclineConsent,
    PreparationMeetingRecorded,
    PutCaseOnHold,
    RecordedThrough,
    RecordRiskAssessment,
    RiskAssessmentRecorded,
    WithdrawConsent,
)
from schemas.indirect import IndirectEndReason
from schemas.referral import Role
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
from services.scheduling.domain.indirect import end_participation
from services.scheduling.domain.meetings import (
    _cancel_pending,
)
from services.scheduling.domain.model import (
    DEFAULT_POLICY,
    CaseClosure,
    CaseSchedule,
    Outcome,
    PendingStop,
    Policy,
    ResourceBook,
    Unanswered,
    _refusal,
    _reject,
    answer,
    could_stop,
    follow,
    local_day,
    passed_over,
    person_key,
)

FOLLOWED = frozenset(
    m.event_type for m in (WithdrawConsent, DeclineConsent, PutCaseOnHold, RecordRiskAssessment, AddParticipant)
)
"""The consent service's commands this service reads in case order, because they can stop the case or cost it its
readiness."""

# --- events from other services -----------------------------------------------------------------


def on_consent_declined(
    case: CaseSchedule | None, book: ResourceBook, event: ConsentDeclined, *, command_id: str, now: datetime
) -> Outcome:
    """Declining after having consented to take part is a withdrawal; before that, a decline."""
    if case is not None:
        case = answer(case, event.command_id, could_be_pending=event.purpose == PARTICIPATION)
        case = _in_touch(case, event)
    had_consented = case is not None and event.person_id in case.consenting
    reason = ClosureReason.withdrawn if had_consented else ClosureReason.declined
    return _participation_ended(
        case, book, event.case_id, event.purpose, event.person_id, reason, command_id, now, declined=True
    )


def on_consent_withdrawn(
    case: CaseSchedule | None, book: ResourceBook, event: ConsentWithdrawn, *, command_id: str, now: datetime
) -> Outcome:
    if case is not None:
        case = answer(case, event.command_id, could_be_pending=event.purpose == PARTICIPATION)
        case = _in_touch(case, event)
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


def on_case_held(
    case: CaseSchedule | None, book: ResourceBook, event: CaseHeld, *, command_id: str, now: datetime
) -> Outcome:
    """On hold for a safeguarding concern: every pending meeting is called off and nothing goes ahead until the
    consent service resumes the case and finds it ready again."""
    case = answer(case or CaseSchedule(case_id=event.case_id), event.command_id)
    if case.closure is not None:
        return case, book, []
    case, book, emits = _cancel_pending(case, book, CancellationReason.case_paused, SYSTEM_SCHEDULING, None, now)
    return replace(case, held=True, ready=False), book, emits


def on_risk_assessment_recorded(
    case: CaseSchedule | None, book: ResourceBook, event: RiskAssessmentRecorded, *, command_id: str, now: datetime
) -> Outcome:
    """The consent service's verdict on an assessment: an unsafe one we followed is no longer pending. What it costs
    the case (``rj.case.readiness-lost``) came just before it on the same partition, so we know by now. An unsafe
    verdict on a case we have not heard of yet is remembered all the same: its command may still be on its way,
    and would otherwise hold the case pending for ever."""
    if event.safe_to_proceed:
        return case, book, []
    case = case or CaseSchedule(case_id=event.case_id)
    return answer(case, event.command_id, could_be_pending=True), book, []


def on_case_resumed(
    case: CaseSchedule | None, book: ResourceBook, event: CaseResumed, *, command_id: str, now: datetime
) -> Outcome:
    """The hold is lifted; meetings wait for the consent service to find the case ready again."""
    case = case or CaseSchedule(case_id=event.case_id)
    return replace(case, held=False), book, []


def on_consent_rejected(
    case: CaseSchedule | None, book: ResourceBook, event: CommandRejected, *, command_id: str, now: datetime
) -> Outcome:
    """The consent service refused a withdrawal or hold we were holding the case for: it stops nothing."""
    if event.service != "consent" or event.command_type not in FOLLOWED:
        return case, book, []
    return answer(case or CaseSchedule(case_id=event.case_id), event.command_id), book, []


UNANSWERED_KEPT = 256
"""How many people's contact-attempt counts a case keeps (its participants are a handful): a flood of facts about
people the case does not know cannot grow its state without bound; the oldest entries go first."""


def on_contact_attempt_recorded(
    case: CaseSchedule | None, book: ResourceBook, event: ContactAttemptRecorded, *, command_id: str, now: datetime
) -> Outcome:
    """Keep the latest count of unanswered attempts for the person, the evidence an ``uncontactable`` closure
    needs. The consent service records an attempt only on a case it holds, but its fact may overtake the
    referral's ``rj.case.accepted`` here (another topic, read at its own pace): a case not yet known starts as a
    skeleton, as for a consent, and the count waits in it (dropping it lost three unanswered calls under load,
    and with them the closure they justify). A skeleton has no participants, and only a required participant's
    count can close a case. The person may not be known here yet (a participant staff added, on its way), so the
    count is kept for anyone."""
    case = case or CaseSchedule(case_id=event.case_id)
    if case.closure is not None:
        return case, book, []
    others = tuple(u for u in case.unanswered if u.person_id != event.person_id)
    latest = Unanswered(event.person_id, event.unanswered_in_a_row)
    return replace(case, unanswered=(*others, latest)[-UNANSWERED_KEPT:]), book, []


def on_preparation_meeting_recorded(
    case: CaseSchedule | None,
    book: ResourceBook,
    event: PreparationMeetingRecorded,
    *,
    command_id: str,
    now: datetime,
) -> Outcome:
    """A facilitator met the person: they are contactable, whatever attempts went unanswered before. A case not
    yet known starts as a skeleton, as for a contact attempt: attempts kept in a skeleton and then this meeting,
    both overtaking the case, must leave the count at 0, not at the attempts' (which would let the case close as
    uncontactable although the person was met)."""
    case = case or CaseSchedule(case_id=event.case_id)
    if case.closure is not None:
        return case, book, []
    return case.heard_from(event.person_id), book, []


def _in_touch(case: CaseSchedule, event: ConsentDeclined | ConsentWithdrawn) -> CaseSchedule:
    """A decision the person made themself (through the participant) is them in touch; staff recording one for
    them is not."""
    return case.heard_from(event.person_id) if event.through is RecordedThrough.participant else case


# --- commands -----------------------------------------------------------------------------------


def on_withdrawal_command(
    case: CaseSchedule | None,
    book: ResourceBook,
    command: WithdrawConsent | DeclineConsent,
    *,
    command_id: str,
    now: datetime,
) -> Outcome:
    """A withdrawal or decline, read in case order: if it can stop the case, nothing goes ahead until the consent
    service has decided it. This service never answers it: the consent service does."""
    case = case or CaseSchedule(case_id=command.case_id)
    if case.closure is not None:
        return case, book, []
    stop = PendingStop(command_id, "withdrawal", command.person_id)
    if command.purpose == PARTICIPATION and not could_stop(case, command.purpose, command.person_id):
        # Stops nothing, but what this person sends or receives indirectly waits for the verdict (rule 9, 2).
        return follow(case, stop, person_only=True), book, []
    if not could_stop(case, command.purpose, command.person_id):
        return passed_over(case, command_id), book, []  # the consent service records it, and that is all
    return follow(case, stop), book, []


def on_hold_command(
    case: CaseSchedule | None, book: ResourceBook, command: PutCaseOnHold, *, command_id: str, now: datetime
) -> Outcome:
    """A safeguarding hold, read in case order: nothing goes ahead until the consent service has decided it."""
    case = case or CaseSchedule(case_id=command.case_id)
    if case.closure is not None:
        return case, book, []
    return follow(case, PendingStop(command_id, "hold")), book, []


def on_assessment_command(
    case: CaseSchedule | None, book: ResourceBook, command: RecordRiskAssessment, *, command_id: str, now: datetime
) -> Outcome:
    """A risk re-assessment, read in case order: one that finds the case unsafe costs it its readiness once the
    consent service records it, so nothing goes ahead until its verdict. A safe one stops nothing."""
    case = case or CaseSchedule(case_id=command.case_id)
    if case.closure is not None:
        return case, book, []
    if command.safe_to_proceed:
        return passed_over(case, command_id), book, []
    return follow(case, PendingStop(command_id, "assessment")), book, []


def on_add_command(
    case: CaseSchedule | None, book: ResourceBook, command: AddParticipant, *, command_id: str, now: datetime
) -> Outcome:
    """Someone added to the case, read in case order: a parent or guardian of a required participant (or of someone
    we do not know yet) is required, so the case is not ready until they consent; nothing goes ahead until the
    consent service's verdict (``rj.participant.added`` or its rejection). Anyone else added stops nothing."""
    case = case or CaseSchedule(case_id=command.case_id)
    if case.closure is not None:
        return case, book, []
    supported = case.participant(command.supports)
    if command.role is not Role.parent_guardian or (supported is not None and not supported.required):
        return passed_over(case, command_id), book, []
    return follow(case, PendingStop(command_id, "participant")), book, []


def close_case(
    case: CaseSchedule | None,
    book: ResourceBook,
    command: CloseCase,
    *,
    command_id: str,
    now: datetime,
    policy: Policy = DEFAULT_POLICY,
) -> Outcome:
    """Close a case that will not proceed, saying why (staff decide it), with the evidence some reasons need;
    whatever is pending is cancelled."""
    refusal = _refusal(case, command)
    if refusal is None and case is not None and case.skeleton:
        refusal = f"unknown case {command.case_id}"  # heard of only through facts that overtook the case itself
    if refusal is None and not (command.reason or "").strip():
        refusal = "a reason is required when staff close a case"
    if refusal is None and command.closure_reason not in CLOSABLE_BY_COMMAND:
        allowed = ", ".join(sorted(CLOSABLE_BY_COMMAND))
        refusal = (
            f"a case is closed by command only as {allowed}; {command.closure_reason} follows from the process itself"
        )
    unmet = command.closure_reason is ClosureReason.agreement_not_met
    if refusal is None and unmet and case is not None and case.agreement is None:
        refusal = "there is no agreement on this case to be unmet"
    failed = case.agreement.overdue_item_ids(local_day(now)) if unmet and case and case.agreement else None
    if refusal is None and unmet and not failed:
        refusal = "a case is closed as agreement_not_met only when an agreement item is overdue and not completed"
    if refusal is None and command.closure_reason is ClosureReason.uncontactable:
        refusal = _still_contactable(case, policy.uncontactable_after_attempts)
    if refusal is not None:
        return _reject(case, book, command, command_id, now, refusal)
    assert case is not None
    case, book, emits = _cancel_pending(case, book, CancellationReason.case_closed, command.actor, None, now)
    return _close(
        case, book, command.closure_reason, command.actor, emits, now, detail=command.reason, failed_item_ids=failed
    )


def _still_contactable(case: CaseSchedule | None, attempts: int) -> str | None:
    """Why the case is not uncontactable, if so: no required participant's latest attempts in a row went
    unanswered ``attempts`` times."""
    assert case is not None
    required = [p.person_id for p in case.participants if p.required]
    most = max((case.unanswered_in_a_row(p) for p in required), default=0)
    if most >= attempts:
        return None
    return (
        f"a case is closed as uncontactable only after {attempts} unanswered contact attempts in a row to a "
        f"required participant; the most recorded is {most}"
    )


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
    *,
    declined: bool = False,
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
    # Their advance agreement and their items not yet released end with their participation (rule 9, 2).
    code = IndirectEndReason.participation_declined if declined else IndirectEndReason.participation_withdrawn
    case, emits = end_participation(case, person_id, code, command_id, now)
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
    case = replace(
        case, consenting=case.consenting - {person_id}, ready=False, stops_pending=(), persons_pending=(), answered=()
    )
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
    failed_item_ids: list[str] | None = None,
) -> Outcome:
    case = replace(case, closure=CaseClosure(reason, now, withdrawn_by), ready=False)
    # Who withdrew stays in the state above: the closure is participant-facing (``CaseClosed``).
    fact = CaseClosed(
        case_id=case.case_id,
        reason=reason,
        closed_at=now,
        closed_by=by,
        detail=detail,
        failed_item_ids=failed_item_ids,
    )
    return case, book, [*emits, Emit(fact, "case-closed")]
