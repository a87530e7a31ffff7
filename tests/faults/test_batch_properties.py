"""Property: whatever the batching, crashes and redeliveries, every good event is applied exactly once and in
its case's order, every bad one is dead-lettered exactly once, and nothing is skipped.

The real world is modelled, against the real PostgreSQL: a partition's log is consumed in batches of any
size; a consumer may crash after its transaction committed but before its offsets did (the batch comes
again), or replay from an older offset after a rebalance; events newer than the service wait parked
until an upgrade, which may come at any point; some records are poison, some fail only in the database.
Personal data is sealed as services seal it: some events carry a sealed value (opened before the handler
sees it), some one whose key was destroyed (applied with its stand-in), some an altered one (a dead
letter); what is parked or dead-lettered is kept sealed whole, and the handler sees plain values.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import topics
from schemas.commands import RecordVictimInformationProvided
from schemas.envelope import CloudEvent
from schemas.registry import REGISTRY, Registry
from services.runtime.db import create_pool, migrate
from services.runtime.devstack import create_database, drop_database
from services.runtime.fieldcrypt import cipher_for
from services.runtime.keystore import KeyCache, KeyStore, MasterKeys, ensure_schema
from services.runtime.outbox import Outgoing
from services.runtime.privacy import Privacy
from services.runtime.processor import BatchProcessor
from services.runtime.records import Record
from services.runtime.settings import Settings
from tests.faults.test_batch_never_skips import GiveNote, current, newer

pytestmark = pytest.mark.integration

CASES = ("case-A", "case-B", "case-C")
_schemas = itertools.count()


SECRET = "Told us by phone at 17 Larkspur Mews"


@pytest.fixture(scope="module")
async def shared_pool(pg_server: str) -> AsyncIterator[asyncpg.Pool]:
    name = f"rj_test_{uuid.uuid4().hex[:10]}"
    url = await create_database(pg_server, name)
    pool = await create_pool(Settings(database_url=url, db_pool_size=2))
    yield pool
    await pool.close()
    await drop_database(pg_server, name)


@dataclass(frozen=True)
class Sealing:
    privacy: Privacy
    reasons: dict[tuple[str, str], str]  # (kind, case) -> the sealed ``reason`` an event of that kind carries


@pytest.fixture(scope="module")
async def sealing(shared_pool: asyncpg.Pool) -> Sealing:
    """A key store with, on each case, a live key (person V) and a destroyed one (person E)."""
    store = KeyStore(MasterKeys.parse(MasterKeys.generate("p1")))
    reasons = {}
    async with shared_pool.acquire() as conn:
        await ensure_schema(conn)
        keys = KeyCache(store)
        cipher = cipher_for(RecordVictimInformationProvided)
        for case in CASES:
            for person, kind in (("V", "sealed"), ("E", "erased")):
                data = {"case_id": case, "person_id": person, "reason": SECRET}
                pending = cipher.prepare_encrypt(data, case)
                await keys.load(conn, pairs=pending.owners)
                reasons[(kind, case)] = pending.seal(keys)["reason"]
            await store.destroy(conn, "E", case, by="test", reason="erasure")
            head, _, body = reasons[("sealed", case)].rpartition(":")
            reasons[("tampered", case)] = f"{head}:{body[:-4]}AAAA"
    return Sealing(Privacy(store), reasons)


@dataclass(frozen=True)
class Entry:
    # good | newer | poison | nul (parses, then PostgreSQL refuses it) | sealed (a sealed reason) |
    # erased (sealed under a destroyed key) | tampered (a sealed value altered)
    kind: str
    case: str


APPLIED = ("good", "newer", "sealed", "erased")
DEAD = ("poison", "nul", "tampered")

entries = st.lists(
    st.builds(
        Entry,
        st.sampled_from(["good"] * 4 + ["newer", "poison", "nul", "sealed", "sealed", "erased", "tampered"]),
        st.sampled_from(CASES),
    ),
    min_size=1,
    max_size=40,
)


def build_log(log: Sequence[Entry], sealing: Sealing) -> list[Record]:
    records = []
    for offset, entry in enumerate(log):
        event_id = f"e{offset}"
        key = entry.case.encode()
        if entry.kind == "good":
            value: bytes = current(event_id, entry.case)
        elif entry.kind in ("sealed", "erased", "tampered"):
            value = current(event_id, entry.case, reason=sealing.reasons[(entry.kind, entry.case)])
        elif entry.kind == "newer":
            value = newer(event_id, entry.case)
        elif entry.kind == "nul":
            value = current(event_id, entry.case + "\x00")
        else:
            value = b"\xff not an event " + event_id.encode()
        records.append(Record(topics.COMMANDS, 0, offset, key, value))
    return records


class RecordingHandler:
    """Applies events by writing them to a table in the batch's transaction (so a rolled-back batch
    leaves no trace), keyed by the subject as a real service keys its state."""

    def __init__(self, schema: str) -> None:
        self.schema = schema

    async def __call__(self, conn: asyncpg.Connection, events: Sequence[CloudEvent[Any]]) -> list[Outgoing]:
        await conn.executemany(
            f"INSERT INTO {self.schema}.applied (event_id, subject, reason) VALUES ($1, $2, $3)",
            [(e.id, e.subject, getattr(e.data, "reason", None)) for e in events],
        )
        return []


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(log=entries, data=st.data())
async def test_any_batching_crashes_and_replays_apply_each_good_event_once_in_its_cases_order(
    shared_pool: asyncpg.Pool, sealing: Sealing, log: list[Entry], data: st.DataObject
) -> None:
    schema = f"prop_{next(_schemas)}_{uuid.uuid4().hex[:6]}"
    async with shared_pool.acquire() as conn:
        await migrate(conn, schema, None)
        await conn.execute(
            f"""CREATE TABLE {schema}.applied (seq bigserial PRIMARY KEY, event_id text NOT NULL,
                                              subject text NOT NULL, reason text)"""
        )
    records = build_log(log, sealing)
    upgraded = Registry([m for t, m in REGISTRY.models.items() if t != GiveNote.event_type] + [GiveNote])
    upgraded.upcaster(GiveNote.event_type, 1)(lambda d: {**d, "note": ""})
    consumes = frozenset({GiveNote.event_type})

    def service(registry: Registry) -> BatchProcessor:
        return BatchProcessor(
            service="referral",
            schema=schema,
            pool=shared_pool,
            registry=registry,
            consumes=consumes,
            handler=RecordingHandler(schema),
            max_backoff_s=0.01,
            privacy=sealing.privacy,
        )

    processor, is_upgraded = service(REGISTRY), False
    committed = 0  # the consumer group's committed offset
    while committed < len(records):
        size = data.draw(st.integers(1, 8), label="batch size")
        batch = records[committed : committed + size]
        await processor.process(batch)
        fate = data.draw(st.sampled_from(["commit"] * 4 + ["crash", "rewind"]), label="then")
        if fate == "commit":
            committed += len(batch)
        elif fate == "rewind":  # a rebalance: the new owner starts from an older commit
            committed = data.draw(st.integers(0, committed), label="rewound to")
        # "crash": the transaction committed, the offsets did not: the same batch comes again
        if not is_upgraded and data.draw(st.booleans(), label="upgrade now"):
            processor, is_upgraded = service(upgraded), True
            await processor.release_parked()
        elif data.draw(st.integers(0, 4), label="release tick") == 0:
            await processor.release_parked()
    if not is_upgraded:
        processor = service(upgraded)
    while await processor.release_parked(limit=3):
        pass

    applied = await shared_pool.fetch(f"SELECT event_id, subject, reason FROM {schema}.applied ORDER BY seq")
    letters = await shared_pool.fetch(f'SELECT "offset", original FROM {schema}.dead_letters ORDER BY "offset"')
    parked = await shared_pool.fetchval(f"SELECT count(*) FROM {schema}.parked")

    expected_applied = [(f"e{i}", e.case) for i, e in enumerate(log) if e.kind in APPLIED]
    expected_dead = [i for i, e in enumerate(log) if e.kind in DEAD]
    got = [(r["event_id"], r["subject"]) for r in applied]
    assert sorted(got) == sorted(expected_applied), "each good event applied exactly once"
    for case in CASES:  # and in the order its case's events came
        assert [g for g in got if g[1] == case] == [x for x in expected_applied if x[1] == case]
    assert [r["offset"] for r in letters] == expected_dead, "each bad record dead-lettered exactly once"
    assert parked == 0
    # The handler saw sealed values opened, erased ones as their stand-in; letters are sealed whole.
    kinds = {f"e{i}": e.kind for i, e in enumerate(log)}
    for row in applied:
        assert row["reason"] == (SECRET if kinds[row["event_id"]] == "sealed" else None), row
    for row in letters:
        assert b"enc:v1:" not in row["original"] and b"by phone" not in row["original"]
