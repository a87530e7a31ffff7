"""The contact log, safe contact and the satisfaction survey as an outside client meets them, on the real broker
and PostgreSQL: attempts counted per person, an attempt by a channel the person's safe-contact record forbids
recorded (it happened) with a flag that travels sealed, and no rejection saying anything of the record; survey
invitations when a case closes (none on a withdrawn case), a response recorded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from demo.samples import STAFF, command, consent
from schemas import topics
from schemas.common import Actor, Channel
from schemas.consent import (
    AddCaseNote,
    ContactMethod,
    ContactOutcome,
    RecordContactAttempt,
    RecordedThrough,
    RecordingMethod,
    RecordSafeContact,
    RecordSurveyResponse,
)
from schemas.scheduling import CloseCase, ClosureReason
from tests.e2e.conftest import facts, referred_case, rejection
from tests.harness import System

pytestmark = pytest.mark.integration


def attempt(
    case_id: str, person_id: str, method: ContactMethod, outcome: ContactOutcome, minutes_ago: int
) -> tuple[str, str, bytes]:
    return command(
        RecordContactAttempt(
            case_id=case_id,
            actor=STAFF,
            person_id=person_id,
            attempted_at=datetime.now(UTC) - timedelta(minutes=minutes_ago),
            method=method,
            outcome=outcome,
        )
    )


async def test_rule_2_contact_attempts_safe_contact_and_survey_invitations_through_the_services(
    system: System,
) -> None:
    for name in ("referral", "consent", "scheduling"):
        system.start(name)
    case_id, victim, offender = await referred_case(system, "WM/2026/616001")
    withdrawn_id, withdrawn_victim, _ = await referred_case(system, "WM/2026/616002")

    # The victim may be reached by email only: the home is shared, no letters, no texts.
    safe = RecordSafeContact(
        case_id=case_id,
        actor=STAFF,
        person_id=victim,
        safe_channels=[Channel.email],
        letters_to_home_ok=False,
        alternative_email="safe.inbox@example.org",
        through=RecordedThrough.facilitator,
        method=RecordingMethod.in_person,
    )
    await system.publish([command(safe)])
    await facts(system, topics.CONSENT, case_id, "rj.contact.safe-contact-recorded")
    await system.publish(
        [
            attempt(case_id, victim, ContactMethod.email, ContactOutcome.no_answer, 30),
            attempt(case_id, victim, ContactMethod.sms, ContactOutcome.no_answer, 25),
            attempt(case_id, victim, ContactMethod.email, ContactOutcome.undeliverable, 20),
            attempt(case_id, offender, ContactMethod.phone, ContactOutcome.no_answer, 15),
            attempt(case_id, victim, ContactMethod.email, ContactOutcome.reached, 10),
            command(
                AddCaseNote(case_id=case_id, actor=STAFF, text="Victim asks for emails after 6pm", person_id=victim)
            ),
        ]
    )
    recorded = await facts(system, topics.CONSENT, case_id, "rj.contact.attempt-recorded", 5)
    assert [(a["data"]["person_id"], a["data"]["unanswered_in_a_row"]) for a in recorded] == [
        (victim, 1),
        (victim, 2),  # the text message the record forbids: it happened, so it is logged and counted
        (victim, 3),
        (offender, 1),
        (victim, 0),
    ]
    # Whether an attempt broke the record, and what it broke, say what the record seals: on every attempt, both
    # travel sealed under the case's key (rule 3), for staff to open, at one length whether or not it broke it.
    for a in recorded:
        assert a["data"]["breached_safe_contact"].startswith("enc:v1:")
        assert a["data"]["safe_contact_breach"].startswith("enc:v1:")
    for name in ("breached_safe_contact", "safe_contact_breach"):
        assert len({len(a["data"][name]) for a in recorded}) == 1, name
    note = await facts(system, topics.CONSENT, case_id, "rj.case.note-added")
    published = await system.read_until(topics.CONSENT, lambda ms: any(m["id"] == note[0]["id"] for m in ms))
    assert [m for m in published if m["subject"] == case_id and m["type"] == "rj.command.rejected"] == []

    # Closed as not suitable: both parties are invited to the survey; the victim answers.
    close = CloseCase(case_id=case_id, actor=STAFF, closure_reason=ClosureReason.not_suitable, reason="risk too high")
    await system.publish([command(close)])
    invitations = await facts(system, topics.CONSENT, case_id, "rj.survey.invited", 2)
    assert sorted(i["data"]["person_id"] for i in invitations) == sorted([victim, offender])
    response = RecordSurveyResponse(
        case_id=case_id,
        actor=Actor(kind="participant", id=victim),
        person_id=victim,
        satisfied=True,
        score=4,
        comments="I felt listened to",
    )
    await system.publish([command(response), command(response.model_copy())])
    (answered,) = await facts(system, topics.CONSENT, case_id, "rj.survey.response-recorded")
    assert (answered["data"]["satisfied"], answered["data"]["score"], answered["data"]["role"]) == (True, 4, "victim")
    (refused,) = await rejection(system, case_id, topics.CONSENT)
    assert refused == f"{victim} has already answered the satisfaction survey on this case"

    # The other case stops with the victim's withdrawal: it closes, and nobody is invited (rule 2).
    await system.publish([consent(withdrawn_id, withdrawn_victim, withdraw=True)])
    (closure,) = await facts(system, topics.SCHEDULING, withdrawn_id, "rj.case.closed")
    assert closure["data"]["reason"] == "withdrawn"

    async def consent_heard_the_closure() -> bool:
        sql = "SELECT state->>'closed' FROM consent.cases WHERE key = $1"
        return await system.fetchval(sql, withdrawn_id) == "true"

    await system.wait_for(consent_heard_the_closure, what="consent to hear the withdrawn case closed")
    assert await facts(system, topics.CONSENT, withdrawn_id, "rj.survey.invited", 0, settle_s=0.5) == []
