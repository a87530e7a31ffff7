"""Hostile and mistaken input on the support-referral command (``rj.victim-support.record-referral``): each is
answered with a clear refusal on ``rj.referral``, nothing is dead-lettered for a reason in the data that the
owner can answer, and the clock is stopped once, by the first good referral."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from demo import samples
from demo.samples import STAFF, command
from schemas import topics
from schemas.commands import RecordVictimSupportReferral, SupportReferralOutcome
from schemas.common import Actor
from schemas.envelope import new_event
from tests.e2e.conftest import facts
from tests.harness import System

pytestmark = pytest.mark.integration


def support(case_id: str, person_id: str, **kw: object) -> RecordVictimSupportReferral:
    fields: dict[str, object] = dict(
        case_id=case_id,
        actor=STAFF,
        person_id=person_id,
        outcome=SupportReferralOutcome.referred,
        support_service="Victim Support",
        decided_at=datetime.now(UTC),
    )
    return RecordVictimSupportReferral(**{**fields, **kw})  # type: ignore[arg-type]


async def test_rule_10_hostile_support_referrals_are_refused_with_reasons_and_the_clock_stops_once(
    system: System,
) -> None:
    system.start("referral")
    ref = "WM/2026/818001"
    case_id, victim = samples.case_of(ref), f"V-{ref}"

    # Before the crime arrives there is no clock: refused, and it can be sent again once the crime is in.
    early = support(case_id, victim)
    await system.publish([command(early)])
    (first,) = await facts(system, topics.REFERRAL, case_id, "rj.command.rejected")
    assert "no Victims' Code support-referral clock" in first["data"]["reason"]

    await system.publish(samples.on_crime_events(samples.crime_recorded(ref)))
    await facts(system, topics.REFERRAL, case_id, "rj.victim-support.referral-due")

    unknown_case = support(samples.case_of("WM/2026/NOPE"), victim)
    future = datetime.now(UTC) + timedelta(days=2)
    hostile = [
        support(case_id, "V-SOMEONE-ELSE"),  # not a victim of this crime
        support(case_id, victim, support_service=None),  # referred to no one
        support(case_id, victim, outcome=SupportReferralOutcome.declined),  # declined, yet naming a service
        support(case_id, victim, decided_at=future),
        support(case_id, victim, support_service="x" * 150, decided_at=datetime(2001, 1, 1, tzinfo=UTC)),
        # Someone other than staff or the victim (here the offender) stopping the victim's clock.
        support(case_id, victim, actor=Actor(kind="participant", id=f"O-{ref}")),
    ]
    await system.publish([command(c) for c in hostile])
    await system.publish([command(unknown_case)])
    # An outcome no version knows: the processor refuses it as malformed, on the owner's topic.
    document = json.loads(new_event(support(case_id, victim), source="urn:ui", subject=case_id).to_json())
    document["data"]["outcome"] = "maybe"
    await system.publish([(topics.COMMANDS, case_id, json.dumps(document).encode())])
    reasons = [m["data"]["reason"] for m in await facts(system, topics.REFERRAL, case_id, "rj.command.rejected", 1 + 7)]
    assert any("no Victims' Code support-referral clock runs for person V-SOMEONE-ELSE" in r for r in reasons)
    assert any("must name the support service" in r for r in reasons)
    assert any("names no support service" in r for r in reasons)
    assert any("is in the future" in r for r in reasons)
    assert any("before the crime was reported" in r for r in reasons)
    assert any(r.startswith("only staff record a referral to victim support") for r in reasons), reasons
    assert any(r.startswith("malformed") and "outcome" in r for r in reasons), reasons
    (elsewhere,) = await facts(system, topics.REFERRAL, unknown_case.case_id, "rj.command.rejected")
    assert "no Victims' Code support-referral clock" in elsewhere["data"]["reason"]

    # The good one stops the clock; the same command again (same id) is answered as handled; another referral
    # of the same victim is refused; nothing is recorded twice.
    good = command(support(case_id, victim))
    await system.publish([good, good])
    await system.publish(
        [command(support(case_id, victim, outcome=SupportReferralOutcome.declined, support_service=None))]
    )
    await facts(system, topics.REFERRAL, case_id, "rj.command.already-handled")
    rejected = await facts(system, topics.REFERRAL, case_id, "rj.command.rejected", 1 + 7 + 1)
    assert any("already recorded (referred" in m["data"]["reason"] for m in rejected)
    recorded = await facts(system, topics.REFERRAL, case_id, "rj.victim-support.referral-recorded", settle_s=1.0)
    assert len(recorded) == 1 and recorded[0]["data"]["outcome"] == "referred"
    row = await system.fetchval(
        "SELECT outcome FROM referral.support_clocks WHERE case_id = $1 AND person_id = $2", case_id, victim
    )
    assert row == "referred"
    # Only the malformed one is dead-lettered (and answered); a refusal for a reason in the data is an answer.
    letters = await system.fetchval("SELECT count(*) FROM referral.outbox WHERE topic = $1", topics.DEADLETTER)
    assert letters == 1
