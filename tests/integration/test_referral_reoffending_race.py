"""Two referral replicas race on one offender: one commits a case's closure (rj.scheduling, keyed by the case)
while another commits a later outcome naming its offender (crime.events, keyed by the crime reference). Each
transaction runs the real ``take_in`` against PostgreSQL; the second starts before the first commits. Whichever
commits first, the reoffence is recorded, once: both paths serialise on the offender before reading the index."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from demo import samples
from schemas.common import Actor
from schemas.envelope import CloudEvent, new_event
from schemas.referral import case_id_for
from schemas.registry import REGISTRY
from schemas.scheduling import CaseClosed, ClosureReason
from services.referral import app as referral_app
from services.runtime import db
from services.runtime.devstack import create_database, drop_database
from services.runtime.outbox import Outgoing
from services.runtime.privacy import Privacy, batch_scope
from services.runtime.settings import Settings

pytestmark = pytest.mark.integration

REF, LATER, OFFENDER = "WM/2026/007001", "WM/2026/007002", "O-7001"
CASE = case_id_for(samples.UPSTREAM_SOURCE, REF)


@pytest.fixture
async def pool(pg_server: str) -> AsyncIterator[asyncpg.Pool]:
    name = f"rj_test_{uuid.uuid4().hex[:10]}"
    url = await create_database(pg_server, name)
    pool = await db.create_pool(Settings(database_url=url, db_pool_size=3))
    async with pool.acquire() as conn:
        await db.migrate(conn, "referral", "services.referral.migrations")
    yield pool
    await pool.close()
    await drop_database(pg_server, name)


def upstream(*payloads: Any) -> list[CloudEvent[Any]]:
    return [REGISTRY.parse(samples.upstream_event(p)) for p in payloads]


async def take_in(conn: asyncpg.Connection, events: list[CloudEvent[Any]]) -> list[Outgoing]:
    with batch_scope(Privacy.disabled()):
        return await referral_app.take_in(conn, events)


def reoffences(sent: list[Outgoing]) -> list[tuple[str, str]]:
    facts = [o.event for o in sent if o.event is not None and o.event.type == "rj.case.reoffence-recorded"]
    return [(e.subject, e.data.later_crime_reference) for e in facts]


@pytest.mark.parametrize("first", ["closure", "outcome"])
async def test_a_closure_and_a_later_outcome_committed_at_once_record_the_reoffence_once(
    pool: asyncpg.Pool, first: str
) -> None:
    async with pool.acquire() as conn, conn.transaction():  # the case, accepted
        await take_in(conn, upstream(samples.crime_recorded(REF), samples.outcome_recorded(REF, offender=OFFENDER)))
    now = datetime.now(UTC)
    closed = CaseClosed(
        case_id=CASE, reason=ClosureReason.completed, closed_at=now, closed_by=Actor(kind="staff", id="f-1")
    )
    closure = [new_event(closed, source="urn:rj:service:scheduling", subject=CASE)]
    outcome = upstream(
        samples.crime_recorded(LATER, reported_at=now), samples.outcome_recorded(LATER, offender=OFFENDER)
    )
    batches = {"closure": closure, "outcome": outcome}
    second = "outcome" if first == "closure" else "closure"

    async with pool.acquire() as one, pool.acquire() as two:
        tx_one, tx_two = one.transaction(), two.transaction()
        await tx_one.start()
        sent = await take_in(one, batches[first])  # done, not yet committed
        await tx_two.start()
        racing = asyncio.create_task(take_in(two, batches[second]))
        await asyncio.sleep(0.5)  # the second reads the index now, unless it waits for the first
        await tx_one.commit()
        sent += await asyncio.wait_for(racing, timeout=10)
        await tx_two.commit()

    assert reoffences(sent) == [(CASE, LATER)]
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT reoffences FROM referral.ended_cases WHERE case_id = $1", CASE) == [LATER]
