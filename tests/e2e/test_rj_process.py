"""The RJ process rules of part 1 as an outside client meets them, on the real broker and PostgreSQL: the
register's specialist flag kept current on a sensitive case, a safeguarding hold and its resume, and staff
saying why when they decide for someone."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from demo.samples import STAFF, command, facilitators, next_week, prepare
from schemas import topics
from schemas.consent import (
    DeclineConsent,
    PutCaseOnHold,
    RecordedThrough,
    RecordingMethod,
    RecordRiskAssessment,
    ResumeCase,
    RiskLevel,
)
from schemas.scheduling import BookMeeting, CloseCase, ClosureReason, MeetingKind
from schemas.upstream import RiskFlag
from tests.e2e.conftest import facilitators_known, facts, referred_case, rejection, schedulable
from tests.harness import System

pytestmark = pytest.mark.integration


def assessment(case_id: str) -> tuple[str, str, bytes]:
    return command(
        RecordRiskAssessment(
            case_id=case_id, actor=STAFF, assessed_at=datetime.now(UTC), level=RiskLevel.low, safe_to_proceed=True
        )
    )


def indirect(case_id: str, meeting_id: str, lead: str, hour: int) -> tuple[str, str, bytes]:
    starts = next_week(hour=hour)
    return command(
        BookMeeting(
            case_id=case_id,
            actor=STAFF,
            meeting_id=meeting_id,
            kind=MeetingKind.indirect,
            starts_at=starts,
            ends_at=starts.replace(minute=30),
            lead_facilitator_id=lead,
        )
    )


async def test_a_downgraded_specialist_a_hold_and_its_resume_and_staff_reasons_through_the_services(
    system: System,
) -> None:
    for name in ("referral", "consent", "scheduling"):
        system.start(name)
    await system.publish(facilitators("F-SEN", specialist=True))
    await facilitators_known(system, "F-SEN")
    case_id, victim, offender = await referred_case(system, "WM/2026/610001", risk_flags=[RiskFlag.domestic_abuse])
    await system.publish([assessment(case_id), *prepare(case_id, [victim, offender], ["F-SEN"])])
    await facts(system, topics.CONSENT, case_id, "rj.case.ready-for-meeting")
    await schedulable(system, case_id)
    await system.publish([indirect(case_id, "M1", "F-SEN", 10)])
    await facts(system, topics.SCHEDULING, case_id, "rj.meeting.booked")

    # The register downgrades the case's only specialist: the case is no longer ready, the meeting is off.
    await system.publish(facilitators("F-SEN", specialist=False))
    (lost,) = await facts(system, topics.CONSENT, case_id, "rj.case.readiness-lost")
    assert "a specialist facilitator" in lost["data"]["reason"]
    (cancelled,) = await facts(system, topics.SCHEDULING, case_id, "rj.meeting.cancelled")
    assert cancelled["data"]["reason_code"] == "readiness_lost"
    await system.publish(facilitators("F-SEN", specialist=True))
    await facts(system, topics.CONSENT, case_id, "rj.case.ready-for-meeting", 2)

    # A safeguarding hold: the booking after it is refused, nothing is contacted; resumed, a new assessment
    # is needed before the case is ready again.
    await schedulable(system, case_id)
    await system.publish([indirect(case_id, "M2", "F-SEN", 11)])
    await facts(system, topics.SCHEDULING, case_id, "rj.meeting.booked", 2)
    hold = PutCaseOnHold(case_id=case_id, actor=STAFF, concern="threats by text", raised_by="victim's caseworker")
    await system.publish([command(hold), indirect(case_id, "M3", "F-SEN", 12)])
    await facts(system, topics.CONSENT, case_id, "rj.case.held")
    cancellations = await facts(system, topics.SCHEDULING, case_id, "rj.meeting.cancelled", 2)
    assert cancellations[-1]["data"]["reason_code"] == "case_paused"
    refused = await rejection(system, case_id, topics.SCHEDULING)
    assert any("hold" in reason for reason in refused)
    await system.publish([command(ResumeCase(case_id=case_id, actor=STAFF, reason="police confirmed bail"))])
    await facts(system, topics.CONSENT, case_id, "rj.case.resumed")
    assert len(await facts(system, topics.CONSENT, case_id, "rj.case.ready-for-meeting", 2, settle_s=1.0)) == 2
    await system.publish([assessment(case_id)])
    await facts(system, topics.CONSENT, case_id, "rj.case.ready-for-meeting", 3)

    # Staff who decide for someone say why; closing the case needs a reason too.
    decline = DeclineConsent(
        case_id=case_id,
        actor=STAFF,
        person_id=offender,
        through=RecordedThrough.facilitator,
        method=RecordingMethod.phone,
    )
    close = CloseCase(case_id=case_id, actor=STAFF, closure_reason=ClosureReason.not_suitable)
    declined = command(decline)
    await system.publish([declined])
    (refused_decline,) = await rejection(system, case_id, topics.CONSENT)
    assert "a reason is required when staff decide" in refused_decline

    async def decline_lifted() -> bool:
        """Scheduling held the case pending when it read the decline, until consent refused it. (Consent's refusal
        can come before scheduling has read the decline at all: then no stop is pending *yet*.)"""
        sql = """SELECT state->'stops_pending' = '[]' FROM scheduling.cases WHERE key = $1
                 AND EXISTS (SELECT FROM scheduling.inbox WHERE event_id = $2)"""
        return bool(await system.fetchval(sql, case_id, json.loads(declined[2])["id"]))

    await system.wait_for(decline_lifted, what="scheduling to hear consent refused the decline")
    await system.publish([command(close)])
    refused = await rejection(system, case_id, topics.SCHEDULING, 2)
    assert refused[-1] == "a reason is required when staff close a case"
