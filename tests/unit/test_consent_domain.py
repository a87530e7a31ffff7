"""The consent service's decisions: preparation, granular consent, readiness, withdrawal."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from schemas.commands import CommandRejected
from schemas.common import Actor
from schemas.consent import (
    PARTICIPATION,
    SYSTEM_CONSENT,
    AssignFacilitator,
    CaseHeld,
    CaseReadinessLost,
    CaseReadyForMeeting,
    CaseResumed,
    CaseWithdrawalReason,
    CaseWithdrawn,
    ConsentDeclined,
    ConsentGiven,
    ConsentWithdrawn,
    DeclineConsent,
    FacilitatorAssigned,
    GiveConsent,
    PreparationStarted,
    PutCaseOnHold,
    RecordedThrough,
    RecordingMethod,
    RecordPreparationMeeting,
    RecordRiskAssessment,
    ResumeCase,
    RiskAssessmentRecorded,
    RiskLevel,
    WithdrawConsent,
    sharing,
)
from schemas.envelope import EventData
from schemas.referral import CaseAccepted, CaseDeclined, CaseParticipant, Role, SensitivityReason
from schemas.registry import REGISTRY
from schemas.scheduling import CaseClosed, ClosureReason, FacilitatorRegistered
from services.consent import domain
from services.consent.domain import ConsentCase, ConsentStatus, Emit

CASE = "case-1"
NOW = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)
FACILITATOR = Actor(kind="staff", id="staff-7")
REGISTER = {"fac-1": False, "fac-2": False, "fac-junior": False, "fac-senior": True}
"""The facilitator register as the wiring would look it up: id -> specialist. Anyone else is not registered."""
_ids = itertools.count(1)


def accepted(*, sensitive: bool = False, supporter: bool = True) -> CaseAccepted:
    people = [
        CaseParticipant(person_id="victim-1", role=Role.victim, required=True),
        CaseParticipant(person_id="offender-1", role=Role.offender, required=True, in_custody=True),
    ]
    if supporter:
        people.append(CaseParticipant(person_id="supporter-1", role=Role.supporter, required=False))
    return CaseAccepted(
        case_id=CASE,
        crime_reference="CR-1",
        specialist_required=sensitive,
        risk_assessment_required=sensitive,
        sensitivity_reasons=[SensitivityReason.domestic_abuse] if sensitive else [],
        participants=people,
        decided_at=NOW,
        decided_by=Actor(kind="system", id="referral-service"),
        reason="eligible",
    )


def accepted_case(**kwargs: bool) -> ConsentCase:
    case, emits = domain.handle(None, accepted(**kwargs), command_id="accepted", now=NOW)
    assert case is not None and facts(emits) == [PreparationStarted]
    return case


def give(person: str, purpose: str = PARTICIPATION, **kwargs: object) -> GiveConsent:
    return GiveConsent(case_id=CASE, **_decision(person, purpose, **kwargs))  # type: ignore[arg-type]


def decline(person: str, purpose: str = PARTICIPATION, **kwargs: object) -> DeclineConsent:
    if not kwargs.get("themself"):
        kwargs.setdefault("reason", "said no on the phone")  # staff deciding on someone's behalf say why
    return DeclineConsent(case_id=CASE, **_decision(person, purpose, **kwargs))  # type: ignore[arg-type]


def withdraw(person: str, purpose: str = PARTICIPATION, **kwargs: object) -> WithdrawConsent:
    return WithdrawConsent(case_id=CASE, **_decision(person, purpose, **kwargs))  # type: ignore[arg-type]


def _decision(
    person: str,
    purpose: str,
    *,
    themself: bool = False,
    actor: Actor | None = None,
    decided_at: datetime | None = None,
    reason: str | None = None,
) -> dict[str, object]:
    through = RecordedThrough.participant if themself else RecordedThrough.facilitator
    if actor is None:
        actor = Actor(kind="participant", id=person) if themself else FACILITATOR
    return {
        "person_id": person,
        "purpose": purpose,
        "through": through,
        "method": RecordingMethod.phone,
        "actor": actor,
        "decided_at": decided_at,
        "reason": reason,
    }


def assign(facilitator: str = "fac-1") -> AssignFacilitator:
    return AssignFacilitator(case_id=CASE, actor=FACILITATOR, facilitator_id=facilitator)


def met(person: str) -> RecordPreparationMeeting:
    return RecordPreparationMeeting(
        case_id=CASE, actor=FACILITATOR, person_id=person, met_at=NOW, method=RecordingMethod.in_person
    )


def risk(*, safe: bool = True, assessed_at: datetime = NOW) -> RecordRiskAssessment:
    return RecordRiskAssessment(
        case_id=CASE, actor=FACILITATOR, assessed_at=assessed_at, level=RiskLevel.medium, safe_to_proceed=safe
    )


def run(case: ConsentCase | None, *messages: EventData) -> tuple[ConsentCase | None, list[Emit]]:
    emitted: list[Emit] = []
    for message in messages:
        registered = REGISTER.get(message.facilitator_id) if isinstance(message, AssignFacilitator) else None
        case, emits = domain.handle(
            case, message, command_id=f"cmd-{next(_ids)}", now=NOW, registered_specialist=registered
        )
        emitted += emits
    return case, emitted


def facts(emits: list[Emit]) -> list[type[EventData]]:
    return [type(e.data) for e in emits]


def rejection(emits: list[Emit]) -> str:
    assert facts(emits) == [CommandRejected], emits
    return emits[0].data.reason  # type: ignore[attr-defined, no-any-return]


def prepared_case(**kwargs: bool) -> ConsentCase:
    """Accepted, a facilitator assigned (a specialist when sensitive) who has met both required parties."""
    sensitive = kwargs.get("sensitive", False)
    assessed = [risk()] if sensitive else []  # on a sensitive case, before anyone is contacted
    facilitator = "fac-senior" if sensitive else "fac-1"
    case, emits = run(accepted_case(**kwargs), *assessed, assign(facilitator), met("victim-1"), met("offender-1"))
    assert case is not None and CommandRejected not in facts(emits), emits
    return case


def ready_case(**kwargs: bool) -> ConsentCase:
    case, emits = run(prepared_case(**kwargs), give("victim-1"), give("offender-1"))
    assert case is not None and case.ready, emits
    return case


# --- readiness ----------------------------------------------------------------------------------


def test_an_accepted_case_waits_for_consent_before_it_is_ready() -> None:
    case = accepted_case()
    assert not case.ready
    assert "participation consent from victim-1 (victim)" in domain.readiness_gaps(case)


def test_case_becomes_ready_when_every_required_participant_consents_to_take_part() -> None:
    case, emits = run(prepared_case(), give("victim-1"))
    assert facts(emits) == [ConsentGiven]
    case, emits = run(case, give("offender-1"))
    assert facts(emits) == [ConsentGiven, CaseReadyForMeeting]
    assert case is not None and case.ready
    ready = emits[1].data
    assert isinstance(ready, CaseReadyForMeeting)
    assert {p.person_id for p in ready.participants if p.required} == {"victim-1", "offender-1"}
    assert [p.in_custody for p in ready.participants if p.person_id == "offender-1"] == [True]


def test_a_supporters_consent_is_not_needed_for_readiness() -> None:
    case = ready_case()
    assert case.consent("supporter-1", PARTICIPATION) is None


def test_consent_to_share_information_does_not_stand_in_for_participation() -> None:
    case, emits = run(accepted_case(), give("victim-1", sharing("impact-statement")), give("offender-1"))
    assert facts(emits) == [ConsentGiven, ConsentGiven]
    assert case is not None and not case.ready


def test_consent_is_recorded_with_who_when_through_whom_and_how() -> None:
    _, emits = run(accepted_case(), give("victim-1", themself=True))
    given = emits[0].data
    assert isinstance(given, ConsentGiven)
    assert (given.person_id, given.purpose, given.through, given.method) == (
        "victim-1",
        PARTICIPATION,
        RecordedThrough.participant,
        RecordingMethod.phone,
    )
    assert given.given_by == Actor(kind="participant", id="victim-1") and given.given_at == given.recorded_at == NOW


def test_repeated_consent_is_harmless() -> None:
    case, _ = run(accepted_case(), give("victim-1"))
    again, emits = run(case, give("victim-1"))
    assert emits == [] and again == case


def test_rule_4_a_sensitive_case_cannot_become_ready_without_a_specialist_and_a_risk_assessment() -> None:
    case = accepted_case(sensitive=True)
    assert domain.readiness_gaps(case) == [
        "participation consent from victim-1 (victim)",
        "participation consent from offender-1 (offender)",
        "a risk assessment",
        "a specialist facilitator",
        "a preparation meeting with victim-1 (victim)",
        "a preparation meeting with offender-1 (offender)",
    ]
    case, emits = run(case, risk(), give("victim-1"), give("offender-1"))
    assert CaseReadyForMeeting not in facts(emits)
    case, emits = run(case, assign("fac-senior"), met("victim-1"), met("offender-1"))
    assert facts(emits)[-1] is CaseReadyForMeeting
    assert case is not None and case.ready


def test_a_non_specialist_facilitator_is_rejected_on_a_sensitive_case() -> None:
    case = accepted_case(sensitive=True)
    after, emits = run(case, assign("fac-junior"))
    assert "needs a specialist facilitator" in rejection(emits)
    assert after == case


def test_an_unsafe_risk_assessment_keeps_a_case_from_being_ready() -> None:
    case, emits = run(prepared_case(), risk(safe=False), give("victim-1"), give("offender-1"))
    assert CaseReadyForMeeting not in facts(emits)
    assert case is not None and "a risk assessment that finds it safe to proceed" in domain.readiness_gaps(case)


def test_a_ready_case_found_unsafe_on_reassessment_loses_readiness() -> None:
    case, emits = run(ready_case(), risk(safe=False))
    # The verdict on the command (naming it) comes last: a service that follows the command goes on only once it
    # knows the case is not ready.
    assert facts(emits) == [CaseReadinessLost, RiskAssessmentRecorded]
    assert emits[-1].data.command_id is not None  # type: ignore[attr-defined]
    assert case is not None and not case.ready and not case.withdrawn
    case, emits = run(case, risk(safe=True))
    assert facts(emits) == [CaseReadyForMeeting, RiskAssessmentRecorded]


# --- what is refused ----------------------------------------------------------------------------


def test_a_command_on_an_unknown_case_is_rejected() -> None:
    case, emits = run(None, give("victim-1"))
    assert case is None
    assert "unknown case" in rejection(emits)
    assert emits[0].data.service == "consent"  # type: ignore[attr-defined]


def test_consent_for_someone_who_is_not_a_participant_is_rejected() -> None:
    case = accepted_case()
    after, emits = run(case, give("stranger-9"))
    assert rejection(emits) == "stranger-9 is not a participant in this case"
    assert after == case


def test_a_participant_can_speak_only_for_themself() -> None:
    case = accepted_case()
    _, emits = run(case, withdraw("victim-1", themself=True, actor=Actor(kind="participant", id="offender-1")))
    assert "must come from victim-1 themself" in rejection(emits)


def test_a_decision_through_a_facilitator_must_come_from_staff() -> None:
    _, emits = run(accepted_case(), give("victim-1", actor=Actor(kind="system", id="robot")))
    assert "member of staff" in rejection(emits)


def test_a_preparation_meeting_needs_an_assigned_facilitator() -> None:
    meeting = RecordPreparationMeeting(
        case_id=CASE, actor=FACILITATOR, person_id="victim-1", met_at=NOW, method=RecordingMethod.in_person
    )
    _, emits = run(accepted_case(), meeting)
    assert rejection(emits) == "no facilitator is assigned to this case yet"
    case, emits = run(accepted_case(), assign(), meeting)
    assert case is not None and case.prepared == {"victim-1"}
    assert [e.data.event_type for e in emits] == ["rj.facilitator.assigned", "rj.preparation-meeting.recorded"]


# --- withdrawal and declining -------------------------------------------------------------------


def test_withdrawal_by_a_required_participant_withdraws_the_case() -> None:
    case, emits = run(ready_case(), withdraw("offender-1", themself=True))
    assert facts(emits) == [ConsentWithdrawn, CaseWithdrawn]
    withdrawn = emits[1].data
    assert isinstance(withdrawn, CaseWithdrawn)
    assert (withdrawn.reason, withdrawn.decided_by) == (CaseWithdrawalReason.consent_withdrawn, SYSTEM_CONSENT)
    assert case is not None and case.withdrawn and not case.ready


@pytest.mark.parametrize("stop", [withdraw, decline], ids=["withdrawal", "decline"])
@pytest.mark.parametrize("themself", [True, False], ids=["themself", "through-a-facilitator"])
def test_who_stopped_the_case_and_why_are_on_the_staff_only_fact_and_nowhere_else(
    stop: Callable[..., DeclineConsent | WithdrawConsent], themself: bool
) -> None:
    _, emits = run(ready_case(), stop("offender-1", themself=themself, reason="I am frightened of him"))
    staff_only, everyone = (e.data for e in emits)
    assert isinstance(staff_only, ConsentWithdrawn | ConsentDeclined) and isinstance(everyone, CaseWithdrawn)
    assert (staff_only.person_id, staff_only.reason) == ("offender-1", "I am frightened of him")
    by = staff_only.withdrawn_by if isinstance(staff_only, ConsentWithdrawn) else staff_only.declined_by
    assert by == (Actor(kind="participant", id="offender-1") if themself else FACILITATOR)
    told = everyone.model_dump_json()
    assert "offender-1" not in told and "frightened" not in told and FACILITATOR.id not in told
    assert everyone.model_dump(mode="json").keys() == {"case_id", "reason", "withdrawn_at", "decided_by"}


def test_withdrawal_needs_no_reason_and_is_accepted_at_any_stage() -> None:
    for case in (accepted_case(), ready_case(), accepted_case(sensitive=True)):
        _, emits = run(case, withdraw("victim-1"))
        assert facts(emits) == [ConsentWithdrawn, CaseWithdrawn]
        assert emits[0].data.reason is None  # type: ignore[attr-defined]


def test_repeated_withdrawal_is_harmless() -> None:
    case, _ = run(ready_case(), withdraw("victim-1"))
    again, emits = run(case, withdraw("victim-1"), withdraw("victim-1", themself=True))
    assert emits == [] and again == case


def test_a_second_participants_withdrawal_is_recorded_without_withdrawing_the_case_twice() -> None:
    case, _ = run(ready_case(), withdraw("victim-1"))
    case, emits = run(case, withdraw("offender-1"))
    assert facts(emits) == [ConsentWithdrawn]
    assert case is not None and case.consent("offender-1", PARTICIPATION) is ConsentStatus.withdrawn


def test_a_supporters_withdrawal_leaves_the_case_ready() -> None:
    case, _ = run(ready_case(), give("supporter-1"))
    case, emits = run(case, withdraw("supporter-1"))
    assert facts(emits) == [ConsentWithdrawn]
    assert case is not None and case.ready and not case.withdrawn


def test_withdrawing_consent_to_share_information_leaves_the_case_running() -> None:
    case, _ = run(ready_case(), give("victim-1", sharing("injuries")))
    case, emits = run(case, withdraw("victim-1", sharing("injuries")))
    assert facts(emits) == [ConsentWithdrawn]
    assert case is not None and case.ready
    assert case.consent("victim-1", sharing("injuries")) is ConsentStatus.withdrawn


def test_a_required_participant_who_declines_stops_the_case() -> None:
    case, emits = run(accepted_case(), give("victim-1"), decline("offender-1", themself=True))
    assert facts(emits) == [ConsentGiven, ConsentDeclined, CaseWithdrawn]
    assert emits[-1].data.reason is CaseWithdrawalReason.consent_declined  # type: ignore[attr-defined]
    assert case is not None and case.withdrawn


def test_anything_but_a_withdrawal_on_a_withdrawn_case_is_rejected() -> None:
    case, _ = run(ready_case(), withdraw("victim-1"))
    for command in (give("victim-1"), decline("offender-1"), assign(), risk()):
        after, emits = run(case, command)
        assert rejection(emits).startswith("case is withdrawn")
        assert after == case


def test_after_closure_even_a_withdrawal_is_rejected() -> None:
    closed = CaseClosed(
        case_id=CASE, reason=ClosureReason.completed, closed_at=NOW, closed_by=Actor(kind="system", id="s")
    )
    case, _ = run(ready_case(), closed)
    for command in (withdraw("victim-1"), give("supporter-1"), risk()):
        after, emits = run(case, command)
        assert rejection(emits) == "case is closed"
        assert after == case


def test_a_closure_heard_before_the_acceptance_keeps_the_case_closed() -> None:
    closed = CaseClosed(case_id=CASE, reason=ClosureReason.uncontactable, closed_at=NOW, closed_by=FACILITATOR)
    case, _ = run(None, closed, accepted())
    assert case is not None and case.closed and case.participants


def test_a_declined_referral_needs_nothing_from_consent() -> None:
    assert CaseDeclined.event_type not in domain.CONSUMES
    assert {"rj.case.accepted", "rj.case.closed", "rj.consent.withdraw"} <= domain.CONSUMES


# --- replay and storage -------------------------------------------------------------------------


def test_the_same_input_decides_the_same_events() -> None:
    case = ready_case()
    first = domain.handle(case, withdraw("victim-1"), command_id="cmd-x", now=NOW)
    second = domain.handle(case, withdraw("victim-1"), command_id="cmd-x", now=NOW)
    assert first == second
    assert [e.identity for e in first[1]] == ["consent-withdrawn:cmd-x", "case-withdrawn"]


def test_a_case_survives_a_json_round_trip() -> None:
    case, _ = run(
        accepted_case(sensitive=True),
        assign("fac-senior"),
        met("victim-1"),
        risk(),
        give("victim-1"),
        give("victim-1", sharing("impact-statement")),
        decline("supporter-1"),
    )
    assert case is not None
    assert ConsentCase.from_json(case.to_json()) == case


def test_every_consent_and_scheduling_type_is_registered_once() -> None:
    from schemas.consent import CONSENT_COMMANDS, CONSENT_EVENTS
    from schemas.scheduling import SCHEDULING_COMMANDS, SCHEDULING_EVENTS

    models = [*CONSENT_EVENTS, *CONSENT_COMMANDS, *SCHEDULING_EVENTS, *SCHEDULING_COMMANDS]
    assert len({m.event_type for m in models}) == len(models)
    for model in models:
        assert REGISTRY.model(model.event_type) is model
        model.model_json_schema()


# --- the review's fixes -------------------------------------------------------------------------


def test_an_older_risk_assessment_recorded_late_is_a_fact_but_does_not_change_readiness() -> None:
    case, _ = run(ready_case(), risk(safe=True))
    case, emits = run(case, risk(safe=False, assessed_at=NOW - timedelta(days=3)))
    assert facts(emits) == [RiskAssessmentRecorded]
    assert case is not None and case.ready
    assert case.risk_assessment is not None and case.risk_assessment.assessed_at == NOW
    assert case.risk_assessment.safe_to_proceed


def test_the_risk_assessment_with_the_latest_assessment_time_counts_whatever_the_recording_order() -> None:
    case, emits = run(
        prepared_case(), risk(safe=False, assessed_at=NOW), risk(safe=True, assessed_at=NOW - timedelta(1))
    )
    assert facts(emits) == [RiskAssessmentRecorded, RiskAssessmentRecorded]
    case, emits = run(case, give("victim-1"), give("offender-1"))
    assert CaseReadyForMeeting not in facts(emits)
    assert case is not None and "a risk assessment that finds it safe to proceed" in domain.readiness_gaps(case)


def test_a_risk_assessment_dated_more_than_five_minutes_ahead_is_rejected() -> None:
    case = accepted_case()
    after, emits = run(case, risk(assessed_at=NOW + timedelta(minutes=6)))
    assert "assessed_at" in rejection(emits) and "in the future" in rejection(emits)
    assert after == case
    _, emits = run(case, risk(assessed_at=NOW + timedelta(minutes=4)))
    assert facts(emits) == [RiskAssessmentRecorded]


def test_a_facilitator_who_is_not_registered_cannot_be_assigned() -> None:
    case = accepted_case()
    after, emits = run(case, assign("fac-nobody"))
    assert rejection(emits) == "facilitator fac-nobody is not registered"
    assert after == case


def test_specialist_status_comes_from_the_register_not_from_the_command() -> None:
    assert "specialist" not in AssignFacilitator.model_fields
    claimed = AssignFacilitator.model_validate(
        {"case_id": CASE, "actor": FACILITATOR.model_dump(), "facilitator_id": "fac-junior", "specialist": True}
    )
    case = accepted_case(sensitive=True)
    after, emits = run(case, claimed)
    assert "needs a specialist facilitator" in rejection(emits)
    assert after == case
    _, emits = run(case, assign("fac-senior"))
    assigned = emits[0].data
    assert isinstance(assigned, FacilitatorAssigned) and assigned.specialist is True


def test_handle_without_a_register_entry_treats_the_facilitator_as_unregistered() -> None:
    _, emits = domain.handle(accepted_case(), assign("fac-1"), command_id="cmd-reg", now=NOW)
    assert rejection(emits) == "facilitator fac-1 is not registered"


def test_on_a_sensitive_case_a_co_facilitator_may_join_once_a_specialist_is_assigned() -> None:
    case, emits = run(accepted_case(sensitive=True), assign("fac-senior"), assign("fac-junior"))
    assert facts(emits) == [FacilitatorAssigned, FacilitatorAssigned]
    assert case is not None and {f.facilitator_id for f in case.facilitators} == {"fac-senior", "fac-junior"}


def test_a_case_is_not_ready_without_an_assigned_facilitator() -> None:
    case, emits = run(accepted_case(), give("victim-1"), give("offender-1"))
    assert CaseReadyForMeeting not in facts(emits)
    assert case is not None and "an assigned facilitator" in domain.readiness_gaps(case)


def test_a_case_is_not_ready_until_a_facilitator_has_met_each_required_participant() -> None:
    case, emits = run(accepted_case(), assign(), met("victim-1"), give("victim-1"), give("offender-1"))
    assert CaseReadyForMeeting not in facts(emits)
    assert case is not None
    assert domain.readiness_gaps(case) == ["a preparation meeting with offender-1 (offender)"]
    case, emits = run(case, met("offender-1"))
    assert [e.data.event_type for e in emits] == ["rj.preparation-meeting.recorded", "rj.case.ready-for-meeting"]
    assert case is not None and case.ready


def test_a_supporter_needs_no_preparation_meeting_for_readiness() -> None:
    case = ready_case()
    assert "supporter-1" not in case.prepared and case.ready


def test_declining_after_having_consented_to_take_part_is_a_withdrawal_of_the_case() -> None:
    case, emits = run(ready_case(), decline("offender-1", themself=True))
    assert facts(emits) == [ConsentDeclined, CaseWithdrawn]
    assert emits[-1].data.reason is CaseWithdrawalReason.consent_withdrawn  # type: ignore[attr-defined]
    assert case is not None and case.withdrawn
    assert case.consent("offender-1", PARTICIPATION) is ConsentStatus.declined


def test_a_dated_decision_keeps_when_it_was_made_and_when_it_was_recorded() -> None:
    letter_date = NOW - timedelta(days=4)
    _, emits = run(ready_case(), withdraw("victim-1", decided_at=letter_date))
    withdrawn = emits[0].data
    assert isinstance(withdrawn, ConsentWithdrawn)
    assert (withdrawn.withdrawn_at, withdrawn.recorded_at) == (letter_date, NOW)
    _, emits = run(accepted_case(), decline("victim-1", decided_at=letter_date), give("offender-1"))
    declined = emits[0].data
    assert isinstance(declined, ConsentDeclined) and (declined.declined_at, declined.recorded_at) == (letter_date, NOW)


def test_a_decision_dated_more_than_five_minutes_ahead_is_rejected() -> None:
    case = ready_case()
    ahead = NOW + timedelta(minutes=6)
    for command in (give("supporter-1", decided_at=ahead), withdraw("victim-1", decided_at=ahead)):
        after, emits = run(case, command)
        assert "decided_at" in rejection(emits) and "in the future" in rejection(emits)
        assert after == case
    _, emits = run(case, withdraw("victim-1", decided_at=NOW + timedelta(minutes=4)))
    assert facts(emits) == [ConsentWithdrawn, CaseWithdrawn]


def test_a_repeated_withdrawal_after_the_case_closed_is_a_harmless_no_op() -> None:
    closed = CaseClosed(
        case_id=CASE, reason=ClosureReason.withdrawn, closed_at=NOW, closed_by=Actor(kind="system", id="s")
    )
    case, _ = run(ready_case(), decline("supporter-1"), withdraw("victim-1"), closed)
    assert case is not None and case.closed
    for command in (withdraw("victim-1"), withdraw("victim-1", themself=True), withdraw("supporter-1")):
        after, emits = run(case, command)
        assert emits == [] and after == case
    _, emits = run(case, withdraw("offender-1"))
    assert rejection(emits) == "case is closed"


# --- the assessment comes before any contact on a sensitive case (DOMAIN stage 2) --------------------


def test_rule_4_no_contact_with_a_party_on_a_sensitive_case_before_the_risk_assessment() -> None:
    case, _ = run(accepted_case(sensitive=True), assign("fac-senior"))
    for command in (met("victim-1"), give("victim-1"), give("offender-1", themself=True)):
        after, emits = run(case, command)
        if command.actor.kind == "participant":  # told neutrally; staff are told why
            assert rejection(emits) == domain.REFUSAL_TO_A_PARTICIPANT
        else:
            assert "risk assessment must be recorded before any contact" in rejection(emits)
        assert after == case
    # A "no" is never refused: declining or withdrawing is always taken.
    _, emits = run(case, decline("victim-1", themself=True))
    assert CaseWithdrawn in facts(emits)
    case, emits = run(case, risk(), met("victim-1"), give("victim-1"))
    assert CommandRejected not in facts(emits)


# --- the register's word on who is a specialist stays current --------------------------------------


def registration(facilitator: str, specialist: bool, minutes: int = 0) -> FacilitatorRegistered:
    return FacilitatorRegistered(
        facilitator_id=facilitator,
        specialist=specialist,
        working_hours=[],
        timezone="UTC",
        registered_at=NOW + timedelta(minutes=minutes),
        registered_by=FACILITATOR,
    )


def test_rule_4_a_specialist_downgraded_by_the_register_costs_a_sensitive_case_its_readiness() -> None:
    case = ready_case(sensitive=True)
    case, emits = run(case, registration("fac-senior", False))
    assert facts(emits) == [CaseReadinessLost]
    assert "a specialist facilitator" in emits[0].data.reason  # type: ignore[attr-defined]
    assert case is not None and not case.ready
    # An older registration arriving late changes nothing; a newer one restores it.
    case, emits = run(case, registration("fac-senior", True, minutes=-5))
    assert emits == []
    case, emits = run(case, registration("fac-senior", True, minutes=5))
    assert facts(emits) == [CaseReadyForMeeting]


def test_a_registration_of_someone_not_assigned_changes_nothing() -> None:
    case = ready_case(sensitive=True)
    after, emits = run(case, registration("fac-junior", True))
    assert (after, emits) == (case, [])


# --- safeguarding hold ---------------------------------------------------------------------------


def hold(actor: Actor = FACILITATOR) -> PutCaseOnHold:
    return PutCaseOnHold(
        case_id=CASE,
        actor=actor,
        concern="the offender has been seen outside the victim's home",
        raised_by="the victim's support worker",
    )


def resume(reason: str | None = "police confirmed bail conditions") -> ResumeCase:
    return ResumeCase(case_id=CASE, actor=FACILITATOR, reason=reason)


def test_a_hold_stops_a_ready_case_and_no_one_is_contacted_while_it_lasts() -> None:
    case, emits = run(ready_case(), hold())
    assert facts(emits) == [CaseHeld, CaseReadinessLost]
    held = emits[0].data
    assert isinstance(held, CaseHeld) and held.held_by == FACILITATOR and held.concern.startswith("the offender")
    assert case is not None and not case.ready
    for command in (met("victim-1"), give("victim-1", sharing("statement"))):
        assert "on hold" in rejection(run(case, command)[1])
    # Withdrawing is never refused, hold or not.
    _, emits = run(case, withdraw("victim-1", themself=True))
    assert CaseWithdrawn in facts(emits)


def test_resume_needs_a_new_risk_assessment_before_the_case_is_ready_again() -> None:
    case, _ = run(ready_case(), hold())
    case, emits = run(case, resume())
    assert facts(emits) == [CaseResumed]
    assert case is not None and not case.ready
    assert any("risk assessment made after the safeguarding concern" in gap for gap in domain.readiness_gaps(case))
    case, emits = run(case, risk(assessed_at=NOW - timedelta(days=1)))
    assert CaseReadyForMeeting not in facts(emits)  # older than the concern: does not count
    case, emits = run(case, risk(safe=False))
    assert CaseReadyForMeeting not in facts(emits)
    case, emits = run(case, risk())
    assert facts(emits) == [CaseReadyForMeeting, RiskAssessmentRecorded]  # the verdict on the command comes last


def test_who_may_hold_and_resume_and_what_they_must_say() -> None:
    case = ready_case()
    assert "only staff" in rejection(run(case, hold(Actor(kind="participant", id="victim-1")))[1])
    assert "not on hold" in rejection(run(case, resume())[1])
    held, _ = run(case, hold())
    assert "already on hold" in rejection(run(held, hold())[1])
    assert "reason is required" in rejection(run(held, resume(reason=None))[1])
    assert "reason is required" in rejection(run(held, resume(reason="  "))[1])
    closed = CaseClosed(
        case_id=CASE, reason=ClosureReason.not_suitable, closed_at=NOW, closed_by=Actor(kind="system", id="s")
    )
    closed_case, _ = run(case, closed)
    assert "closed" in rejection(run(closed_case, hold())[1])


# --- staff say why when they decide for someone; a participant who withdraws is never asked --------


def test_staff_declining_on_a_participants_behalf_must_say_why_and_a_withdrawal_needs_no_reason() -> None:
    case = ready_case()
    assert "reason is required" in rejection(run(case, decline("victim-1", reason=None))[1])
    _, emits = run(case, decline("victim-1", themself=True))
    assert CommandRejected not in facts(emits)
    for command in (withdraw("victim-1"), withdraw("victim-1", themself=True)):
        _, emits = run(case, command)
        assert CaseWithdrawn in facts(emits)


def test_another_offender_joining_a_ready_case_is_required_and_costs_it_its_readiness() -> None:
    from schemas.consent import ParticipantAdded
    from schemas.referral import OffenderJoined, Participant

    joining = CaseParticipant(person_id="offender-2", role=Role.offender, required=True)
    joined = OffenderJoined(
        case_id=CASE,
        crime_reference="CR-1",
        participant=joining,
        details=Participant(person_id="offender-2", role=Role.offender, required=True, name="Someone"),
        joined_at=NOW,
        decided_by=Actor(kind="system", id="referral-service"),
    )
    case, emits = run(ready_case(), joined)
    assert facts(emits) == [ParticipantAdded, CaseReadinessLost]
    assert case is not None and case.participant("offender-2") == joining
    assert "participation consent from offender-2 (offender)" in domain.readiness_gaps(case)
    again, emits = run(case, joined)
    assert (again, emits) == (case, [])


def test_after_a_resume_or_an_unsafe_assessment_no_one_is_contacted_until_a_new_assessment_finds_it_safe() -> None:
    case, _ = run(accepted_case(), assign(), hold(), resume())
    assert "made after the safeguarding concern" in rejection(run(case, met("victim-1"))[1])
    case, _ = run(case, risk(safe=False))
    assert "unsafe to proceed" in rejection(run(case, give("victim-1"))[1])
    _, emits = run(case, withdraw("victim-1", themself=True))  # a "no" is never refused
    assert CaseWithdrawn in facts(emits)
    case, emits = run(case, risk(), met("victim-1"), give("victim-1"))
    assert CommandRejected not in facts(emits)
