"""Referral decisions, pure: what we know about a crime, when it becomes a case, how it is screened.

Upstream events about one crime arrive in any order and more than once. A ``CrimeFile`` gathers them;
every decision is a function of the file, so the order of arrival does not change the outcome and a
repeat changes nothing. A file is one force's crime: the same crime reference from two forces is two files
and two cases (``schemas.referral.case_id_for``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from enum import StrEnum

from schemas.commands import RecordVictimInformationProvided, RecordVictimSupportReferral, SupportReferralOutcome
from schemas.common import SYSTEM_REFERRAL
from schemas.referral import (
    CaseAccepted,
    CaseDeclined,
    CaseOpened,
    CaseParticipant,
    DeclineReason,
    OffenderJoined,
    Participant,
    ReferralRoute,
    Role,
    SensitivityReason,
    VictimInformationDue,
    VictimInformationOverdue,
    VictimInformationProvided,
    VictimSupportReferralDue,
    VictimSupportReferralOverdue,
    VictimSupportReferralRecorded,
    age_band_on,
    case_id_for,
)
from schemas.upstream import CrimeOutcomeRecorded, CrimeRecorded, ReferralRequested, RiskFlag
from services.runtime.calendar import deadline_after
from services.runtime.decision import Emit, in_the_future, rejection

SERVICE = "referral"

INFORMATION_DUE_WORKING_DAYS = 5
INFORMATION_DUE_WORKING_DAYS_ENHANCED = 1
SUPPORT_REFERRAL_DUE_WORKING_DAYS = 2  # Victims' Code: referral to a victim support service (DOMAIN rule 10)


class CaseStatus(StrEnum):
    no_case = "no_case"  # not (yet) enough to open a case
    awaiting_offender = "awaiting_offender"  # opened on a request; screening waits for the outcome
    accepted = "accepted"
    declined = "declined"
    closed = "closed"  # the accepted case was closed; a new request refers the crime again, as a new case


@dataclass(frozen=True)
class CrimeFile:
    crime_reference: str
    force: str = ""  # the upstream source: "" for files made before forces were told apart
    referral: int = 1  # which referral of the crime the current case is
    legacy_id: bool = False  # made before forces were told apart: its case ids derive as they did then
    crime: CrimeRecorded | None = None
    outcome: CrimeOutcomeRecorded | None = None  # the first offender's
    co_outcomes: tuple[CrimeOutcomeRecorded, ...] = ()  # every other offender's, one each (several offenders)
    requests: tuple[ReferralRequested, ...] = ()
    status: CaseStatus = CaseStatus.no_case
    opened_at: datetime | None = None
    clocked_victims: frozenset[str] = field(default_factory=frozenset)

    @property
    def case_id(self) -> str:
        return case_id_for("" if self.legacy_id else self.force, self.crime_reference, self.referral)

    @property
    def outcomes(self) -> tuple[CrimeOutcomeRecorded, ...]:
        """Each offender's latest outcome, the first offender's first."""
        return (self.outcome, *self.co_outcomes) if self.outcome is not None else self.co_outcomes

    @property
    def admitted(self) -> tuple[CrimeOutcomeRecorded, ...]:
        """The outcomes of offenders who accept responsibility: they take part; the others do not."""
        return tuple(o for o in self.outcomes if o.admitted_responsibility is True)

    @property
    def is_open(self) -> bool:
        return self.status is not CaseStatus.no_case


# --- taking in upstream facts -------------------------------------------------------------------


def record_crime(file: CrimeFile, crime: CrimeRecorded, now: datetime) -> tuple[CrimeFile, list[Emit]]:
    """A crime was recorded (or recorded again, perhaps amended): keep the newest and start clocks."""
    file = replace(file, crime=crime)
    emits = _start_victims_code_clocks(file, crime)
    support = _start_support_referral_clocks(file, crime)  # the second clock, for the same new victims
    file = replace(file, clocked_victims=file.clocked_victims | {e.data.person_id for e in emits})  # type: ignore[attr-defined]
    file, more = _progress_case(file, now)
    return file, emits + more + support


def record_outcome(file: CrimeFile, outcome: CrimeOutcomeRecorded, now: datetime) -> tuple[CrimeFile, list[Emit]]:
    """An offender's outcome. One crime may have several offenders, each with their own outcome: each is kept
    (the latest per offender), and every one who accepts responsibility takes part in the one case."""
    offender = outcome.offender.person_id
    if file.outcome is None or file.outcome.offender.person_id == offender:
        if _older(outcome, file.outcome):
            return file, []  # a correction arriving late must not undo the newer record
        file = replace(file, outcome=outcome)
    else:
        known = next((o for o in file.co_outcomes if o.offender.person_id == offender), None)
        if _older(outcome, known):
            return file, []
        others = tuple(o for o in file.co_outcomes if o.offender.person_id != offender)
        joins = file.status is CaseStatus.accepted and outcome.admitted_responsibility is True
        joins = joins and not (known is not None and known.admitted_responsibility is True)
        file = replace(file, co_outcomes=(*others, outcome))
        if joins:  # another offender accepts responsibility on an accepted case: they take part in it too
            return file, [Emit(_offender_joined(file, outcome, now), f"offender-joined:{offender}")]
    if file.status in (CaseStatus.accepted, CaseStatus.declined, CaseStatus.closed):
        # Screening is settled; later changes of risk are for re-assessment in the consent service.
        return file, []
    return _progress_case(file, now)


def _older(new: CrimeOutcomeRecorded, known: CrimeOutcomeRecorded | None) -> bool:
    return bool(known and known.recorded_at and new.recorded_at and new.recorded_at < known.recorded_at)


def record_request(file: CrimeFile, request: ReferralRequested, now: datetime) -> tuple[CrimeFile, list[Emit]]:
    """A request for RJ. After the crime's case was closed, a new request (not one seen before) refers the crime
    again: a new case, with its own id (``referral`` + 1), opened and screened on what the file now holds."""
    if request in file.requests:
        return file, []
    file = replace(file, requests=(*file.requests, request))
    if file.status is CaseStatus.closed:
        file = replace(file, referral=file.referral + 1, status=CaseStatus.no_case, opened_at=None)
    return _progress_case(file, now)


def record_case_closed(
    file: CrimeFile, case_id: str, closed_at: datetime, now: datetime
) -> tuple[CrimeFile, list[Emit]]:
    """The scheduling service closed the crime's case; a closure of an earlier referral's case changes nothing.

    A request made after the closure may have been read before it (the two come on different topics): it
    refers the crime again at once, as it would have had it come after."""
    if case_id != file.case_id or file.status is not CaseStatus.accepted:
        return file, []
    file = replace(file, status=CaseStatus.closed)
    if any(r.requested_at is not None and r.requested_at > closed_at for r in file.requests):
        file = replace(file, referral=file.referral + 1, status=CaseStatus.no_case, opened_at=None)
        return _progress_case(file, now)
    return file, []


# --- opening and screening ----------------------------------------------------------------------


def _identified_victims(file: CrimeFile) -> list[str]:
    return [v.person_id for v in file.crime.victims] if file.crime else []


def should_open(file: CrimeFile) -> bool:
    """A case needs an identified victim and either an admitted outcome or an explicit request."""
    return bool(_identified_victims(file)) and (bool(file.admitted) or bool(file.requests))


def _progress_case(file: CrimeFile, now: datetime) -> tuple[CrimeFile, list[Emit]]:
    emits: list[Emit] = []
    if file.status is CaseStatus.no_case:
        if not should_open(file):
            return file, []
        file = replace(file, status=CaseStatus.awaiting_offender, opened_at=now)
        emits.append(Emit(_case_opened(file, now), "opened"))
    if file.status is CaseStatus.awaiting_offender and file.outcome is not None:
        decision = screen(file, now)
        status = CaseStatus.accepted if isinstance(decision, CaseAccepted) else CaseStatus.declined
        file = replace(file, status=status)
        emits.append(Emit(decision, "screened"))
    return file, emits


def _routes(file: CrimeFile) -> list[ReferralRoute]:
    routes = [ReferralRoute(route="admitted_outcome", person_id=o.offender.person_id) for o in file.admitted]
    routes += [
        ReferralRoute(route="request", requested_by=r.requested_by, person_id=r.person_id) for r in file.requests
    ]
    return routes


def participants(file: CrimeFile, *, taking_part: bool = False) -> list[Participant]:
    """The people the file holds data about: its victims and every offender with an outcome (``taking_part``:
    only the offenders who accept responsibility, who take part in the case)."""
    assert file.crime is not None
    reported = file.crime.reported_at.date()
    people = [
        Participant(
            person_id=v.person_id,
            role=Role.victim,
            required=True,
            name=v.name,
            date_of_birth=v.date_of_birth,
            contact=v.contact,
            preferred_channel=v.preferred_channel,
            enhanced_rights=v.enhanced_rights,
            vulnerable=v.vulnerable,
            age_band=age_band_on(v.date_of_birth, reported),
            gender=v.gender,
            ethnicity=v.ethnicity,
        )
        for v in file.crime.victims
    ]
    for o in (outcome.offender for outcome in (file.admitted if taking_part else file.outcomes)):
        people.append(
            Participant(
                person_id=o.person_id,
                role=Role.offender,
                required=True,
                name=o.name,
                date_of_birth=o.date_of_birth,
                contact=o.contact,
                in_custody=o.in_custody,
                custody_location=o.custody_location,
                age_band=age_band_on(o.date_of_birth, reported),
                gender=o.gender,
                ethnicity=o.ethnicity,
            )
        )
    return people


def _offender_joined(file: CrimeFile, outcome: CrimeOutcomeRecorded, now: datetime) -> OffenderJoined:
    details = next(p for p in participants(file) if p.person_id == outcome.offender.person_id)
    return OffenderJoined(
        case_id=file.case_id,
        crime_reference=file.crime_reference,
        force=file.force or None,
        participant=CaseParticipant(
            person_id=details.person_id, role=Role.offender, required=True, in_custody=details.in_custody
        ),
        details=details,
        joined_at=now,
        decided_by=SYSTEM_REFERRAL,
    )


def _case_opened(file: CrimeFile, now: datetime) -> CaseOpened:
    assert file.crime is not None
    return CaseOpened(
        case_id=file.case_id,
        crime_reference=file.crime_reference,
        force=file.force or None,
        referral=file.referral,
        offence=file.crime.offence,
        participants=participants(file),
        routes=_routes(file),
        opened_at=now,
        opened_by=SYSTEM_REFERRAL,
    )


def age_on(born: date, day: date) -> int:
    return day.year - born.year - ((day.month, day.day) < (born.month, born.day))


def under_18_on(born: date | None, day: date) -> bool:
    """Whether someone is under 18 on ``day`` (a parent or guardian must consent too); unknown: not known to be."""
    return born is not None and age_on(born, day) < 18


def sensitivity_reasons(file: CrimeFile) -> list[SensitivityReason]:
    """Why a case needs a specialist facilitator and a risk assessment before any contact."""
    assert file.crime is not None
    reasons: list[SensitivityReason] = []
    flags = {flag for outcome in file.outcomes for flag in outcome.risk_flags}
    for flag in RiskFlag:
        if flag in flags:
            reasons.append(SensitivityReason(flag.value))
    reported = file.crime.reported_at.date()
    if any(v.date_of_birth is not None and age_on(v.date_of_birth, reported) < 18 for v in file.crime.victims):
        reasons.append(SensitivityReason.victim_under_18)
    if any(v.vulnerable for v in file.crime.victims):
        reasons.append(SensitivityReason.victim_vulnerable)
    return reasons


def screen(file: CrimeFile, now: datetime) -> CaseAccepted | CaseDeclined:
    """Screen an opened case whose offender is known."""
    assert file.outcome is not None
    if not file.admitted:
        return CaseDeclined(
            case_id=file.case_id,
            crime_reference=file.crime_reference,
            force=file.force or None,
            reason=DeclineReason.offender_denies_responsibility,
            detail="RJ needs the offender to accept responsibility; the recorded outcome says they do not",
            decided_at=now,
            decided_by=SYSTEM_REFERRAL,
        )
    reasons = sensitivity_reasons(file)
    return CaseAccepted(
        case_id=file.case_id,
        crime_reference=file.crime_reference,
        force=file.force or None,
        specialist_required=bool(reasons),
        risk_assessment_required=bool(reasons),
        sensitivity_reasons=reasons,
        participants=[
            CaseParticipant(
                person_id=p.person_id,
                role=p.role,
                required=p.required,
                in_custody=p.in_custody,
                under_18=under_18_on(p.date_of_birth, now.date()),
            )
            for p in participants(file, taking_part=True)
        ],
        decided_at=now,
        decided_by=SYSTEM_REFERRAL,
        reason=(
            "eligible; needs a specialist facilitator and a risk assessment: " + ", ".join(reasons)
            if reasons
            else "eligible: identified victim and an offender who accepts responsibility"
        ),
    )


# --- the Victims' Code clock --------------------------------------------------------------------


@dataclass(frozen=True)
class VictimClock:
    crime_reference: str
    person_id: str
    force: str
    case_id: str  # the case of the crime's first referral: its report started the clock
    reported_at: datetime
    due_by: datetime
    enhanced_rights: bool
    provided_at: datetime | None = None
    breached_at: datetime | None = None


def _start_victims_code_clocks(file: CrimeFile, crime: CrimeRecorded) -> list[Emit]:
    emits = []
    for victim in crime.victims:
        if victim.person_id in file.clocked_victims:
            continue
        days = INFORMATION_DUE_WORKING_DAYS_ENHANCED if victim.enhanced_rights else INFORMATION_DUE_WORKING_DAYS
        due_date, due_by = deadline_after(crime.reported_at, days)
        emits.append(
            Emit(
                VictimInformationDue(
                    case_id=file.case_id,
                    crime_reference=file.crime_reference,
                    person_id=victim.person_id,
                    reported_at=crime.reported_at,
                    due_by=due_by,
                    due_date=due_date,
                    working_days=days,
                    enhanced_rights=victim.enhanced_rights,
                ),
                f"information-due:{victim.person_id}",
            )
        )
    return emits


def clock_from(due: VictimInformationDue, force: str) -> VictimClock:
    return VictimClock(
        crime_reference=due.crime_reference,
        person_id=due.person_id,
        force=force,
        case_id=due.case_id,
        reported_at=due.reported_at,
        due_by=due.due_by,
        enhanced_rights=due.enhanced_rights,
    )


@dataclass(frozen=True)
class RiskAssessment:
    """A risk assessment consent recorded for a case (``rj.risk-assessment.recorded``)."""

    case_id: str
    assessed_at: datetime
    safe_to_proceed: bool


def latest_assessment(known: RiskAssessment | None, new: RiskAssessment) -> RiskAssessment:
    """The assessment that stands: the latest by ``assessed_at``, whatever order they arrive in; of two made at
    the same moment, the one that is not safe (a repeat changes nothing)."""
    if known is None or new.assessed_at > known.assessed_at:
        return new
    if new.assessed_at == known.assessed_at and not new.safe_to_proceed:
        return new
    return known


#: Said wherever the gate's verdict travels in plain text: never which sensitivities the case has (domestic abuse,
#: a sexual offence, a child victim ...), which would tell anyone reading the topic what happened.
RJ_INFORMATION_BEFORE_ASSESSMENT = "this case needs a risk assessment that allows contact first"


def assessment_standing_at(assessments: Sequence[RiskAssessment], at: datetime | None = None) -> RiskAssessment | None:
    """The assessment that stood at ``at`` (else now): the latest made at or before it (``latest_assessment``)."""
    standing = None
    for assessment in assessments:
        if at is None or assessment.assessed_at <= at:
            standing = latest_assessment(standing, assessment)
    return standing


def rj_information_withheld(
    sensitivity: Sequence[SensitivityReason], assessments: Sequence[RiskAssessment], at: datetime | None = None
) -> str | None:
    """Why no RJ information may go to the victim (at ``at``, else now), if it may not: on a sensitive case, not
    unless the case's latest risk assessment made by then (of ``assessments``, the case's, in any order) says it
    is safe to proceed (DOMAIN rule 4; issue 16). One made after ``at`` does not count either way: a safe one did
    not allow what happened before it, and an unsafe one does not take back what was allowed when it happened.
    The reason is generic on purpose."""
    if not sensitivity:
        return None
    standing = assessment_standing_at(assessments, at)
    if standing is None or not standing.safe_to_proceed:
        return RJ_INFORMATION_BEFORE_ASSESSMENT
    return None


def record_information_provided(
    clock: VictimClock | None,
    command: RecordVictimInformationProvided,
    command_id: str,
    now: datetime,
    *,
    sensitivity: Sequence[SensitivityReason] = (),
    assessments: Sequence[RiskAssessment] = (),
) -> tuple[VictimClock | None, list[Emit]]:
    """Record that the victim was told about RJ, and stop the clock. What already happened is never refused (rule
    6): on a sensitive case, information given when no risk assessment allowed contact (the latest made by then)
    is recorded all the same, flagged ``before_contact_allowed`` (a safeguarding concern for staff)."""
    if clock is None:
        reason = f"no Victims' Code clock runs for person {command.person_id} on this case"
        return None, [rejection(SERVICE, command, command_id, reason, now)]
    if clock.provided_at is not None:
        return clock, []  # already recorded: a repeat changes nothing
    clock = replace(clock, provided_at=command.provided_at)
    early = rj_information_withheld(sensitivity, assessments, command.provided_at) is not None
    return clock, [
        Emit(
            VictimInformationProvided(
                case_id=clock.case_id,
                crime_reference=clock.crime_reference,
                person_id=clock.person_id,
                provided_at=command.provided_at,
                provided_by=command.actor,
                on_time=command.provided_at < clock.due_by,
                before_contact_allowed=early,
            ),
            f"information-provided:{clock.person_id}",
        )
    ]


def flag_breach(clock: VictimClock, now: datetime) -> tuple[VictimClock, list[Emit]]:
    """Flag a deadline that passed with the information not given; anything else is left alone."""
    if clock.provided_at is not None or clock.breached_at is not None or now < clock.due_by:
        return clock, []
    return replace(clock, breached_at=now), [
        Emit(
            VictimInformationOverdue(
                case_id=clock.case_id,
                crime_reference=clock.crime_reference,
                person_id=clock.person_id,
                due_by=clock.due_by,
                flagged_at=now,
                enhanced_rights=clock.enhanced_rights,
            ),
            f"information-overdue:{clock.person_id}",
        )
    ]


# --- the Victims' Code's second clock: referral to a victim support service --------------------------


@dataclass(frozen=True)
class SupportClock:
    """Per victim of a recorded crime: a referral to a victim support service (or the victim's declining the
    offer) is owed within 2 working days of the crime being reported."""

    crime_reference: str
    person_id: str
    force: str
    case_id: str  # the case of the crime's first referral, as for ``VictimClock``
    reported_at: datetime
    due_by: datetime
    decided_at: datetime | None = None  # referred, or the offer declined: the clock stopped
    outcome: SupportReferralOutcome | None = None
    breached_at: datetime | None = None


def _start_support_referral_clocks(file: CrimeFile, crime: CrimeRecorded) -> list[Emit]:
    emits = []
    for victim in crime.victims:
        if victim.person_id in file.clocked_victims:
            continue
        due_date, due_by = deadline_after(crime.reported_at, SUPPORT_REFERRAL_DUE_WORKING_DAYS)
        due = VictimSupportReferralDue(
            case_id=file.case_id,
            crime_reference=file.crime_reference,
            person_id=victim.person_id,
            reported_at=crime.reported_at,
            due_by=due_by,
            due_date=due_date,
            working_days=SUPPORT_REFERRAL_DUE_WORKING_DAYS,
        )
        emits.append(Emit(due, f"support-referral-due:{victim.person_id}"))
    return emits


def support_clock_from(due: VictimSupportReferralDue, force: str) -> SupportClock:
    return SupportClock(
        crime_reference=due.crime_reference,
        person_id=due.person_id,
        force=force,
        case_id=due.case_id,
        reported_at=due.reported_at,
        due_by=due.due_by,
    )


def support_referral_actor_refused(command: RecordVictimSupportReferral) -> str | None:
    """Who may stop a victim's support-referral clock: staff, for either outcome; the victim themself, only to
    decline the offer. No one else (another participant, the offender, a system) may stop it."""
    actor = command.actor
    if actor.kind == "staff":
        return None
    if actor.kind == "participant" and actor.id == command.person_id:
        if command.outcome is SupportReferralOutcome.declined:
            return None
        return "a victim may record only that they declined the offer of support; staff record a referral"
    return (
        "only staff record a referral to victim support; the victim themself may record only that they declined "
        "the offer"
    )


def _support_referral_refused(
    clock: SupportClock | None, command: RecordVictimSupportReferral, now: datetime
) -> str | None:
    if refused := support_referral_actor_refused(command):
        return refused
    if clock is None:
        return (
            f"no Victims' Code support-referral clock runs for person {command.person_id} on this case "
            "(an unknown case or person, or a crime not recorded yet)"
        )
    if clock.decided_at is not None:
        return (
            f"the support referral of {clock.person_id} is already recorded ({clock.outcome} at "
            f"{clock.decided_at.isoformat()}): nothing changes"
        )
    service = (command.support_service or "").strip()
    if command.outcome is SupportReferralOutcome.referred and not service:
        return "a referral to victim support must name the support service referred to"
    if command.outcome is SupportReferralOutcome.declined and service:
        return "a declined offer of support names no support service"
    if future := in_the_future("decided_at", command.decided_at, now):
        return future
    if command.decided_at < clock.reported_at:
        return (
            f"decided_at {command.decided_at.isoformat()} is before the crime was reported "
            f"({clock.reported_at.isoformat()})"
        )
    return None


def record_support_referral(
    clock: SupportClock | None, command: RecordVictimSupportReferral, command_id: str, now: datetime
) -> tuple[SupportClock | None, list[Emit]]:
    """The victim was referred to victim support, or declined the offer: either stops the clock, once."""
    if refused := _support_referral_refused(clock, command, now):
        return clock, [rejection(SERVICE, command, command_id, refused, now)]
    assert clock is not None
    clock = replace(clock, decided_at=command.decided_at, outcome=command.outcome)
    service = (command.support_service or "").strip() or None
    recorded = VictimSupportReferralRecorded(
        case_id=clock.case_id,
        crime_reference=clock.crime_reference,
        person_id=clock.person_id,
        outcome=command.outcome,
        support_service=service,
        decided_at=command.decided_at,
        recorded_at=now,
        recorded_by=command.actor,
        on_time=command.decided_at < clock.due_by,
        reason=command.reason,
    )
    return clock, [Emit(recorded, f"support-referral-recorded:{clock.person_id}")]


def flag_support_breach(clock: SupportClock, now: datetime) -> tuple[SupportClock, list[Emit]]:
    """Flag a support-referral deadline that passed with no referral and no declined offer, once."""
    if clock.decided_at is not None or clock.breached_at is not None or now < clock.due_by:
        return clock, []
    overdue = VictimSupportReferralOverdue(
        case_id=clock.case_id,
        crime_reference=clock.crime_reference,
        person_id=clock.person_id,
        due_by=clock.due_by,
        flagged_at=now,
    )
    return replace(clock, breached_at=now), [Emit(overdue, f"support-referral-overdue:{clock.person_id}")]
