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
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

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


async def main(events: int) -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    broker = start_broker(log_path=STATE / "tansu.log")
    server = await ensure_postgres(STATE)
    try:
        async with database_for_run(server, "rj_bench") as database_url:
            settings = Settings(kafka_bootstrap_servers=broker.bootstrap, database_url=database_url)
            env = {"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "DATABASE_URL": database_url}
            await ensure_topics(settings)
            messages = traffic(events)
            size = sum(len(v) for _, _, v in messages) / len(messages)
            started = time.perf_counter()
            await publish(settings, messages)
            print(f"published {len(messages)} events (mean {size:.0f} bytes) in {time.perf_counter() - started:.1f} s")

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
                raise SystemExit(
                    f"ceiling run failed ({ceiling.returncode}):\n{ceiling.stdout[-1000:]}\n{ceiling.stderr[-3000:]}"
                )
            result = json.loads(line[-1])
            ceiling_rate = result["events"] / (result["last"] - result["first"])

            supervisor = Supervisor(env=env, log_dir=STATE / "logs")
            supervisor.start("referral")
            import asyncpg

            conn = None
            try:
                while conn is None:
                    try:
                        conn = await asyncpg.connect(database_url)
                        await conn.fetchval("SELECT count(*) FROM referral.inbox")
                    except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
                        await conn.close() if conn else None
                        conn = None
                        await asyncio.sleep(0.2)
                while await conn.fetchval("SELECT count(*) FROM referral.inbox") < len(messages):
                    await asyncio.sleep(0.2)
                first, last = await conn.fetchrow("SELECT min(received_at), max(received_at) FROM referral.inbox")
                # received_at is each batch transaction's start; add the last batch's commit by timing the
                # outbox rows the same transactions wrote.
                last_written = await conn.fetchval("SELECT max(created_at) FROM referral.outbox")
                intake_rate = len(messages) / max((max(last, last_written) - first).total_seconds(), 1e-6)
                cases = await conn.fetchval("SELECT count(*) FROM referral.crime_files WHERE status = 'accepted'")
            finally:
                if conn:
                    await conn.close()
                supervisor.stop_all()
    finally:
        broker.stop()

    print(f"ceiling (Faust agent doing nothing, batches of {settings.batch_size}): {ceiling_rate:,.0f} events/s")
    print(f"referral intake (parse, dedupe, decide, state + outbox committed): {intake_rate:,.0f} events/s")
    print(f"intake / ceiling: {intake_rate / ceiling_rate:.0%}   ({cases} cases accepted)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=40000)
    asyncio.run(main(parser.parse_args().events))
