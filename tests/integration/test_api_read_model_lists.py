"""A facilitator's case lists against the real PostgreSQL (migration 004 keeps each assignment's copy of its case's
updated_at and status, which these lists walk): every page in order, by status, and a case that changes moves to
the top of its facilitator's list and into its new status at once."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
from pydantic import SecretStr

from bench.api_reads import case_facts, facilitator_of, force_of
from schemas.common import Actor
from schemas.envelope import new_event
from schemas.scheduling import CaseClosed, ClosureReason
from services.api import queries, readmodel
from services.runtime import privacy
from services.runtime.db import create_pool, migrate, transaction
from services.runtime.devstack import create_database, drop_database
from services.runtime.keystore import MasterKeys, ensure_schema
from services.runtime.privacy import Privacy, batch_scope
from services.runtime.settings import Settings

pytestmark = pytest.mark.integration

SETTINGS = Settings(master_keys=SecretStr(MasterKeys.generate("t1")))
FACILITATOR = facilitator_of(0)
CASES = range(0, 40 * 12, 40)  # twelve cases of the same force, each (if assigned) to FACILITATOR


@pytest.fixture
async def pool(pg_server: str) -> AsyncIterator[asyncpg.Pool]:
    name = f"rj_test_{uuid.uuid4().hex[:10]}"
    url = await create_database(pg_server, name)
    pool = await create_pool(Settings(database_url=url, db_pool_size=2))
    async with pool.acquire() as conn:
        await migrate(conn, "api", "services.api.migrations")
        await ensure_schema(conn)
    before = privacy.installed()
    privacy.install(Privacy.from_settings(SETTINGS))
    with batch_scope():
        async with transaction(pool) as conn:
            await readmodel.take_in(conn, [e for i in CASES for e in case_facts(i)])
    yield pool
    privacy.install(before)
    await pool.close()
    await drop_database(pg_server, name)


async def every_page(conn: asyncpg.Connection, **filters: str | bool) -> list[tuple[str, str | None]]:
    seen, cursor = [], None
    while True:
        page = await queries.list_cases(conn, force=force_of(0), facilitator_id=FACILITATOR, limit=3, after=cursor,
                                        **filters)  # fmt: skip
        seen += [(c.case_id, c.status) for c in page.cases]
        if (cursor := page.next_cursor) is None:
            return seen


async def expected(conn: asyncpg.Connection, status: str | None = None) -> list[tuple[str, str | None]]:
    rows = await conn.fetch(
        """SELECT c.case_id, c.status FROM api.cases c JOIN api.case_facilitators f USING (case_id)
            WHERE f.facilitator_id = $1 AND ($2::text IS NULL OR c.status = $2)
            ORDER BY c.updated_at DESC, c.case_id""",
        FACILITATOR,
        status,
    )
    return [(r["case_id"], r["status"]) for r in rows]


async def test_a_facilitators_list_pages_through_their_cases_by_status_most_recent_first(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        mine = await expected(conn)
        assert len(mine) >= 8 and len({s for _, s in mine}) >= 2
        assert await every_page(conn) == mine
        for status in {s for _, s in mine if s is not None} | {"referred"}:
            assert await every_page(conn, status=status) == await expected(conn, status)


async def test_a_case_that_changes_moves_to_the_top_of_its_facilitators_list_and_into_its_new_status(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        open_case = next(case_id for case_id, status in await expected(conn) if status != "closed")
    now = datetime.now(UTC)
    closed = CaseClosed(
        case_id=open_case, reason=ClosureReason.not_suitable, closed_at=now, closed_by=Actor(kind="staff", id="C-1")
    )
    with batch_scope():
        async with transaction(pool) as conn:
            event = new_event(closed, source="urn:test", subject=open_case, time=now, force=force_of(0))
            await readmodel.take_in(conn, [event])
    async with pool.acquire() as conn:
        assert (await every_page(conn))[0] == (open_case, "closed")
        assert (await every_page(conn, status="closed"))[0] == (open_case, "closed")
        assert open_case not in [case_id for case_id, _ in await every_page(conn, status="preparation")]
        assert await every_page(conn) == await expected(conn)


async def test_the_sensitive_and_overdue_filters_keep_only_the_cases_they_name_page_by_page(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        mine = [case_id for case_id, _ in await expected(conn)]
        # Screening's answer as the read model keeps it: one case sensitive, one not known yet, the rest not.
        await conn.execute("UPDATE api.cases SET sensitive = false WHERE case_id = ANY($1::text[])", mine)
        await conn.execute("UPDATE api.cases SET sensitive = true WHERE case_id = $1", mine[1])
        await conn.execute("UPDATE api.cases SET sensitive = NULL WHERE case_id = $1", mine[4])
        # A Victims' Code clock passed unmet on one case, one met on another, one still due on a third.
        for case_id, state in ((mine[2], "breached"), (mine[3], "met"), (mine[5], "due")):
            await conn.execute(
                """INSERT INTO api.deadlines (case_id, kind, subject_id, due_by, state, changed_at)
                   VALUES ($1, 'victim_information', 'V-1', now(), $2, now())""",
                case_id,
                state,
            )

        def listed(filtered: list[tuple[str, str | None]]) -> list[str]:
            return [case_id for case_id, _ in filtered]

        assert listed(await every_page(conn, sensitive=True)) == [mine[1], mine[4]]
        assert listed(await every_page(conn, sensitive=False)) == [c for c in mine if c not in (mine[1], mine[4])]
        assert listed(await every_page(conn, overdue=True)) == [mine[2]]
        assert mine[2] not in listed(await every_page(conn, overdue=False))
        assert listed(await every_page(conn, overdue=True, sensitive=True)) == []
