"""A case whose screening the read model has not seen is treated as sensitive: participants' withdraw links do not
work on it, and the case views show it as sensitive, until rj.case.accepted says whether it is.

Facts reach the read model from several topics in no fixed order; a consent fact can make the case's row before the
acceptance that says the case is sensitive (whoever harmed the participant may hold their phone).
"""

from __future__ import annotations

import uuid
from importlib import resources

import asyncpg

from services.api import links, queries
from services.runtime.db import apply_migrations
from services.runtime.devstack import database_for_run
from tests.integration.test_api_read_model_order import FORCE, case_facts, feed, pool  # noqa: F401


async def test_a_case_seen_only_through_a_consent_fact_refuses_links_and_reads_as_sensitive(
    pool: asyncpg.Pool,  # noqa: F811
) -> None:
    case_id = f"case-{uuid.uuid4().hex[:8]}"
    events = case_facts(case_id)
    await feed(pool, [e for e in events if e.type == "rj.consent.given"][:1], one_at_a_time=True)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT sensitive FROM api.cases WHERE case_id = $1", case_id) is None
        assert not await links.links_allowed(conn, case_id)
        detail = await queries.case_detail(conn, case_id, personal=False)
        listed = await queries.list_cases(conn, force=FORCE)
    assert detail is not None and detail.sensitive is True
    assert [c.sensitive for c in listed.cases if c.case_id == case_id] == [True]

    await feed(pool, [e for e in events if e.type == "rj.case.accepted"], one_at_a_time=True)
    async with pool.acquire() as conn:
        assert await links.links_allowed(conn, case_id), "screened as not sensitive: the links work"
        detail = await queries.case_detail(conn, case_id, personal=False)
    assert detail is not None and detail.sensitive is False


async def test_preparation_before_acceptance_leaves_it_unknown_unless_a_specialist_is_needed(
    pool: asyncpg.Pool,  # noqa: F811
) -> None:
    case_id = f"case-{uuid.uuid4().hex[:8]}"
    await feed(pool, [e for e in case_facts(case_id) if e.type == "rj.preparation.started"], one_at_a_time=True)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT sensitive FROM api.cases WHERE case_id = $1", case_id) is None
        assert not await links.links_allowed(conn, case_id)


async def test_the_migration_forgets_a_false_that_no_acceptance_said(pg_server: str) -> None:
    migrations = resources.files("services.api.migrations")
    files = sorted((f"service/{f.name}", f.read_text()) for f in migrations.iterdir() if f.name.endswith(".sql"))
    async with database_for_run(pg_server, "rj_api_sensitivity") as url:
        conn = await asyncpg.connect(url)
        try:
            await apply_migrations(conn, "api", [f for f in files if f[0] < "service/006"])
            for case_id in ("unscreened", "screened", "sensitive"):
                await conn.execute(
                    "INSERT INTO api.cases (case_id, updated_at, sensitive) VALUES ($1, now(), $2)",
                    case_id,
                    case_id == "sensitive",
                )
            await conn.execute(
                """INSERT INTO api.timeline (event_id, case_id, at, event_type, summary, fact)
                   VALUES ('e-1', 'screened', now(), 'rj.case.accepted', 'accepted', '{}')"""
            )
            await apply_migrations(conn, "api", files)
            rows = {r["case_id"]: r["sensitive"] for r in await conn.fetch("SELECT case_id, sensitive FROM api.cases")}
            assert rows == {"unscreened": None, "screened": False, "sensitive": True}
        finally:
            await conn.close()
