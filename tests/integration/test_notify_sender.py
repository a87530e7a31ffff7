"""The sender's bookkeeping against the real PostgreSQL: a due message goes once and is recorded sent; a send left
``sending`` by a crash is never sent again through a channel that cannot be asked (it becomes uncertain and the
facilitator is told), and is sent exactly once through one that can, if the provider never saw it.

The channel here is a recording stand-in with the channels' interface; the real SMTP server and the GOV.UK Notify
stand-in are exercised by the channels' own tests and the end-to-end test."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from schemas import topics
from schemas.common import Channel
from services.notify import store
from services.notify.sender import Sender
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


async def compose(conn: asyncpg.Connection, row: asyncpg.Record, intent: store.SendIntent) -> str:
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
    async with pool.acquire() as conn:
        claimed = await store.claim_due(conn, ev.T0, 10)  # claimed, committed, then the process died
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
    async with pool.acquire() as conn:
        claimed = await store.claim_due(conn, ev.T0, 10)
    channel = RecordingChannel(can_look_up=True)
    channel.got.append(claimed[0]["notification_id"])  # the provider had the first before the crash
    later = datetime(2026, 3, 4, 10, 10, tzinfo=UTC)
    await sender(pool, channel, later).resolve_in_doubt()
    assert sorted(channel.got) == sorted(r["notification_id"] for r in claimed)  # the second sent now, once
    assert {r["status"] for r in await store.sends_of(pool, ev.CASE)} == {"sent"}  # type: ignore[arg-type]
