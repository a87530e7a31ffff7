"""Intake benchmark: N upstream events published, time until the referral service has applied and
committed them all, beside the same run's ceiling (a Faust agent doing nothing on the same topic).

    .venv/bin/python -m bench.intake --events 40000

Both figures exclude the consumer-group join: each is timed from its first event to its last.
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

from services import samples
from services.runtime.devstack import database_for_run, ensure_postgres, start_broker
from services.runtime.kafka import ensure_topics, publish
from services.runtime.settings import Settings
from services.runtime.supervisor import Supervisor

STATE = Path(".rj/bench")


def traffic(events: int) -> list[tuple[str, str, bytes]]:
    reported = datetime.now(UTC) - timedelta(days=1)
    messages = []
    for i in range(events // 2):
        ref = f"BN/2026/{i:07d}"
        messages += samples.on_crime_events(
            samples.crime_recorded(ref, reported_at=reported), samples.outcome_recorded(ref)
        )
    return messages


async def measure_once(broker: str, server: str, events: int, run: int) -> tuple[float, float]:
    """One run on fresh topics and a fresh database: (ceiling events/s, intake events/s)."""
    async with database_for_run(server, "rj_bench") as database_url:
        prefix = f"bench{run}-{os.getpid()}."
        settings = Settings(kafka_bootstrap_servers=broker, database_url=database_url, topic_prefix=prefix)
        env = {"KAFKA_BOOTSTRAP_SERVERS": broker, "DATABASE_URL": database_url, "TOPIC_PREFIX": prefix}
        await ensure_topics(settings)
        messages = traffic(events)
        await publish(settings, messages)

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
        ceiling_rate = result["events"] / (result["last"] - result["first"])

        supervisor = Supervisor(env=env, log_dir=STATE / "logs")
        supervisor.start("referral")
        try:
            conn = await _connect_when_migrated(database_url)
            try:
                while await conn.fetchval("SELECT count(*) FROM referral.inbox") < len(messages):
                    await asyncio.sleep(0.2)
                # received_at and created_at are each batch transaction's start: the span from the first
                # batch to the last one's outbox write covers every batch but the last commit.
                first, last = await conn.fetchrow("SELECT min(received_at), max(received_at) FROM referral.inbox")
                last_written = await conn.fetchval("SELECT max(created_at) FROM referral.outbox")
                intake_rate = len(messages) / max((max(last, last_written) - first).total_seconds(), 1e-6)
                accepted = await conn.fetchval("SELECT count(*) FROM referral.crime_files WHERE status = 'accepted'")
                assert accepted == events // 2, f"{accepted} cases accepted, expected {events // 2}"
            finally:
                await conn.close()
        finally:
            supervisor.stop_all()
    print(
        f"run {run + 1}: ceiling {ceiling_rate:,.0f} events/s, intake {intake_rate:,.0f} events/s "
        f"({intake_rate / ceiling_rate:.0%})"
    )
    return ceiling_rate, intake_rate


async def _connect_when_migrated(database_url: str) -> asyncpg.Connection:
    while True:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.fetchval("SELECT count(*) FROM referral.inbox")
            return conn
        except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
            await conn.close()
            await asyncio.sleep(0.2)


async def main(events: int, runs: int) -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    broker = start_broker(log_path=STATE / "tansu.log")
    server = await ensure_postgres(STATE)
    size = statistics.mean(len(v) for _, _, v in traffic(200))
    print(f"{runs} runs of {events} upstream events (mean {size:.0f} bytes), each on fresh topics and database")
    try:
        results = [await measure_once(broker.bootstrap, server, events, run) for run in range(runs)]
    finally:
        broker.stop()
    ceiling = statistics.median(c for c, _ in results)
    intake = statistics.median(i for _, i in results)
    ratios = sorted(i / c for c, i in results)
    print(f"ceiling (Faust agent doing nothing, batches of 500): median {ceiling:,.0f} events/s")
    print(f"referral intake (parse, dedupe, decide, state + outbox committed): median {intake:,.0f} events/s")
    print(f"intake / ceiling: median {statistics.median(ratios):.0%} (runs: {', '.join(f'{r:.0%}' for r in ratios)})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=40000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.events, args.runs))
