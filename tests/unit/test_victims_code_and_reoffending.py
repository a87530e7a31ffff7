"""The Victims' Code's second clock (support referral), the sensitive-case gate on RJ information, and
reoffending after a case ended: pure referral decisions (DOMAIN rules 4 and 10, stage 7)."""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from demo import samples
from schemas import topics
from schemas.commands import (
    CommandRejected,
    RecordVictimInformationProvided,
    RecordVictimSupportReferral,
    SupportReferralOutcome,
)
from schemas.common import Actor
from schemas.referral import (
    DeclineReason,
    EarlierCaseEnded,
    ReoffenceRecorded,
    SensitivityReason,
    VictimInformationDue,
    VictimInformationProvided,
    VictimSupportReferralDue,
    VictimSupportReferralOverdue,
    VictimSupportReferralRecorded,
)
from schemas.scheduling import ClosureReason
from schemas.upstream import CrimeRecorded, Outcome
from services.cli import consumed_types
from services.privacy.export import FactRecord, Parsed, select_personal_data
from services.referral import domain, reoffending
from services.referral.domain import CaseStatus, CrimeFile, RiskAssessment
from services.runtime.calendar import LONDON
from services.runtime.fieldcrypt import cipher_for
from services.runtime.inventory import record_of_processing
from services.runtime.keystore import MONITORING_PERSON, KeyCache
from services.runtime.settings import Settings
from tests.unit.test_declined_participants import KeysInMemory

WMP, WARKS = "urn:police:west-mercia:rms", "urn:police:warwickshire:athena"
REF, LATER = "WM/2026/000777", "WM/2026/000999"
STAFF = Actor(kind="staff", id="officer-7")
NOW = datetime(2027, 3, 10, tzinfo=UTC)


def crime_file(*payloads: object, force: str = WMP, ref: str = REF, now: datetime | None = None) -> CrimeFile:
    file = CrimeFile(ref, force=force)
    for payload in payloads:
        if isinstance(payload, CrimeRecorded):
            file, _ = domain.record_crime(file, payload, now or datetime.now(UTC))
        else:
            file, _ = domain.record_outcome(file, payload, now or datetime.now(UTC))  # type: ignore[arg-type]
    return file


def support_clock_of(crime: CrimeRecorded, force: str = WMP) -> domain.SupportClock:
    _, emits = domain.record_crime(CrimeFile(crime.crime_reference, force=force), crime, crime.reported_at)
    (due,) = [e.data for e in emits if isinstance(e.data, VictimSupportReferralDue)]
    return domain.support_clock_from(due, force)


def referral(clock: domain.SupportClock, at: datetime, **kw: object) -> RecordVictimSupportReferral:
    fields: dict[str, object] = dict(
        case_id=clock.case_id,
        actor=STAFF,
        person_id=clock.person_id,
        outcome=SupportReferralOutcome.referred,
        support_service="Victim Support West Mercia",
        decided_at=at,
    )
    return RecordVictimSupportReferral(**{**fields, **kw})  # type: ignore[arg-type]


# --- rule 10: referral to victim support within 2 working days ---------------------------------


@pytest.mark.parametrize(
    ("reported", "due"),
    [
        # Friday before the late-May bank holiday (Monday 25 May 2026): Tuesday and Wednesday count.
        (datetime(2026, 5, 22, 10, tzinfo=UTC), date(2026, 5, 27)),
        # Friday before the August bank holiday (Monday 31 August 2026).
        (datetime(2026, 8, 28, 15, tzinfo=UTC), date(2026, 9, 2)),
        (datetime(2026, 11, 25, 10, tzinfo=UTC), date(2026, 11, 27)),  # a Wednesday: no holiday
    ],
)
def test_rule_10_support_referral_is_due_two_working_days_after_the_report_across_bank_holidays(
    reported: datetime, due: date
) -> None:
    crime = samples.crime_recorded(REF, reported_at=reported, victims=[samples.victim("V1", enhanced=True)])
    _, emits = domain.record_crime(CrimeFile(REF, force=WMP), crime, reported)
    (support,) = [e.data for e in emits if isinstance(e.data, VictimSupportReferralDue)]
    assert support.due_date == due and support.working_days == 2 and support.person_id == "V1"
    assert support.due_by == datetime.combine(due + timedelta(days=1), datetime.min.time(), tzinfo=LONDON)
    # Beside it, and unchanged, the RJ information clock (1 working day with enhanced rights).
    (information,) = [e.data for e in emits if isinstance(e.data, VictimInformationDue)]
    assert information.working_days == 1


def test_rule_10_support_referral_clock_is_flagged_once_when_breached_across_the_late_may_bank_holiday() -> None:
    clock = support_clock_of(samples.crime_recorded(REF, reported_at=datetime(2026, 5, 22, 10, tzinfo=UTC)))
    # On the bank holiday Monday and the Tuesday it is not yet overdue ...
    assert domain.flag_support_breach(clock, datetime(2026, 5, 26, 22, tzinfo=UTC))[1] == []
    assert domain.flag_support_breach(clock, datetime(2026, 5, 27, 22, 59, tzinfo=UTC))[1] == []  # 23:59 BST
    # ... but after the end of Wednesday (UK time) it is, once.
    flagged, emits = domain.flag_support_breach(clock, datetime(2026, 5, 27, 23, 1, tzinfo=UTC))
    (overdue,) = [e.data for e in emits]
    assert isinstance(overdue, VictimSupportReferralOverdue) and overdue.person_id == f"V-{REF}"
    assert domain.flag_support_breach(flagged, datetime(2026, 5, 29, tzinfo=UTC))[1] == []


def test_rule_10_a_referral_to_victim_support_stops_the_clock_and_says_who_when_and_to_which_service() -> None:
    clock = support_clock_of(samples.crime_recorded(REF, reported_at=datetime(2026, 5, 22, 10, tzinfo=UTC)))
    now = datetime(2026, 5, 26, 9, tzinfo=UTC)
    stopped, emits = domain.record_support_referral(clock, referral(clock, now), "c1", now)
    (recorded,) = [e.data for e in emits]
    assert isinstance(recorded, VictimSupportReferralRecorded)
    assert (recorded.outcome, recorded.support_service, recorded.recorded_by) == (
        SupportReferralOutcome.referred,
        "Victim Support West Mercia",
        STAFF,
    )
    assert recorded.on_time and recorded.decided_at == now
    assert stopped is not None and domain.flag_support_breach(stopped, now + timedelta(days=30))[1] == []


def test_rule_10_a_declined_offer_of_support_stops_the_clock() -> None:
    clock = support_clock_of(samples.crime_recorded(REF, reported_at=datetime(2026, 8, 28, 15, tzinfo=UTC)))
    late = datetime(2026, 9, 4, 9, tzinfo=UTC)  # after the deadline: recorded, but not on time
    declined = referral(clock, late, outcome=SupportReferralOutcome.declined, support_service=None, reason="no")
    stopped, emits = domain.record_support_referral(clock, declined, "c1", late)
    (recorded,) = [e.data for e in emits]
    assert isinstance(recorded, VictimSupportReferralRecorded)
    assert recorded.outcome is SupportReferralOutcome.declined and recorded.on_time is False
    assert stopped is not None and stopped.decided_at == late
    assert domain.flag_support_breach(stopped, late + timedelta(days=1))[1] == [], "a declined offer is no breach"


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (dict(support_service=None), "must name the support service"),
        (dict(support_service="   "), "must name the support service"),
        (dict(outcome=SupportReferralOutcome.declined), "names no support service"),
        (dict(decided_at=datetime(2026, 6, 30, tzinfo=UTC)), "is in the future"),
        (dict(decided_at=datetime(2026, 5, 1, tzinfo=UTC)), "before the crime was reported"),
    ],
)
def test_rule_10_a_support_referral_that_does_not_add_up_is_refused_and_the_clock_runs_on(
    change: dict[str, object], why: str
) -> None:
    clock = support_clock_of(samples.crime_recorded(REF, reported_at=datetime(2026, 5, 22, 10, tzinfo=UTC)))
    now = datetime(2026, 5, 26, 9, tzinfo=UTC)
    same, emits = domain.record_support_referral(clock, referral(clock, now, **change), "c1", now)
    (rejected,) = [e.data for e in emits]
    assert isinstance(rejected, CommandRejected) and why in rejected.reason and rejected.service == "referral"
    assert same == clock


def test_rule_10_a_support_referral_for_no_clock_or_a_second_time_is_refused_with_the_reason() -> None:
    clock = support_clock_of(samples.crime_recorded(REF, reported_at=datetime(2026, 5, 22, 10, tzinfo=UTC)))
    now = datetime(2026, 5, 26, 9, tzinfo=UTC)
    _, emits = domain.record_support_referral(None, referral(clock, now), "c1", now)
    assert (
        isinstance(emits[0].data, CommandRejected) and "no Victims' Code support-referral clock" in emits[0].data.reason
    )
    stopped, _ = domain.record_support_referral(clock, referral(clock, now), "c1", now)
    again, emits = domain.record_support_referral(stopped, referral(clock, now), "c2", now)
    assert again == stopped
    assert isinstance(emits[0].data, CommandRejected) and "already recorded" in emits[0].data.reason


@pytest.mark.parametrize(
    ("actor", "outcome"),
    [
        (Actor(kind="participant", id="O-1"), SupportReferralOutcome.declined),  # the offender
        (Actor(kind="participant", id="O-1"), SupportReferralOutcome.referred),
        (Actor(kind="system", id="some-service"), SupportReferralOutcome.referred),
        (Actor(kind="system", id="some-service"), SupportReferralOutcome.declined),
        (Actor(kind="participant", id=f"V-{REF}"), SupportReferralOutcome.referred),  # the victim, referring
    ],
)
def test_rule_10_only_staff_or_the_victim_declining_may_stop_the_support_clock(
    actor: Actor, outcome: SupportReferralOutcome
) -> None:
    clock = support_clock_of(samples.crime_recorded(REF, reported_at=datetime(2026, 5, 22, 10, tzinfo=UTC)))
    now = datetime(2026, 5, 26, 9, tzinfo=UTC)
    service = "Victim Support" if outcome is SupportReferralOutcome.referred else None
    command = referral(clock, now, actor=actor, outcome=outcome, support_service=service)
    same, emits = domain.record_support_referral(clock, command, "c1", now)
    (rejected,) = [e.data for e in emits]
    assert isinstance(rejected, CommandRejected) and "staff record a referral" in rejected.reason
    assert same == clock and domain.flag_support_breach(clock, clock.due_by)[1] != []


def test_rule_10_the_victim_themself_may_record_that_they_declined_the_offer_of_support() -> None:
    clock = support_clock_of(samples.crime_recorded(REF, reported_at=datetime(2026, 5, 22, 10, tzinfo=UTC)))
    now = datetime(2026, 5, 26, 9, tzinfo=UTC)
    victim = Actor(kind="participant", id=clock.person_id)
    command = referral(clock, now, actor=victim, outcome=SupportReferralOutcome.declined, support_service=None)
    stopped, emits = domain.record_support_referral(clock, command, "c1", now)
    assert [type(e.data) for e in emits] == [VictimSupportReferralRecorded]
    assert stopped is not None and stopped.outcome is SupportReferralOutcome.declined


def sealed_owners(model: type[BaseModel], fact: BaseModel, case_id: str) -> dict[str, str | None]:
    """Each personal field of ``fact`` that has a value, and whose key seals it (fieldcrypt's ownership rule)."""
    pending = cipher_for(model).prepare_encrypt(fact.model_dump(mode="json"), case_id)
    return {slot.field: slot.owner for slot in pending.slots}


def test_the_support_service_a_victim_was_referred_to_is_sealed_as_the_victims_personal_data() -> None:
    clock = support_clock_of(samples.crime_recorded(REF, reported_at=datetime(2026, 5, 22, 10, tzinfo=UTC)))
    now = datetime(2026, 5, 26, 9, tzinfo=UTC)
    command = referral(clock, now, support_service="Rape Crisis")
    _, emits = domain.record_support_referral(clock, command, "c1", now)
    (recorded,) = [e.data for e in emits]
    assert sealed_owners(VictimSupportReferralRecorded, recorded, clock.case_id)["support_service"] == clock.person_id
    assert sealed_owners(RecordVictimSupportReferral, command, clock.case_id)["support_service"] == clock.person_id


# --- on a sensitive case, no RJ information before a risk assessment allows contact ------------------


def information_clock() -> domain.VictimClock:
    crime = samples.crime_recorded(REF, reported_at=datetime(2026, 11, 20, 10, tzinfo=UTC))
    _, emits = domain.record_crime(CrimeFile(REF, force=WMP), crime, crime.reported_at)
    (due,) = [e.data for e in emits if isinstance(e.data, VictimInformationDue)]
    return domain.clock_from(due, WMP)


def told(clock: domain.VictimClock, at: datetime) -> RecordVictimInformationProvided:
    return RecordVictimInformationProvided(case_id=clock.case_id, actor=STAFF, person_id="V-" + REF, provided_at=at)


SENSITIVE = [SensitivityReason.domestic_abuse]


def test_rule_4_rj_information_given_on_a_sensitive_case_before_a_safe_assessment_is_recorded_and_flagged() -> None:
    at = datetime(2026, 11, 23, 10, tzinfo=UTC)
    unsafe = RiskAssessment(information_clock().case_id, datetime(2026, 11, 23, 9, tzinfo=UTC), safe_to_proceed=False)
    safe_later = RiskAssessment(unsafe.case_id, datetime(2026, 11, 23, 11, tzinfo=UTC), safe_to_proceed=True)
    for assessments in ([], [unsafe], [safe_later], [unsafe, safe_later]):
        clock = information_clock()
        stopped, emits = domain.record_information_provided(
            clock, told(clock, at), "c1", at, sensitivity=SENSITIVE, assessments=assessments
        )
        (provided,) = [e.data for e in emits]  # what happened is recorded, never refused (rule 6)
        assert isinstance(provided, VictimInformationProvided)
        assert provided.before_contact_allowed is True and provided.on_time is True
        # The clock stopped as for any provision: no false breach.
        assert stopped is not None and stopped.provided_at == at
        assert domain.flag_breach(stopped, clock.due_by + timedelta(days=1))[1] == []


def test_rule_4_the_gate_says_only_that_a_risk_assessment_is_needed_never_which_sensitivity() -> None:
    reason = domain.rj_information_withheld(
        [SensitivityReason.domestic_abuse, SensitivityReason.sexual_offence, SensitivityReason.victim_under_18], []
    )
    assert reason == "this case needs a risk assessment that allows contact first"


def test_rule_4_rj_information_is_recorded_on_a_sensitive_case_once_the_latest_assessment_is_safe() -> None:
    clock = information_clock()
    at = datetime(2026, 11, 24, 10, tzinfo=UTC)
    safe = RiskAssessment(clock.case_id, datetime(2026, 11, 24, 9, tzinfo=UTC), safe_to_proceed=True)
    stopped, emits = domain.record_information_provided(
        clock, told(clock, at), "c1", at, sensitivity=SENSITIVE, assessments=[safe]
    )
    assert [type(e.data) for e in emits] == [VictimInformationProvided]
    assert emits[0].data.before_contact_allowed is False  # type: ignore[attr-defined]
    assert stopped is not None and stopped.provided_at == at


def test_rule_4_information_given_while_a_safe_assessment_stood_is_not_flagged_by_a_later_unsafe_one() -> None:
    """Judged by the assessment that stood when the information was given, not by one made after it."""
    clock = information_clock()
    at = datetime(2026, 11, 24, 10, tzinfo=UTC)
    safe = RiskAssessment(clock.case_id, datetime(2026, 11, 24, 9, tzinfo=UTC), safe_to_proceed=True)
    unsafe_later = RiskAssessment(clock.case_id, datetime(2026, 11, 24, 12, tzinfo=UTC), safe_to_proceed=False)
    for made in ([safe, unsafe_later], [unsafe_later, safe]):
        _, emits = domain.record_information_provided(
            clock, told(clock, at), "c1", at, sensitivity=SENSITIVE, assessments=made
        )
        assert emits[0].data.before_contact_allowed is False  # type: ignore[attr-defined]
    assert domain.rj_information_withheld(SENSITIVE, [safe, unsafe_later], at) is None
    # Now (no moment given) the latest stands: contact is not allowed any more.
    assert domain.rj_information_withheld(SENSITIVE, [safe, unsafe_later]) is not None


def test_rj_information_on_a_case_that_is_not_sensitive_needs_no_assessment() -> None:
    clock = information_clock()
    at = datetime(2026, 11, 24, 10, tzinfo=UTC)
    _, emits = domain.record_information_provided(clock, told(clock, at), "c1", at)
    assert [type(e.data) for e in emits] == [VictimInformationProvided]


assessments = st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=1, max_size=6).map(
    lambda xs: [RiskAssessment("case", datetime(2026, 11, 20, tzinfo=UTC) + timedelta(hours=h), safe) for h, safe in xs]
)


@settings(max_examples=200, deadline=None)
@given(assessments, st.randoms())
def test_rule_4_the_latest_risk_assessment_stands_whatever_order_they_arrive_in(
    made: list[RiskAssessment], rnd: object
) -> None:
    shuffled = list(made)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    standing = None
    for assessment in shuffled:
        standing = domain.latest_assessment(standing, assessment)
    latest = max(a.assessed_at for a in made)
    assert standing is not None and standing.assessed_at == latest
    assert standing.safe_to_proceed == all(a.safe_to_proceed for a in made if a.assessed_at == latest)


# --- stage 7: reoffending after a case ended ---------------------------------------------------------


EARLIER_REPORTED = datetime(2026, 11, 1, 10, tzinfo=UTC)  # the ended case's own crime (occurred 12 hours before)


def closed_case(reason: ClosureReason = ClosureReason.completed, force: str = WMP) -> reoffending.EndedCase:
    crime = samples.crime_recorded(REF, reported_at=EARLIER_REPORTED)
    file = crime_file(crime, samples.outcome_recorded(REF, offender="O-1"), force=force)
    assert file.status is CaseStatus.accepted
    closed_at = datetime(2026, 12, 1, tzinfo=UTC)
    after, emits = domain.record_case_closed(file, file.case_id, closed_at, closed_at)
    ended = reoffending.case_ending(file, after, emits, (reason, closed_at))
    assert ended is not None
    return ended


def later_outcome(ref: str = LATER, offender: str = "O-1"):  # type: ignore[no-untyped-def]
    return samples.outcome_recorded(ref, offender=offender)


def test_stage_7_a_later_outcome_naming_the_offender_of_a_closed_case_records_a_reoffence_once() -> None:
    case = closed_case()
    crime = samples.crime_recorded(LATER, reported_at=datetime(2027, 3, 2, 10, tzinfo=UTC))
    now = datetime(2027, 3, 10, tzinfo=UTC)
    case, emits = reoffending.record_reoffence(case, later_outcome(), WMP, crime, now)
    (fact,) = [e.data for e in emits]
    assert isinstance(fact, ReoffenceRecorded)
    assert (fact.case_id, fact.person_id, fact.later_crime_reference) == (case.case_id, "O-1", LATER)
    assert fact.later_outcome is Outcome.cautioned
    assert fact.offence_date == crime.occurred_at.date()  # type: ignore[union-attr]
    assert fact.ended_as is EarlierCaseEnded.closed and fact.closure_reason is ClosureReason.completed
    assert fact.rj_completed is True
    # The same later crime again (a repeat, an amended outcome): nothing new.
    assert reoffending.record_reoffence(case, later_outcome(), WMP, crime, now) == (case, [])


def test_stage_7_the_offence_date_falls_back_to_the_report_then_the_outcome_then_now() -> None:
    crime = samples.crime_recorded(LATER, reported_at=datetime(2027, 3, 2, 10, tzinfo=UTC))
    no_occurrence = crime.model_copy(update={"occurred_at": None})
    outcome = later_outcome().model_copy(update={"recorded_at": datetime(2027, 4, 1, 10, tzinfo=UTC)})
    now = datetime(2027, 5, 1, 10, tzinfo=UTC)
    assert reoffending.offence_date_of(outcome, no_occurrence, now) == crime.reported_at
    assert reoffending.offence_date_of(outcome, None, now) == outcome.recorded_at
    assert reoffending.offence_date_of(outcome.model_copy(update={"recorded_at": None}), None, now) == now


def test_stage_7_a_case_that_did_not_proceed_says_how_it_ended() -> None:
    case, emits = reoffending.record_reoffence(
        closed_case(ClosureReason.withdrawn), later_outcome(), WMP, None, datetime(2027, 3, 10, tzinfo=UTC)
    )
    (fact,) = [e.data for e in emits]
    assert isinstance(fact, ReoffenceRecorded)
    assert fact.closure_reason is ClosureReason.withdrawn and fact.rj_completed is False


def test_stage_7_a_backfilled_case_whose_closure_reason_is_unknown_says_rj_completed_is_unknown() -> None:
    """Migration 007's cases closed before closure reasons were kept: not counted as "did not proceed"."""
    backfilled = replace(closed_case(), closure_reason=None)
    _, emits = reoffending.record_reoffence(backfilled, later_outcome(), WMP, None, NOW)
    (fact,) = [e.data for e in emits]
    assert isinstance(fact, ReoffenceRecorded)
    assert fact.closure_reason is None and fact.rj_completed is None
    screened_out = dict(ended_as=EarlierCaseEnded.screened_out, decline_reason=DeclineReason.no_identifiable_victim)
    screened = replace(backfilled, **screened_out)  # type: ignore[arg-type]
    _, emits = reoffending.record_reoffence(screened, later_outcome(), WMP, None, NOW)
    assert emits[0].data.rj_completed is False  # type: ignore[attr-defined]  # screened out: RJ never began


def test_stage_7_a_case_screened_out_is_followed_for_reoffending_too() -> None:
    before = crime_file(samples.crime_recorded(REF))
    after, emits = domain.record_outcome(before, samples.outcome_recorded(REF, admitted=False, offender="O-1"), NOW)
    after, more = domain.record_request(after, samples.referral_requested(REF), NOW)  # opens, screens, declines
    ended = reoffending.case_ending(before, after, emits + more)
    assert ended is not None and ended.ended_as is EarlierCaseEnded.screened_out
    assert ended.decline_reason is DeclineReason.offender_denies_responsibility and ended.offender_ids == {"O-1"}
    _, facts = reoffending.record_reoffence(ended, later_outcome(), WMP, None, NOW)
    assert [type(e.data) for e in facts] == [ReoffenceRecorded]


def test_stage_7_an_open_case_ends_nothing_and_so_records_no_reoffence() -> None:
    file = crime_file(samples.crime_recorded(REF), samples.outcome_recorded(REF, offender="O-1"))
    # Another outcome, a closure of some other case: the case stays open, and nothing ends.
    after, emits = domain.record_outcome(file, later_outcome(REF), NOW)
    assert reoffending.case_ending(file, after, emits) is None
    after, emits = domain.record_case_closed(file, "another-case", NOW, NOW)
    assert reoffending.case_ending(file, after, emits, (ClosureReason.completed, NOW)) is None


@pytest.mark.parametrize(
    ("outcome", "force"),
    [
        (later_outcome(), WARKS),  # another force's crime system: its person ids are not ours to match
        (later_outcome(REF), WMP),  # the same crime: not a later offence
        (later_outcome(offender="O-2"), WMP),  # someone else
    ],
)
def test_stage_7_no_reoffence_across_forces_for_the_same_crime_or_for_someone_else(outcome: object, force: str) -> None:
    case = closed_case()
    assert reoffending.record_reoffence(case, outcome, force, None, NOW) == (case, [])  # type: ignore[arg-type]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from([LATER, "WM/2027/000001", "WM/2027/000002"]), min_size=1, max_size=8))
def test_stage_7_a_reoffence_is_recorded_once_per_later_crime_whatever_the_repeats(refs: list[str]) -> None:
    case, emitted = closed_case(), []
    for ref in refs:
        case, emits = reoffending.record_reoffence(case, later_outcome(ref), WMP, None, NOW)
        emitted += emits
    assert sorted(e.data.later_crime_reference for e in emitted) == sorted(set(refs))  # type: ignore[attr-defined]
    assert len({e.identity for e in emitted}) == len(emitted)


def test_the_closure_reason_and_the_offenders_who_took_part_are_remembered() -> None:
    file = crime_file(
        samples.crime_recorded(REF),
        samples.outcome_recorded(REF, offender="O-1"),
        samples.outcome_recorded(REF, offender="O-2", admitted=False),
    )
    after, emits = domain.record_case_closed(file, file.case_id, NOW, NOW)
    ended = reoffending.case_ending(file, after, emits, (ClosureReason.agreement_not_met, NOW))
    assert ended is not None and ended.offender_ids == {"O-1"} and ended.case_id == file.case_id
    assert ended.closure_reason is ClosureReason.agreement_not_met
    assert emits == []


@pytest.mark.parametrize(
    ("outcome", "admitted", "counts"),
    [
        (Outcome.convicted, False, True),  # a court's finding, whatever they say
        (Outcome.convicted, None, True),
        (Outcome.cautioned, True, True),
        (Outcome.cautioned, None, True),
        (Outcome.cautioned, False, False),  # the record says they deny it
        (Outcome.community_resolution, True, True),
        (Outcome.community_resolution, False, False),
        (Outcome.charged, True, True),
        (Outcome.charged, None, False),  # an accusation, not a finding
        (Outcome.charged, False, False),
        (Outcome.no_further_action, True, False),
        (Outcome.no_further_action, None, False),
    ],
)
def test_stage_7_only_an_outcome_that_finds_against_the_offender_is_a_reoffence(
    outcome: Outcome, admitted: bool | None, counts: bool
) -> None:
    later = samples.outcome_recorded(LATER, offender="O-1", outcome=outcome, admitted=admitted)
    _, emits = reoffending.record_reoffence(closed_case(), later, WMP, None, NOW)
    assert bool(emits) is counts
    if counts:
        assert emits[0].data.later_outcome is outcome  # type: ignore[attr-defined]


def test_stage_7_an_offence_committed_before_the_ended_cases_own_crime_is_no_reoffence() -> None:
    case = closed_case()
    assert case.crime_at == EARLIER_REPORTED - timedelta(hours=12)
    before = samples.crime_recorded(LATER, reported_at=EARLIER_REPORTED - timedelta(days=30))  # reported long after
    assert reoffending.record_reoffence(case, later_outcome(), WMP, before, NOW) == (case, [])
    # Committed before the earlier crime though reported after it: still not a reoffence.
    reported_late = before.model_copy(update={"reported_at": NOW - timedelta(days=1)})
    assert reoffending.record_reoffence(case, later_outcome(), WMP, reported_late, NOW) == (case, [])
    after = samples.crime_recorded(LATER, reported_at=EARLIER_REPORTED + timedelta(days=30))
    _, emits = reoffending.record_reoffence(case, later_outcome(), WMP, after, NOW)
    assert [type(e.data) for e in emits] == [ReoffenceRecorded]


def test_stage_7_an_outcome_on_file_before_the_case_ended_counts_once_the_case_ends() -> None:
    """Read before the closure (the two travel on different topics): weighed when the case ends."""
    committed_after = samples.crime_recorded(LATER, reported_at=EARLIER_REPORTED + timedelta(days=3))
    later = crime_file(committed_after, later_outcome(), ref=LATER)
    before_the_case = crime_file(
        samples.crime_recorded("WM/2025/000001", reported_at=EARLIER_REPORTED - timedelta(days=90)),
        later_outcome("WM/2025/000001"),
        ref="WM/2025/000001",
    )
    not_a_finding = crime_file(
        samples.crime_recorded("WM/2026/000888", reported_at=EARLIER_REPORTED + timedelta(days=5)),
        samples.outcome_recorded("WM/2026/000888", offender="O-1", outcome=Outcome.no_further_action),
        ref="WM/2026/000888",
    )
    case, emits = reoffending.record_reoffences_on_file(closed_case(), [later, before_the_case, not_a_finding], NOW)
    assert [e.data.later_crime_reference for e in emits] == [LATER]  # type: ignore[attr-defined]
    assert reoffending.record_reoffences_on_file(case, [later], NOW) == (case, [])  # and once only


def test_stage_7_what_the_figures_need_outlives_the_offenders_erasure_and_the_later_crime_does_not() -> None:
    """When and what the later offence was go under the case's monitoring key (erasing the offender, who declined
    or withdrew, leaves them; the case's retention does not); the later crime's reference identifies them, so it
    stays under their own key."""
    case = closed_case()
    _, emits = reoffending.record_reoffence(case, later_outcome(), WMP, None, NOW)
    (fact,) = [e.data for e in emits]
    owners = sealed_owners(ReoffenceRecorded, fact, case.case_id)
    assert owners == {
        "later_crime_reference": "O-1",
        "offence_date": MONITORING_PERSON,
        "later_outcome": MONITORING_PERSON,
    }


def test_the_privacy_inventory_lists_the_sealed_reoffence_and_support_service_fields() -> None:
    listed = {e.event_type: set(e.fields) for e in record_of_processing(Settings(), consumed_types()).event_types}
    assert {"$.later_crime_reference", "$.offence_date", "$.later_outcome"} <= listed["rj.case.reoffence-recorded"]
    assert "$.support_service" in listed["rj.victim-support.referral-recorded"]
    assert "$.support_service" in listed["rj.victim-support.record-referral"]


async def test_stage_7_after_the_offenders_erasure_the_figures_remain_and_their_export_shows_the_reoffence() -> None:
    case = closed_case()
    _, emits = reoffending.record_reoffence(case, later_outcome(), WMP, None, NOW)
    (fact,) = [e.data for e in emits]
    assert isinstance(fact, ReoffenceRecorded)
    store = KeysInMemory()
    pending = cipher_for(ReoffenceRecorded).prepare_encrypt(fact.model_dump(mode="json"), case.case_id)
    keys = KeyCache(store)
    await keys.load(None, pairs=pending.owners)
    sealed = pending.seal(keys)
    envelope = {"type": ReoffenceRecorded.event_type, "id": "e1", "time": NOW.isoformat(), "data": sealed}
    parsed = [Parsed(FactRecord(topics.REFERRAL, 0, 0, case.case_id, b""), envelope)]

    def export(person_id: str) -> dict[str, object]:
        owners = {k.key_id: (k.person_id, k.case_id) for k in store.keys.values()}
        (exported,) = select_personal_data(
            copy.deepcopy(parsed), person_id, owners=owners, keys=keys, erased_cases=set(), roles={}
        )
        return exported.events[0].values

    # Subject access: the offender's export shows all of it, the monitoring values too (they are about them).
    assert export("O-1") == {
        "later_crime_reference": LATER,
        "offence_date": fact.offence_date.isoformat(),
        "later_outcome": "cautioned",
    }

    store.shred("O-1", case.case_id)  # they declined or withdrew: erased; the case's monitoring key stays
    fresh = KeyCache(store)
    opened = cipher_for(ReoffenceRecorded).prepare_decrypt(copy.deepcopy(sealed))
    await fresh.load(None, key_ids=opened.key_ids)
    after = ReoffenceRecorded.model_validate(opened.open(fresh).data)
    assert (after.offence_date, after.later_outcome, after.rj_completed) == (fact.offence_date, Outcome.cautioned, True)
    assert after.later_crime_reference != LATER
