"""The processor's privacy plumbing against the real PostgreSQL, at the seams a running service rarely shows:
keys made by an attempt that rolled back, and parked events that can no longer be opened."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import pytest

from schemas import topics
from schemas.commands import RecordVictimInformationProvided
from schemas.envelope import CloudEvent
from schemas.registry import REGISTRY
from services.runtime import privacy
from services.runtime.db import create_pool, migrate
from services.runtime.devstack import create_database, drop_database
from services.runtime.fieldcrypt import cipher_for
from services.runtime.keystore import KeyCache, KeyStore, MasterKeys, ensure_schema
from services.runtime.outbox import Outgoing
from services.runtime.privacy import Privacy
from services.runtime.processor import BatchProcessor, parked_context
from services.runtime.records import Record
from services.runtime.settings import Settings
from tests.faults.test_batch_never_skips import current, newer

pytestmark = pytest.mark.integration

SCHEMA = "sealing"
SECRET = "Lives with her sister at 4 Orchard Row"


@pytest.fixture
async def pool(pg_server: str) -> AsyncIterator[asyncpg.Pool]:
    name = f"rj_test_{uuid.uuid4().hex[:10]}"
    url = await create_database(pg_server, name)
    pool = await create_pool(Settings(database_url=url, db_pool_size=2))
    async with pool.acquire() as conn:
        await migrate(conn, SCHEMA, None)
        await ensure_schema(conn)
        await conn.execute(f"CREATE TABLE {SCHEMA}.kept (event_id text PRIMARY KEY, document jsonb NOT NULL)")
    yield pool
    await pool.close()
    await drop_database(pg_server, name)


class SealThenFail:
    """Seals each command's reason into its own table (making the person's key on the case in the batch's
    transaction), then fails the first attempt after that: the key it made is rolled back with it."""

    def __init__(self) -> None:
        self.attempts = 0

    async def __call__(self, conn: asyncpg.Connection, events: Sequence[CloudEvent[Any]]) -> list[Outgoing]:
        self.attempts += 1
        model = RecordVictimInformationProvided
        documents = [({**e.data.model_dump(mode="json"), "reason": SECRET}, e.subject or "") for e in events]
        sealed = await privacy.batch().seal_documents(conn, model, documents)
        await conn.executemany(
            f"INSERT INTO {SCHEMA}.kept (event_id, document) VALUES ($1, $2::jsonb)",
            [(e.id, json.dumps(d)) for e, d in zip(events, sealed, strict=True)],
        )
        if self.attempts == 1:
            raise RuntimeError("the connection dropped after the keys were made (transient: retried)")
        return []


def processor(pool: asyncpg.Pool, store: KeyStore, handler: Any) -> BatchProcessor:
    return BatchProcessor(
        service="referral",
        schema=SCHEMA,
        pool=pool,
        registry=REGISTRY,
        consumes=frozenset({RecordVictimInformationProvided.event_type}),
        handler=handler,
        max_backoff_s=0.01,
        privacy=Privacy(store),
    )


async def test_a_retried_batch_makes_its_keys_again_so_what_it_sealed_opens(pool: asyncpg.Pool) -> None:
    store = KeyStore(MasterKeys.parse(MasterKeys.generate("r1")))
    handler = SealThenFail()
    records = [Record(topics.COMMANDS, 0, i, f"case-{i}".encode(), current(f"e{i}", f"case-{i}")) for i in range(3)]

    await processor(pool, store, handler).process(records)

    assert handler.attempts == 2
    rows = await pool.fetch(f"SELECT event_id, document::text AS document FROM {SCHEMA}.kept ORDER BY event_id")
    assert [r["event_id"] for r in rows] == ["e0", "e1", "e2"]
    async with pool.acquire() as conn:
        keys = KeyCache(store)
        for row in rows:
            document = json.loads(row["document"])
            assert SECRET not in row["document"]
            pending = cipher_for(RecordVictimInformationProvided).prepare_decrypt(document)
            await keys.load(conn, key_ids=pending.key_ids)
            assert pending.open(keys).data["reason"] == SECRET  # its key is the one that was committed


async def test_a_parked_event_that_cannot_be_opened_becomes_a_dead_letter_and_the_rest_are_released(
    pool: asyncpg.Pool,
) -> None:
    store = KeyStore(MasterKeys.parse(MasterKeys.generate("r2")))
    applied: list[str] = []

    async def handler(conn: asyncpg.Connection, events: Sequence[CloudEvent[Any]]) -> list[Outgoing]:
        applied.extend(e.id for e in events)
        return []

    service = processor(pool, store, handler)
    # Two cases wait for an upgrade; one's sealed bytes are then altered in the table.
    await service.process(
        [
            Record(topics.COMMANDS, 0, 0, b"case-A", newer("a1", "case-A")),
            Record(topics.COMMANDS, 0, 1, b"case-B", newer("b1", "case-B")),
        ]
    )
    rows = await pool.fetch(f'SELECT seq, case_key, "offset", value FROM {SCHEMA}.parked ORDER BY seq')
    assert [r["case_key"] for r in rows] == ["case-A", "case-B"]
    assert all(b"rj.victim-information" not in r["value"] for r in rows), "parked sealed whole"
    altered = bytearray(rows[0]["value"])
    altered[-1] ^= 1
    await pool.execute(f"UPDATE {SCHEMA}.parked SET value = $1 WHERE seq = $2", bytes(altered), rows[0]["seq"])
    # The other is still what was parked: it opens.
    b = Record(topics.COMMANDS, 0, 1, b"case-B", None)
    async with pool.acquire() as conn:
        opened = await Privacy(store).new_batch().open_bytes(conn, rows[1]["value"], parked_context(b))
    assert opened is not None and b'"b1"' in opened

    released = await service.release_parked()  # never raises: the altered one is let go as a dead letter

    assert released == 1
    assert await pool.fetchval(f"SELECT case_key FROM {SCHEMA}.parked") == "case-B", "still waits for the upgrade"
    assert applied == []
    letter = await pool.fetchrow(f'SELECT "offset", reason FROM {SCHEMA}.dead_letters')
    assert letter["offset"] == 0 and "a parked event that cannot be opened" in letter["reason"]
