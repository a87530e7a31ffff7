"""Rule 7 against rules 1 and 2, on the real broker and PostgreSQL, with referral, consent, scheduling and privacy
running: a supporter who consented and is booked on a conference declines. Scheduling, however late it reads the
decline, still learns who it was and removes them from the meeting; a grace period (``declined_erasure_delay_s``)
after the decline the consent service decides, in case order, that his erasure is due (the case still open), the
privacy service erases him, and his consent is refused from then on; who declined, their ids and the monitoring
data still read while their own words do not. Someone who consents again before the deadline is never erased."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pytest

from demo import samples
from schemas import topics
from schemas.common import Actor
from schemas.consent import AddParticipant, DeclineConsent, RecordedThrough, RecordingMethod
from schemas.referral import Role
from services.runtime.keystore import CASE_PERSON, MONITORING_PERSON
from tests.e2e.conftest import (
    command,
    community_venue,
    consent,
    facilitators,
    facilitators_known,
    facts,
    next_week,
    prepare,
    rejection,
    schedulable,
)
from tests.e2e.test_case_lifecycle import conference
from tests.harness import System

pytestmark = pytest.mark.integration

DELAY_S = 2.0
STAFF = samples.STAFF


async def test_a_booked_supporter_who_declines_is_removed_from_the_meeting_and_erased_a_grace_period_after_case_open(
    system: System,
) -> None:
    for name in ("referral", "scheduling"):
        system.start(name)
    for name in ("consent", "privacy"):
        system.start(name, declined_erasure_delay_s=DELAY_S)
    await system.publish([*facilitators("F-ANN", "F-BEN"), community_venue()])
    await facilitators_known(system, "F-ANN", "F-BEN")

    ref = f"DG/{uuid.uuid4().hex[:8]}"
    victim, offender, supporter = f"V-{ref}", f"O-{ref}", f"S-{ref}"
    her = samples.victim(victim).model_copy(update={"gender": "female", "ethnicity": "W1"})
    await system.publish(
        samples.on_crime_events(samples.crime_recorded(ref, victims=[her]), samples.outcome_recorded(ref))
    )
    case_id = samples.case_of(ref)
    await facts(system, topics.CONSENT, case_id, "rj.preparation.started")
    adding = AddParticipant(case_id=case_id, actor=STAFF, person_id=supporter, role=Role.supporter, supports=victim)
    await system.publish([command(adding)])
    await facts(system, topics.CONSENT, case_id, "rj.participant.added")
    await system.publish(prepare(case_id, [victim, offender, supporter], ["F-ANN", "F-BEN"]))
    await facts(system, topics.CONSENT, case_id, "rj.consent.given", 3)
    await schedulable(system, case_id)
    await system.publish([conference(case_id, "M1", next_week())])
    (booked,) = await facts(system, topics.SCHEDULING, case_id, "rj.meeting.booked")
    assert supporter in booked["data"]["attendee_ids"]

    # The supporter declines himself, with his own words: scheduling removes him from the meeting (rules 1, 2).
    himself = Actor(kind="participant", id=supporter)
    decline = DeclineConsent(
        case_id=case_id,
        actor=himself,
        person_id=supporter,
        through=RecordedThrough.participant,
        method=RecordingMethod.online,
        reason="I would rather not be there",
    )
    await system.publish([command(decline)])
    (removed,) = await facts(system, topics.SCHEDULING, case_id, "rj.meeting.attendee-removed")
    assert supporter not in str(removed["data"]), "who declined is never in clear"
    assert (await system.opened(removed))["data"]["person_id"] == supporter
    # The case is still open (a supporter stops nothing), yet a grace period after his decline he is erased.
    (due,) = await facts(system, topics.CONSENT, case_id, "rj.participant.erasure-due")
    (declined,) = await facts(system, topics.CONSENT, case_id, "rj.consent.declined")
    assert supporter not in str(due["data"]), "who declined is never in clear"
    due_data = (await system.opened(due))["data"]
    assert (due_data["person_id"], due_data["decline_id"]) == (supporter, declined["id"])
    (his_erasure,) = await facts(system, topics.PRIVACY, case_id, "rj.declined-participant.erased")
    his = (await system.opened(his_erasure))["data"]
    assert (his["erased_person_id"], his["role"], his["decline_id"]) == (supporter, "supporter", declined["id"])
    recorded = datetime.fromisoformat(declined["data"]["recorded_at"])
    assert datetime.fromisoformat(his["erased_at"]) >= recorded + timedelta(seconds=DELAY_S)
    assert not await facts(system, topics.SCHEDULING, case_id, "rj.case.closed", 0, settle_s=0.5)

    # He comes back: his data is gone, so the consent service refuses his consent on this case, saying why.
    await system.publish([consent(case_id, supporter)])
    (refusal,) = await rejection(system, case_id, topics.CONSENT)
    assert "erased" in refusal and "rj.participant.add" in refusal

    # The victim withdraws: the case closes; a grace period after her withdrawal she is erased, the offender is not.
    await system.publish([consent(case_id, victim, withdraw=True)])
    await facts(system, topics.SCHEDULING, case_id, "rj.case.closed")
    erased = await facts(system, topics.PRIVACY, case_id, "rj.declined-participant.erased", 2)
    opened = [(await system.opened(e))["data"] for e in erased]
    assert {(f["erased_person_id"], f["role"]) for f in opened} == {(supporter, "supporter"), (victim, "victim")}
    assert all(e["data"]["role"].startswith("enc:v1:") for e in erased), "a role in clear would name the victim"
    keys = await system.fetch(
        "SELECT person_id, wrapped_key IS NULL AS destroyed FROM keystore.data_keys WHERE case_id = $1", case_id
    )
    assert {k["person_id"] for k in keys if k["destroyed"]} == {supporter, victim}
    assert {offender, CASE_PERSON, MONITORING_PERSON} <= {k["person_id"] for k in keys if not k["destroyed"]}

    # Who declined, and that he recorded it himself, still read; his reason does not (rule 7).
    fact = (await system.opened(declined))["data"]
    assert (fact["person_id"], fact["declined_by"], fact["reason"]) == (supporter, himself.model_dump(), None)
    assert (await system.opened(removed))["data"]["person_id"] == supporter
    # The victim's ids and monitoring data still read on the case; her name and contact do not.
    (opened_case,) = await facts(system, topics.REFERRAL, case_id, "rj.case.opened")
    (mine,) = [p for p in (await system.opened(opened_case))["data"]["participants"] if p["person_id"] == victim]
    assert (mine["name"], mine["contact"]) == (None, None)
    assert (mine["gender"], mine["ethnicity"]) == ("female", "W1") and mine["age_band"] is not None


async def test_someone_who_declines_and_consents_again_before_the_deadline_is_never_erased(system: System) -> None:
    system.start("referral")
    for name in ("consent", "privacy"):
        system.start(name, declined_erasure_delay_s=DELAY_S)
    ref = f"DG/{uuid.uuid4().hex[:8]}"
    victim, supporter = f"V-{ref}", f"S-{ref}"
    await system.publish(samples.on_crime_events(samples.crime_recorded(ref), samples.outcome_recorded(ref)))
    case_id = samples.case_of(ref)
    await facts(system, topics.CONSENT, case_id, "rj.preparation.started")
    adding = AddParticipant(case_id=case_id, actor=STAFF, person_id=supporter, role=Role.supporter, supports=victim)
    decline = DeclineConsent(
        case_id=case_id,
        actor=STAFF,
        person_id=supporter,
        through=RecordedThrough.facilitator,
        method=RecordingMethod.phone,
        reason="Not sure yet",
    )
    await system.publish([command(adding), command(decline), consent(case_id, supporter)])
    await facts(system, topics.CONSENT, case_id, "rj.consent.given")
    # Well past the grace period: no erasure was decided, none done, and his key on the case stands.
    assert not await facts(system, topics.CONSENT, case_id, "rj.participant.erasure-due", 0, settle_s=DELAY_S + 2)
    assert not await facts(system, topics.PRIVACY, case_id, "rj.declined-participant.erased", 0, settle_s=0.5)
    keys = await system.fetch(
        "SELECT wrapped_key IS NULL AS destroyed FROM keystore.data_keys WHERE case_id = $1 AND person_id = $2",
        case_id,
        supporter,
    )
    assert not any(k["destroyed"] for k in keys)
