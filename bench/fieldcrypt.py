"""Field encryption cost per event: a typical ``rj.case.opened`` (a victim and an offender, as referral opens
it from the sample upstream traffic), encrypted and decrypted with a warm per-batch key cache, beside the
time pydantic takes to validate the same payload (the work intake does on every event anyway).

    .venv/bin/python -m bench.fieldcrypt --events 500 --rounds 20

Also timed: loading a batch's keys from the key store (one query; existing keys, a case per event), the
cost a batch pays once. Needs PostgreSQL (as the tests find it); creates and drops its own database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from demo import samples
from schemas.referral import CaseOpened, Participant, ReferralRoute, Role
from services.runtime.devstack import database_for_run, ensure_postgres
from services.runtime.fieldcrypt import cipher_for, decrypt_batch, encrypt_batch
from services.runtime.keystore import KeyCache, KeyStore, MasterKeys, ensure_schema


def case_opened(n: int) -> CaseOpened:
    ref = f"BN/2026/{n:07d}"
    victim = samples.victim(f"V-{ref}")
    offender = samples.outcome_recorded(ref, in_custody=True).offender
    return CaseOpened(
        case_id=f"case-{n:07d}",
        crime_reference=ref,
        offence=samples.crime_recorded(ref).offence,
        participants=[
            Participant(
                person_id=victim.person_id,
                role=Role.victim,
                required=True,
                name=victim.name,
                date_of_birth=victim.date_of_birth,
                contact=victim.contact,
                preferred_channel=victim.preferred_channel,
            ),
            Participant(
                person_id=offender.person_id,
                role=Role.offender,
                required=True,
                name=offender.name,
                date_of_birth=offender.date_of_birth,
                contact=offender.contact,
                in_custody=offender.in_custody,
                custody_location=offender.custody_location,
            ),
        ],
        routes=[ReferralRoute(route="admitted_outcome", person_id=offender.person_id)],
        opened_at=datetime.now(UTC),
        opened_by=samples.STAFF,
    )


def per_event_us(fn: Any, events: int, rounds: int) -> float:
    """Median over rounds of one pass over the batch, in microseconds per event."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) / events * 1e6)
    return statistics.median(times)


async def main(events: int, rounds: int) -> None:
    server = await ensure_postgres(Path(".rj/bench"))
    async with database_for_run(server, "rj_bench_crypt") as url:
        conn = await asyncpg.connect(url)
        try:
            await ensure_schema(conn)
            store = KeyStore(MasterKeys.parse(MasterKeys.generate("v1")))
            payloads = [case_opened(n) for n in range(events)]
            documents = [p.model_dump(mode="json") for p in payloads]
            raw = [json.dumps(d).encode() for d in documents]
            items = [(CaseOpened, d, d["case_id"]) for d in documents]
            await encrypt_batch(conn, KeyCache(store), items)  # the keys exist from now on

            load_ms = []
            for _ in range(rounds):
                cache = KeyCache(store)
                start = time.perf_counter()
                encrypted = await encrypt_batch(conn, cache, items)
                load_ms.append((time.perf_counter() - start) * 1e3)
            encrypted_raw = [json.dumps(d).encode() for d in encrypted]

            cache = KeyCache(store)  # warm: every key of the batch loaded
            await decrypt_batch(conn, cache, [(CaseOpened, d) for d in encrypted])
            cipher = cipher_for(CaseOpened)

            def validate() -> None:
                for r in raw:
                    CaseOpened.model_validate_json(r)

            def encrypt() -> None:
                for d in documents:
                    cipher.encrypt(d, d["case_id"], cache)

            def decrypt() -> None:
                for d in encrypted:
                    cipher.decrypt(d, cache)

            def round_trip() -> None:
                for d in documents:
                    cipher.decrypt(cipher.encrypt(d, d["case_id"], cache), cache)

            validate_us = per_event_us(validate, events, rounds)
            encrypt_us = per_event_us(encrypt, events, rounds)
            decrypt_us = per_event_us(decrypt, events, rounds)
            both_us = per_event_us(round_trip, events, rounds)
        finally:
            await conn.close()

    plain, sealed = statistics.mean(map(len, raw)), statistics.mean(map(len, encrypted_raw))
    print(f"rj.case.opened, 2 participants, 7 personal values; batches of {events}, median of {rounds} rounds")
    print(f"payload size: {plain:.0f} bytes plain, {sealed:.0f} bytes encrypted")
    print(f"pydantic validate (model_validate_json):  {validate_us:7.1f} us/event")
    print(f"encrypt, warm cache:                      {encrypt_us:7.1f} us/event")
    print(f"decrypt, warm cache:                      {decrypt_us:7.1f} us/event")
    print(f"encrypt + decrypt, warm cache:            {both_us:7.1f} us/event")
    print(
        f"batch incl. one key-store query ({2 * events} existing keys): median "
        f"{statistics.median(load_ms):.1f} ms per batch = {statistics.median(load_ms) * 1e3 / events:.1f} us/event"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main(args.events, args.rounds))
