"""A case from referral to closure through referral, consent and scheduling, on the real broker and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

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
    facilitators,
    facilitators_known,
    facts,
    next_week,
    prepare,
    prison,
    referred_case,
    rejection,
    schedulable,
    soon,
)
from tests.harness import System

pytestmark = pytest.mark.integration

SERVICES = ("referral", "consent", "scheduling")


async def start_with_staff(system: System, *staff: str, specialists: tuple[str, ...] = ()) -> None:
    for name in SERVICES:
        system.start(name)
    await system.publish([*facilitators(*staff), *facilitators(*specialists, specialist=True)])
    await facilitators_known(system, *staff, *specialists)


def conference(
    case_id: str,
    meeting_id: str,
    starts_at: datetime,
    lead: str = "F-ANN",
    co: str = "F-BEN",
    venue: str = "V-HUB",
    **kw: str,
) -> tuple[str, str, bytes]:
    return command(
        BookMeeting(
            case_id=case_id,
            actor=STAFF,
            meeting_id=meeting_id,
            kind=MeetingKind.conference,
            starts_at=starts_at,
            ends_at=starts_at + timedelta(minutes=10),
            lead_facilitator_id=lead,
            co_facilitator_id=co,
            venue_id=venue,
            **kw,  # type: ignore[arg-type]
        )
    )


async def ready_case(
    system: System, ref: str, staff: tuple[str, ...] = ("F-ANN", "F-BEN"), **outcome: object
) -> tuple[str, str, str]:
    case_id, victim, offender = await referred_case(system, ref, **outcome)
    await system.publish(prepare(case_id, [victim, offender], list(staff)))
    await facts(system, topics.CONSENT, case_id, "rj.case.ready-for-meeting")
    await schedulable(system, case_id)
    return case_id, victim, offender


async def test_a_case_walks_from_referral_through_consent_a_conference_and_an_agreement_to_completion(
    system: System,
) -> None:
    await start_with_staff(system, "F-ANN", "F-BEN")
    await system.publish([community_venue()])
    case_id, victim, offender = await ready_case(system, "WM/2026/500001")

    starts = soon()
    await system.publish([conference(case_id, "M1", starts)])
    (booked,) = await facts(system, topics.SCHEDULING, case_id, "rj.meeting.booked")
    assert booked["data"]["lead_facilitator_id"] == "F-ANN"
    assert sorted(booked["data"]["facilitator_ids"]) == ["F-ANN", "F-BEN"]

    await asyncio.sleep(max(0.0, (starts - datetime.now(UTC)).total_seconds()) + 0.5)
    today = datetime.now(UTC)
    items = [
        AgreementItemTerms(
            item_id="I1",
            kind=ItemKind.apology,
            description="A letter of apology",
            owner_id=offender,
            due_date=(today + timedelta(days=14)).date(),
        ),
        AgreementItemTerms(
            item_id="I2",
            kind=ItemKind.reparation,
            description="Repair the fence",
            owner_id=offender,
            due_date=(today + timedelta(days=30)).date(),
            amount_pence=12000,
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
            command(CompleteAgreementItem(case_id=case_id, actor=STAFF, item_id="I1")),
            command(RecordPayment(case_id=case_id, actor=STAFF, item_id="I2", amount_pence=5000, paid_at=today)),
            command(RecordPayment(case_id=case_id, actor=STAFF, item_id="I2", amount_pence=7000, paid_at=today)),
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
    await system.publish([command(AssignFacilitator(case_id=case_id, actor=STAFF, facilitator_id="F-ANN"))])
    assert await rejection(system, case_id, topics.CONSENT) == ["case is closed"]


async def test_a_victim_withdrawing_after_the_conference_is_booked_cancels_it_and_closes_the_case(
    system: System,
) -> None:
    from tests.e2e.conftest import consent

    await start_with_staff(system, "F-ANN", "F-BEN")
    await system.publish([community_venue()])
    case_id, victim, _ = await ready_case(system, "WM/2026/500002")
    await system.publish([conference(case_id, "M1", next_week())])
    await facts(system, topics.SCHEDULING, case_id, "rj.meeting.booked")

    await system.publish([consent(case_id, victim, withdraw=True)])

    (cancelled,) = await facts(system, topics.SCHEDULING, case_id, "rj.meeting.cancelled")
    assert cancelled["data"]["meeting_id"] == "M1"
    (closed,) = await facts(system, topics.SCHEDULING, case_id, "rj.case.closed")
    assert closed["data"]["reason"] == "withdrawn"
    assert await system.fetchval("SELECT count(*) FROM scheduling.bookings WHERE case_id = $1", case_id) == 0
    # A booking racing the withdrawal is refused: no meeting is ever booked on a withdrawn case.
    await system.publish([conference(case_id, "M2", next_week(days=9))])
    (reason,) = await rejection(system, case_id, topics.SCHEDULING)
    assert "withdrawn" in reason or "closed" in reason
    assert len(await facts(system, topics.SCHEDULING, case_id, "rj.meeting.booked", settle_s=1.0)) == 1


async def test_a_booking_that_would_double_book_a_facilitator_is_rejected_with_the_reason(system: System) -> None:
    await start_with_staff(system, "F-ANN", "F-BEN", "F-CAL")
    await system.publish([community_venue("V-1"), community_venue("V-2")])
    first, _, _ = await ready_case(system, "WM/2026/500003")
    second, _, _ = await ready_case(system, "WM/2026/500004", staff=("F-ANN", "F-CAL"))
    at = next_week(hour=14)

    await system.publish([conference(first, "M1", at, venue="V-1")])
    await facts(system, topics.SCHEDULING, first, "rj.meeting.booked")
    await system.publish([conference(second, "M1", at + timedelta(minutes=5), co="F-CAL", venue="V-2")])

    (reason,) = await rejection(system, second, topics.SCHEDULING)
    assert "double booking" in reason and "facilitator F-ANN" in reason
    rows = await system.fetch("SELECT DISTINCT case_id FROM scheduling.bookings WHERE resource = 'facilitator:F-ANN'")
    assert [r["case_id"] for r in rows] == [first]


async def test_a_sensitive_case_becomes_ready_only_with_a_specialist_and_a_risk_assessment(system: System) -> None:
    await start_with_staff(system, "F-NEW", specialists=("F-SEN",))
    case_id, victim, offender = await referred_case(system, "WM/2026/500005", risk_flags=[RiskFlag.hate_crime])

    await system.publish([command(AssignFacilitator(case_id=case_id, actor=STAFF, facilitator_id="F-NEW"))])
    (reason,) = await rejection(system, case_id, topics.CONSENT)
    assert "specialist" in reason

    # The specialist flag comes from the facilitator register, never from the command. Nobody is contacted
    # before the risk assessment: the preparation meetings and consents are refused.
    await system.publish(prepare(case_id, [victim, offender], ["F-SEN"]))
    (assigned,) = await facts(system, topics.CONSENT, case_id, "rj.facilitator.assigned")
    assert assigned["data"]["facilitator_id"] == "F-SEN" and assigned["data"]["specialist"] is True
    reasons = await rejection(system, case_id, topics.CONSENT, 5)
    assert sum("risk assessment must be recorded before any contact" in r for r in reasons) == 4

    assessment = RecordRiskAssessment(
        case_id=case_id, actor=STAFF, assessed_at=datetime.now(UTC), level=RiskLevel.medium, safe_to_proceed=True
    )
    await system.publish([command(assessment), *prepare(case_id, [victim, offender], ["F-SEN"])])
    (ready,) = await facts(system, topics.CONSENT, case_id, "rj.case.ready-for-meeting")
    assert ready["data"]["facilitator_ids"] == ["F-SEN"]


async def test_an_offender_in_custody_gets_a_prison_visit_not_a_community_venue(system: System) -> None:
    await start_with_staff(system, "F-ANN", "F-BEN")
    at = next_week(hour=14)
    await system.publish([community_venue(), prison("P-HEWELL", at)])
    case_id, _, _ = await ready_case(system, "WM/2026/500006", in_custody=True)

    await system.publish([conference(case_id, "M1", at, venue="V-HUB")])
    (reason,) = await rejection(system, case_id, topics.SCHEDULING)
    assert "custody" in reason and "prison visit" in reason

    await system.publish([conference(case_id, "M2", at, venue="P-HEWELL", visit_slot="afternoon")])
    (booked,) = await facts(system, topics.SCHEDULING, case_id, "rj.meeting.booked")
    assert booked["data"]["venue_id"] == "P-HEWELL"
