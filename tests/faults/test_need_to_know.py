"""Who withdrew is need-to-know, read off the real broker with the three services running.

A victim withdraws herself from a case with a conference booked, giving her reason; on another case an
offender declines through a facilitator, giving his. What everyone may be told (``rj.case.withdrawn``,
``rj.case.closed``) says that the process stopped and the reason code, and nothing leads from it, by
``causationid`` or ``correlationid``, to the command or to the staff-only fact that say who and why. The
staff-only facts (``rj.consent.withdrawn`` / ``rj.consent.declined``) still say both, on their own chain.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

import pytest

from schemas import topics
from schemas.common import Actor
from schemas.consent import DeclineConsent, RecordedThrough, RecordingMethod, WithdrawConsent
from schemas.registry import COMMAND_OWNER
from schemas.scheduling import BookMeeting, MeetingKind
from tests.e2e.conftest import (
    STAFF,
    command,
    community_venue,
    facilitators,
    facilitators_known,
    facts,
    next_week,
    prepare,
    referred_case,
    schedulable,
)
from tests.harness import System

pytestmark = pytest.mark.integration

PARTICIPANT_FACING = ("rj.case.withdrawn", "rj.case.closed")
STAFF_ONLY = ("rj.consent.withdrawn", "rj.consent.declined")
HER_REASON = "He still drives past my house every night"
HIS_REASON = "My probation officer told me not to"


async def everything_until_closed(system: System, *case_ids: str, timeout_s: float = 60) -> list[dict[str, Any]]:
    """Every event on the commands and the services' topics, once each case is closed (and a second more)."""
    reader = await system.reader(topics.COMMANDS, topics.REFERRAL, topics.CONSENT, topics.SCHEDULING)
    events: list[dict[str, Any]] = []

    def closed() -> set[str]:
        return {e["subject"] for e in events if e.get("type") == "rj.case.closed"}

    deadline = time.monotonic() + timeout_s
    while not set(case_ids) <= closed():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; closed so far: {closed()}")
        events += [json.loads(value) for _, _, value in await reader.read(0.3)]
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        events += [json.loads(value) for _, _, value in await reader.read(0.3)]
    return events


def reachable(start: dict[str, Any], by_id: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every event reached from ``start`` by following ``causationid`` and ``correlationid``, transitively."""
    seen: dict[str, dict[str, Any]] = {}
    todo = [start.get("causationid"), start.get("correlationid")]
    while todo:
        event = by_id.get(todo.pop() or "")
        if event is not None and event["id"] not in seen:
            seen[event["id"]] = event
            todo += [event.get("causationid"), event.get("correlationid")]
    return list(seen.values())


async def test_rules_2_and_3_what_participants_are_told_never_says_or_leads_to_who_withdrew_or_why(
    system: System,
) -> None:
    for name in ("referral", "consent", "scheduling"):
        system.start(name)
    await system.publish([*facilitators("F-ANN", "F-BEN"), community_venue()])
    await facilitators_known(system, "F-ANN", "F-BEN")

    # A ready case with a conference booked; the victim withdraws herself, with her reason.
    booked_case, victim, offender = await referred_case(system, "WM/2026/700001")
    await system.publish(prepare(booked_case, [victim, offender], ["F-ANN", "F-BEN"]))
    await schedulable(system, booked_case)
    starts = next_week()
    await system.publish(
        [
            command(
                BookMeeting(
                    case_id=booked_case,
                    actor=STAFF,
                    meeting_id="M1",
                    kind=MeetingKind.conference,
                    starts_at=starts,
                    ends_at=starts + timedelta(minutes=30),
                    lead_facilitator_id="F-ANN",
                    co_facilitator_id="F-BEN",
                    venue_id="V-HUB",
                )
            )
        ]
    )
    await facts(system, topics.SCHEDULING, booked_case, "rj.meeting.booked")
    _, _, withdraw = command(
        WithdrawConsent(
            case_id=booked_case,
            actor=Actor(kind="participant", id=victim),
            person_id=victim,
            through=RecordedThrough.participant,
            method=RecordingMethod.online,
            reason=HER_REASON,
        )
    )
    # Another case, not yet ready: the offender declines through a facilitator, with his reason.
    declined_case, _, declining = await referred_case(system, "WM/2026/700002")
    _, _, decline = command(
        DeclineConsent(
            case_id=declined_case,
            actor=STAFF,
            person_id=declining,
            through=RecordedThrough.facilitator,
            method=RecordingMethod.phone,
            reason=HIS_REASON,
        )
    )
    await system.publish([(topics.COMMANDS, booked_case, withdraw), (topics.COMMANDS, declined_case, decline)])

    events = await everything_until_closed(system, booked_case, declined_case)
    by_id = {e["id"]: e for e in events}
    withdraw_id, decline_id = json.loads(withdraw)["id"], json.loads(decline)["id"]
    who = {booked_case: (victim, HER_REASON, withdraw_id), declined_case: (declining, HIS_REASON, decline_id)}

    # Scheduling behaves as before: the conference is cancelled, the bookings released, both cases closed.
    def about(case_id: str, event_type: str) -> list[dict[str, Any]]:
        return [e for e in events if e.get("subject") == case_id and e["type"] == event_type]

    assert [c["data"]["meeting_id"] for c in about(booked_case, "rj.meeting.cancelled")] == ["M1"]
    assert await system.fetchval("SELECT count(*) FROM scheduling.bookings WHERE case_id = $1", booked_case) == 0
    assert [c["data"]["reason"] for c in about(booked_case, "rj.case.closed")] == ["withdrawn"]
    assert [c["data"]["reason"] for c in about(declined_case, "rj.case.closed")] == ["declined"]
    assert [w["data"]["reason"] for w in about(booked_case, "rj.case.withdrawn")] == ["consent_withdrawn"]
    assert [w["data"]["reason"] for w in about(declined_case, "rj.case.withdrawn")] == ["consent_declined"]

    told = [e for e in events if e["type"] in PARTICIPANT_FACING]
    assert len(told) == 4
    for event in told:
        person, reason, command_id = who[event["subject"]]
        # Nothing in what everyone may be told names the person or carries their words: not a field, not a value.
        text = json.dumps(event)
        assert person not in text and reason not in text, event
        assert {"person_id", "withdrawn_by", "recorded_by"}.isdisjoint(event["data"]), event
        # Its own chain: no cause, correlated with the case (the documented choice) ...
        assert (event.get("causationid"), event.get("correlationid")) == (None, event["subject"]), event
        # ... so following it reaches neither the command nor the staff-only fact.
        reached = reachable(event, by_id)
        assert command_id not in {e["id"] for e in reached}
        assert [e for e in reached if e["type"] in STAFF_ONLY or e["type"] in COMMAND_OWNER] == []
        # Nor does anything that shares its correlation: only what everyone may be told correlates with the case.
        correlated = [e for e in events if e.get("correlationid") == event["correlationid"]]
        assert {e["type"] for e in correlated} <= set(PARTICIPANT_FACING), correlated

    # The staff-only facts still record who and why, and continue the command's chain for staff and audit.
    (sealed,) = about(booked_case, "rj.consent.withdrawn")
    assert victim not in json.dumps(sealed) and HER_REASON not in json.dumps(sealed), "on the topic: sealed"
    withdrawn = await system.opened(sealed)
    assert (withdrawn["data"]["person_id"], withdrawn["data"]["reason"]) == (victim, HER_REASON)
    assert withdrawn["data"]["withdrawn_by"] == {"kind": "participant", "id": victim}
    assert withdrawn["causationid"] == withdraw_id
    (sealed,) = about(declined_case, "rj.consent.declined")
    assert declining not in json.dumps(sealed) and HIS_REASON not in json.dumps(sealed), "on the topic: sealed"
    declined = await system.opened(sealed)
    assert (declined["data"]["person_id"], declined["data"]["reason"]) == (declining, HIS_REASON)
    assert declined["causationid"] == decline_id
