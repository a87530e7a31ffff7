"""Consent and scheduling killed mid-stream and restarted: no effect lost, none repeated."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from demo import samples
from demo.samples import case_of
from schemas import topics
from schemas.scheduling import BookMeeting, MeetingKind
from tests.e2e.conftest import STAFF, command, community_venue, facilitators, facilitators_known, next_week, prepare
from tests.harness import System, of_type

pytestmark = pytest.mark.integration

CASES = 60


async def count(system: System, sql: str, *args: Any) -> int:
    try:
        return int(await system.fetchval(sql, *args))
    except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):  # not migrated yet
        return 0


async def publish_in_chunks(system: System, messages: list[tuple[str, str, bytes]], chunks: int = 12) -> None:
    size = max(1, len(messages) // chunks)
    for i in range(0, len(messages), size):
        await system.publish(messages[i : i + size])
        await asyncio.sleep(0.25)


async def kill_when(system: System, name: str, sql: str, at_least: int) -> None:
    """SIGKILL ``name`` once ``sql`` counts ``at_least`` rows, then start it again."""
    while await count(system, sql) < at_least:
        await asyncio.sleep(0.02)
    system.service(name).kill()
    system.start(name, batch_size=10)


def distinct(messages: list[dict[str, Any]], event_type: str) -> dict[str, dict[str, Any]]:
    return {m["id"]: m for m in of_type(messages, event_type)}


async def test_consent_and_scheduling_restarted_mid_stream_lose_and_repeat_nothing(system: System) -> None:
    for name in ("referral", "consent", "scheduling"):
        system.start(name, batch_size=10)
    refs = [f"WM/2026/{600000 + i}" for i in range(CASES)]
    await system.publish(
        [m for ref in refs for m in samples.on_crime_events(samples.crime_recorded(ref), samples.outcome_recorded(ref))]
    )
    await system.publish([*facilitators("F-ANN", "F-BEN"), community_venue()])
    await facilitators_known(system, "F-ANN", "F-BEN")

    async def all_in_preparation() -> bool:
        return await count(system, "SELECT count(*) FROM consent.cases WHERE state IS NOT NULL") == CASES

    await system.wait_for(all_in_preparation, timeout_s=90)

    # Consent: each case prepared (two facilitators assigned, both parties met, both consent), streamed
    # while the service is killed part-way through.
    consents = [m for r in refs for m in prepare(case_of(r), [f"V-{r}", f"O-{r}"], ["F-ANN", "F-BEN"])]
    await asyncio.gather(
        publish_in_chunks(system, consents),
        kill_when(system, "consent", "SELECT count(*) FROM consent.inbox", CASES + len(consents) // 3),
    )
    on_consent = await system.read_until(
        topics.CONSENT, lambda ms: len(distinct(ms, "rj.case.ready-for-meeting")) >= CASES, timeout_s=90, settle_s=1.0
    )
    assert len(distinct(on_consent, "rj.consent.given")) == 2 * CASES
    assert of_type(on_consent, "rj.command.rejected") == []
    # per case: preparation started, 2 facilitators assigned, 2 preparation meetings, 2 consents, ready
    assert await count(system, "SELECT count(*) FROM consent.outbox") == CASES * 8

    async def all_schedulable() -> bool:
        return await count(system, "SELECT count(*) FROM scheduling.cases WHERE state->>'ready' = 'true'") == CASES

    await system.wait_for(all_schedulable, timeout_s=90)

    # Scheduling: one conference per case, back to back with the same staff and room, killed part-way.
    first = next_week(hour=0, days=8)
    # Working hours are per day: keep every meeting inside one day (12 a day) by spreading them.
    bookings = [
        command(
            BookMeeting(
                case_id=case_of(r),
                actor=STAFF,
                meeting_id="M1",
                kind=MeetingKind.conference,
                starts_at=first + timedelta(days=i // 10, hours=2 * (i % 10) + 1),
                ends_at=first + timedelta(days=i // 10, hours=2 * (i % 10) + 3),
                lead_facilitator_id="F-ANN",
                co_facilitator_id="F-BEN",
                venue_id="V-HUB",
            )
        )
        for i, r in enumerate(refs)
    ]
    already = await count(system, "SELECT count(*) FROM scheduling.inbox")
    await asyncio.gather(
        publish_in_chunks(system, bookings),
        kill_when(system, "scheduling", "SELECT count(*) FROM scheduling.inbox", already + len(bookings) // 3),
    )
    on_scheduling = await system.read_until(
        topics.SCHEDULING, lambda ms: len(distinct(ms, "rj.meeting.booked")) >= CASES, timeout_s=90, settle_s=1.0
    )
    assert of_type(on_scheduling, "rj.command.rejected") == []
    assert len(distinct(on_scheduling, "rj.meeting.booked")) == CASES
    # Each meeting holds two facilitators, the venue and both participants: nothing held twice.
    assert await count(system, "SELECT count(*) FROM scheduling.bookings") == CASES * 5
    assert await count(
        system, "SELECT count(DISTINCT event_id) FROM scheduling.outbox WHERE topic = $1", topics.SCHEDULING
    ) == await count(system, "SELECT count(*) FROM scheduling.outbox")
