"""Where intake's encryption cost goes, per event, in one process: referral's batch handler and its outbox
write on batches of 500 parsed upstream events (the bench's traffic), each batch in its own transaction,
with personal-data encryption on and off, timed as this process's CPU (so another process's load on the
machine counts less than in ``bench.intake``), and split by the steps that seal.

    .venv/bin/python -m bench.intake_cost --events 10000 --rounds 3

No broker and no consumer: parsing, fetching and the relay are left out, so its ratio is lower than
``bench.intake``'s; its use is the split. Needs PostgreSQL (as the tests find it); each round on a fresh
database. Garbage collection is set as the services set it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg

from bench.intake import traffic
from schemas.registry import REGISTRY
from services.referral import app as referral
from services.referral import store
from services.runtime import keystore, outbox, privacy
from services.runtime.app import GC_THRESHOLDS
from services.runtime.db import migrate
from services.runtime.devstack import database_for_run, ensure_postgres

STEPS: dict[str, float] = {}


def timed(owner: Any, name: str, label: str) -> None:
    """Count the CPU ``owner.name`` takes under ``label`` (nested steps count in each)."""
    original: Callable[..., Awaitable[Any]] = getattr(owner, name)

    async def step(*args: Any, **kwargs: Any) -> Any:
        started = time.process_time()
        try:
            return await original(*args, **kwargs)
        finally:
            STEPS[label] = STEPS.get(label, 0.0) + time.process_time() - started

    setattr(owner, name, step)


for owner, name, label in (
    (store, "lock_crime_files", "lock files (opens what they hold)"),
    (store, "save_crime_files", "save files (seals what they hold)"),
    (privacy.Batch, "seal_outgoing", "seal facts"),
    (keystore.KeyCache, "load", "load and make keys"),
    (keystore.KeyStore, "_make", "make keys"),
):
    timed(owner, name, label)


async def measure(server: str, events: int, encrypted: bool) -> tuple[float, dict[str, float]]:
    """CPU microseconds per event of the whole, and of each step."""
    parsed = [REGISTRY.parse(value) for _, _, value in traffic(events)]
    gc.collect()
    gc.freeze()
    async with database_for_run(server, "rj_cost") as url:
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn, "referral", "services.referral.migrations")
            await keystore.ensure_schema(conn)
            master = keystore.MasterKeys.parse(keystore.MasterKeys.generate("bench1"))
            keys = privacy.Privacy(keystore.KeyStore(master)) if encrypted else privacy.Privacy.disabled()
            privacy.install(keys)
            STEPS.clear()
            started = time.process_time()
            for at in range(0, len(parsed), 500):
                with privacy.batch_scope(keys):
                    async with conn.transaction():
                        out = await referral.take_in(conn, parsed[at : at + 500])
                        await outbox.write_outbox(conn, "referral", out)
            spent = time.process_time() - started
        finally:
            await conn.close()
            gc.unfreeze()
    per_event = 1e6 / len(parsed)
    return spent * per_event, {label: seconds * per_event for label, seconds in STEPS.items()}


async def main(events: int, rounds: int) -> None:
    gc.set_threshold(*GC_THRESHOLDS)
    server = await ensure_postgres(Path(".rj/bench"))
    results: dict[bool, list[tuple[float, dict[str, float]]]] = {False: [], True: []}
    for _ in range(rounds):
        for encrypted in (False, True):
            results[encrypted].append(await measure(server, events, encrypted))
    for encrypted, runs in results.items():
        best = min(runs, key=lambda r: r[0])
        steps = ", ".join(f"{label} {us:.0f}" for label, us in sorted(best[1].items()))
        what = "with" if encrypted else "without"
        print(f"{what} encryption: {best[0]:.0f} us of CPU an event (best of {rounds}; {steps})")
    plain = statistics.median(r[0] for r in results[False])
    sealed = statistics.median(r[0] for r in results[True])
    print(f"medians: without {plain:.0f} us, with {sealed:.0f} us an event: encryption adds {sealed - plain:.0f} us")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.events, args.rounds))
