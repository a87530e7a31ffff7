"""The Victims' Code's second clock, the sensitive-case gate on RJ information, and reoffending after a case
ended, as an outside client meets them on the real broker and PostgreSQL (DOMAIN rules 4 and 10, stage 7)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from demo import samples
from demo.samples import STAFF, command
from schemas import topics
from schemas.commands import RecordVictimInformationProvided, RecordVictimSupportReferral, SupportReferralOutcome
from schemas.scheduling import CloseCase, ClosureReason
from schemas.upstream import Outcome, RiskFlag
from services.runtime.fieldcrypt import token_key_id
from services.runtime.keystore import MONITORING_PERSON
from services.runtime.keystore import SCHEMA as KEYSTORE
from tests.e2e.conftest import facts, referred_case
from tests.harness import System

pytestmark = pytest.mark.integration

WARKS = "urn:police:warwickshire:athena"


async def test_rule_10_and_rule_4_and_stage_7_support_referral_sensitive_rj_information_and_reoffence(
    system: System,
) -> None:
    for name in ("referral", "consent", "scheduling"):
        system.start(name)
    ref = "WM/2026/716001"
    case_id, victim, offender = await referred_case(system, ref, risk_flags=[RiskFlag.domestic_abuse])

    # Rule 10: the support-referral clock runs beside the RJ information clock; a referral stops it.
    (due,) = await facts(system, topics.REFERRAL, case_id, "rj.victim-support.referral-due")
    assert due["data"]["working_days"] == 2 and due["data"]["person_id"] == victim
    now = datetime.now(UTC)
    referred = RecordVictimSupportReferral(
        case_id=case_id,
        actor=STAFF,
        person_id=victim,
        outcome=SupportReferralOutcome.referred,
        support_service="Victim Support West Mercia",
        decided_at=now,
    )
    await system.publish([command(referred)])
    (recorded,) = await facts(system, topics.REFERRAL, case_id, "rj.victim-support.referral-recorded")
    assert recorded["data"]["outcome"] == "referred" and recorded["data"]["on_time"] is True
    assert recorded["data"]["support_service"].startswith("enc:v1:")  # it can tell what happened: sealed
    assert recorded["data"]["recorded_by"]["id"] == STAFF.id

    # Rule 4: on this sensitive case, RJ information given before a risk assessment allowed contact is recorded
    # (it happened), flagged for staff, and stops the clock; once a safe assessment is heard, nothing is flagged.
    told = RecordVictimInformationProvided(case_id=case_id, actor=STAFF, person_id=victim, provided_at=now)
    await system.publish([command(told)])
    (provided,) = await facts(system, topics.REFERRAL, case_id, "rj.victim-information.provided")
    assert provided["data"]["person_id"] == victim and provided["data"]["before_contact_allowed"] is True
    assert provided["data"]["on_time"] is True
    stopped = "SELECT provided_at IS NOT NULL FROM referral.victim_clocks WHERE case_id = $1 AND person_id = $2"
    assert await system.fetchval(stopped, case_id, victim) is True

    # A crime reported a week ago and not referred to support: the sweep flags the breach.
    old = "WM/2026/716002"
    late = samples.crime_recorded(old, reported_at=datetime.now(UTC) - timedelta(days=7))
    await system.publish(samples.on_crime_events(late))
    (overdue,) = await facts(system, topics.REFERRAL, samples.case_of(old), "rj.victim-support.referral-overdue")
    assert overdue["data"]["person_id"] == f"V-{old}"

    # Across a bank holiday: reported on the Friday before the late-May bank holiday (Monday 25 May 2026), the
    # referral is due by the end of Wednesday (Tuesday and Wednesday are the two working days).
    friday = "WM/2026/716003"
    await system.publish(
        samples.on_crime_events(samples.crime_recorded(friday, reported_at=datetime(2026, 5, 22, 10, tzinfo=UTC)))
    )
    (holiday,) = await facts(system, topics.REFERRAL, samples.case_of(friday), "rj.victim-support.referral-due")
    assert holiday["data"]["due_date"] == "2026-05-27"

    # Stage 7: before the case closes, the offender's later offence (a caution) and another crime with no further
    # action are read: the first counts once the case ends (the closure travels on another topic), the second never.
    early, nfa = "WM/2027/000041", "WM/2027/000043"
    before_closure = [
        samples.crime_recorded(early, reported_at=datetime.now(UTC)),
        samples.outcome_recorded(early, offender=offender),
        samples.crime_recorded(nfa, reported_at=datetime.now(UTC)),
        samples.outcome_recorded(nfa, offender=offender, outcome=Outcome.no_further_action),
    ]
    taken_in = await system.fetchval("SELECT count(*) FROM referral.inbox")
    await system.publish(samples.on_crime_events(*before_closure))

    async def all_four_read() -> bool:
        return await system.fetchval("SELECT count(*) FROM referral.inbox") >= taken_in + 4

    await system.wait_for(all_four_read, what="referral to read the outcomes before the closure")
    # The case closes (it did not proceed); a later crime's outcome naming its offender is a reoffence.
    close = CloseCase(case_id=case_id, actor=STAFF, closure_reason=ClosureReason.not_suitable, reason="Not safe")
    await system.publish([command(close)])
    await facts(system, topics.SCHEDULING, case_id, "rj.case.closed")
    (first,) = await facts(system, topics.REFERRAL, case_id, "rj.case.reoffence-recorded")
    assert (await system.opened(first))["data"]["later_crime_reference"] == early

    later = "WM/2027/000042"
    again = samples.crime_recorded(later, reported_at=datetime.now(UTC))  # after the case's crime
    offence = [again, samples.outcome_recorded(later, offender=offender)]
    await system.publish(samples.on_crime_events(*offence))
    _, reoffence = await facts(system, topics.REFERRAL, case_id, "rj.case.reoffence-recorded", 2)
    sealed = reoffence["data"]
    # What the later offence was is criminal-offence data about the offender: sealed on the topic.
    assert all(sealed[f].startswith("enc:v1:") for f in ("later_crime_reference", "offence_date", "later_outcome"))
    # What the figures need is under the case's monitoring key (it outlives the offender's erasure); the later
    # crime's reference, which identifies them, under their own.
    key_owners = {
        f: await system.fetchval(
            f"SELECT person_id FROM {KEYSTORE}.data_keys WHERE key_id = $1::uuid AND case_id = $2",
            token_key_id(sealed[f]),
            case_id,
        )
        for f in ("later_crime_reference", "offence_date", "later_outcome")
    }
    assert key_owners == {
        "later_crime_reference": offender,
        "offence_date": MONITORING_PERSON,
        "later_outcome": MONITORING_PERSON,
    }
    data = (await system.opened(reoffence))["data"]
    assert (data["person_id"], data["later_crime_reference"], data["later_outcome"]) == (offender, later, "cautioned")
    assert data["offence_date"] == again.occurred_at.date().isoformat()  # type: ignore[union-attr]
    assert (data["ended_as"], data["closure_reason"], data["rj_completed"]) == ("closed", "not_suitable", False)

    # The same outcome re-sent under new ids, and another force's crime naming the same person id: nothing new.
    taken_in = await system.fetchval("SELECT count(*) FROM referral.inbox")
    await system.publish(samples.on_crime_events(*offence))
    await system.publish(samples.on_crime_events(*offence, force=WARKS))

    async def all_four_taken_in() -> bool:
        return await system.fetchval("SELECT count(*) FROM referral.inbox") >= taken_in + 4

    await system.wait_for(all_four_taken_in, what="referral to take in the repeat and the other force's crime")
    reoffences = await facts(system, topics.REFERRAL, case_id, "rj.case.reoffence-recorded", settle_s=1.0)
    assert len(reoffences) == 2
