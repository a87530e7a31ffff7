"""A case from referral to closure through referral, consent and scheduling, on the real broker and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest

from schemas import topics
from schemas.consent import AssignFacilitator, RecordRiskAssessment, RiskLevel
from schemas.scheduling import (
    AgreementItemTerms,
    BookMeeting,
    CompleteAgreementItem,
    ItemKind,
    MeetingKind,
    RecordAgreement,
    RecordMeetingHeld,
    RecordPayment,
)
from schemas.upstream import RiskFlag
from tests.e2e.conftest import (
    STAFF,
    command,
    community_venue,
    consent,
    facilitators,
    facts,
    next_week,
    prison,
    referred_case,
    rejection,
    schedulable,
)
from tests.harness import System

pytestmark = pytest.mark.integration

SERVICES = ("referral", "consent", "scheduling")


def start_all(system: System) -> None:
    for name in SERVICES:
        system.start(name)


def conference(case_id: str, meeting_id: str, lead: str = "F-ANN", co: str = "F-BEN", venue: str = "V-HUB", **kw):  # type: ignore[no-untyped-def]
    starts = kw.pop("starts_at", next_week())
    return command(
        BookMeeting(
            case_id=case_id,
            actor=STAFF,
            meeting_id=meeting_id,
            kind=MeetingKind.conference,
            starts_at=starts,
            ends_at=starts + timedelta(hours=2),
            lead_facilitator_id=lead,
            co_facilitator_id=co,
            venue_id=venue,
            **kw,
        )
    )


async def ready_case(system: System, ref: str) -> tuple[str, str, str]:
    case_id, victim, offender = await referred_case(system, ref)
    await system.publish([consent(case_id, victim), consent(case_id, offender)])
    await facts(system, topics.CONSENT, case_id, "rj.case.ready-for-meeting")
    await schedulable(system, case_id)
    return case_id, victim, offender


async def test_a_case_walks_from_referral_through_consent_a_conference_and_an_agreement_to_completion(
    system: System,
) -> None:
    start_all(system)
    await system.publish([*facilitators("F-ANN", "F-BEN"), community_venue()])
    case_id, victim, offender = await ready_case(system, "WM/2026/500001")

    starts = next_week()
    await system.publish([conference(case_id, "M1", starts_at=starts)])
    (booked,) = await facts(system, topics.SCHEDULING, case_id, "rj.meeting.booked")
    assert booked["data"]["lead_facilitator_id"] == "F-ANN"
    assert sorted(booked["data"]["facilitator_ids"]) == ["F-ANN", "F-BEN"]

    items = [
        AgreementItemTerms(
            item_id="I1",
            kind=ItemKind.apology,
            description="A letter of apology",
            owner_id=offender,
            due_date=(starts + timedelta(days=14)).date(),
        ),
        AgreementItemTerms(
            item_id="I2",
            kind=ItemKind.reparation,
            description="Repair the fence",
            owner_id=offender,
            due_date=(starts + timedelta(days=30)).date(),
            amount_pence=12000,
        ),
    ]
    await system.publish(
        [
            command(
                RecordMeetingHeld(case_id=case_id, actor=STAFF, meeting_id="M1", held_at=starts + timedelta(hours=2))
            ),
            command(
                RecordAgreement(
                    case_id=case_id, actor=STAFF, meeting_id="M1", items=items, consented_by=[victim, offender]
                )
            ),
            command(CompleteAgreementItem(case_id=case_id, actor=STAFF, item_id="I1")),
            command(RecordPayment(case_id=case_id, actor=STAFF, item_id="I2", amount_pence=5000, paid_at=starts)),
            command(RecordPayment(case_id=case_id, actor=STAFF, item_id="I2", amount_pence=7000, paid_at=starts)),
        ]
    )

    (closed,) = await facts(system, topics.SCHEDULING, case_id, "rj.case.closed")
    assert closed["data"]["reason"] == "completed"
    assert len(await facts(system, topics.SCHEDULING, case_id, "rj.agreement-item.completed", 2)) == 2
    assert len(await facts(system, topics.SCHEDULING, case_id, "rj.reparation-payment.recorded", 2)) == 2

    # The consent service learns of the closure and refuses anything more on the case.
    async def consent_knows_it_is_closed() -> bool:
        return await system.fetchval("SELECT state->>'closed' FROM consent.cases WHERE key = $1", case_id) == "true"

    await system.wait_for(consent_knows_it_is_closed)
    await system.publish([consent(case_id, victim, withdraw=True)])
    assert await rejection(system, case_id, topics.CONSENT) == ["case is closed"]


async def test_a_victim_withdrawing_after_the_conference_is_booked_cancels_it_and_closes_the_case(
    system: System,
) -> None:
    start_all(system)
    await system.publish([*facilitators("F-ANN", "F-BEN"), community_venue()])
    case_id, victim, _ = await ready_case(system, "WM/2026/500002")
    await system.publish([conference(case_id, "M1")])
    await facts(system, topics.SCHEDULING, case_id, "rj.meeting.booked")

    await system.publish([consent(case_id, victim, withdraw=True)])

    (cancelled,) = await facts(system, topics.SCHEDULING, case_id, "rj.meeting.cancelled")
    assert cancelled["data"]["meeting_id"] == "M1"
    (closed,) = await facts(system, topics.SCHEDULING, case_id, "rj.case.closed")
    assert closed["data"]["reason"] == "withdrawn"
    assert await system.fetchval("SELECT count(*) FROM scheduling.bookings WHERE case_id = $1", case_id) == 0
    # A booking racing the withdrawal is refused: no meeting is ever booked on a withdrawn case.
    await system.publish([conference(case_id, "M2", starts_at=next_week(days=9))])
    (reason,) = await rejection(system, case_id, topics.SCHEDULING)
    assert "withdrawn" in reason or "closed" in reason
    assert len(await facts(system, topics.SCHEDULING, case_id, "rj.meeting.booked", settle_s=1.0)) == 1


async def test_a_booking_that_would_double_book_a_facilitator_is_rejected_with_the_reason(system: System) -> None:
    start_all(system)
    await system.publish([*facilitators("F-ANN", "F-BEN", "F-CAL"), community_venue("V-1"), community_venue("V-2")])
    first, _, _ = await ready_case(system, "WM/2026/500003")
    second, _, _ = await ready_case(system, "WM/2026/500004")
    at = next_week(hour=14)

    await system.publish([conference(first, "M1", starts_at=at, venue="V-1")])
    await facts(system, topics.SCHEDULING, first, "rj.meeting.booked")
    await system.publish([conference(second, "M1", co="F-CAL", starts_at=at + timedelta(hours=1), venue="V-2")])

    (reason,) = await rejection(system, second, topics.SCHEDULING)
    assert "double booking" in reason and "facilitator F-ANN" in reason
    rows = await system.fetch("SELECT DISTINCT case_id FROM scheduling.bookings WHERE resource = 'facilitator:F-ANN'")
    assert [r["case_id"] for r in rows] == [first]


async def test_a_sensitive_case_becomes_ready_only_with_a_specialist_and_a_risk_assessment(system: System) -> None:
    start_all(system)
    case_id, victim, offender = await referred_case(system, "WM/2026/500005", risk_flags=[RiskFlag.hate_crime])

    await system.publish(
        [
            command(AssignFacilitator(case_id=case_id, actor=STAFF, facilitator_id="F-NEW", specialist=False)),
            consent(case_id, victim),
            consent(case_id, offender),
        ]
    )
    (reason,) = await rejection(system, case_id, topics.CONSENT)
    assert "specialist" in reason
    await facts(system, topics.CONSENT, case_id, "rj.consent.given", 2)
    assert await facts(system, topics.CONSENT, case_id, "rj.case.ready-for-meeting", 0, settle_s=1.0) == []

    await system.publish(
        [command(AssignFacilitator(case_id=case_id, actor=STAFF, facilitator_id="F-SEN", specialist=True))]
    )
    await facts(system, topics.CONSENT, case_id, "rj.facilitator.assigned")
    assert await facts(system, topics.CONSENT, case_id, "rj.case.ready-for-meeting", 0, settle_s=1.0) == []

    await system.publish(
        [
            command(
                RecordRiskAssessment(
                    case_id=case_id,
                    actor=STAFF,
                    assessed_at=next_week(days=0),
                    level=RiskLevel.medium,
                    safe_to_proceed=True,
                )
            )
        ]
    )
    (ready,) = await facts(system, topics.CONSENT, case_id, "rj.case.ready-for-meeting")
    assert ready["data"]["case_id"] == case_id


async def test_an_offender_in_custody_gets_a_prison_visit_not_a_community_venue(system: System) -> None:
    start_all(system)
    at = next_week(hour=14)
    await system.publish([*facilitators("F-ANN", "F-BEN"), community_venue(), prison("P-HEWELL", at)])
    case_id, _, _ = await referred_case(system, "WM/2026/500006", in_custody=True)
    _, victim, offender = case_id, "V-WM/2026/500006", "O-WM/2026/500006"
    await system.publish([consent(case_id, victim), consent(case_id, offender)])
    await facts(system, topics.CONSENT, case_id, "rj.case.ready-for-meeting")
    await schedulable(system, case_id)

    await system.publish([conference(case_id, "M1", starts_at=at, venue="V-HUB")])
    (reason,) = await rejection(system, case_id, topics.SCHEDULING)
    assert "custody" in reason and "prison visit" in reason

    await system.publish([conference(case_id, "M2", starts_at=at, venue="P-HEWELL", visit_slot="afternoon")])
    (booked,) = await facts(system, topics.SCHEDULING, case_id, "rj.meeting.booked")
    assert booked["data"]["venue_id"] == "P-HEWELL"
