"""Intake benchmark: N upstream events published, time until the referral service has applied and
committed them all, beside the same run's ceiling (a Faust agent doing nothing on the same topic), and
beside the same intake with personal-data encryption switched off (what encryption costs).

    .venv/bin/python -m bench.intake --events 40000
    .venv/bin/python -m bench.intake --events 40000 --replicas 2   # two referral workers sharing the partitions

Every figure excludes the consumer-group join: each is timed from its first event to its last. Each run
measures, on fresh topics and a fresh database each: the ceiling, intake without encryption
(PII_ENCRYPTION=false) and intake with it (the default), in turn, so that all three share the machine's
state of the moment.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from demo import samples
from services.runtime.devstack import database_for_run, ensure_postgres, start_broker
from services.runtime.kafka import ensure_topics, publish
from services.runtime.keystore import MasterKeys
from services.runtime.settings import Settings
from services.runtime.supervisor import Supervisor

STATE = Path(".rj/bench")


def traffic(events: int, first: int = 0) -> list[tuple[str, str, bytes]]:
    """``events`` upstream records: a crime recorded and its admitted outcome, for crimes ``first`` on."""
    reported = datetime.now(UTC) - timedelta(days=1)
    messages = []
    for i in range(first, first + events // 2):
        ref = f"BN/2026/{i:07d}"
        messages += samples.on_crime_events(
            samples.crime_recorded(ref, reported_at=reported), samples.outcome_recorded(ref)
        )
    return messages


async def measure_once(
    broker: str, server: str, events: int, run: int, replicas: int = 1
) -> tuple[float, float, float]:
    """One run: (ceiling events/s, intake events/s without encryption, intake events/s with it)."""
    ceiling = await measure(broker, server, events, f"bench{run}c-{os.getpid()}.", "ceiling")
    plain = await measure(broker, server, events, f"bench{run}p-{os.getpid()}.", "plain", replicas)
    sealed = await measure(broker, server, events, f"bench{run}e-{os.getpid()}.", "encrypted", replicas)
    print(
        f"run {run + 1}: ceiling {ceiling:,.0f} events/s, intake {sealed:,.0f} events/s ({sealed / ceiling:.0%}), "
        f"without encryption {plain:,.0f} events/s (with / without: {sealed / plain:.2f}x)"
    )
    return ceiling, plain, sealed


async def measure(broker: str, server: str, events: int, prefix: str, what: str, replicas: int = 1) -> float:
    """Events/s of ``what`` (the ceiling, or referral's intake with or without encryption) on fresh topics
    and a fresh database."""
    async with database_for_run(server, "rj_bench") as database_url:
        settings = Settings(kafka_bootstrap_servers=broker, database_url=database_url, topic_prefix=prefix)
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": broker,
            "DATABASE_URL": database_url,
            "TOPIC_PREFIX": prefix,
            "MASTER_KEYS": MasterKeys.generate("bench1"),
            "PII_ENCRYPTION": "false" if what == "plain" else "true",
        }
        await ensure_topics(settings)
        messages = traffic(events)
        await publish(settings, messages)
        if what != "ceiling":
            return await measure_intake(env, database_url, len(messages), events, replicas)

        ceiling = subprocess.run(
            [sys.executable, "-m", "bench.ceiling", "worker"],
            env={**os.environ, **env, "BENCH_EVENTS": str(len(messages))},
            capture_output=True,
            text=True,
            timeout=600,
        )
        # Faust's worker writes terminal escapes to stdout: take the JSON from where it starts.
        line = [ln[ln.index('{"first"') :] for ln in ceiling.stdout.splitlines() if '{"first"' in ln]
        if not line:
            output = f"{ceiling.stdout[-1000:]}\n{ceiling.stderr[-3000:]}"
            raise SystemExit(f"ceiling run failed ({ceiling.returncode}):\n{output}")
        result = json.loads(line[-1])
        return float(result["events"] / (result["last"] - result["first"]))


async def measure_intake(env: dict[str, str], database_url: str, n: int, events: int, replicas: int = 1) -> float:
    """Referral's intake of the ``n`` records waiting, by ``replicas`` worker processes sharing the partitions
    (one consumer group; the second joins while the first has begun, so its rebalance is in the figure)."""
    supervisor = Supervisor(env=env, log_dir=STATE / "logs")
    supervisor.start("referral")
    for replica in range(2, replicas + 1):
        supervisor.start("referral", replica=str(replica))
    try:
        conn = await _connect_when_migrated(database_url)
        try:
            while await conn.fetchval("SELECT count(*) FROM referral.inbox") < n:
                await asyncio.sleep(0.2)
            # received_at and created_at are each batch transaction's start: the span from the first
            # batch to the last one's outbox write covers every batch but the last commit.
            first, last = await conn.fetchrow("SELECT min(received_at), max(received_at) FROM referral.inbox")
            last_written = await conn.fetchval("SELECT max(created_at) FROM referral.outbox")
            intake_rate = n / max((max(last, last_written) - first).total_seconds(), 1e-6)
            accepted = await conn.fetchval("SELECT count(*) FROM referral.crime_files WHERE status = 'accepted'")
            assert accepted == events // 2, f"{accepted} cases accepted, expected {events // 2}"
            sealed = await conn.fetchval("SELECT count(*) FROM referral.outbox WHERE position('enc:v1:' in value) > 0")
            assert (sealed > 0) == (env["PII_ENCRYPTION"] == "true"), f"{sealed} facts sealed"
        finally:
            await conn.close()
    finally:
        supervisor.stop_all()
    return float(intake_rate)


async def _connect_when_migrated(database_url: str) -> asyncpg.Connection:
    while True:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.fetchval("SELECT count(*) FROM referral.inbox")
            return conn
        except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
            await conn.close()
            await asyncio.sleep(0.2)


async def main(events: int, runs: int, replicas: int = 1) -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    broker = start_broker(log_path=STATE / "tansu.log")
    server = await ensure_postgres(STATE)
    size = statistics.mean(len(v) for _, _, v in traffic(200))
    print(
        f"{runs} runs of {events} upstream events (mean {size:.0f} bytes), each on fresh topics and database; "
        f"referral in {replicas} worker process{'es' if replicas > 1 else ''}"
    )
    try:
        results = [await measure_once(broker.bootstrap, server, events, run, replicas) for run in range(runs)]
    finally:
        broker.stop()
    ceiling = statistics.median(c for c, _, _ in results)
    plain = statistics.median(p for _, p, _ in results)
    intake = statistics.median(i for _, _, i in results)
    ratios = sorted(i / c for c, _, i in results)
    costs = sorted(i / p for _, p, i in results)
    print(f"ceiling (Faust agent doing nothing, batches of 500): median {ceiling:,.0f} events/s")
    print(f"referral intake (parse, dedupe, decide, state + outbox committed): median {intake:,.0f} events/s")
    print(f"  the same without encrypting personal data: median {plain:,.0f} events/s")
    print(f"intake / ceiling: median {statistics.median(ratios):.0%} (runs: {', '.join(f'{r:.0%}' for r in ratios)})")
    each = ", ".join(f"{r:.2f}x" for r in costs)
    print(f"with / without encryption: median {statistics.median(costs):.2f}x (runs: {each})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=40000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=1, help="referral worker processes sharing the partitions")
    args = parser.parse_args()
    asyncio.run(main(args.events, args.runs, args.replicas))
