"""Rule 7 for someone who declines, on the real broker and PostgreSQL: a victim declines to take part, the case
closes, and a grace period later the privacy service crypto-shreds her data on that case alone. Her ids (who
declined, too) and her monitoring data (age band, gender, ethnicity) still read, on the topics and in the
referral service's state; her name and contact read nowhere (her reason, under the case's key, reads for staff);
the offender's data on the case, and her own data on another case, are untouched."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
import pytest

from demo import samples
from demo.samples import STAFF, case_of, command
from schemas import topics
from schemas.common import Contact
from schemas.consent import DeclineConsent, RecordedThrough, RecordingMethod
from schemas.privacy import KEPT_FOR_MONITORING
from schemas.referral import age_band_on
from schemas.upstream import CrimeRecorded, Offender, Victim
from services.runtime.keystore import CASE_PERSON, MONITORING_PERSON
from services.runtime.privacy import Privacy
from tests.e2e.conftest import facts
from tests.harness import System

pytestmark = pytest.mark.integration

BORN = date(1979, 3, 14)
REASON = "Does not want to be reminded of it"


def her(person_id: str, run: str) -> Victim:
    return Victim(
        person_id=person_id,
        name=f"Philippa Quennell-{run}",
        date_of_birth=BORN,
        contact=Contact(email=f"pq.{run}@secret.example", phone="+447700987654", address=f"17 Larkspur Mews {run}"),
        gender="female",
        ethnicity="W1",
    )


def him(ref: str, run: str) -> Offender:
    return Offender(
        person_id=f"O-{ref}",
        name=f"Bartholomew Ashdown-{run}",
        date_of_birth=date(1983, 11, 27),
        contact=Contact(phone="+447700123987"),
        gender="male",
        ethnicity="A2",
    )


async def opened_case(system: System, case_id: str) -> dict[str, Any]:
    (event,) = await facts(system, topics.REFERRAL, case_id, "rj.case.opened")
    return await system.opened(event)


def people(opened: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["person_id"]: p for p in opened["data"]["participants"]}


async def crime_in_state(system: System, case_id: str) -> CrimeRecorded:
    """The referral service's own copy of the crime (its state), opened as it opens it."""
    conn = await asyncpg.connect(system.settings.database_url)
    try:
        text = await conn.fetchval("SELECT crime::text FROM referral.crime_files WHERE case_id = $1", case_id)
        [crime] = (
            await Privacy.from_settings(system.settings).new_batch().open_models(conn, CrimeRecorded, [text], [case_id])
        )
    finally:
        await conn.close()
    assert crime is not None
    return crime


async def test_rule_7_a_victim_who_declines_keeps_only_ids_and_monitoring_data_on_that_case_alone(
    system: System,
) -> None:
    for name in ("referral", "consent", "scheduling"):
        system.start(name)
    system.start("privacy", declined_erasure_delay_s=1)
    run = uuid.uuid4().hex[:8]
    victim = f"V-{run}"  # the same person, harmed by two crimes: two cases
    ref_a, ref_b = f"DP/{run}/A", f"DP/{run}/B"
    case_a, case_b = case_of(ref_a), case_of(ref_b)
    await system.publish(
        samples.on_crime_events(
            samples.crime_recorded(ref_a, victims=[her(victim, run)]),
            samples.outcome_recorded(ref_a).model_copy(update={"offender": him(ref_a, run)}),
            samples.crime_recorded(ref_b, victims=[her(victim, run)]),
            samples.outcome_recorded(ref_b),
        )
    )
    for case_id in (case_a, case_b):
        await facts(system, topics.CONSENT, case_id, "rj.preparation.started")
    band = age_band_on(BORN, datetime.now(UTC).date())
    assert band is not None
    before = people(await opened_case(system, case_a))[victim]
    assert (before["name"], before["age_band"], before["gender"]) == (f"Philippa Quennell-{run}", band.value, "female")

    _, _, decline = command(
        DeclineConsent(
            case_id=case_a,
            actor=STAFF,
            person_id=victim,
            through=RecordedThrough.facilitator,
            method=RecordingMethod.phone,
            reason=REASON,
        )
    )
    await system.publish([(topics.COMMANDS, case_a, decline)])
    await facts(system, topics.SCHEDULING, case_a, "rj.case.closed")  # her decline stops the case
    (sealed_fact,) = await facts(system, topics.PRIVACY, case_a, "rj.declined-participant.erased")
    (declined,) = await facts(system, topics.CONSENT, case_a, "rj.consent.declined")

    # The fact says who (sealed under the case's key, still readable to staff), when, and why: the decline.
    assert sealed_fact["data"]["erased_person_id"].startswith("enc:v1:")
    fact = (await system.opened(sealed_fact))["data"]
    assert (fact["erased_person_id"], fact["role"], fact["decline_id"]) == (victim, "victim", declined["id"])
    assert (fact["keys_destroyed"], fact["kept_under_hold"], tuple(fact["kept"])) == (1, False, KEPT_FOR_MONITORING)
    assert fact["declined_by"] == STAFF.model_dump()

    # Her key on case A alone is destroyed; the offender's, the case's own and its monitoring key are not.
    keys = await system.fetch(
        "SELECT person_id, case_id, wrapped_key IS NULL AS destroyed FROM keystore.data_keys "
        "WHERE case_id = ANY($1::text[])",
        [case_a, case_b],
    )
    destroyed = {(k["person_id"], k["case_id"]) for k in keys if k["destroyed"]}
    live = {(k["person_id"], k["case_id"]) for k in keys if not k["destroyed"]}
    assert destroyed == {(victim, case_a)}
    assert {(victim, case_b), (f"O-{ref_a}", case_a), (MONITORING_PERSON, case_a)} <= live
    assert (CASE_PERSON, case_a) not in destroyed

    # On the topic: her name, date of birth and contact read nowhere on case A; her ids and monitoring data do.
    after_a = people(await opened_case(system, case_a))
    mine = after_a[victim]
    assert (mine["name"], mine["date_of_birth"], mine["contact"]) == (None, None, None)
    assert (mine["person_id"], mine["role"]) == (victim, "victim")
    assert (mine["age_band"], mine["gender"], mine["ethnicity"]) == (band.value, "female", "W1")
    offender = after_a[f"O-{ref_a}"]  # the other participant's data is untouched
    assert (offender["name"], offender["gender"], offender["ethnicity"]) == (f"Bartholomew Ashdown-{run}", "male", "A2")
    # Who declined, and why, on the consent fact, are under the case's key (under hers, the key id would name her):
    # they still read, for staff, until the case's retention.
    consent_fact = (await system.opened(declined))["data"]
    assert (consent_fact["person_id"], consent_fact["reason"]) == (victim, REASON)

    # On case B she is untouched.
    other = people(await opened_case(system, case_b))[victim]
    assert (other["name"], other["contact"]["email"]) == (f"Philippa Quennell-{run}", f"pq.{run}@secret.example")

    # In the referral service's state: the same.
    state_a, state_b = await crime_in_state(system, case_a), await crime_in_state(system, case_b)
    (kept,) = state_a.victims
    assert (kept.person_id, kept.name, kept.contact, kept.date_of_birth) == (victim, None, None, None)
    assert (kept.gender, kept.ethnicity) == ("female", "W1")
    assert state_b.victims[0].name == f"Philippa Quennell-{run}"

    # And in no table in clear: her monitoring data is sealed wherever it is kept.
    rows = await system.fetch("SELECT crime::text AS crime FROM referral.crime_files WHERE case_id = $1", case_a)
    assert '"female"' not in rows[0]["crime"] and '"W1"' not in rows[0]["crime"]
