"""Case identity across forces, through the real services: the same crime reference from two forces' crime
systems becomes two cases, each fact about a case carries its force, and the case id is the contract's rule
(``schemas.referral.case_id_for``), so a UI finds a case from a crime reference without reading our topics."""

from __future__ import annotations

import pytest

from demo import samples
from schemas import topics
from schemas.referral import case_id_for
from tests.e2e.conftest import facts
from tests.harness import System

pytestmark = pytest.mark.integration

WEST_MERCIA, WARWICKSHIRE = "urn:police:west-mercia:rms", "urn:police:warwickshire:athena"


async def test_two_forces_crimes_with_the_same_reference_become_two_cases(system: System) -> None:
    for name in ("referral", "consent", "scheduling"):
        system.start(name)
    ref = "CR/2026/000777"
    for force in (WEST_MERCIA, WARWICKSHIRE):
        crime, outcome = samples.crime_recorded(ref), samples.outcome_recorded(ref)
        await system.publish(samples.on_crime_events(crime, outcome, force=force))
    cases = {force: case_id_for(force, ref) for force in (WEST_MERCIA, WARWICKSHIRE)}
    assert len(set(cases.values())) == 2
    for force, case_id in cases.items():
        (accepted,) = await facts(system, topics.REFERRAL, case_id, "rj.case.accepted")
        assert accepted["force"] == force and accepted["data"]["force"] == force
        assert accepted["data"]["crime_reference"] == ref
        (started,) = await facts(system, topics.CONSENT, case_id, "rj.preparation.started")
        assert started["force"] == force, "consent's facts carry the case's force"
    rows = await system.fetch("SELECT force, crime_reference, case_id FROM referral.crime_files ORDER BY force")
    assert [(r["force"], r["crime_reference"], r["case_id"]) for r in rows] == sorted(
        (force, ref, case_id) for force, case_id in cases.items()
    )


async def test_a_closed_case_is_referred_again_as_a_new_case(system: System) -> None:
    for name in ("referral", "consent", "scheduling"):
        system.start(name)
    ref = "CR/2026/000778"
    await system.publish(samples.on_crime_events(samples.crime_recorded(ref), samples.outcome_recorded(ref)))
    first = case_id_for(samples.UPSTREAM_SOURCE, ref)
    await facts(system, topics.CONSENT, first, "rj.preparation.started")
    await system.publish([samples.consent(first, f"V-{ref}", withdraw=True)])
    await facts(system, topics.SCHEDULING, first, "rj.case.closed")

    async def closed_in_referral() -> bool:
        return await system.fetchval("SELECT status FROM referral.crime_files WHERE case_id = $1", first) == "closed"

    await system.wait_for(closed_in_referral, what="referral to hear the case closed")
    # Months later the victim asks for RJ again: a new case, with the next referral's id.
    await system.publish(samples.on_crime_events(samples.referral_requested(ref, person_id=f"V-{ref}")))
    second = case_id_for(samples.UPSTREAM_SOURCE, ref, 2)
    (opened,) = await facts(system, topics.REFERRAL, second, "rj.case.opened")
    assert opened["data"]["referral"] == 2 and opened["force"] == samples.UPSTREAM_SOURCE
    await facts(system, topics.CONSENT, second, "rj.preparation.started")
    assert await facts(system, topics.REFERRAL, first, "rj.case.opened", settle_s=0.5) != []
    # The crime file, sealed now under the second case, still opens: an amended record adding a victim starts
    # that victim's clock on the second case.
    amended = samples.crime_recorded(ref, victims=[samples.victim(f"V-{ref}"), samples.victim(f"V2-{ref}")])
    await system.publish(samples.on_crime_events(amended))
    clocks = await facts(system, topics.REFERRAL, second, "rj.victim-information.due")
    assert [c["data"]["person_id"] for c in clocks] == [f"V2-{ref}"]


async def test_a_second_offender_who_accepts_responsibility_later_joins_the_same_case(system: System) -> None:
    for name in ("referral", "consent", "scheduling", "privacy"):
        system.start(name)
    ref = "CR/2026/000779"
    case_id = case_id_for(samples.UPSTREAM_SOURCE, ref)
    await system.publish(
        samples.on_crime_events(samples.crime_recorded(ref), samples.outcome_recorded(ref, offender="O-1"))
    )
    await facts(system, topics.CONSENT, case_id, "rj.preparation.started")
    await system.publish(samples.on_crime_events(samples.outcome_recorded(ref, offender="O-2")))
    (joined,) = await facts(system, topics.REFERRAL, case_id, "rj.case.offender-joined")
    assert joined["data"]["participant"]["person_id"] == "O-2" and joined["force"] == samples.UPSTREAM_SOURCE
    assert "Offender O-2" not in str(joined), "their details travel sealed"
    (added,) = await facts(system, topics.CONSENT, case_id, "rj.participant.added")
    assert added["data"]["participant"] == joined["data"]["participant"]

    async def scheduling_knows() -> bool:
        state = await system.fetchval("SELECT state::text FROM scheduling.cases WHERE key = $1", case_id)
        return state is not None and '"O-2"' in state

    await system.wait_for(scheduling_knows, what="scheduling to learn the second offender")

    async def indexed_for_retention() -> bool:  # so that retention and erasure reach their data too
        sql = "SELECT role FROM privacy.case_people WHERE case_id = $1 AND person_id = 'O-2'"
        return await system.fetchval(sql, case_id) == "offender"

    await system.wait_for(indexed_for_retention, what="the privacy service to index the second offender")
