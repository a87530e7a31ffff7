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
