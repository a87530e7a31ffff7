"""Referral intake through the real broker and PostgreSQL: upstream events in, case facts out."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from demo import samples
from demo.samples import case_of
from schemas import topics
from schemas.upstream import RiskFlag
from services.runtime.deadletters import copy_context
from tests.harness import System, of_type, types_count

pytestmark = pytest.mark.integration


async def test_a_recorded_crime_and_an_admitted_outcome_open_exactly_one_case_in_either_order(system: System) -> None:
    crime_first, outcome_first = "WM/2026/100001", "WM/2026/100002"
    await system.publish(
        samples.on_crime_events(samples.crime_recorded(crime_first), samples.outcome_recorded(crime_first))
        + samples.on_crime_events(samples.outcome_recorded(outcome_first), samples.crime_recorded(outcome_first))
    )
    system.start("referral")

    events = await system.referral_events(types_count("rj.case.accepted", 2), settle_s=1.5)

    for ref in (crime_first, outcome_first):
        case_events = [e for e in events if e["subject"] == case_of(ref)]
        assert [e["type"] for e in of_type(case_events, "rj.case.opened")] == ["rj.case.opened"]
        (accepted,) = of_type(case_events, "rj.case.accepted")
        assert accepted["data"]["crime_reference"] == ref
        assert accepted["data"]["specialist_required"] is False
        assert {p["role"] for p in accepted["data"]["participants"]} == {"victim", "offender"}
    rows = await system.fetch("SELECT crime_reference, status FROM referral.crime_files ORDER BY 1")
    assert [(r["crime_reference"], r["status"]) for r in rows] == [
        (crime_first, "accepted"),
        (outcome_first, "accepted"),
    ]


async def test_events_published_three_times_give_one_case_and_one_set_of_emitted_events(system: System) -> None:
    ref = "WM/2026/100003"
    messages = samples.on_crime_events(samples.crime_recorded(ref), samples.outcome_recorded(ref))
    # The same messages three times (at-least-once upstream), then once more re-sent with new event ids.
    resent = samples.on_crime_events(samples.crime_recorded(ref), samples.outcome_recorded(ref))
    await system.publish(messages * 3 + resent)
    system.start("referral")

    events = await system.referral_events(types_count("rj.case.accepted", 1), settle_s=2.0)

    assert sorted(e["type"] for e in events) == [
        "rj.case.accepted",
        "rj.case.opened",
        "rj.victim-information.due",
        "rj.victim-support.referral-due",
    ]
    assert len({e["id"] for e in events}) == 4
    assert await system.fetchval("SELECT count(*) FROM referral.crime_files") == 1
    assert await system.fetchval("SELECT count(*) FROM referral.outbox WHERE topic = $1", topics.REFERRAL) == 4


async def test_a_sensitive_case_is_routed_to_a_specialist_with_a_risk_assessment(system: System) -> None:
    ref = "WM/2026/100004"
    await system.publish(
        samples.on_crime_events(
            samples.crime_recorded(ref, description="Assault (domestic)"),
            samples.outcome_recorded(ref, risk_flags=[RiskFlag.domestic_abuse]),
        )
    )
    system.start("referral")

    events = await system.referral_events(types_count("rj.case.accepted", 1))

    (accepted,) = of_type(events, "rj.case.accepted")
    assert accepted["data"]["specialist_required"] is True
    assert accepted["data"]["risk_assessment_required"] is True
    assert accepted["data"]["sensitivity_reasons"] == ["domestic_abuse"]


async def test_an_offender_who_denies_responsibility_gets_the_requested_case_declined(system: System) -> None:
    ref = "WM/2026/100005"
    await system.publish(
        samples.on_crime_events(
            samples.crime_recorded(ref), samples.referral_requested(ref), samples.outcome_recorded(ref, admitted=False)
        )
    )
    system.start("referral")

    events = await system.referral_events(types_count("rj.case.declined", 1))

    (declined,) = of_type(events, "rj.case.declined")
    assert declined["data"]["reason"] == "offender_denies_responsibility"
    assert declined["data"]["decided_by"] == {"kind": "system", "id": "referral-service"}


async def test_rule_10_the_victims_code_clock_skips_a_weekend_and_bank_holidays_and_flags_the_breach(
    system: System,
) -> None:
    standard, enhanced = "WM/2025/100006", "WM/2025/100007"
    await system.publish(
        samples.on_crime_events(
            # Friday 19 December 2025: 5 working days skip the weekend, Christmas Day and Boxing Day.
            samples.crime_recorded(standard, reported_at=datetime(2025, 12, 19, 10, 0, tzinfo=UTC)),
            # Christmas Eve, enhanced rights: 1 working day skips two bank holidays and a weekend.
            samples.crime_recorded(
                enhanced,
                reported_at=datetime(2025, 12, 24, 16, 0, tzinfo=UTC),
                victims=[samples.victim("P-7", enhanced=True)],
            ),
        )
    )
    system.start("referral")

    events = await system.referral_events(types_count("rj.victim-information.overdue", 2))

    due = {e["data"]["crime_reference"]: e["data"] for e in of_type(events, "rj.victim-information.due")}
    assert due[standard]["due_date"] == "2025-12-30"
    assert due[standard]["working_days"] == 5
    assert due[enhanced]["due_date"] == "2025-12-29"
    assert due[enhanced]["working_days"] == 1
    overdue = {e["data"]["crime_reference"]: e["data"] for e in of_type(events, "rj.victim-information.overdue")}
    assert set(overdue) == {standard, enhanced}
    assert overdue[standard]["due_by"] == "2025-12-31T00:00:00Z"  # midnight at the end of the due day, UK time
    breached = await system.fetchval("SELECT count(*) FROM referral.victim_clocks WHERE breached_at IS NOT NULL")
    assert breached == 2


async def test_information_given_in_time_stops_the_clock_and_raises_no_breach(system: System) -> None:
    from schemas.commands import RecordVictimInformationProvided
    from schemas.common import Actor
    from schemas.envelope import new_event

    ref = "WM/2026/100008"
    reported = datetime.now(UTC)
    await system.publish(samples.on_crime_events(samples.crime_recorded(ref, reported_at=reported)))
    system.start("referral")
    # The clock runs once the crime is taken in; a command on another topic is not ordered against it.
    await system.referral_events(types_count("rj.victim-information.due", 1))
    command = new_event(
        RecordVictimInformationProvided(
            case_id=case_of(ref),
            actor=Actor(kind="staff", id="facilitator-17"),
            person_id=f"V-{ref}",
            provided_at=reported,
        ),
        source="urn:rj:test",
        subject=case_of(ref),
    )
    await system.publish([(topics.COMMANDS, case_of(ref), command.to_json())])

    events = await system.referral_events(types_count("rj.victim-information.provided", 1), settle_s=1.5)

    (provided,) = of_type(events, "rj.victim-information.provided")
    assert provided["data"]["on_time"] is True
    assert provided["data"]["provided_by"] == {"kind": "staff", "id": "facilitator-17"}
    assert provided["causationid"] == command.id
    assert of_type(events, "rj.victim-information.overdue") == []


async def test_a_malformed_message_is_dead_lettered_with_its_reason_and_the_next_good_one_is_processed(
    system: System,
) -> None:
    ref = "WM/2026/100009"
    broken = [
        (topics.CRIME_EVENTS, "k1", b"\xff not json"),
        (topics.CRIME_EVENTS, "k2", json.dumps({"specversion": "1.0", "id": "x"}).encode()),
        (
            topics.CRIME_EVENTS,
            "k3",
            samples.upstream_event(samples.crime_recorded(ref)).replace(b"crime.recorded", b"crime.exploded"),
        ),
        (
            topics.CRIME_EVENTS,
            ref,
            samples.upstream_event(samples.crime_recorded(ref)).replace(b'"reported_at"', b'"reported"'),
        ),
    ]
    good = samples.on_crime_events(samples.crime_recorded(ref), samples.outcome_recorded(ref))
    await system.publish(broken + good)
    system.start("referral")

    letters = await system.read_until(topics.DEADLETTER, lambda ms: len(ms) >= 4)
    events = await system.referral_events(types_count("rj.case.accepted", 1))

    reasons = sorted(letter["reason"] for letter in letters)
    assert reasons[0].startswith("crime.recorded fails its schema: reported_at: Field required")
    assert any(r.startswith("not JSON") for r in reasons)
    assert any(r.startswith("not a CloudEvent") for r in reasons)
    assert any(r == "unknown event type 'crime.exploded'" for r in reasons)
    originals = {
        await system.unseal(base64.b64decode(letter["original_b64"]), copy_context(letter["id"])) for letter in letters
    }
    assert all(letter["sealed"] for letter in letters)
    assert {value for _, _, value in broken} == originals
    assert all(
        letter["service"] == "referral" and letter["source_topic"].endswith("crime.events") for letter in letters
    )
    assert len(of_type(events, "rj.case.accepted")) == 1
