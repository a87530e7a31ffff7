"""Consent decisions, pure: preparing an accepted case, each participant's consent, readiness, withdrawal.

One ``ConsentCase`` per case. Every decision is ``(case, message) -> (new case, [Emit])``; a command that
is not allowed leaves the case as it was and emits one ``CommandRejected`` saying why. Consent is kept
per person and per purpose, and only the latest decision for a (person, purpose) counts.

Decisions worth knowing:
- A required participant who declines or withdraws ``participation`` withdraws the case at once
  (``CaseWithdrawn``, reason ``consent_declined`` / ``consent_withdrawn``); the scheduling service then
  cancels what is pending and closes the case. Declining after having consented is a withdrawal
  (``ConsentDeclined`` is still the fact, the case-level reason is ``consent_withdrawn``). Other
  participants' decisions and sharing consents are recorded and change nothing else.
- Who withdrew is need-to-know: ``ConsentWithdrawn`` / ``ConsentDeclined`` (staff-only) say who, through
  whom and why; ``CaseWithdrawn`` (participant-facing) says only that the case stopped and the reason code,
  decided by this service.
- A withdrawal is refused only when the case is closed, unknown, for a non-participant, when a
  participant tries to speak for someone else, or when it is dated in the future; never because of the
  case's stage. Withdrawing what is already withdrawn or declined emits nothing, before or after closure.
- A decision may be dated (``decided_at``, e.g. a withdrawal letter's date); facts carry that as
  ``given_at`` / ``declined_at`` / ``withdrawn_at`` and the moment of recording as ``recorded_at``.
- Whether a facilitator is a specialist comes from the facilitator register, passed in by the caller
  (``registered_specialist``), never from the command; a later registration that changes it changes every
  case they are assigned to (``on_facilitator_registered``): a downgraded specialist can cost a ready case
  its readiness.
- On a sensitive case (one that needs a risk assessment) nobody is contacted before the assessment:
  preparation meetings and consents are refused until one is recorded (DOMAIN stage 2). A participant's
  "no" (decline, withdrawal) is never refused for that.
- A safeguarding hold (``PutCaseOnHold``, staff only, with the concern and who raised it) can be put on any
  open case; while it lasts nobody is contacted (no preparation meeting, no consent taken) and the case is
  not ready. ``ResumeCase`` lifts it; readiness then needs a risk assessment made after the concern.
- Staff say why when they decide for someone: declining on a participant's behalf, holding, resuming. A
  participant who withdraws is never asked why.
- The risk assessment that counts is the one with the latest ``assessed_at``: an older one recorded late is
  a fact (``RiskAssessmentRecorded``) but changes nothing.
- People around the participants (DOMAIN): staff add a supporter, a parent or guardian, an advocate or
  intermediary, or an interpreter for a participant (``add_participant``); ids and roles only. A parent or
  guardian is required as the person they are there for is (``CaseParticipant.required``), so their
  participation consent is needed for readiness and their decline or withdrawal stops the case exactly as the
  person's own does; a required participant under 18 has no readiness without one. Anyone else added attends a
  meeting only with their own consent (scheduling books only consenting participants) and stops nothing.
- Contact log (``record_contact_attempt``, staff only): each attempt is a fact with this person's count of attempts
  since they were last reached (``services.consent.contact.ContactLog``). An attempt is refused when nobody may be
  contacted (closed, withdrawn, on hold, sensitive before the risk assessment allows it: ``_no_contact_yet``). One
  that broke the person's safe-contact record (``contact.forbidden_by``) already happened: it is recorded, with a
  sealed staff-only flag and code saying what it broke (a safeguarding breach staff must see, rule 6; under the
  case's key, so it outlives the person's erasure, and counted by the app), and no rejection ever states a
  safe-contact detail.
- The person acting on the case themself (a consent decision through the participant, a preparation meeting
  with them) is them in touch: their contact log counts unanswered attempts from then on (``_heard_from``), as
  scheduling's copy of the count does (a case does not close as uncontactable on attempts from before it).
- Safe contact (``record_safe_contact``): with the person's agreement, through them or a facilitator, as consent
  decisions are; the latest record for a person wins. Accepted on a withdrawn or held case too: recording what is
  unsafe contacts nobody and only restricts.
- Case notes (``add_note``): staff only, on any case not closed; the text is sealed under the key of the person it
  concerns (or the case's).
- Evaluation: when the case closes, ``SurveyInvited`` for each participant the survey policy names
  (``services.consent.evaluation``); a response (``record_survey_response``) only from someone invited, once, by
  themself or through staff, also after closure (the only command a closed case still takes).
- Rule 2 in rejections: every command from a participant is checked for its speaker first (``_not_theirs_to_send``),
  then any refusal is the one neutral ``REFUSAL_TO_A_PARTICIPANT`` (the survey keeps its own, below). A command a
  participant sends in someone else's name is refused for that first, in words
  that depend only on what they sent, before anything about the person named (whether they take part, were
  invited, i.e. did not withdraw, or have answered) is looked at. A survey response from a participant is refused
  in one neutral sentence for someone else's name, an unknown case or no invitation alike (case ids are derived
  from the crime: "unknown case" would say whether an RJ case exists for it); staff get the precise reason.
- Rule 7, someone who declines or withdraws from taking part: their erasure on the case becomes due a grace period
  (the ``declined_erasure_delay_s`` setting) after the decline was recorded, the case open or closed, unless they
  consent to take part again first (``PendingErasure``). This service decides it, in case order, when it reads the
  ``DecideErasuresDue`` its own sweep sends itself (``decide_erasures_due``): ``ParticipantErasureDue``, on which
  the privacy service erases them. From then on every command about them on the case is refused
  (``_erased_after_declining``): their data is gone. A state saved before pending erasures were kept gets them from
  its consents when loaded (``load_case``).
- Readiness is re-derived after every change: ``CaseReadyForMeeting`` when it is reached,
  ``CaseReadinessLost`` when a re-assessment finds a ready case unsafe.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from schemas.commands import Command, CommandRejected
from schemas.common import Actor
from schemas.consent import (
    PARTICIPATION,
    SYSTEM_CONSENT,
    AddCaseNote,
    AddParticipant,
    AssignFacilitator,
    CaseHeld,
    CaseNoteAdded,
    CaseParticipant,
    CaseReadinessLost,
    CaseReadyForMeeting,
    CaseResumed,
    CaseWithdrawalReason,
    CaseWithdrawn,
    ConsentDecision,
    ConsentDeclined,
    ConsentGiven,
    ConsentWithdrawn,
    ContactAttemptRecorded,
    DecideErasuresDue,
    DeclineConsent,
    FacilitatorAssigned,
    GiveConsent,
    ParticipantAdded,
    ParticipantErasureDue,
    PreparationMeetingRecorded,
    PreparationStarted,
    PutCaseOnHold,
    RecordContactAttempt,
    RecordedThrough,
    RecordPreparationMeeting,
    RecordRiskAssessment,
    RecordSafeContact,
    RecordSurveyResponse,
    ResumeCase,
    RiskAssessmentRecorded,
    RiskLevel,
    SafeContactBreach,
    SafeContactRecorded,
    SurveyInvited,
    SurveyResponseRecorded,
    WithdrawConsent,
)
from schemas.envelope import EventData, derived_event_id
from schemas.referral import CaseAccepted, OffenderJoined, Role
from schemas.scheduling import CaseClosed, FacilitatorRegistered
from services.consent.contact import ContactLog, SafeContact, forbidden_by
from services.consent.evaluation import survey_invitees
from services.runtime.decision import Emit, JsonState, in_the_future, not_a_participant, rejection

SERVICE = "consent"
SOURCE = "urn:rj:service:consent"
"""The source of this service's facts: a fact's id derives from it (``services.runtime.outbox.facts``)."""

DECLINED_ERASURE_DELAY = timedelta(days=7)
"""The default of the ``declined_erasure_delay_s`` setting; the app passes the setting in."""

UNCONTACTABLE_AFTER_ATTEMPTS = 3
"""The default of the ``uncontactable_after_attempts`` setting (``services.runtime.settings``); the app passes the
setting in."""


class ConsentStatus(StrEnum):
    given = "given"
    declined = "declined"
    withdrawn = "withdrawn"


@dataclass(frozen=True)
class ConsentRecord:
    person_id: str
    purpose: str
    status: ConsentStatus
    decided_at: datetime


@dataclass(frozen=True)
class AssignedFacilitator:
    facilitator_id: str
    specialist: bool  # as the register says now (``on_facilitator_registered`` keeps it current)
    registered_at: datetime | None = None  # of the registration ``specialist`` comes from, when known


@dataclass(frozen=True)
class Hold:
    held_at: datetime
    command_id: str


@dataclass(frozen=True)
class RiskAssessment:
    assessed_at: datetime
    level: RiskLevel
    safe_to_proceed: bool


@dataclass(frozen=True)
class PendingErasure:
    """Someone who declined or withdrew from taking part, whose erasure on the case becomes due a grace period after
    ``recorded_at`` unless they consent to take part again first (rule 7)."""

    person_id: str
    decline_id: str  # the id of the rj.consent.declined / rj.consent.withdrawn fact
    declined_at: datetime
    declined_by: Actor
    recorded_at: datetime


@dataclass(frozen=True)
class ConsentCase(JsonState):
    case_id: str
    force: str | None = None  # whose case it is: every fact about it carries this (``schemas.referral``)
    participants: tuple[CaseParticipant, ...] = ()
    specialist_required: bool = False
    risk_assessment_required: bool = False
    facilitators: tuple[AssignedFacilitator, ...] = ()
    risk_assessment: RiskAssessment | None = None  # the one with the latest assessed_at
    prepared: frozenset[str] = frozenset()  # people a facilitator has met
    consents: tuple[ConsentRecord, ...] = ()  # the latest decision per (person, purpose)
    ready: bool = False  # as last announced
    withdrawn: bool = False
    closed: bool = False
    hold: Hold | None = None  # a safeguarding hold in force
    reassess_after: datetime | None = None  # the latest hold's start: readiness needs an assessment after it
    safe_contacts: tuple[SafeContact, ...] = ()  # the latest safe-contact record per person
    contact_logs: tuple[ContactLog, ...] = ()  # per person contacted
    survey_invited: frozenset[str] = frozenset()  # people invited to the satisfaction survey
    survey_answered: frozenset[str] = frozenset()  # people whose response is recorded
    erasures_pending: tuple[PendingErasure, ...] = ()  # decliners whose grace period runs (rule 7)
    erasure_due: frozenset[str] = frozenset()  # decliners whose erasure was decided: no consent from them now

    def participant(self, person_id: str) -> CaseParticipant | None:
        return next((p for p in self.participants if p.person_id == person_id), None)

    def people_for(self, person_id: str, role: Role) -> tuple[CaseParticipant, ...]:
        """Who takes part in ``role`` for the participant ``person_id``."""
        return tuple(p for p in self.participants if p.supports == person_id and p.role is role)

    def safe_contact(self, person_id: str) -> SafeContact | None:
        return next((c for c in self.safe_contacts if c.person_id == person_id), None)

    def contact_log(self, person_id: str) -> ContactLog:
        return next((c for c in self.contact_logs if c.person_id == person_id), ContactLog(person_id))

    def consent(self, person_id: str, purpose: str) -> ConsentStatus | None:
        return next((c.status for c in self.consents if (c.person_id, c.purpose) == (person_id, purpose)), None)

    def with_consent(self, person_id: str, purpose: str, status: ConsentStatus, at: datetime) -> ConsentCase:
        others = tuple(c for c in self.consents if (c.person_id, c.purpose) != (person_id, purpose))
        return replace(self, consents=(*others, ConsentRecord(person_id, purpose, status, at)))


def readiness_gaps(case: ConsentCase) -> list[str]:
    """What still stands between the case and a meeting; empty when it is ready."""
    gaps = []
    if case.withdrawn:
        gaps.append("the case is withdrawn")
    if case.closed:
        gaps.append("the case is closed")
    if case.hold is not None:
        gaps.append("the safeguarding hold to be lifted")
    if not any(p.required for p in case.participants):
        gaps.append("the case's participants are not known")
    gaps += [
        f"participation consent from {p.person_id} ({p.role})"
        for p in case.participants
        if p.required and case.consent(p.person_id, PARTICIPATION) is not ConsentStatus.given
    ]
    gaps += [
        f"a parent or guardian for {p.person_id} ({p.role}, under 18)"
        for p in case.participants
        if p.required and p.under_18 and not case.people_for(p.person_id, Role.parent_guardian)
    ]
    if case.risk_assessment_required and case.risk_assessment is None:
        gaps.append("a risk assessment")
    if case.risk_assessment is not None and not case.risk_assessment.safe_to_proceed:
        gaps.append("a risk assessment that finds it safe to proceed")
    if case.reassess_after is not None and (
        case.risk_assessment is None or case.risk_assessment.assessed_at < case.reassess_after
    ):
        gaps.append(f"a risk assessment made after the safeguarding concern of {case.reassess_after.isoformat()}")
    if case.specialist_required and not any(f.specialist for f in case.facilitators):
        gaps.append("a specialist facilitator")
    elif not case.facilitators:
        gaps.append("an assigned facilitator")
    gaps += [
        f"a preparation meeting with {p.person_id} ({p.role})"
        for p in case.participants
        if p.required and p.person_id not in case.prepared
    ]
    return gaps


def is_ready(case: ConsentCase) -> bool:
    return not readiness_gaps(case)


# --- events from other services -----------------------------------------------------------------


def on_case_accepted(
    case: ConsentCase | None, event: CaseAccepted, *, command_id: str, now: datetime
) -> tuple[ConsentCase, list[Emit]]:
    """Start preparing an accepted case. A repeat changes nothing."""
    participants = tuple(event.participants)
    if case is None:
        case = ConsentCase(case_id=event.case_id)
    elif case.participants:
        return case, []
    # A case closed before we heard it was accepted stays closed: we only learn who takes part.
    case = replace(
        case,
        force=event.force,
        participants=participants,
        specialist_required=event.specialist_required,
        risk_assessment_required=event.risk_assessment_required,
    )
    if case.closed:
        return case, []
    started = PreparationStarted(
        case_id=case.case_id,
        participants=list(participants),
        specialist_required=event.specialist_required,
        risk_assessment_required=event.risk_assessment_required,
        started_at=now,
    )
    return case, [Emit(started, "preparation-started")]


def on_offender_joined(
    case: ConsentCase | None, event: OffenderJoined, *, command_id: str, now: datetime
) -> tuple[ConsentCase | None, list[Emit]]:
    """Another offender of the crime joins the case (referral's decision): a required participant, so a ready case
    waits for their preparation and consent. A repeat, or a case that has stopped, changes nothing."""
    if case is None or case.participant(event.participant.person_id) is not None:
        return case, []
    case = replace(case, participants=(*case.participants, event.participant))
    if case.closed or case.withdrawn:
        return case, []
    fact = ParticipantAdded(
        case_id=case.case_id, participant=event.participant, added_at=now, added_by=event.decided_by
    )
    return _settle(case, [Emit(fact, f"participant-added:{command_id}")], command_id, now)


def on_facilitator_registered(
    case: ConsentCase | None, event: FacilitatorRegistered, *, command_id: str, now: datetime
) -> tuple[ConsentCase | None, list[Emit]]:
    """The register changed a facilitator assigned to this case: their specialist flag here follows it. A sensitive
    case that loses its only specialist is no longer ready (``CaseReadinessLost``). An older registration than
    the one already applied changes nothing."""
    if case is None:
        return None, []
    current = next((f for f in case.facilitators if f.facilitator_id == event.facilitator_id), None)
    if current is None or (current.registered_at is not None and current.registered_at > event.registered_at):
        return case, []
    updated = AssignedFacilitator(event.facilitator_id, event.specialist, event.registered_at)
    case = replace(case, facilitators=tuple(updated if f is current else f for f in case.facilitators))
    if case.closed or case.withdrawn:
        return case, []
    return _settle(case, [], command_id, now)


def on_case_closed(
    case: ConsentCase | None,
    event: CaseClosed,
    *,
    command_id: str,
    now: datetime,
    uncontactable_after_attempts: int = UNCONTACTABLE_AFTER_ATTEMPTS,
) -> tuple[ConsentCase, list[Emit]]:
    """The scheduling service closed the case: from now on everything is refused but survey responses. Those the
    survey policy names are invited (``evaluation.survey_invitees``), once: a repeated closure changes nothing.
    ``uncontactable_after_attempts`` is the setting scheduling closes ``uncontactable`` by: whoever's unanswered
    count met it is not invited on such a closure; everyone else is, as on any closure."""
    if case is not None and case.closed:
        return case, []
    known = case or ConsentCase(case_id=event.case_id)
    invitees = survey_invitees(
        known.participants,
        event.reason,
        withdrawn_case=known.withdrawn,
        contact_barred=_no_contact_yet(known) is not None,
        said_no=lambda person_id: known.consent(person_id, PARTICIPATION) in _ENDED,
        out_of_reach=lambda person_id: _out_of_reach(known.contact_log(person_id), uncontactable_after_attempts),
    )
    case = replace(
        known, closed=True, ready=False, survey_invited=known.survey_invited | {p.person_id for p in invitees}
    )
    emits = [
        Emit(
            SurveyInvited(
                case_id=case.case_id,
                person_id=p.person_id,
                role=p.role,
                closure_reason=event.reason,
                invited_at=now,
                invited_by=SYSTEM_CONSENT,
            ),
            f"survey-invited:{p.person_id}",
        )
        for p in invitees
    ]
    return case, emits


# --- commands -----------------------------------------------------------------------------------


def assign_facilitator(
    case: ConsentCase | None,
    command: AssignFacilitator,
    *,
    command_id: str,
    now: datetime,
    registered_specialist: bool | None,
    registered_at: datetime | None = None,
) -> tuple[ConsentCase | None, list[Emit]]:
    """Assign a facilitator; ``registered_specialist`` is their status in the facilitator register (``None``: not
    registered), as of ``registered_at``. A sensitive case takes a specialist first; once one is assigned,
    others may join them."""
    if (refusal := _refusal(case, command)) is not None:
        return _reject(case, command, command_id, now, refusal)
    assert case is not None
    if registered_specialist is None:
        return _reject(case, command, command_id, now, f"facilitator {command.facilitator_id} is not registered")
    if case.specialist_required and not registered_specialist and not any(f.specialist for f in case.facilitators):
        return _reject(
            case,
            command,
            command_id,
            now,
            f"this case is sensitive and needs a specialist facilitator; {command.facilitator_id} is not a specialist",
        )
    assigned = AssignedFacilitator(command.facilitator_id, registered_specialist, registered_at)
    if any(
        (f.facilitator_id, f.specialist) == (assigned.facilitator_id, assigned.specialist) for f in case.facilitators
    ):
        return case, []
    others = tuple(f for f in case.facilitators if f.facilitator_id != command.facilitator_id)
    case = replace(case, facilitators=(*others, assigned))
    fact = FacilitatorAssigned(
        case_id=case.case_id,
        facilitator_id=command.facilitator_id,
        specialist=registered_specialist,
        assigned_at=now,
        assigned_by=command.actor,
        reason=command.reason,
    )
    return _settle(case, [Emit(fact, f"facilitator-assigned:{command_id}")], command_id, now)


def record_preparation_meeting(
    case: ConsentCase | None, command: RecordPreparationMeeting, *, command_id: str, now: datetime
) -> tuple[ConsentCase | None, list[Emit]]:
    refusal = (
        _refusal(case, command)
        or not_a_participant(case, command.person_id)
        or _erased_after_declining(case, command.person_id)
        or _no_contact_yet(case)
    )
    if refusal is not None:
        return _reject(case, command, command_id, now, refusal)
    assert case is not None
    if not case.facilitators:
        return _reject(case, command, command_id, now, "no facilitator is assigned to this case yet")
    case = _heard_from(replace(case, prepared=case.prepared | {command.person_id}), command.person_id, command.met_at)
    fact = PreparationMeetingRecorded(
        case_id=case.case_id,
        person_id=command.person_id,
        met_at=command.met_at,
        method=command.method,
        recorded_at=now,
        recorded_by=command.actor,
    )
    return _settle(case, [Emit(fact, f"preparation-meeting-recorded:{command_id}")], command_id, now)


def record_risk_assessment(
    case: ConsentCase | None, command: RecordRiskAssessment, *, command_id: str, now: datetime
) -> tuple[ConsentCase | None, list[Emit]]:
    """Record an assessment. Only the one with the latest ``assessed_at`` counts for readiness: an older one
    recorded late is still a fact, and changes nothing."""
    refusal = _refusal(case, command) or _in_the_future("assessed_at", command.assessed_at, now)
    if refusal is not None:
        return _reject(case, command, command_id, now, refusal)
    assert case is not None
    latest = case.risk_assessment
    if latest is None or command.assessed_at >= latest.assessed_at:
        assessment = RiskAssessment(command.assessed_at, command.level, command.safe_to_proceed)
        case = replace(case, risk_assessment=assessment)
    fact = RiskAssessmentRecorded(
        case_id=case.case_id,
        assessed_at=command.assessed_at,
        level=command.level,
        safe_to_proceed=command.safe_to_proceed,
        recorded_at=now,
        recorded_by=command.actor,
        reason=command.reason,
        command_id=command_id,
    )
    # The verdict comes after what it brings (readiness lost): a service that follows the command in case order
    # (scheduling) goes on when it reads the verdict, by then knowing the case is not ready.
    case, settled = _settle(case, [], command_id, now)
    return case, [*settled, Emit(fact, f"risk-assessment-recorded:{command_id}")]


def give_consent(
    case: ConsentCase | None, command: GiveConsent, *, command_id: str, now: datetime
) -> tuple[ConsentCase | None, list[Emit]]:
    refusal = (
        _refusal(case, command)
        or _cannot_speak_for(case, command, now)
        or _erased_after_declining(case, command.person_id)
        or _no_contact_yet(case)
    )
    if refusal is not None:
        return _reject(case, command, command_id, now, refusal)
    assert case is not None
    if case.consent(command.person_id, command.purpose) is ConsentStatus.given:
        return case, []
    decided_at = command.decided_at or now
    case = case.with_consent(command.person_id, command.purpose, ConsentStatus.given, decided_at)
    if command.purpose == PARTICIPATION:  # taking part again: the erasure their decline would bring is called off
        case = replace(
            case, erasures_pending=tuple(e for e in case.erasures_pending if e.person_id != command.person_id)
        )
    case = _themself_in_touch(case, command, decided_at)
    fact = ConsentGiven(
        case_id=case.case_id,
        person_id=command.person_id,
        purpose=command.purpose,
        through=command.through,
        method=command.method,
        given_at=decided_at,
        given_by=command.actor,
        recorded_at=now,
    )
    return _settle(case, [Emit(fact, f"consent-given:{command_id}")], command_id, now)


def decline_consent(
    case: ConsentCase | None, command: DeclineConsent, *, command_id: str, now: datetime
) -> tuple[ConsentCase | None, list[Emit]]:
    """A required participant declining to take part withdraws the case: it cannot proceed without them.
    Declining after having consented to take part is a withdrawal (case-level reason ``consent_withdrawn``)."""
    refusal = (
        _refusal(case, command)
        or _cannot_speak_for(case, command, now)
        or _erased_after_declining(case, command.person_id)
        or _staff_reason(command)
    )
    if refusal is not None:
        return _reject(case, command, command_id, now, refusal)
    assert case is not None
    previous = case.consent(command.person_id, command.purpose)
    if previous is ConsentStatus.declined:
        return case, []
    decided_at = command.decided_at or now
    case = case.with_consent(command.person_id, command.purpose, ConsentStatus.declined, decided_at)
    case = _themself_in_touch(case, command, decided_at)
    fact = ConsentDeclined(
        case_id=case.case_id,
        person_id=command.person_id,
        purpose=command.purpose,
        through=command.through,
        method=command.method,
        declined_at=decided_at,
        declined_by=command.actor,
        recorded_at=now,
        reason=command.reason,
        command_id=command_id,
    )
    emits = [Emit(fact, f"consent-declined:{command_id}")]
    case = _erase_in_time(case, command, f"consent-declined:{command_id}", decided_at, now)
    if _stops_the_case(case, command):
        withdrew = previous is ConsentStatus.given
        reason = CaseWithdrawalReason.consent_withdrawn if withdrew else CaseWithdrawalReason.consent_declined
        return _withdraw_case(case, reason, emits, now)
    return _settle(case, emits, command_id, now)


def withdraw_consent(
    case: ConsentCase | None, command: WithdrawConsent, *, command_id: str, now: datetime
) -> tuple[ConsentCase | None, list[Emit]]:
    """Accepted at any stage until the case closes, from the participant or a facilitator, with no reason needed.
    Withdrawing what is already withdrawn or declined is a harmless repeat, even after closure."""
    ended = case is not None and case.consent(command.person_id, command.purpose) in _ENDED
    speaker = _cannot_speak_for(case, command, now)
    if speaker is None and (erased := _erased_after_declining(case, command.person_id)) is not None:
        return _reject(case, command, command_id, now, erased)
    if case is not None and case.closed and ended and speaker is None:
        return case, []  # a repeat that arrives after the closure: nothing left to withdraw
    refusal = _refusal(case, command) if case is None or case.closed else speaker
    if refusal is not None:
        return _reject(case, command, command_id, now, refusal)
    assert case is not None
    if ended:
        return case, []  # nothing left to withdraw: a repeat is harmless
    decided_at = command.decided_at or now
    case = case.with_consent(command.person_id, command.purpose, ConsentStatus.withdrawn, decided_at)
    case = _themself_in_touch(case, command, decided_at)
    fact = ConsentWithdrawn(
        case_id=case.case_id,
        person_id=command.person_id,
        purpose=command.purpose,
        through=command.through,
        method=command.method,
        withdrawn_at=decided_at,
        withdrawn_by=command.actor,
        recorded_at=now,
        reason=command.reason,
        command_id=command_id,
    )
    emits = [Emit(fact, f"consent-withdrawn:{command_id}")]
    case = _erase_in_time(case, command, f"consent-withdrawn:{command_id}", decided_at, now)
    if _stops_the_case(case, command):
        return _withdraw_case(case, CaseWithdrawalReason.consent_withdrawn, emits, now)
    return _settle(case, emits, command_id, now)


def put_on_hold(
    case: ConsentCase | None, command: PutCaseOnHold, *, command_id: str, now: datetime
) -> tuple[ConsentCase | None, list[Emit]]:
    """Hold the case for a safeguarding concern, from any open state (a withdrawn case that is not yet closed
    included: nothing more will happen on it, but the concern is recorded). Staff only."""
    refusal = _closed(case, command) or _staff_only(command, "put a case on hold")
    if refusal is None and case is not None and case.hold is not None:
        refusal = f"the case is already on hold (since {case.hold.held_at.isoformat()})"
    if refusal is not None:
        return _reject(case, command, command_id, now, refusal)
    assert case is not None
    case = replace(case, hold=Hold(now, command_id), reassess_after=now)
    fact = CaseHeld(
        case_id=case.case_id,
        concern=command.concern,
        raised_by=command.raised_by,
        held_at=now,
        held_by=command.actor,
        command_id=command_id,
    )
    return _settle(case, [Emit(fact, f"case-held:{command_id}")], command_id, now)


def resume(
    case: ConsentCase | None, command: ResumeCase, *, command_id: str, now: datetime
) -> tuple[ConsentCase | None, list[Emit]]:
    """Lift the hold. Readiness is re-derived, and needs a risk assessment made after the concern was raised."""
    refusal = _closed(case, command) or _staff_only(command, "resume a case") or _staff_reason(command)
    if refusal is None and case is not None and case.hold is None:
        refusal = "the case is not on hold"
    if refusal is not None:
        return _reject(case, command, command_id, now, refusal)
    assert case is not None and command.reason is not None
    case = replace(case, hold=None)
    fact = CaseResumed(case_id=case.case_id, resumed_at=now, resumed_by=command.actor, reason=command.reason)
    return _settle(case, [Emit(fact, f"case-resumed:{command_id}")], command_id, now)


def add_participant(
    case: ConsentCase | None, command: AddParticipant, *, command_id: str, now: datetime
) -> tuple[ConsentCase | None, list[Emit]]:
    """Staff add someone in a role for a participant (``supports``). A parent or guardian of a required participant
    is required too; readiness is re-derived (a ready case that gains a guardian who has not consented loses it)."""
    refusal = (
        _refusal(case, command)
        or _staff_only(command, "add a participant")
        or _cannot_add(case, command)
        or _erased_after_declining(case, command.supports)
    )
    if refusal is not None:
        return _reject(case, command, command_id, now, refusal)
    assert case is not None
    supported = case.participant(command.supports)
    assert supported is not None
    added = CaseParticipant(
        person_id=command.person_id,
        role=command.role,
        required=command.role is Role.parent_guardian and supported.required,
        supports=command.supports,
        language=command.language,
    )
    case = replace(case, participants=(*case.participants, added))
    fact = ParticipantAdded(
        case_id=case.case_id,
        participant=added,
        added_at=now,
        added_by=command.actor,
        reason=command.reason,
        command_id=command_id,
    )
    # The verdict comes after what it brings (readiness lost), as for a risk assessment.
    case, settled = _settle(case, [], command_id, now)
    return case, [*settled, Emit(fact, f"participant-added:{command_id}")]


def record_contact_attempt(
    case: ConsentCase | None, command: RecordContactAttempt, *, command_id: str, now: datetime
) -> tuple[ConsentCase | None, list[Emit]]:
    """Log one attempt to reach a participant, with their count of attempts since they were last reached. Refused
    when nobody on the case may be contacted; an attempt that broke the person's safe-contact record is logged with
    ``breached_safe_contact`` and its code (sealed under the case's key, at one length whatever the outcome)."""
    refusal = (
        _refusal(case, command)
        or _staff_only(command, "record a contact attempt")
        or not_a_participant(case, command.person_id)
        or _erased_after_declining(case, command.person_id)
        or _no_contact_yet(case)
        or _in_the_future("attempted_at", command.attempted_at, now)
    )
    if refusal is not None:
        return _reject(case, command, command_id, now, refusal)
    assert case is not None
    breach = forbidden_by(case.safe_contact(command.person_id), command.method, command.outcome)
    log = case.contact_log(command.person_id).after(command.attempted_at, command.outcome)
    others = tuple(c for c in case.contact_logs if c.person_id != command.person_id)
    case = replace(case, contact_logs=(*others, log))
    fact = ContactAttemptRecorded(
        case_id=case.case_id,
        person_id=command.person_id,
        attempted_at=command.attempted_at,
        method=command.method,
        outcome=command.outcome,
        unanswered_in_a_row=log.unanswered_in_a_row,  # the log's, even for a "reached" recorded late
        recorded_at=now,
        recorded_by=command.actor,
        note=command.note,
        command_id=command_id,
        breached_safe_contact=breach is not SafeContactBreach.none,
        safe_contact_breach=breach,
    )
    return case, [Emit(fact, f"contact-attempt-recorded:{command_id}")]


def add_note(
    case: ConsentCase | None, command: AddCaseNote, *, command_id: str, now: datetime
) -> tuple[ConsentCase | None, list[Emit]]:
    """A staff case note, on any case not closed (a note contacts nobody), about the case or one participant."""
    refusal = _closed(case, command) or _staff_only(command, "add a case note")
    if refusal is None and command.person_id is not None:
        refusal = not_a_participant(case, command.person_id) or _erased_after_declining(case, command.person_id)
    if refusal is None and not command.text.strip():
        refusal = "a case note needs some text"
    if refusal is not None:
        return _reject(case, command, command_id, now, refusal)
    assert case is not None
    fact = CaseNoteAdded(
        case_id=case.case_id,
        note_id=command_id,
        person_id=command.person_id,
        text=command.text,
        added_at=now,
        added_by=command.actor,
    )
    return case, [Emit(fact, f"note-added:{command_id}")]


def record_safe_contact(
    case: ConsentCase | None, command: RecordSafeContact, *, command_id: str, now: datetime
) -> tuple[ConsentCase | None, list[Emit]]:
    """Record how a participant may safely be contacted, with their agreement (through them or a facilitator). The
    latest record replaces the one before; accepted on any case not closed, as it only restricts contact."""
    refusal = (
        _closed(case, command)
        or _cannot_agree_for(case, command.person_id, command.through, command, command.agreed_at, now)
        or _erased_after_declining(case, command.person_id)
    )
    if refusal is not None:
        return _reject(case, command, command_id, now, refusal)
    assert case is not None
    others = tuple(c for c in case.safe_contacts if c.person_id != command.person_id)
    case = replace(case, safe_contacts=(*others, SafeContact.of(command)))
    fact = SafeContactRecorded(
        case_id=case.case_id,
        person_id=command.person_id,
        safe_channels=sorted(set(command.safe_channels)),
        voicemail_ok=command.voicemail_ok,
        letters_to_home_ok=command.letters_to_home_ok,
        alternative_address=command.alternative_address,
        alternative_phone=command.alternative_phone,
        alternative_email=command.alternative_email,
        through=command.through,
        method=command.method,
        agreed_at=command.agreed_at or now,
        recorded_at=now,
        recorded_by=command.actor,
        command_id=command_id,
    )
    return case, [Emit(fact, f"safe-contact-recorded:{command_id}")]


SURVEY_REFUSAL_TO_A_PARTICIPANT = "a participant may record only their own response to a survey they were invited to"
"""The one refusal a participant gets for an unknown case, someone else's response, or no invitation: case ids are
derived from (force, crime reference), so a precise answer would tell anyone whether an RJ case exists for a crime,
and whether someone was invited (did not withdraw)."""


def record_survey_response(
    case: ConsentCase | None, command: RecordSurveyResponse, *, command_id: str, now: datetime
) -> tuple[ConsentCase | None, list[Emit]]:
    """A survey answer from someone invited when the case closed, once; by themself or through staff."""
    actor = command.actor
    # Who may speak comes first, in words that depend on nothing but the sender. A participant then learns nothing
    # of the case (whether it exists, whether they or anyone else were invited) from a refusal: one neutral answer
    # for all of it; staff get the precise reason.
    if actor.kind == "system":
        refusal: str | None = "a survey response comes from the participant or is recorded by staff"
    else:
        refusal = _not_invited(case, command)
        if actor.kind == "participant" and (refusal is not None or actor.id != command.person_id):
            refusal = SURVEY_REFUSAL_TO_A_PARTICIPANT
    if refusal is None:
        refusal = _erased_after_declining(case, command.person_id)
    if refusal is None and case is not None and command.person_id in case.survey_answered:
        refusal = f"{command.person_id} has already answered the satisfaction survey on this case"
    if refusal is None and command.responded_at is not None:
        refusal = _in_the_future("responded_at", command.responded_at, now)
    if refusal is not None:
        return _reject(case, command, command_id, now, refusal)
    assert case is not None
    participant = case.participant(command.person_id)
    assert participant is not None
    case = replace(case, survey_answered=case.survey_answered | {command.person_id})
    fact = SurveyResponseRecorded(
        case_id=case.case_id,
        person_id=command.person_id,
        role=participant.role,
        satisfied=command.satisfied,
        score=command.score,
        comments=command.comments,
        responded_at=command.responded_at or now,
        recorded_at=now,
        recorded_by=actor,
        command_id=command_id,
    )
    return case, [Emit(fact, f"survey-response-recorded:{command_id}")]


def decide_erasures_due(
    case: ConsentCase | None,
    command: DecideErasuresDue,
    *,
    command_id: str,
    now: datetime,
    declined_erasure_delay: timedelta = DECLINED_ERASURE_DELAY,
) -> tuple[ConsentCase | None, list[Emit]]:
    """Rule 7, decided in case order: each person on the case who declined or withdrew from taking part at least
    ``declined_erasure_delay`` ago, and has not consented to take part since (a consent read before this command
    called it off), is due for erasure (``ParticipantErasureDue``), the case open or closed. Decided once: their
    consent on the case is refused from then on. Asked again, or too early, nothing changes."""
    if command.actor != SYSTEM_CONSENT:
        return _reject(case, command, command_id, now, "only the consent service asks whether an erasure is due")
    if case is None:
        return None, []
    due = [e for e in case.erasures_pending if e.recorded_at + declined_erasure_delay <= now]
    if not due:
        return case, []
    case = replace(
        case,
        erasures_pending=tuple(e for e in case.erasures_pending if e not in due),
        erasure_due=case.erasure_due | {e.person_id for e in due},
    )
    emits = [
        Emit(
            ParticipantErasureDue(
                case_id=case.case_id,
                person_id=e.person_id,
                decline_id=e.decline_id,
                declined_at=e.declined_at,
                declined_by=e.declined_by,
                recorded_at=e.recorded_at,
                due_at=e.recorded_at + declined_erasure_delay,
                decided_at=now,
                decided_by=SYSTEM_CONSENT,
            ),
            f"erasure-due:{e.person_id}",
        )
        for e in due
    ]
    return case, emits


DECLINER_NOT_RECORDED = Actor(kind="system", id="consent-service:decliner-not-recorded")
"""Who recorded a decline made before pending erasures were kept: the state of then did not say (nor the decline
fact's id, which ``erasures_from_before`` derives from the person instead)."""

_KEPT_SINCE_ERASURES = '"erasures_pending"'
"""A key every state saved since pending erasures were kept has (defaults are saved too); one saved before lacks
it."""


def load_case(document: str | bytes) -> ConsentCase:
    """A case from its stored state; one saved before pending erasures were kept gets them from its consents
    (``erasures_from_before``)."""
    case = ConsentCase.from_json(document)
    text = document if isinstance(document, str) else document.decode()
    return case if _KEPT_SINCE_ERASURES in text else erasures_from_before(case)


def erasures_from_before(case: ConsentCase) -> ConsentCase:
    """Rule 7 for people who declined or withdrew from taking part before pending erasures were kept: each latest
    participation decision that is a decline or a withdrawal is a pending erasure, due a grace period after the
    decision (its time is all the old state kept of it; migration ``004_erasure_watch.sql`` watches the same rows
    from the same time). Their decline fact's id and who recorded it were not kept: the id is derived from the
    person, the recorder is ``DECLINER_NOT_RECORDED``."""
    pending = tuple(
        PendingErasure(
            person_id=c.person_id,
            decline_id=derived_event_id(SOURCE, case.case_id, f"participation-ended-before-erasures:{c.person_id}"),
            declined_at=c.decided_at,
            declined_by=DECLINER_NOT_RECORDED,
            recorded_at=c.decided_at,
        )
        for c in case.consents
        if c.purpose == PARTICIPATION and c.status in _ENDED
    )
    return replace(case, erasures_pending=pending)


def erasure_watch(case: ConsentCase | None) -> list[tuple[str, datetime]]:
    """What the erasure sweep watches on the case: each pending erasure's person and when its decline was recorded
    (the grace period runs from then). Rewritten from the state in the transaction that saves it."""
    if case is None:
        return []
    return sorted((e.person_id, e.recorded_at) for e in case.erasures_pending)


# --- dispatch -----------------------------------------------------------------------------------

Handler = Callable[..., tuple[ConsentCase | None, list[Emit]]]

HANDLERS: dict[type[EventData], Handler] = {
    CaseAccepted: on_case_accepted,
    CaseClosed: on_case_closed,
    AssignFacilitator: assign_facilitator,
    RecordPreparationMeeting: record_preparation_meeting,
    RecordRiskAssessment: record_risk_assessment,
    GiveConsent: give_consent,
    DeclineConsent: decline_consent,
    WithdrawConsent: withdraw_consent,
    PutCaseOnHold: put_on_hold,
    ResumeCase: resume,
    AddParticipant: add_participant,
    FacilitatorRegistered: on_facilitator_registered,
    OffenderJoined: on_offender_joined,
    RecordContactAttempt: record_contact_attempt,
    AddCaseNote: add_note,
    RecordSafeContact: record_safe_contact,
    RecordSurveyResponse: record_survey_response,
    DecideErasuresDue: decide_erasures_due,
}

CONSUMES: frozenset[str] = frozenset(model.event_type for model in HANDLERS)
"""Event types this service takes in: ``rj.case.accepted`` (rj.referral), ``rj.case.closed`` and
``rj.facilitator.registered`` (rj.scheduling) and its commands (rj.commands). ``rj.case.declined`` needs
nothing from us."""


def handle(
    case: ConsentCase | None,
    message: EventData,
    *,
    command_id: str,
    now: datetime,
    registered_specialist: bool | None = None,
    registered_at: datetime | None = None,
    uncontactable_after_attempts: int = UNCONTACTABLE_AFTER_ATTEMPTS,
    declined_erasure_delay: timedelta = DECLINED_ERASURE_DELAY,
) -> tuple[ConsentCase | None, list[Emit]]:
    """Apply any message in ``CONSUMES`` to the case it is about (``None`` when there is none yet).

    ``declined_erasure_delay`` (the ``declined_erasure_delay_s`` setting) is used only for ``DecideErasuresDue``.

    ``uncontactable_after_attempts`` (the setting of that name) is used only for ``CaseClosed``: see
    ``on_case_closed``.

    ``registered_specialist`` is used only for ``AssignFacilitator``: the named facilitator's specialist status in
    the facilitator register (fed by ``rj.facilitator.registered``) as of ``registered_at``, or ``None`` when
    they are not registered. A ``FacilitatorRegistered`` is applied to each case the facilitator is assigned to.
    """
    if isinstance(message, Command) and message.actor.kind == "participant":
        if (refusal := _not_theirs_to_send(message)) is not None:
            return _reject(case, message, command_id, now, refusal)
    after, emits = _decide(
        case,
        message,
        command_id=command_id,
        now=now,
        registered_specialist=registered_specialist,
        registered_at=registered_at,
        uncontactable_after_attempts=uncontactable_after_attempts,
        declined_erasure_delay=declined_erasure_delay,
    )
    if isinstance(message, Command) and message.actor.kind == "participant":
        return after, [_neutral(message, e) for e in emits]
    return after, emits


def _decide(
    case: ConsentCase | None,
    message: EventData,
    *,
    command_id: str,
    now: datetime,
    registered_specialist: bool | None,
    registered_at: datetime | None,
    uncontactable_after_attempts: int,
    declined_erasure_delay: timedelta,
) -> tuple[ConsentCase | None, list[Emit]]:
    if isinstance(message, AssignFacilitator):
        return assign_facilitator(
            case,
            message,
            command_id=command_id,
            now=now,
            registered_specialist=registered_specialist,
            registered_at=registered_at,
        )
    if isinstance(message, CaseClosed):
        return on_case_closed(
            case, message, command_id=command_id, now=now, uncontactable_after_attempts=uncontactable_after_attempts
        )
    if isinstance(message, DecideErasuresDue):
        return decide_erasures_due(
            case, message, command_id=command_id, now=now, declined_erasure_delay=declined_erasure_delay
        )
    return HANDLERS[type(message)](case, message, command_id=command_id, now=now)


# --- helpers ------------------------------------------------------------------------------------

PARTICIPANT_COMMANDS = (GiveConsent, DeclineConsent, WithdrawConsent, RecordSafeContact, RecordSurveyResponse)
"""The commands a participant may send (each about themself); every other one is staff's."""

REFUSAL_TO_A_PARTICIPANT = (
    "not recorded: a participant may record only their own decisions, on a case they take part in and that is open "
    "to them now; their facilitator can say more"
)
"""The one refusal a participant gets, once they spoke for themself, whatever the reason (an unknown case, someone
not taking part, a closed, held or sensitive case, their data erased): case ids derive from (force, crime
reference), so a precise answer would tell anyone whether an RJ case exists for a crime, or whether someone takes
part in it. Staff get the precise reason."""


def _not_theirs_to_send(command: Command) -> str | None:
    """Why a participant may not send this, in words that depend only on what they sent: checked before anything
    about the case or the person named is looked at (rule 2, and whether a case exists at all)."""
    if not isinstance(command, PARTICIPANT_COMMANDS):
        return f"only staff may send {command.event_type}"
    actor = command.actor
    if isinstance(command, RecordSurveyResponse):
        return None if actor.id == command.person_id else SURVEY_REFUSAL_TO_A_PARTICIPANT
    what = "an agreement" if isinstance(command, RecordSafeContact) else "a decision"
    if command.through is RecordedThrough.facilitator:
        return f"{what} through a facilitator must be recorded by a member of staff"
    if actor.id != command.person_id:
        return f"{what} through the participant must come from {command.person_id} themself"
    return None


def _neutral(command: Command, emit: Emit) -> Emit:
    """A participant's refusal, once they spoke for themself: one sentence for every reason. (A survey response
    gets its own, from ``record_survey_response``, which then tells the invited person they already answered.)"""
    if not isinstance(emit.data, CommandRejected) or isinstance(command, RecordSurveyResponse):
        return emit
    return replace(emit, data=emit.data.model_copy(update={"reason": REFUSAL_TO_A_PARTICIPANT}))


def _refusal(case: ConsentCase | None, command: Command) -> str | None:
    """Why nothing but a withdrawal may happen to the case now, if so."""
    if (refusal := _closed(case, command)) is not None:
        return refusal
    if case is not None and case.withdrawn:
        return "case is withdrawn: only a withdrawal of consent is still accepted"
    return None


def _closed(case: ConsentCase | None, command: Command) -> str | None:
    """Why nothing at all may happen to the case now (unknown or closed), if so."""
    if case is None:
        return f"unknown case {command.case_id}: no accepted case with that id"
    if case.closed:
        return "case is closed"
    return None


def _staff_only(command: Command, what: str) -> str | None:
    if command.actor.kind != "staff":
        return f"only staff may {what}"
    return None


def _staff_reason(command: Command) -> str | None:
    """Staff deciding for someone, or holding or resuming a case, say why; a participant is never asked."""
    on_behalf = not isinstance(command, ConsentDecision) or command.through is RecordedThrough.facilitator
    if on_behalf and not (command.reason or "").strip():
        return f"a reason is required when staff decide ({command.event_type})"
    return None


UPSTREAM_ROLES = (Role.victim, Role.offender)


def _cannot_add(case: ConsentCase | None, command: AddParticipant) -> str | None:
    """Why this person cannot join the case in this role, if so."""
    assert case is not None
    if command.role in UPSTREAM_ROLES:
        return f"a {command.role} comes from the referral, not from staff"
    if case.participant(command.person_id) is not None:
        return f"{command.person_id} already takes part in this case"
    supported = case.participant(command.supports)
    if supported is None:
        return f"{command.supports} is not a participant in this case: nobody to take part for"
    if command.role is Role.parent_guardian and supported.role not in UPSTREAM_ROLES:
        return f"a parent or guardian takes part for a victim or offender; {command.supports} is a {supported.role}"
    if command.role is Role.interpreter and command.language is None:
        return "an interpreter needs the language they interpret"
    if command.role is not Role.interpreter and command.language is not None:
        return "only an interpreter has a language"
    return None


def _not_invited(case: ConsentCase | None, command: RecordSurveyResponse) -> str | None:
    """Why the person named may not answer the survey on this case (unknown case, not a participant, not invited),
    precisely, for staff."""
    if case is None:
        return f"unknown case {command.case_id}: no accepted case with that id"
    if (refusal := not_a_participant(case, command.person_id)) is not None:
        return refusal
    if command.person_id not in case.survey_invited:
        return f"{command.person_id} was not invited to the satisfaction survey on this case"
    return None


def _no_contact_yet(case: ConsentCase | None) -> str | None:
    """Why nobody on the case may be contacted now (a preparation meeting, consent being taken), if so."""
    if case is None:
        return None
    if case.hold is not None:
        return f"the case is on hold for a safeguarding concern (since {case.hold.held_at.isoformat()}): no contact"
    assessment = case.risk_assessment
    if case.risk_assessment_required and assessment is None:
        return "this case is sensitive: a risk assessment must be recorded before any contact with a party"
    if case.reassess_after is not None and (assessment is None or assessment.assessed_at < case.reassess_after):
        return (
            f"a risk assessment made after the safeguarding concern of {case.reassess_after.isoformat()} "
            "must be recorded before any contact with a party"
        )
    if assessment is not None and not assessment.safe_to_proceed:
        return "the latest risk assessment finds it unsafe to proceed: no contact until a new one finds it safe"
    return None


def _cannot_speak_for(case: ConsentCase | None, command: ConsentDecision, now: datetime) -> str | None:
    """Why this decision cannot be taken as stated: the wrong speaker, not a participant, or dated ahead. The
    speaker comes first, so that a participant naming someone else learns nothing of them (not even whether they
    take part)."""
    actor = command.actor
    if command.through is RecordedThrough.participant and (actor.kind, actor.id) != ("participant", command.person_id):
        return f"a decision through the participant must come from {command.person_id} themself"
    if command.through is RecordedThrough.facilitator and actor.kind != "staff":
        return "a decision through a facilitator must be recorded by a member of staff"
    if (refusal := not_a_participant(case, command.person_id)) is not None:
        return refusal
    if command.decided_at is not None:
        return _in_the_future("decided_at", command.decided_at, now)
    return None


def _cannot_agree_for(
    case: ConsentCase | None,
    person_id: str,
    through: RecordedThrough,
    command: Command,
    agreed_at: datetime | None,
    now: datetime,
) -> str | None:
    """Why a person's agreement cannot be taken as stated: as ``_cannot_speak_for``, for commands that are not
    consent decisions (the speaker first)."""
    actor = command.actor
    if through is RecordedThrough.participant and (actor.kind, actor.id) != ("participant", person_id):
        return f"an agreement through the participant must come from {person_id} themself"
    if through is RecordedThrough.facilitator and actor.kind != "staff":
        return "an agreement through a facilitator must be recorded by a member of staff"
    if (refusal := not_a_participant(case, person_id)) is not None:
        return refusal
    if agreed_at is not None:
        return _in_the_future("agreed_at", agreed_at, now)
    return None


def _out_of_reach(log: ContactLog, attempts: int) -> bool:
    """Whether the service could not reach the person: ``attempts`` unanswered in a row since they were last
    reached (or ever, when never). An empty log is not "could not reach": staff may have recorded their consent
    through a facilitator, or met them, with no attempt logged; only the count that closes a case as uncontactable
    says so."""
    return log.unanswered_in_a_row >= attempts


def _heard_from(case: ConsentCase, person_id: str, at: datetime) -> ConsentCase:
    """The person was in touch at ``at``: their contact log counts unanswered attempts from then on."""
    log = case.contact_log(person_id).heard_from(at)
    others = tuple(c for c in case.contact_logs if c.person_id != person_id)
    return replace(case, contact_logs=(*others, log))


def _themself_in_touch(case: ConsentCase, command: ConsentDecision, at: datetime) -> ConsentCase:
    """A decision the person made through the participant route is them in touch; one staff record for them is
    not (it may come from a letter, or be taken on their behalf), so their count stands. Scheduling resets its
    copy of the count on the same facts (``services.scheduling.domain.model.heard_from``)."""
    if command.through is not RecordedThrough.participant:
        return case
    return _heard_from(case, command.person_id, at)


def _in_the_future(name: str, moment: datetime, now: datetime) -> str | None:
    refusal = in_the_future(name, moment, now)
    return None if refusal is None else f"{refusal}: it has not happened yet"


_ENDED = (ConsentStatus.withdrawn, ConsentStatus.declined)


def _stops_the_case(case: ConsentCase, command: ConsentDecision) -> bool:
    participant = case.participant(command.person_id)
    return command.purpose == PARTICIPATION and participant is not None and participant.required


def _erase_in_time(
    case: ConsentCase, command: DeclineConsent | WithdrawConsent, identity: str, decided_at: datetime, now: datetime
) -> ConsentCase:
    """Someone stopped taking part: their erasure becomes due a grace period after now (rule 7), unless they consent
    again first. A pending one (from an earlier decline) is kept: the grace period runs from the first."""
    if command.purpose != PARTICIPATION or any(e.person_id == command.person_id for e in case.erasures_pending):
        return case
    pending = PendingErasure(
        person_id=command.person_id,
        decline_id=derived_event_id(SOURCE, case.case_id, identity),
        declined_at=decided_at,
        declined_by=command.actor,
        recorded_at=now,
    )
    return replace(case, erasures_pending=(*case.erasures_pending, pending))


def _erased_after_declining(case: ConsentCase | None, person_id: str | None) -> str | None:
    """Why nothing more is taken about this person on the case: their erasure was decided (rule 7). What staff can
    do instead: ``rj.participant.add`` takes supporters, parents or guardians, advocates and interpreters (under a new
    person id: this one still names the erased person here), never a victim or offender, who come only from a
    referral."""
    if case is not None and person_id is not None and person_id in case.erasure_due:
        return (
            f"{person_id} declined or withdrew from taking part and their personal data on this case has been "
            "erased: nothing more is recorded about them here. If they come back, a victim or offender takes part "
            "again only through a new referral of the crime (a new case, once this one is closed); anyone else, "
            "staff add again with rj.participant.add under a new person id"
        )
    return None


def _withdraw_case(
    case: ConsentCase, reason: CaseWithdrawalReason, emits: list[Emit], now: datetime
) -> tuple[ConsentCase, list[Emit]]:
    """Stop the case. Who and why stay on the staff-only fact in ``emits``; the case-level fact names no one."""
    if case.withdrawn:
        return case, emits  # someone else's decision already stopped it
    case = replace(case, withdrawn=True, ready=False)
    fact = CaseWithdrawn(case_id=case.case_id, reason=reason, withdrawn_at=now, decided_by=SYSTEM_CONSENT)
    return case, [*emits, Emit(fact, "case-withdrawn")]


def _settle(case: ConsentCase, emits: list[Emit], command_id: str, now: datetime) -> tuple[ConsentCase, list[Emit]]:
    """Announce a change of readiness caused by the decision just taken."""
    gaps = readiness_gaps(case)
    if not gaps and not case.ready:
        fact: EventData = CaseReadyForMeeting(
            case_id=case.case_id,
            participants=list(case.participants),
            specialist_required=case.specialist_required,
            facilitator_ids=[f.facilitator_id for f in case.facilitators],
            risk_assessed_at=case.risk_assessment.assessed_at if case.risk_assessment else None,
            ready_at=now,
            decided_by=SYSTEM_CONSENT,
        )
        return replace(case, ready=True), [*emits, Emit(fact, f"ready:{command_id}")]
    if gaps and case.ready:
        fact = CaseReadinessLost(
            case_id=case.case_id, reason="needs " + "; ".join(gaps), lost_at=now, decided_by=SYSTEM_CONSENT
        )
        return replace(case, ready=False), [*emits, Emit(fact, f"readiness-lost:{command_id}")]
    return case, emits


def _reject(
    case: ConsentCase | None, command: Command, command_id: str, now: datetime, reason: str
) -> tuple[ConsentCase | None, list[Emit]]:
    return case, [rejection(SERVICE, command, command_id, reason, now)]
