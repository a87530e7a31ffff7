"""The running services through infrastructure faults and rolling deploys, driven from outside: a
database that turns read-only and back, an event newer than the service, and a replica killed while the
consumer group rebalances. Nothing may be lost, dead-lettered for the infrastructure's sake, or applied
twice."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any

import asyncpg
import pytest

from demo import samples
from schemas import topics
from services.runtime.devstack import free_port
from services.runtime.processor import parked_context
from services.runtime.records import Record
from tests.e2e.conftest import facts, referred_case
from tests.harness import System
from tests.integration.test_referral_faults import (
    distinct_events,
    inbox_count,
    snapshot,
    upstream_traffic,
    wait_until_all_applied,
)

pytestmark = pytest.mark.integration


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:  # noqa: S310 - loopback
        text = response.read().decode()
    samples_: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples_[name] = float(value)
    return samples_


async def test_a_database_that_turns_read_only_and_back_loses_nothing_and_dead_letters_nothing(system: System) -> None:
    port = free_port()
    system.start("referral", ops_port=port)
    refs = [f"RO/2026/{i}" for i in range(200)]
    await system.publish(
        [m for r in refs for m in samples.on_crime_events(samples.crime_recorded(r), samples.outcome_recorded(r))]
    )
    await system.wait_for(lambda: _applied_some(system), what="the service to start applying")

    admin = await asyncpg.connect(system.server_url)
    try:
        await admin.execute(f"ALTER DATABASE {system.database} SET default_transaction_read_only = on")
        await _cut_connections(admin, system.database)  # a failover: reconnections find a read-only server
        more = [f"RO/2026/{i}" for i in range(200, 400)]
        await system.publish(
            [m for r in more for m in samples.on_crime_events(samples.crime_recorded(r), samples.outcome_recorded(r))]
        )
        refs += more
        await asyncio.sleep(3)
        retried = sum(v for k, v in scrape(port).items() if k.startswith("rj_transient_failures_total"))
        assert retried > 0, "read-only failures must be counted where an operator can alert on them"
        assert system.service("referral").running
    finally:
        await admin.execute(f"ALTER DATABASE {system.database} RESET default_transaction_read_only")
        await _cut_connections(admin, system.database)
        await admin.close()

    await wait_until_all_applied(system, len(refs) * 2, dead_letters=0)
    accepted = await system.fetchval("SELECT count(*) FROM referral.crime_files WHERE status = 'accepted'")
    assert accepted == len(refs)
    assert await system.fetchval("SELECT count(*) FROM referral.dead_letters") == 0
    assert scrape(port).get("rj_dead_letters_total", 0) == 0


async def _applied_some(system: System) -> bool:
    return await inbox_count(system) > 0


async def _cut_connections(admin: asyncpg.Connection, database: str) -> None:
    await admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        database,
    )


async def test_an_event_newer_than_the_service_holds_its_case_while_other_cases_flow(system: System) -> None:
    for name in ("referral", "consent"):
        system.start(name)
    waiting_case, victim, offender = await referred_case(system, "NV/2026/1")
    flowing_case, other_victim, _ = await referred_case(system, "NV/2026/2")

    _, key, v1 = samples.consent(waiting_case, victim)
    newer = json.loads(v1)
    newer["dataschema"] = newer["dataschema"].replace(":v1", ":v2")  # from a sender already upgraded
    await system.publish(
        [
            (topics.COMMANDS, key, json.dumps(newer).encode()),
            samples.consent(waiting_case, offender),  # a later event of the same case: must wait behind it
            samples.consent(flowing_case, other_victim),
        ]
    )

    await facts(system, topics.CONSENT, flowing_case, "rj.consent.given")

    async def both_parked() -> bool:
        return bool(await system.fetchval("SELECT count(*) FROM consent.parked WHERE case_key = $1", waiting_case) == 2)

    await system.wait_for(both_parked, what="the newer event and the one behind it to be parked")
    given = await system.fetchval(
        "SELECT count(*) FROM consent.outbox WHERE key = $1 AND convert_from(value, 'UTF8') LIKE '%rj.consent.given%'",
        waiting_case,
    )
    assert given == 0, "nothing of the waiting case may be applied out of order"
    assert await system.fetchval("SELECT count(*) FROM consent.dead_letters") == 0
    order = await system.fetch(
        'SELECT source_topic, partition, "offset", value FROM consent.parked WHERE case_key = $1 ORDER BY seq',
        waiting_case,
    )
    places = [Record(r["source_topic"], r["partition"], r["offset"], None, None) for r in order]
    values = [await system.unseal(r["value"], parked_context(p)) for r, p in zip(order, places, strict=True)]
    assert [json.loads(v or b"")["data"]["person_id"] for v in values] == [victim, offender]
    await system.wait_for(
        lambda: _logged(system, "consent", "events_parked_waiting_for_upgrade"), what="an alert while events wait"
    )


async def _logged(system: System, service: str, event: str) -> bool:
    return event in system.logs(service)


async def test_a_replica_killed_during_a_rebalance_loses_nothing_and_applies_nothing_twice(
    broker: Any, pg_server: str, tmp_path: Any
) -> None:
    traffic = upstream_traffic(1500)
    expected = distinct_events(traffic)
    size = len(traffic) // 60 + 1
    chunks = [traffic[i : i + size] for i in range(0, len(traffic), size)]  # ~30 s of live traffic
    async with (
        System(broker.bootstrap, pg_server, tmp_path / "clean", batch_size=50) as clean,
        System(broker.bootstrap, pg_server, tmp_path / "rebalanced", batch_size=50) as rebalanced,
    ):

        async def live_stream() -> None:
            """Upstream keeps publishing while replicas come and go."""
            for chunk in chunks:
                await asyncio.gather(clean.publish(chunk), rebalanced.publish(chunk))
                await asyncio.sleep(0.5)

        clean.start("referral")
        first = rebalanced.start("referral")
        stream = asyncio.create_task(live_stream())
        await rebalanced.wait_for(lambda: _applied_some(rebalanced), what="the first replica to apply")
        second = rebalanced.start("referral", replica="2")  # a second replica joins: the group rebalances

        async def first_is_revoking() -> bool:
            return "partitions_revoked" in rebalanced.logs("referral")

        await rebalanced.wait_for(first_is_revoking, what="the rebalance to reach the first replica")
        first.kill()  # SIGKILL inside the rebalance: its batch in flight and its offsets die with it
        third = rebalanced.start("referral", replica="3")  # another joins while the dead one's session expires

        async def survivors_took_over() -> bool:
            logs = rebalanced.logs("referral-2") + rebalanced.logs("referral-3")
            return "partitions_assigned" in logs

        await rebalanced.wait_for(survivors_took_over, what="the surviving replicas to take the partitions over")
        assert await inbox_count(rebalanced) < expected, "the survivors must have work left to take over"
        await stream
        await asyncio.gather(
            wait_until_all_applied(clean, expected, 5), wait_until_all_applied(rebalanced, expected, 5)
        )
        assert second.running and third.running
        assert await snapshot(rebalanced) == await snapshot(clean)
        # Every fact the clean run published, and nothing else (a crash may re-send one; ids tell).
        outbox_ids = {row[0] for row in (await snapshot(clean))["outbox"] if row[1] == topics.REFERRAL}

        def ids(messages: list[dict[str, Any]]) -> set[str]:
            return {m["id"] for m in messages}

        published = await rebalanced.read_until(topics.REFERRAL, lambda ms: len(ids(ms)) >= len(outbox_ids))
        assert ids(published) == outbox_ids


async def test_a_consumer_group_that_lost_its_offsets_resumes_where_the_data_is_not_from_the_beginning(
    system: System,
) -> None:
    """Kafka forgets a group's offsets (offsets.retention after the group sat empty, an operator's reset),
    and housekeeping has pruned the inbox meanwhile: nothing old may be applied again."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.coordinator.assignors.range import RangePartitionAssignor

    service = system.start("referral")
    old = [f"LOST/{i}" for i in range(50)]
    await system.publish(
        [m for r in old for m in samples.on_crime_events(samples.crime_recorded(r), samples.outcome_recorded(r))]
    )
    await wait_until_all_applied(system, len(old) * 2, dead_letters=0)
    service.stop()

    # The group's offsets are lost: committed back to the beginning (what a reset does), and the inbox
    # pruned, so it cannot catch a replay.
    group = f"{system.settings.topic_prefix}rj-referral-intake"
    settings = system.settings
    resetter = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=group,
        enable_auto_commit=False,
        partition_assignment_strategy=(RangePartitionAssignor,),  # the service's, or the group refuses us
        session_timeout_ms=int(settings.kafka_session_timeout_s * 1000),
        rebalance_timeout_ms=int(settings.kafka_rebalance_timeout_s * 1000),
        heartbeat_interval_ms=int(settings.kafka_heartbeat_interval_s * 1000),
    )
    resetter.subscribe([settings.topic(topics.CRIME_EVENTS), settings.topic(topics.COMMANDS)])
    await resetter.start()
    try:
        while len(resetter.assignment()) < 2 * settings.topic_partitions:  # joined: the group is ours
            await resetter.getmany(timeout_ms=200)
        await resetter.commit({tp: 0 for tp in resetter.assignment()})
    finally:
        await resetter.stop()
    await system.fetchval("DELETE FROM referral.inbox")

    system.start("referral", replica="again")
    new = [f"LOST/{i}" for i in range(50, 60)]
    await system.publish(
        [m for r in new for m in samples.on_crime_events(samples.crime_recorded(r), samples.outcome_recorded(r))]
    )
    await wait_until_all_applied(system, len(new) * 2, dead_letters=0)
    await asyncio.sleep(2)  # a replay of the old records would land meanwhile
    assert await inbox_count(system) == len(new) * 2, "old records were read and applied again"
    assert "resuming_from_stored_position" in system.logs("referral-again")
