"""A child victim's case through referral, consent and scheduling, on the real broker and PostgreSQL: it is ready
only once a parent or guardian is added and consents, and the parent's withdrawal closes it."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from demo import samples
from schemas import topics
from schemas.consent import AddParticipant, RecordRiskAssessment, RiskLevel
from schemas.referral import Role
from tests.e2e.conftest import (
    STAFF,
    command,
    community_venue,
    consent,
    facilitators,
    facilitators_known,
    facts,
    next_week,
    prepare,
    schedulable,
)
from tests.e2e.test_case_lifecycle import conference
from tests.harness import System

pytestmark = pytest.mark.integration

REF = "WM/2026/700001"


async def test_a_child_victims_case_is_ready_only_with_a_parents_consent_and_the_parents_withdrawal_closes_it(
    system: System,
) -> None:
    for name in ("referral", "consent", "scheduling"):
        system.start(name)
    await system.publish([*facilitators("F-BEN"), *facilitators("F-SEN", specialist=True), community_venue()])
    await facilitators_known(system, "F-BEN", "F-SEN")

    victim, offender, parent = f"V-{REF}", f"O-{REF}", f"P-{REF}"
    born = date(datetime.now(UTC).year - 14, 3, 1)
    crime = samples.crime_recorded(REF, victims=[samples.victim(victim, born=born)])
    await system.publish(samples.on_crime_events(crime, samples.outcome_recorded(REF)))
    # The case's id is read off the fact, as a UI would, rather than derived here.
    events = await system.referral_events(lambda ms: any(accepted_for_ref(m) for m in ms))
    (accepted,) = [m for m in events if accepted_for_ref(m)]
    case_id = accepted["subject"]
    assert {p["person_id"]: p["under_18"] for p in accepted["data"]["participants"]} == {victim: True, offender: False}
    assert "victim_under_18" in accepted["data"]["sensitivity_reasons"]
    # Consent reads the case from its own topic: a command that overtakes the case there is refused as for an unknown
    # case (a UI retries it), so the staff's commands wait until consent has opened the case's preparation.
    await facts(system, topics.CONSENT, case_id, "rj.preparation.started")

    # Assessed, with a specialist and a co-facilitator; the child and the offender are met and consent: not ready.
    assessment = RecordRiskAssessment(
        case_id=case_id, actor=STAFF, assessed_at=datetime.now(UTC), level=RiskLevel.medium, safe_to_proceed=True
    )
    await system.publish([command(assessment), *prepare(case_id, [victim, offender], ["F-SEN", "F-BEN"])])
    await facts(system, topics.CONSENT, case_id, "rj.consent.given", 2)
    assert not await facts(system, topics.CONSENT, case_id, "rj.case.ready-for-meeting", 0, settle_s=1.0)

    # Staff add the child's mother, a facilitator meets her and she consents: now the case is ready.
    adding = AddParticipant(
        case_id=case_id,
        actor=STAFF,
        person_id=parent,
        role=Role.parent_guardian,
        supports=victim,
        reason="the victim is 14; her mother has parental responsibility",
    )
    await system.publish([command(adding)])
    (added,) = await facts(system, topics.CONSENT, case_id, "rj.participant.added")
    participant = added["data"]["participant"]
    assert (participant["role"], participant["supports"], participant["required"]) == ("parent_guardian", victim, True)
    assert added["data"]["reason"].startswith("enc:v1:"), "staff's words about the family travel sealed"
    await system.publish(prepare(case_id, [parent], []))
    (ready,) = await facts(system, topics.CONSENT, case_id, "rj.case.ready-for-meeting")
    assert {p["person_id"] for p in ready["data"]["participants"] if p["required"]} == {victim, offender, parent}
    await schedulable(system, case_id)

    await system.publish([conference(case_id, "M1", next_week(), lead="F-SEN", co="F-BEN")])
    (booked,) = await facts(system, topics.SCHEDULING, case_id, "rj.meeting.booked")
    assert parent in booked["data"]["attendee_ids"]

    # The mother withdraws: the meeting is cancelled and the case closes, as if the child had withdrawn.
    await system.publish([consent(case_id, parent, withdraw=True)])
    (withdrawn,) = await facts(system, topics.CONSENT, case_id, "rj.case.withdrawn")
    assert withdrawn["data"]["reason"] == "consent_withdrawn" and parent not in str(withdrawn["data"])
    (cancelled,) = await facts(system, topics.SCHEDULING, case_id, "rj.meeting.cancelled")
    assert cancelled["data"]["meeting_id"] == "M1"
    (closed,) = await facts(system, topics.SCHEDULING, case_id, "rj.case.closed")
    assert closed["data"]["reason"] == "withdrawn" and parent not in str(closed["data"])


def accepted_for_ref(message: dict[str, object]) -> bool:
    data = message.get("data")
    return message.get("type") == "rj.case.accepted" and isinstance(data, dict) and data["crime_reference"] == REF
