"""Follow-up and closures that need evidence (DOMAIN stage 6), as an outside client meets them on the real broker
and PostgreSQL: an agreement item past its due date is flagged overdue once, naming the victim to be told and
nothing of the offender, and the case then closes as ``agreement_not_met`` naming that item; a case closes as
``uncontactable`` only once the set number of contact attempts in a row, recorded through the consent service,
went unanswered."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from schemas import topics
from schemas.common import Actor
from schemas.consent import (
    ContactMethod,
    ContactOutcome,
    GiveConsent,
    RecordContactAttempt,
    RecordedThrough,
    RecordingMethod,
)
from schemas.scheduling import (
    AgreementItemTerms,
    BookMeeting,
    CloseCase,
    ClosureReason,
    ItemKind,
    MeetingKind,
    RecordAgreement,
    RecordMeetingHeld,
)
from tests.e2e.conftest import (
    STAFF,
    command,
    facilitators,
    facilitators_known,
    facts,
    prepare,
    referred_case,
    rejection,
    schedulable,
    soon,
)
from tests.harness import System

pytestmark = pytest.mark.integration


def contact_attempt(case_id: str, person_id: str, minutes_ago: int) -> tuple[str, str, bytes]:
    """Staff record an unanswered call: the consent service counts it and publishes ``rj.contact.attempt-recorded``,
    which scheduling takes in."""
    return command(
        RecordContactAttempt(
            case_id=case_id,
            actor=STAFF,
            person_id=person_id,
            attempted_at=datetime.now(UTC) - timedelta(minutes=minutes_ago),
            method=ContactMethod.phone,
            outcome=ContactOutcome.no_answer,
        )
    )


async def unanswered_heard(system: System, case_id: str, person_id: str, n: int) -> None:
    """Wait until scheduling has taken in ``n`` unanswered attempts to ``person_id`` (another topic than the
    close command's, so a UI would show the count before offering to close)."""

    async def heard() -> bool:
        sql = """SELECT u->>'in_a_row' FROM scheduling.cases, jsonb_array_elements(state->'unanswered') AS u
                 WHERE key = $1 AND u->>'person_id' = $2"""
        return await system.fetchval(sql, case_id, person_id) == str(n)

    await system.wait_for(heard, what=f"scheduling to hear {n} unanswered attempts to {person_id}")


def close(case_id: str, reason: ClosureReason, text: str) -> tuple[str, str, bytes]:
    return command(CloseCase(case_id=case_id, actor=STAFF, closure_reason=reason, reason=text))


async def test_stage_6_an_overdue_item_tells_the_victim_and_closures_need_their_evidence(system: System) -> None:
    system.start("referral")
    system.start("consent")
    system.start("scheduling", deadline_sweep_interval_s=0.5)
    await system.publish(facilitators("F-ANN"))
    await facilitators_known(system, "F-ANN")
    case_id, victim, offender = await referred_case(system, "WM/2026/716001")
    lost_id, lost_victim, lost_offender = await referred_case(system, "WM/2026/716002")
    await system.publish(prepare(case_id, [victim, offender], ["F-ANN"]))
    await facts(system, topics.CONSENT, case_id, "rj.case.ready-for-meeting")
    await schedulable(system, case_id)

    # An indirect meeting, held; its agreement has one item already past its due date.
    starts = soon()
    meeting = BookMeeting(
        case_id=case_id,
        actor=STAFF,
        meeting_id="M1",
        kind=MeetingKind.indirect,
        starts_at=starts,
        ends_at=starts + timedelta(minutes=10),
        lead_facilitator_id="F-ANN",
    )
    await system.publish([command(meeting)])
    await facts(system, topics.SCHEDULING, case_id, "rj.meeting.booked")
    # Too early: no agreement yet, so nothing can be unmet.
    await system.publish([close(case_id, ClosureReason.agreement_not_met, "Nothing done")])
    assert await rejection(system, case_id, topics.SCHEDULING) == ["there is no agreement on this case to be unmet"]
    await asyncio.sleep(max(0.0, (starts - datetime.now(UTC)).total_seconds()) + 0.5)
    today = datetime.now(UTC)
    items = [
        AgreementItemTerms(
            item_id="late",
            kind=ItemKind.work,
            description="Clean the wall",
            owner_id=offender,
            due_date=(today - timedelta(days=3)).date(),
        ),
        AgreementItemTerms(
            item_id="later",
            kind=ItemKind.apology,
            description="A letter",
            owner_id=offender,
            due_date=(today + timedelta(days=60)).date(),
        ),
    ]
    await system.publish(
        [
            command(RecordMeetingHeld(case_id=case_id, actor=STAFF, meeting_id="M1", held_at=today)),
            command(
                RecordAgreement(
                    case_id=case_id, actor=STAFF, meeting_id="M1", items=items, consented_by=[victim, offender]
                )
            ),
        ]
    )

    (overdue,) = await facts(system, topics.SCHEDULING, case_id, "rj.agreement-item.overdue", settle_s=1.5)
    assert overdue["data"]["item_id"] == "late"
    assert overdue["data"]["tell_person_ids"] == [victim]
    assert offender not in str(overdue)  # nothing of the offender in what the victim is told
    assert overdue.get("causationid") is None  # participant-facing: no chain back to the offender's item

    await system.publish([close(case_id, ClosureReason.agreement_not_met, "The wall was not cleaned")])
    (closed,) = await facts(system, topics.SCHEDULING, case_id, "rj.case.closed")
    assert (closed["data"]["reason"], closed["data"]["failed_item_ids"]) == ("agreement_not_met", ["late"])
    # The sweep ran many times meanwhile: one overdue fact, and no reminder after the due date.
    published = await system.read_until(topics.SCHEDULING, lambda ms: any(m["id"] == closed["id"] for m in ms))
    flagged = [m["type"] for m in published if m["subject"] == case_id and "agreement-item" in m["type"]]
    assert flagged == ["rj.agreement-item.overdue"]

    # Uncontactable: refused after two unanswered attempts, accepted after the third.
    await system.publish([contact_attempt(lost_id, lost_victim, n) for n in (30, 20)])
    await unanswered_heard(system, lost_id, lost_victim, 2)
    await system.publish([close(lost_id, ClosureReason.uncontactable, "No reply")])
    (refused,) = await rejection(system, lost_id, topics.SCHEDULING)
    assert "only after 3 unanswered contact attempts" in refused
    await system.publish([contact_attempt(lost_id, lost_victim, 10)])
    await unanswered_heard(system, lost_id, lost_victim, 3)
    await system.publish([close(lost_id, ClosureReason.uncontactable, "No reply to three calls")])
    (closed,) = await facts(system, topics.SCHEDULING, lost_id, "rj.case.closed")
    assert closed["data"]["reason"] == "uncontactable"

    # The victim's unanswered count met the setting: the consent service does not invite her to the survey. Nothing
    # went unanswered to the offender (no attempt was logged): he is invited, as on any closure.
    (invitation,) = await facts(system, topics.CONSENT, lost_id, "rj.survey.invited", settle_s=0.5)
    assert invitation["data"]["person_id"] == lost_offender


async def test_stage_6_a_person_who_acts_on_the_case_themself_is_not_uncontactable(system: System) -> None:
    """Three calls to the victim went unanswered; then the victim gives consent themself (online). Scheduling hears
    it from the consent facts and refuses to close the case as uncontactable on the old count; the consent
    service's log was reset on the same decision, so the next unanswered call counts 1 on both sides."""
    for name in ("referral", "consent", "scheduling"):
        system.start(name)
    case_id, victim, _ = await referred_case(system, "WM/2026/716003")
    await system.publish([contact_attempt(case_id, victim, n) for n in (30, 20, 10)])
    await unanswered_heard(system, case_id, victim, 3)

    themself = GiveConsent(
        case_id=case_id,
        actor=Actor(kind="participant", id=victim),
        person_id=victim,
        through=RecordedThrough.participant,
        method=RecordingMethod.online,
    )
    await system.publish([command(themself)])
    await facts(system, topics.CONSENT, case_id, "rj.consent.given")
    await unanswered_heard(system, case_id, victim, 0)
    await system.publish([close(case_id, ClosureReason.uncontactable, "No reply to three calls")])
    (refused,) = await rejection(system, case_id, topics.SCHEDULING)
    assert "the most recorded is 0" in refused

    await system.publish([contact_attempt(case_id, victim, 0)])
    (*_, latest) = await facts(system, topics.CONSENT, case_id, "rj.contact.attempt-recorded", 4)
    assert latest["data"]["unanswered_in_a_row"] == 1
    await unanswered_heard(system, case_id, victim, 1)
