"""The batch processor's own guarantees, against the real PostgreSQL (the services' handlers are idempotent
by themselves, so these pin the runtime down directly)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import pytest

from demo import samples
from schemas import topics
from schemas.envelope import CloudEvent
from schemas.registry import REGISTRY
from services.runtime.db import create_pool, migrate
from services.runtime.devstack import create_database, drop_database
from services.runtime.outbox import Outgoing
from services.runtime.processor import BatchProcessor
from services.runtime.records import Record
from services.runtime.settings import Settings

pytestmark = pytest.mark.integration

SCHEMA = "probe"


@pytest.fixture
async def pool(pg_server: str) -> AsyncIterator[asyncpg.Pool]:
    name = f"rj_test_{uuid.uuid4().hex[:10]}"
    url = await create_database(pg_server, name)
    pool = await create_pool(Settings(database_url=url, db_pool_size=2))
    async with pool.acquire() as conn:
        await migrate(conn, SCHEMA, None)  # the runtime's tables only: the probe has none of its own
    yield pool
    await pool.close()
    await drop_database(pg_server, name)


class CountingHandler:
    """Records every event it is given; fails as told."""

    def __init__(self) -> None:
        self.applied: list[str] = []
        self.poison: set[str] = set()
        self.transient_failures = 0

    async def __call__(self, conn: asyncpg.Connection, events: Sequence[CloudEvent[Any]]) -> list[Outgoing]:
        if self.transient_failures:
            self.transient_failures -= 1
            raise ConnectionResetError("the database went away")
        for event in events:
            if event.id in self.poison:
                raise ValueError(f"cannot apply {event.id}")
        self.applied += [e.id for e in events]
        return [Outgoing(event_id=f"out-{e.id}", topic=topics.REFERRAL, key=e.subject, value=b"{}") for e in events]


def records(n: int, start: int = 0) -> list[Record]:
    return [
        Record(
            topics.CRIME_EVENTS,
            0,
            start + i,
            b"k",
            samples.upstream_event(samples.crime_recorded(f"WM/{i}"), event_id=f"e{i}"),
        )
        for i in range(n)
    ]


def processor(pool: asyncpg.Pool, handler: CountingHandler) -> BatchProcessor:
    return BatchProcessor(
        service="probe",
        schema=SCHEMA,
        pool=pool,
        registry=REGISTRY,
        consumes=frozenset({"crime.recorded"}),
        handler=handler,
        max_backoff_s=0.05,
    )


async def outbox(pool: asyncpg.Pool) -> list[tuple[str, str]]:
    rows = await pool.fetch(f"SELECT event_id, topic FROM {SCHEMA}.outbox ORDER BY id")
    return [(r["event_id"], r["topic"]) for r in rows]


async def test_a_redelivered_batch_and_a_repeat_within_a_batch_are_applied_once(pool: asyncpg.Pool) -> None:
    handler = CountingHandler()
    batch = records(5)
    await processor(pool, handler).process([*batch, batch[0]])
    await processor(pool, handler).process(batch)  # redelivered after a crash before the offsets were committed

    assert handler.applied == ["e0", "e1", "e2", "e3", "e4"]
    assert [e for e, _ in await outbox(pool)] == [f"out-e{i}" for i in range(5)]


async def test_an_event_that_can_never_be_applied_is_dead_lettered_and_the_rest_of_its_batch_applied(
    pool: asyncpg.Pool,
) -> None:
    handler = CountingHandler()
    handler.poison = {"e2"}
    await processor(pool, handler).process(records(5))

    assert handler.applied == ["e0", "e1", "e3", "e4"]
    rows = await outbox(pool)
    assert ("out-e2", topics.REFERRAL) not in rows
    (letter,) = await pool.fetch(f"SELECT value FROM {SCHEMA}.outbox WHERE topic = $1", topics.DEADLETTER)
    body = json.loads(letter["value"])
    assert body["event_id"] == "e2" and "ValueError: cannot apply e2" in body["reason"]
    # It is recorded as handled: a redelivery does not try it again.
    handler.poison = set()
    await processor(pool, handler).process(records(5))
    assert "e2" not in handler.applied


async def test_a_transient_failure_is_retried_until_it_passes_and_nothing_is_skipped(pool: asyncpg.Pool) -> None:
    handler = CountingHandler()
    handler.transient_failures = 3
    await processor(pool, handler).process(records(4))

    assert handler.applied == ["e0", "e1", "e2", "e3"]
    assert await pool.fetchval(f"SELECT count(*) FROM {SCHEMA}.outbox WHERE topic = $1", topics.DEADLETTER) == 0


async def test_events_of_types_the_service_does_not_consume_are_skipped_not_dead_lettered(pool: asyncpg.Pool) -> None:
    handler = CountingHandler()
    other = Record(topics.CRIME_EVENTS, 0, 99, b"k", samples.upstream_event(samples.outcome_recorded("WM/1")))
    await processor(pool, handler).process([other, *records(1)])

    assert handler.applied == ["e0"]
    assert await pool.fetchval(f"SELECT count(*) FROM {SCHEMA}.outbox WHERE topic = $1", topics.DEADLETTER) == 0
