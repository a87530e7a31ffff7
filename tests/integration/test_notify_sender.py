"""The sender's bookkeeping against the real PostgreSQL: a due message goes once and is recorded sent; a send left
``sending`` by a crash is never sent again through a channel that cannot be asked (it becomes uncertain and the
facilitator is told), and is sent exactly once through one that can, if the provider never saw it.

The channel here is a recording stand-in with the channels' interface; the real SMTP server and the GOV.UK Notify
stand-in are exercised by the channels' own tests and the end-to-end test."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from schemas import topics
from schemas.common import Channel
from services.notify import store
from services.notify.sender import Sender, run
from services.runtime.db import create_pool, migrate
from services.runtime.devstack import create_database, drop_database
from services.runtime.settings import Settings
from tests.integration.test_notify_intake import Feed, facts_out, pool, processor  # noqa: F401
from tests.unit import notify_events as ev

pytestmark = pytest.mark.integration


class CannotLookUp(Exception):
    pass


@dataclass(frozen=True)
class Answer:
    outcome: str
    provider_id: str | None = None
    detail: str = ""
    retry_after_s: float | None = None


@dataclass
class RecordingChannel:
    can_look_up: bool
    got: list[str] = field(default_factory=list)

    async def send(self, message: Any) -> Answer:
        self.got.append(message)
        return Answer("sent", provider_id=f"p-{message}")

    async def lookup(self, notification_id: str) -> Answer | None:
        if not self.can_look_up:
            raise CannotLookUp
        return Answer("sent", provider_id=f"p-{notification_id}") if notification_id in self.got else None


async def compose(conn: asyncpg.Connection, row: asyncpg.Record, intent: store.SendIntent, case: object) -> str:
    return str(row["notification_id"])


async def prepared(db: asyncpg.Pool) -> None:
    feed = Feed()
    await processor(db, ev.T0).process(
        [
            feed.add(topics.REFERRAL, ev.opened(), "opened"),
            feed.add(topics.REFERRAL, ev.accepted(), "accepted"),
            feed.add(topics.CONSENT, ev.assigned(), "assigned"),
            feed.add(topics.REFERRAL, ev.victim_information_due(), "vi-due"),
        ]
    )


def sender(db: asyncpg.Pool, channel: RecordingChannel, now: datetime) -> Sender:
    return Sender(db, {Channel.email: channel}, compose, clock=lambda: now, cannot_look_up=(CannotLookUp,))


async def handed_to_channel(db: asyncpg.Pool, claimer: int | None = None) -> list[asyncpg.Record]:
    """Claim every due send at T0 and mark each started: a sender that called its channels, then died."""
    async with db.acquire() as conn:
        claimed = await store.claim_due(conn, ev.T0, 10, claimer)
        for row in claimed:
            await store.mark_started(conn, row["notification_id"], ev.T0)
    return claimed


async def test_a_due_message_is_sent_once_and_recorded(pool: asyncpg.Pool) -> None:  # noqa: F811
    await prepared(pool)
    channel = RecordingChannel(can_look_up=False)
    assert await sender(pool, channel, ev.T0).send_due() == 2
    assert await sender(pool, channel, ev.T0).send_due() == 0
    assert len(channel.got) == 2
    assert {r["status"] for r in await store.sends_of(pool, ev.CASE)} == {"sent"}  # type: ignore[arg-type]
    sent = [f for f in await facts_out(pool) if f["type"] == "rj.notification.sent"]
    assert len(sent) == 2


async def test_a_send_in_doubt_on_a_channel_that_cannot_be_asked_is_marked_uncertain_and_never_repeated(
    pool: asyncpg.Pool,  # noqa: F811
) -> None:
    await prepared(pool)
    claimed = await handed_to_channel(pool)  # claimed, committed, handed to the channel, then it died
    assert len(claimed) == 2
    channel = RecordingChannel(can_look_up=False)
    later = ev.T0 + timedelta(minutes=10)
    assert await sender(pool, channel, later).resolve_in_doubt() == 2
    assert channel.got == []
    rows = {r["kind"]: r["status"] for r in await store.sends_of(pool, ev.CASE)}  # type: ignore[arg-type]
    assert rows["victim_information"] == "uncertain"
    assert rows["facilitator_delivery_problem"] == "waiting"  # the facilitator is told, at once
    uncertain = [f for f in await facts_out(pool) if f["type"] == "rj.notification.uncertain"]
    assert len(uncertain) == 2


async def test_a_send_in_doubt_on_a_channel_that_can_be_asked_goes_once(pool: asyncpg.Pool) -> None:  # noqa: F811
    await prepared(pool)
    claimed = await handed_to_channel(pool)
    channel = RecordingChannel(can_look_up=True)
    channel.got.append(claimed[0]["notification_id"])  # the provider had the first before the crash
    later = datetime(2026, 3, 4, 10, 10, tzinfo=UTC)
    await sender(pool, channel, later).resolve_in_doubt()
    assert sorted(channel.got) == sorted(r["notification_id"] for r in claimed)  # the second sent now, once
    assert {r["status"] for r in await store.sends_of(pool, ev.CASE)} == {"sent"}  # type: ignore[arg-type]


@pytest.fixture
async def database(pg_server: str) -> AsyncIterator[tuple[asyncpg.Pool, str]]:
    """A migrated database, its pool and its URL (the sender's loop opens its own lock connection)."""
    name = f"rj_test_{uuid.uuid4().hex[:10]}"
    url = await create_database(pg_server, name)
    db = await create_pool(Settings(database_url=url, db_pool_size=4))
    async with db.acquire() as conn:
        await migrate(conn, store.SCHEMA, "services.notify.migrations")
    yield db, url
    await db.close()
    await drop_database(pg_server, name)


async def statuses(db: asyncpg.Pool) -> dict[str, str]:
    return {r["notification_id"]: r["status"] for r in await store.sends_of(db, ev.CASE)}  # type: ignore[arg-type]


async def test_sends_left_sending_by_a_dead_process_are_in_doubt_at_start_up_but_a_live_replicas_are_never_taken(
    database: tuple[asyncpg.Pool, str],
) -> None:
    db, url = database
    await prepared(db)
    replica_a = await asyncpg.connect(url)  # a sender process: its lock lives as long as this connection
    a_id = await store.hold_sender_id(replica_a)
    claimed = [r["notification_id"] for r in await handed_to_channel(db, a_id)]  # A's channel was called
    assert len(claimed) == 2
    channel = RecordingChannel(can_look_up=False)
    soon = ev.T0 + timedelta(seconds=1)  # far inside the lease: only the claimer's lock can say it is gone

    replica_b_conn = await asyncpg.connect(url)
    replica_b = sender(db, channel, soon)
    replica_b.claimer = await store.hold_sender_id(replica_b_conn)
    assert replica_b.claimer != a_id
    assert await replica_b.resolve_in_doubt() == 0  # A is alive: its sends in flight stay its own
    async with db.acquire() as conn:  # B's own sends in flight are not in doubt to B either
        assert await store.claim_in_doubt(conn, soon - replica_b.lease, 10, replica_b.claimer) == []
    assert set((await statuses(db)).values()) == {"sending"}

    await replica_a.close()  # A dies; its session ends and its lock with it
    for _ in range(200):
        held = await db.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = $1 AND objid = $2",
            store.SENDER_LOCK_SPACE,
            a_id,
        )
        if held == 0:
            break
        await asyncio.sleep(0.02)

    restarted = sender(db, channel, soon)  # a new process starts: its first pass finds A's rows in doubt
    loop = asyncio.create_task(run(restarted, url, poll_interval_s=60))
    try:
        for _ in range(500):
            now_status = await statuses(db)
            if all(now_status[n] != "sending" for n in claimed):
                break
            await asyncio.sleep(0.02)
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        await replica_b_conn.close()
    now_status = await statuses(db)
    assert {now_status[n] for n in claimed} == {"uncertain"}  # never sent again, never dropped
    assert not set(claimed) & set(channel.got)
    uncertain = [f for f in await facts_out(db) if f["type"] == "rj.notification.uncertain"]
    assert len(uncertain) == 2


async def test_a_send_claimed_but_never_handed_to_its_channel_is_not_in_doubt_and_goes_once(
    pool: asyncpg.Pool,  # noqa: F811
) -> None:
    """A process that died after claiming but before calling the channel (a send is marked started, and that
    committed, before the channel is called) cannot have sent anything: the next sender sends it, even on a channel
    that cannot be asked, rather than give it up as uncertain."""
    await prepared(pool)
    async with pool.acquire() as conn:
        claimed = await store.claim_due(conn, ev.T0, 10)
    channel = RecordingChannel(can_look_up=False)
    next_sender = sender(pool, channel, ev.T0 + timedelta(minutes=10))
    next_sender.claimer = 424242  # a sender process has an id of its own (its lock is not needed here)
    assert await next_sender.resolve_in_doubt() == 2
    assert sorted(channel.got) == sorted(r["notification_id"] for r in claimed)
    assert {r["status"] for r in await store.sends_of(pool, ev.CASE)} == {"sent"}  # type: ignore[arg-type]


async def test_a_send_past_its_lease_that_this_process_still_runs_is_never_taken_as_in_doubt(
    pool: asyncpg.Pool,  # noqa: F811
) -> None:
    """The sender runs sends continuously: a send of its own still waiting on its channel past the lease is
    ``busy``, and its own pass over sends in doubt leaves it alone (taking it could send it twice)."""
    await prepared(pool)
    claimed = await handed_to_channel(pool)
    channel = RecordingChannel(can_look_up=True)
    late = ev.T0 + timedelta(hours=1)
    busy = [claimed[0]["notification_id"]]
    assert await sender(pool, channel, late).resolve_in_doubt(busy=busy) == 1
    assert channel.got == [claimed[1]["notification_id"]]
    assert (await statuses(pool))[busy[0]] == "sending"
