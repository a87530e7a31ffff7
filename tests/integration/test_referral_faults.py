"""Crashes and database failures mid-batch: every event is applied exactly once all the same."""

from __future__ import annotations

import asyncio
import random
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from demo import samples
from schemas import topics
from schemas.upstream import RiskFlag
from tests.harness import System

pytestmark = pytest.mark.integration

SMALL_BATCHES = {"batch_size": 100}


def upstream_traffic(crimes: int, seed: int = 7) -> list[tuple[str, str, bytes]]:
    """A realistic mix, in a shuffled order per crime, with repeats and a few broken messages."""
    rng = random.Random(seed)
    # Reported within the last day: no Victims' Code deadline (the soonest, victim support's, is 2 working days on)
    # can pass during the test, so the deadline sweep, which runs on its own clock, flags nothing in either system.
    reported = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=crimes + 60)
    messages: list[tuple[str, str, bytes]] = []
    for i in range(crimes):
        ref = f"WM/2026/{200000 + i}"
        payloads = [
            samples.crime_recorded(ref, reported_at=reported + timedelta(minutes=i)),
            samples.outcome_recorded(ref, admitted=i % 5 != 0, risk_flags=[RiskFlag.hate_crime] if i % 7 == 0 else []),
        ]
        if i % 3 == 0:
            payloads.append(samples.referral_requested(ref))
        rng.shuffle(payloads)
        crime_messages = samples.on_crime_events(*payloads)
        if i % 10 == 0:
            crime_messages.append(crime_messages[0])  # an upstream repeat
        messages += crime_messages
    messages += [(topics.CRIME_EVENTS, f"broken-{i}", b"{oops") for i in range(5)]
    return messages


async def snapshot(system: System) -> dict[str, Any]:
    """The service's state, without the wall-clock times at which it was decided."""
    files = await system.fetch(
        "SELECT crime_reference, case_id, status, clocked_victims, requests::text, crime IS NULL AS no_crime, "
        "outcome->>'admitted_responsibility' AS admitted FROM referral.crime_files ORDER BY crime_reference"
    )
    clocks = await system.fetch(
        "SELECT crime_reference, person_id, due_by, provided_at, breached_at IS NOT NULL AS breached "
        "FROM referral.victim_clocks ORDER BY 1, 2"
    )
    outbox = await system.fetch("SELECT event_id, topic, key FROM referral.outbox")
    return {
        # sealed values differ from run to run (nonce, key): compare where they are, not their bytes
        "files": [tuple(re.sub(r"enc:v1:[^\"]*", "sealed", v) if isinstance(v, str) else v for v in r) for r in files],
        "clocks": [tuple(r) for r in clocks],
        "outbox": sorted(tuple(r) for r in outbox),
        "inbox": await system.fetchval("SELECT count(*) FROM referral.inbox"),
    }


def distinct_events(messages: list[tuple[str, str, bytes]]) -> int:
    return len({value for _, _, value in messages if value.startswith(b'{"')})


async def wait_until_all_applied(system: System, expected_inbox: int, dead_letters: int) -> None:
    async def everything_applied_and_published() -> bool:
        inbox = await system.fetchval("SELECT count(*) FROM referral.inbox")
        letters = await system.fetchval("SELECT count(*) FROM referral.outbox WHERE topic = $1", topics.DEADLETTER)
        unpublished = await system.fetchval("SELECT count(*) FROM referral.outbox WHERE published_at IS NULL")
        return inbox == expected_inbox and letters == dead_letters and unpublished == 0

    try:
        await system.wait_for(everything_applied_and_published, timeout_s=120, what="all events applied")
    except AssertionError as timed_out:
        inbox = await system.fetchval("SELECT count(*) FROM referral.inbox")
        letters = await system.fetchval("SELECT count(*) FROM referral.outbox WHERE topic = $1", topics.DEADLETTER)
        unpublished = await system.fetchval("SELECT count(*) FROM referral.outbox WHERE published_at IS NULL")
        raise AssertionError(
            f"{timed_out}: inbox {inbox} of {expected_inbox}, dead letters {letters} of {dead_letters}, "
            f"unpublished {unpublished}"
        ) from None


async def inbox_count(system: System) -> int:
    try:
        return int(await system.fetchval("SELECT count(*) FROM referral.inbox"))
    except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
        return 0


async def test_a_referral_service_killed_mid_batch_ends_in_the_same_state_as_one_never_killed(
    broker: Any, pg_server: str, tmp_path: Any
) -> None:
    traffic = upstream_traffic(1500)
    expected = distinct_events(traffic)
    async with (
        System(broker.bootstrap, pg_server, tmp_path / "clean", **SMALL_BATCHES) as clean,
        System(broker.bootstrap, pg_server, tmp_path / "killed", **SMALL_BATCHES) as killed,
    ):
        await asyncio.gather(clean.publish(traffic), killed.publish(traffic))
        clean.start("referral")
        process = killed.start("referral")

        kills = 0
        for fraction in (0.15, 0.45, 0.75):
            while await inbox_count(killed) < expected * fraction:
                assert process.running, killed.logs("referral")[-3000:]
                await asyncio.sleep(0.01)
            process.kill()  # SIGKILL: no shutdown, no offset commit, possibly mid-transaction
            kills += 1
            process = killed.start("referral")

        await asyncio.gather(wait_until_all_applied(clean, expected, 5), wait_until_all_applied(killed, expected, 5))
        assert kills == 3
        clean_state, killed_state = await snapshot(clean), await snapshot(killed)
        assert killed_state == clean_state
        assert len(clean_state["files"]) == 1500

        # On the topic a crash may repeat a message (send, then crash before marking it sent), but
        # every event the clean run published is there, and nothing else.
        def ids(messages: list[dict[str, Any]]) -> set[str]:
            return {m["id"] for m in messages}

        outbox_ids = {row[0] for row in clean_state["outbox"] if row[1] == topics.REFERRAL}
        on_clean = await clean.read_until(topics.REFERRAL, lambda ms: len(ids(ms)) >= len(outbox_ids))
        on_killed = await killed.read_until(topics.REFERRAL, lambda ms: len(ids(ms)) >= len(outbox_ids))
        assert ids(on_clean) == ids(on_killed) == outbox_ids


async def test_database_connections_failing_mid_batch_lose_nothing_and_apply_nothing_twice(system: System) -> None:
    crimes = 1500
    traffic = [
        m
        for i in range(crimes)
        for m in samples.on_crime_events(
            samples.crime_recorded(f"WM/2026/{300000 + i}"), samples.outcome_recorded(f"WM/2026/{300000 + i}")
        )
    ]
    await system.publish(traffic)
    system.start("referral", batch_size=100)

    terminated = 0
    admin = await asyncpg.connect(system.server_url)
    try:
        while await inbox_count(system) == 0:
            await asyncio.sleep(0.01)
        # Cut every connection of the service again and again while it works through the batches.
        while await inbox_count(system) < len(traffic) and terminated < 400:
            terminated += await admin.fetchval(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = $1 AND application_name = 'rj-referral') t",
                system.database,
            )
            await asyncio.sleep(0.05)
    finally:
        await admin.close()

    await wait_until_all_applied(system, len(traffic), 0)
    assert terminated > 0
    assert "transient_failure_retrying" in system.logs("referral")
    statuses = await system.fetch("SELECT status, count(*) FROM referral.crime_files GROUP BY status")
    assert {r["status"]: r["count"] for r in statuses} == {"accepted": crimes}
    by_topic = await system.fetch("SELECT topic, count(*), count(DISTINCT event_id) FROM referral.outbox GROUP BY 1")
    # Each crime: opened, accepted, and the two Victims' Code clocks started.
    assert [tuple(r) for r in by_topic] == [(topics.REFERRAL, 4 * crimes, 4 * crimes)]
