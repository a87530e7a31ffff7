"""The notify service's intake under the runtime's ``BatchProcessor``, against the real PostgreSQL: what waits in
``notify.scheduled_sends``, what a withdrawal cancels, and that a replay of every event changes nothing."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from functools import partial
from typing import Any

import asyncpg
import pytest

from schemas import topics
from schemas.envelope import EventData, new_event
from schemas.registry import REGISTRY
from services.notify import app as notify_app
from services.notify import store
from services.runtime.db import create_pool, migrate
from services.runtime.devstack import create_database, drop_database
from services.runtime.processor import BatchProcessor
from services.runtime.records import Record
from services.runtime.settings import Settings
from tests.unit import notify_events as ev

pytestmark = pytest.mark.integration

FORCE = "urn:police:west-mercia:rms"
FRIDAY_22 = datetime(2026, 3, 6, 22, 0, tzinfo=UTC)
SATURDAY_9 = datetime(2026, 3, 7, 9, 0, tzinfo=UTC)


@contextlib.asynccontextmanager
async def notify_database(pg_server: str) -> AsyncIterator[asyncpg.Pool]:
    """A fresh database with notify's schema, and a pool on it."""
    name = f"rj_test_{uuid.uuid4().hex[:10]}"
    url = await create_database(pg_server, name)
    pool = await create_pool(Settings(database_url=url, db_pool_size=2))
    try:
        async with pool.acquire() as conn:
            await migrate(conn, store.SCHEMA, "services.notify.migrations")
        yield pool
    finally:
        await pool.close()
        await drop_database(pg_server, name)


@pytest.fixture
async def pool(pg_server: str) -> AsyncIterator[asyncpg.Pool]:
    async with notify_database(pg_server) as pool:
        yield pool


class Feed:
    def __init__(self) -> None:
        self.offset = 0
        self.records: list[Record] = []

    def add(self, topic: str, data: EventData, event_id: str) -> Record:
        self.offset += 1
        event = new_event(data, source="urn:test", subject=ev.CASE, event_id=event_id, force=FORCE)
        record = Record(topic, 0, self.offset, ev.CASE.encode(), event.to_json())
        self.records.append(record)
        return record


def case_up_to_victim_information(feed: Feed) -> list[Record]:
    """A case opened and accepted, its facilitator assigned and the victim's information due: what notify first
    hears of a case, and schedules the victim's and the facilitator's messages from."""
    return [
        feed.add(topics.REFERRAL, ev.opened(), "opened"),
        feed.add(topics.REFERRAL, ev.accepted(), "accepted"),
        feed.add(topics.CONSENT, ev.assigned(), "assigned"),
        feed.add(topics.REFERRAL, ev.victim_information_due(), "vi-due"),
    ]


def processor(pool: asyncpg.Pool, now: datetime) -> BatchProcessor:
    return BatchProcessor(
        service="notify",
        schema=store.SCHEMA,
        pool=pool,
        registry=REGISTRY,
        consumes=notify_app.CONSUMES,
        handler=partial(notify_app.take_in, clock=lambda: now),
        max_backoff_s=0.05,
    )


async def facts_out(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    rows = await pool.fetch(f"SELECT value FROM {store.SCHEMA}.outbox WHERE topic = $1 ORDER BY id", topics.NOTIFY)
    return [json.loads(r["value"]) for r in rows]


async def test_a_message_due_at_22_on_a_friday_waits_for_9_on_saturday_and_a_withdrawal_before_cancels_it(
    pool: asyncpg.Pool,
) -> None:
    feed = Feed()
    await processor(pool, FRIDAY_22).process(case_up_to_victim_information(feed))

    sends = {r["kind"]: r for r in await store.sends_of(pool, ev.CASE)}  # type: ignore[arg-type]
    assert set(sends) == {"victim_information", "facilitator_assigned"}
    info = sends["victim_information"]
    assert (info["status"], info["due_at"], info["channel"]) == ("waiting", SATURDAY_9, "email")
    scheduled = [f for f in await facts_out(pool) if f["type"] == "rj.notification.scheduled"]
    assert {f["data"]["kind"] for f in scheduled} == {"victim_information", "facilitator_assigned"}
    assert all("vera" not in json.dumps(f).lower() for f in scheduled)  # no address, no name in any fact

    # Saturday 08:00: the victim withdraws (a command, read before consent's fact): what waits is cancelled.
    await processor(pool, datetime(2026, 3, 7, 8, 0, tzinfo=UTC)).process(
        [feed.add(topics.COMMANDS, ev.withdraw(ev.VICTIM), "withdraw-1")]
    )
    info = next(r for r in await store.sends_of(pool, ev.CASE) if r["kind"] == "victim_information")  # type: ignore[arg-type]
    assert (info["status"], info["detail"]) == ("cancelled", "withdrawn")
    cancelled = [f for f in await facts_out(pool) if f["type"] == "rj.notification.cancelled"]
    assert [f["data"]["kind"] for f in cancelled] == ["victim_information"]
    assert cancelled[0]["data"]["reason_code"] == "withdrawn"


async def test_replaying_every_event_twice_schedules_nothing_new(pool: asyncpg.Pool) -> None:
    feed = Feed()
    case_up_to_victim_information(feed)
    feed.add(topics.SCHEDULING, ev.booked(), "booked")
    feed.add(topics.SCHEDULING, ev.closed(), "closed")
    first = processor(pool, ev.T0)
    await first.process(feed.records)
    sends = await store.sends_of(pool, ev.CASE)  # type: ignore[arg-type]
    out = await facts_out(pool)
    assert len(sends) >= 6
    # Delivered again at other offsets (a producer's retry) and again at the same ones (a redelivery).
    again = Feed()
    again.offset = 100
    for record in feed.records:
        again.records.append(Record(record.topic, 0, again.offset + record.offset, record.key, record.value))
    await processor(pool, ev.T0).process(again.records)
    await processor(pool, ev.T0).process(feed.records)
    assert await store.sends_of(pool, ev.CASE) == sends  # type: ignore[arg-type]
    assert await facts_out(pool) == out


async def test_a_batch_schedules_and_cancels_as_its_events_would_one_at_a_time(
    pool: asyncpg.Pool, pg_server: str
) -> None:
    """Intake inserts a batch's sends together: a cancel later in the same batch (the victim withdrawing while
    their message waits for the morning) still finds what the events before it scheduled, and the sends and facts
    are those of the same events taken one batch each."""
    feed = Feed()
    case_up_to_victim_information(feed)
    feed.add(topics.COMMANDS, ev.withdraw(ev.VICTIM), "withdraw-1")
    feed.add(topics.SCHEDULING, ev.booked(), "booked")
    await processor(pool, FRIDAY_22).process(feed.records)
    by_kind = {r["kind"]: r for r in await store.sends_of(pool, ev.CASE)}  # type: ignore[arg-type]
    assert (by_kind["victim_information"]["status"], by_kind["victim_information"]["detail"]) == (
        "cancelled",
        "withdrawn",
    )

    async with notify_database(pg_server) as alone:
        for record in feed.records:
            await processor(alone, FRIDAY_22).process([record])
        columns = ("notification_id", "kind", "recipient_kind", "channel", "status", "detail", "due_at", "attempt")

        async def sends(of: asyncpg.Pool) -> list[tuple[Any, ...]]:
            return [tuple(r[c] for c in columns) for r in await store.sends_of(of, ev.CASE)]  # type: ignore[arg-type]

        assert sorted(await sends(pool)) == sorted(await sends(alone))
        assert await facts_out(pool) == await facts_out(alone)
