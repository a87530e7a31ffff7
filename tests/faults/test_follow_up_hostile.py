"""Hostile input on the follow-up paths, against the real PostgreSQL with scheduling's real ``take_in`` and
its real sweep: an overdue sweep racing a completion (and a second sweeper, as a second replica would run),
the same contact-attempt fact again and again, and contact-attempt facts about a case or a person nobody
knows. Every race must end in one story: an item is flagged overdue at most once, and only if the sweep
committed before the completion; nothing deadlocks; a stray fact makes no case and closes nothing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from schemas.common import Actor
from schemas.consent import CaseParticipant, ContactAttemptRecorded, ContactMethod, ContactOutcome
from schemas.envelope import CloudEvent, EventData, new_event
from schemas.referral import Role
from schemas.scheduling import CloseCase, ClosureReason, CompleteAgreementItem, ItemKind
from services.runtime.db import create_pool, migrate
from services.runtime.devstack import create_database, drop_database
from services.runtime.outbox import Outgoing
from services.runtime.privacy import Privacy, batch_scope
from services.runtime.settings import Settings
from services.scheduling import app as scheduling_app
from services.scheduling import store
from services.scheduling.domain import Agreement, AgreementItem, CaseSchedule, local_day

pytestmark = pytest.mark.integration

STAFF = Actor(kind="staff", id="staff-1")
CASES = [f"case-{n:02d}" for n in range(24)]
EARLY = 6  # cases completed before the sweepers start


@pytest.fixture
async def pool(pg_server: str) -> AsyncIterator[asyncpg.Pool]:
    name = f"rj_test_{uuid.uuid4().hex[:10]}"
    url = await create_database(pg_server, name)
    pool = await create_pool(Settings(database_url=url, db_pool_size=4))
    async with pool.acquire() as conn:
        await migrate(conn, store.SCHEMA, "services.scheduling.migrations")
    yield pool
    await pool.close()
    await drop_database(pg_server, name)


def agreed_case(case_id: str, *, due: date) -> CaseSchedule:
    """A case whose agreement (two items, the first due on ``due``, the second long after) is recorded."""
    people = (
        CaseParticipant(person_id=f"V-{case_id}", role=Role.victim, required=True),
        CaseParticipant(person_id=f"O-{case_id}", role=Role.offender, required=True),
    )
    items = (
        AgreementItem("I1", ItemKind.work, f"O-{case_id}", due),
        AgreementItem("I2", ItemKind.apology, f"O-{case_id}", due + timedelta(days=90)),
    )
    agreement = Agreement("M1", items, tuple(p.person_id for p in people), datetime.now(UTC))
    consenting = frozenset(p.person_id for p in people)
    return CaseSchedule(case_id=case_id, participants=people, consenting=consenting, agreement=agreement)


async def seed(pool: asyncpg.Pool, cases: list[CaseSchedule]) -> None:
    async with pool.acquire() as conn, conn.transaction():
        with batch_scope(Privacy.disabled()):
            await store.lock_cases(conn, [c.case_id for c in cases])
            await store.save_cases(conn, {c.case_id: c for c in cases})
            await store.watch_items(conn, {c.case_id: c for c in cases})


def envelope(data: EventData) -> CloudEvent[Any]:
    return new_event(data, source="urn:test", subject=data.case_id, event_id=str(uuid.uuid4()))  # type: ignore[attr-defined]


async def take_in(pool: asyncpg.Pool, *data: EventData) -> list[Outgoing]:
    async with pool.acquire() as conn, conn.transaction():
        with batch_scope(Privacy.disabled()):
            return await scheduling_app.take_in(conn, [envelope(d) for d in data])


async def sweep(pool: asyncpg.Pool) -> list[Outgoing]:
    async with pool.acquire() as conn, conn.transaction():
        with batch_scope(Privacy.disabled()):
            return await scheduling_app.follow_up_agreements(conn)


async def case_of(pool: asyncpg.Pool, case_id: str) -> CaseSchedule | None:
    async with pool.acquire() as conn, conn.transaction():
        with batch_scope(Privacy.disabled()):
            return (await store.lock_cases(conn, [case_id]))[case_id]


def of_type(out: list[Outgoing], event_type: str) -> list[Outgoing]:
    return [o for o in out if o.event is not None and o.event.type == event_type]


async def test_stage_6_an_overdue_sweep_racing_completions_and_a_second_sweeper_tells_one_story(
    pool: asyncpg.Pool,
) -> None:
    await seed(pool, [agreed_case(c, due=local_day(datetime.now(UTC)) - timedelta(days=5)) for c in CASES])

    head_start = asyncio.Event()  # the sweepers start once the first cases are done, then race the rest

    async def complete_each() -> list[Outgoing]:
        out: list[Outgoing] = []
        for n, case_id in enumerate(CASES):
            out += await take_in(pool, CompleteAgreementItem(case_id=case_id, actor=STAFF, item_id="I1"))
            if n == EARLY - 1:
                head_start.set()
            await asyncio.sleep(0)
        return out

    async def sweeps(n: int) -> list[Outgoing]:
        await head_start.wait()
        out: list[Outgoing] = []
        for _ in range(n):
            out += await sweep(pool)
        return out

    completed, first, second = await asyncio.gather(complete_each(), sweeps(6), sweeps(6))
    overdue = of_type(first + second, "rj.agreement-item.overdue")
    flagged = [o.key for o in overdue]
    assert len(flagged) == len(set(flagged))  # at most once per item, whichever sweeper got there
    assert not set(flagged) & set(CASES[:EARLY])  # completed before any sweep: never overdue
    assert len(of_type(completed, "rj.agreement-item.completed")) == len(CASES)
    for case_id in CASES:
        case = await case_of(pool, case_id)
        assert case is not None and case.agreement is not None
        item = case.agreement.items[0]
        assert item.completed_at is not None
        # Flagged if and only if a sweep committed before the completion; the state says which.
        assert (item.overdue_flagged_at is not None) == (case_id in flagged)
    # Every item that was due is done: nothing is left for a sweep to find, however often it runs.
    assert await sweep(pool) == []
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT case_id, item_id, flag FROM scheduling.item_watch")
    assert {(r["case_id"], r["item_id"], r["flag"]) for r in rows} == {(c, "I2", "due-soon") for c in CASES}


async def test_stage_6_repeated_and_stray_contact_attempt_facts_close_nothing_they_should_not(
    pool: asyncpg.Pool,
) -> None:
    await seed(pool, [agreed_case("known", due=local_day(datetime.now(UTC)) + timedelta(days=60))])

    def attempt(case_id: str, person_id: str, in_a_row: int) -> ContactAttemptRecorded:
        now = datetime.now(UTC)
        return ContactAttemptRecorded(
            case_id=case_id,
            person_id=person_id,
            attempted_at=now,
            method=ContactMethod.letter,
            outcome=ContactOutcome.undeliverable,
            unanswered_in_a_row=in_a_row,
            recorded_at=now,
            recorded_by=STAFF,
        )

    def close(case_id: str) -> CloseCase:
        return CloseCase(case_id=case_id, actor=STAFF, closure_reason=ClosureReason.uncontactable, reason="No reply")

    # The same fact ten times (a replay under new ids), then facts about people and a case nobody knows.
    out = await take_in(pool, *[attempt("known", "V-known", 2) for _ in range(10)])
    out += await take_in(pool, attempt("known", "stranger", 9), attempt("nowhere", "V-nowhere", 9))
    assert out == []  # taking in evidence decides nothing by itself
    # A fact about a case not known here may have overtaken the case itself (another topic): it waits in a
    # skeleton, which holds no one and can be closed by no one until the case arrives.
    stray = await case_of(pool, "nowhere")
    assert stray is not None and stray.skeleton and stray.participants == ()
    (refused,) = of_type(await take_in(pool, close("known")), "rj.command.rejected")
    assert refused.event is not None and "the most recorded is 2" in refused.event.data.reason
    (refused,) = of_type(await take_in(pool, close("nowhere")), "rj.command.rejected")
    assert refused.event is not None and refused.event.data.reason == "unknown case nowhere"

    # A fact and the close in one batch: the close sees the evidence taken in before it.
    out = await take_in(pool, attempt("known", "O-known", 3), close("known"))
    (closed,) = of_type(out, "rj.case.closed")
    assert closed.event is not None and closed.event.data.reason is ClosureReason.uncontactable
    # After the closure, more facts change nothing and the watch rows are gone.
    assert await take_in(pool, attempt("known", "O-known", 4)) == []
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM scheduling.item_watch WHERE case_id = 'known'") == 0
