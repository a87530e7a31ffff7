"""What an operator sees, from outside: ``/health/live`` and ``/health/ready`` through a database outage and a
dead relay, and ``/metrics`` as Prometheus' own parser reads it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import urllib.error
import urllib.request
from typing import Any

import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from demo import samples
from services.runtime.devstack import free_port
from tests.harness import System

pytestmark = pytest.mark.integration


def get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:  # noqa: S310 - loopback
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


async def status(port: int, path: str) -> tuple[int, dict[str, Any]]:
    return await asyncio.to_thread(get, port, path)


async def until_status(system: System, port: int, path: str, code: int, timeout_s: float = 30) -> dict[str, Any]:
    body: dict[str, Any] = {}

    async def check() -> bool:
        nonlocal body
        try:
            got, body = await status(port, path)
        except OSError:
            return False
        return got == code

    await system.wait_for(check, timeout_s=timeout_s, what=f"{path} to answer {code} (last: {body})")
    return body


async def test_ready_turns_unready_while_the_database_is_down_and_ready_again_after(system: System) -> None:
    port = free_port()
    system.start("referral", ops_port=port)
    body = await until_status(system, port, "/health/ready", 200)
    assert body["checks"] == {"database": "ok", "partitions": "ok", "topics": "ok"}
    assert (await status(port, "/health/live"))[0] == 200

    admin = await asyncpg.connect(system.server_url)
    try:
        await admin.execute(f'ALTER DATABASE "{system.database}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            system.database,
        )
        body = await until_status(system, port, "/health/ready", 503)
        assert body["checks"]["database"] != "ok" and body["checks"]["partitions"] == "ok"
        # Longer than the relay's stuck-loop limit (15 s): reconnecting is not being stuck.
        for _ in range(18):
            live, body = await status(port, "/health/live")
            assert live == 200, f"a database outage is not the process's fault: restarting would not help ({body})"
            await asyncio.sleep(1)
    finally:
        await admin.execute(f'ALTER DATABASE "{system.database}" ALLOW_CONNECTIONS true')
        await admin.close()
    await until_status(system, port, "/health/ready", 200)
    # And it works again: a crime becomes a case.
    await system.publish(samples.on_crime_events(samples.crime_recorded("OPS/1"), samples.outcome_recorded("OPS/1")))

    async def case_opened() -> bool:
        return bool(await system.fetchval("SELECT count(*) FROM referral.crime_files WHERE status = 'accepted'"))

    await system.wait_for(case_opened, what="the case after the outage")


async def test_metrics_parse_with_prometheus_own_parser_and_show_the_relay_and_the_intake(system: System) -> None:
    port = free_port()
    system.start("referral", ops_port=port)
    refs = [f"MET/{i}" for i in range(20)]
    await system.publish(
        [m for r in refs for m in samples.on_crime_events(samples.crime_recorded(r), samples.outcome_recorded(r))]
    )

    families: dict[str, Any] = {}

    async def figures_in() -> bool:
        nonlocal families
        try:
            text = await asyncio.to_thread(_metrics_text, port)
        except OSError:
            return False  # not serving yet
        families = {f.name: f for f in text_string_to_metric_families(text)}
        published = sum(s.value for s in families["rj_events_published"].samples if s.name.endswith("_total"))
        lag = families.get("rj_consumer_lag")
        deadlines = {s.labels["state"]: s.value for s in families["rj_victims_code_deadlines"].samples}
        return (
            published >= 40
            and _value(families, "rj_relay_leader") == 1
            and bool(lag and lag.samples)
            and deadlines.get("due", 0) >= 1  # every case's victim has an information deadline running
        )

    await system.wait_for(figures_in, what="the relay's figures")
    consumed = sum(s.value for s in families["rj_events_consumed"].samples if s.name.endswith("_total"))
    assert consumed >= 40
    assert _value(families, "rj_relay_running") == 1
    assert any(s.name == "rj_batch_size_count" and s.value > 0 for s in families["rj_batch_size"].samples)
    lagging = {s.labels["topic"] for s in families["rj_consumer_lag"].samples}
    # rj.scheduling: closures, for re-referral; rj.consent: risk assessments, for the RJ information gate
    assert lagging == {"crime.events", "rj.commands", "rj.scheduling", "rj.consent"}
    for name in ("rj_outbox_backlog", "rj_outbox_oldest_age_seconds", "rj_outbox_parked", "rj_parked_events"):
        assert name in families, name
    loops = {s.labels["loop"] for s in families["rj_event_loop"].samples if s.value == 1}
    assert loops == {"uvloop"}, "the service runs on the event loop its settings name (uvloop by default)"


async def test_a_relay_that_dies_takes_its_worker_down_and_one_that_hangs_turns_it_unlive(system: System) -> None:
    port = free_port()
    worker = system.start("referral", ops_port=port)
    await until_status(system, port, "/health/live", 200)
    relay = await _relay_pid(worker.process.pid)
    os.kill(relay, signal.SIGSTOP)  # hung: alive, but it reports nothing
    try:
        body = await until_status(system, port, "/health/live", 503, timeout_s=40)
        assert "relay" in body["checks"] and body["checks"]["relay"] != "ok"
    finally:
        os.kill(relay, signal.SIGCONT)
    await until_status(system, port, "/health/live", 200)
    os.kill(relay, signal.SIGKILL)

    async def worker_gone() -> bool:
        return not worker.running

    await system.wait_for(worker_gone, timeout_s=15, what="the worker to exit with its relay")
    assert worker.process.returncode == 70
    assert "relay_process_exited" in system.logs("referral")


def _metrics_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:  # noqa: S310 - loopback
        return str(response.read().decode())


def _value(families: dict[str, Any], name: str) -> float | None:
    family = families.get(name)
    return family.samples[0].value if family and family.samples else None


async def _relay_pid(parent: int) -> int:
    """The relay child of a worker process."""
    for _ in range(100):
        if found := _relay_child(parent):
            return found
        await asyncio.sleep(0.2)
    raise AssertionError("no relay process")


def _relay_child(parent: int) -> int | None:
    with open(f"/proc/{parent}/task/{parent}/children") as f:
        children = [int(pid) for pid in f.read().split()]
    for pid in children:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"services.runtime.relay_main" in f.read().split(b"\0"):
                return pid
    return None


async def test_a_topic_that_would_not_keep_our_log_for_ever_makes_the_service_unready_and_says_which(
    system: System,
) -> None:
    """An upgrade finds rj.* topics created by hand, or by an older version, with the broker's default
    retention (7 days on Kafka): the audit trail would be lost, so an operator must see it."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from schemas import topics

    prefix = f"old{system.run_id}."
    admin = AIOKafkaAdminClient(bootstrap_servers=system.settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(f"{prefix}{t}", system.settings.topic_partitions, 1) for t in topics.ALL_TOPICS]
        )
    finally:
        await admin.close()
    port = free_port()
    system.start("referral", ops_port=port, topic_prefix=prefix)
    await until_status(system, port, "/health/ready", 503, timeout_s=45)

    async def says_which() -> bool:
        _, body = await status(port, "/health/ready")
        return f"{prefix}rj.referral: retention.ms" in body["checks"]["topics"]

    await system.wait_for(says_which, what="the topics check to name rj.referral")
    assert "topic_misconfigured" in system.logs("referral")
    assert (await status(port, "/health/live"))[0] == 200


async def test_a_topic_with_another_partition_count_makes_the_service_unready_and_says_which(system: System) -> None:
    """A broker that created rj.consent on first use (one partition), or a hand-made topic: a case's records on it
    land on another partition number than on the other topics, so two lanes could apply one case's records at once.
    An operator must see it before it matters."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from schemas import topics
    from services.runtime.kafka import topic_config

    prefix = f"narrow{system.run_id}."
    settings = system.settings.model_copy(update={"topic_prefix": prefix})
    admin = AIOKafkaAdminClient(bootstrap_servers=system.settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    f"{prefix}{t}",
                    1 if t == topics.CONSENT else system.settings.topic_partitions,
                    1,
                    topic_configs=topic_config(settings, t),
                )
                for t in topics.ALL_TOPICS
            ]
        )
    finally:
        await admin.close()
    port = free_port()
    system.start("referral", ops_port=port, topic_prefix=prefix)
    await until_status(system, port, "/health/ready", 503, timeout_s=45)

    async def says_which() -> list[str]:
        _, body = await status(port, "/health/ready")
        return [p for p in body["checks"]["topics"].split("; ") if p.startswith(prefix)]

    await system.wait_for(says_which, what="the topics check to name a topic")
    assert await says_which() == [
        f"{prefix}{topics.CONSENT}: 1 partitions, not {system.settings.topic_partitions} (TOPIC_PARTITIONS): a case's "
        "records on it would not share a lane with its records on the other topics"
    ]
    assert "topic_misconfigured" in system.logs("referral")


async def test_every_database_session_says_which_service_or_relay_it_is(system: System) -> None:
    """pg_stat_activity names each session's process (``application_name``): which service, or its relay, holds a
    lock or runs a slow query is seen at a glance."""
    system.start("referral")
    system.start("consent")

    async def names() -> set[str]:
        conn = await asyncpg.connect(system.settings.database_url)
        try:
            rows = await conn.fetch(
                "SELECT DISTINCT application_name FROM pg_stat_activity WHERE datname = current_database()"
            )
        finally:
            await conn.close()
        return {r[0] for r in rows}

    wanted = {"rj-referral", "rj-referral-relay", "rj-consent", "rj-consent-relay"}

    async def all_named() -> bool:
        return wanted <= await names()

    await system.wait_for(all_named, what="every service's and relay's sessions named")
