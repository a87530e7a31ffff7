"""Upgrading a populated database to forces: crimes referred before forces were told apart keep their case.

Migrations 001-002 (before forces), a crime file and its victim's clock as that code left them, then the
rest of the migrations, then the referral service's real ``take_in`` with upstream events from a force about
the same crime: no second case, no second clock, and the old case id on what it publishes.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from demo import samples
from schemas.envelope import CloudEvent
from schemas.referral import case_id_for
from schemas.registry import REGISTRY
from services.referral import app as referral_app
from services.runtime import db
from services.runtime.devstack import create_database, drop_database
from services.runtime.privacy import Privacy, batch_scope
from services.runtime.settings import Settings

pytestmark = pytest.mark.integration

REF = "WM/2019/004242"
OLD_CASE = str(uuid.uuid5(uuid.UUID("5d9a3c1e-7f2b-4e8a-b6c4-1a2b3c4d5e6f"), REF))


@pytest.fixture
async def pool(pg_server: str) -> AsyncIterator[asyncpg.Pool]:
    name = f"rj_test_{uuid.uuid4().hex[:10]}"
    url = await create_database(pg_server, name)
    pool = await db.create_pool(Settings(database_url=url, db_pool_size=2))
    yield pool
    await pool.close()
    await drop_database(pg_server, name)


def files(before: str | None = None) -> list[tuple[str, str]]:
    runtime = [(f"runtime/{n}", sql) for n, sql in db._migration_files("services.runtime.migrations")]
    service = [(f"service/{n}", sql) for n, sql in db._migration_files("services.referral.migrations")]
    return runtime + [(n, sql) for n, sql in service if before is None or n < f"service/{before}"]


async def test_a_crime_referred_before_forces_keeps_its_case_after_the_upgrade(pool: asyncpg.Pool) -> None:
    reported = datetime.now(UTC) - timedelta(days=1)
    async with pool.acquire() as conn:
        await db.apply_migrations(conn, "referral", files(before="003"))
        await conn.execute(
            """INSERT INTO referral.crime_files (crime_reference, case_id, status, opened_at, clocked_victims)
               VALUES ($1, $2, 'accepted', now(), ARRAY[$3])""",
            REF,
            OLD_CASE,
            f"V-{REF}",
        )
        await conn.execute(
            """INSERT INTO referral.victim_clocks (crime_reference, person_id, case_id, reported_at, due_by,
                                                   enhanced_rights) VALUES ($1, $2, $3, $4, $4, false)""",
            REF,
            f"V-{REF}",
            OLD_CASE,
            reported,
        )
        await db.apply_migrations(conn, "referral", files())

    # The force's crime system sends an amended record and the outcome again.
    raw = [samples.upstream_event(samples.crime_recorded(REF, reported_at=reported))]
    raw.append(samples.upstream_event(samples.outcome_recorded(REF)))
    events: list[CloudEvent] = [REGISTRY.parse(r) for r in raw]  # type: ignore[type-arg]
    async with pool.acquire() as conn, conn.transaction():
        with batch_scope(Privacy.disabled()):
            sent = await referral_app.take_in(conn, events)
        rows = await conn.fetch("SELECT force, case_id, legacy_id FROM referral.crime_files")
        clocks = await conn.fetchval("SELECT count(*) FROM referral.victim_clocks")
    assert [(r["force"], r["case_id"], r["legacy_id"]) for r in rows] == [(samples.UPSTREAM_SOURCE, OLD_CASE, True)]
    assert clocks == 1, "the victim's clock is not started twice"
    assert all(o.key == OLD_CASE for o in sent)
    assert OLD_CASE != case_id_for(samples.UPSTREAM_SOURCE, REF)


async def test_a_case_closed_before_the_reoffending_index_is_backfilled_and_a_later_offence_found(
    pool: asyncpg.Pool,
) -> None:
    """A file closed under the old schema (before migration 006), and a later offence by its offender already on
    file then; then the migrations, then another later offence: the ended-case index was backfilled, the outcome
    on file before the upgrade is counted once by the service's pass over backfilled cases (how the case closed
    unknown: ``rj_completed`` null), the new one once, and an offence committed before the closed case's crime
    not at all."""
    ref, later, earlier, on_file = "WM/2025/005151", "WM/2026/005152", "WM/2024/005153", "WM/2025/005154"
    force = samples.UPSTREAM_SOURCE
    case_id = case_id_for(force, ref)
    crime = samples.crime_recorded(ref, reported_at=datetime(2025, 6, 2, 10, tzinfo=UTC))
    outcome = samples.outcome_recorded(ref, offender="O-5151")
    async with pool.acquire() as conn:
        await db.apply_migrations(conn, "referral", files(before="006"))
        await conn.execute(
            """INSERT INTO referral.crime_files (force, crime_reference, case_id, crime, outcome, status, opened_at)
               VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, 'closed', now())""",
            force,
            ref,
            case_id,
            crime.model_dump_json(),
            outcome.model_dump_json(),
        )
        # Read before the upgrade: a later offence by the same offender, its case still open.
        await conn.execute(
            """INSERT INTO referral.crime_files (force, crime_reference, case_id, crime, outcome, status, opened_at)
               VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, 'accepted', now())""",
            force,
            on_file,
            case_id_for(force, on_file),
            samples.crime_recorded(on_file, reported_at=datetime(2025, 9, 1, tzinfo=UTC)).model_dump_json(),
            samples.outcome_recorded(on_file, offender="O-5151").model_dump_json(),
        )
        await db.apply_migrations(conn, "referral", files())
        row = await conn.fetchrow("SELECT * FROM referral.ended_cases WHERE case_id = $1", case_id)
        assert (row["ended_as"], row["offender_ids"]) == ("closed", ["O-5151"])
        assert row["crime_at"] == crime.occurred_at

    async with pool.acquire() as conn, conn.transaction():
        with batch_scope(Privacy.disabled()):
            weighed = await referral_app.weigh_outcomes_on_file(conn)
            assert await referral_app.weigh_outcomes_on_file(conn) == [], "once only"
    (found,) = [o.event for o in weighed if o.event is not None and o.event.type == "rj.case.reoffence-recorded"]
    assert (found.subject, found.data.later_crime_reference) == (case_id, on_file)
    assert (found.data.closure_reason, found.data.rj_completed) == (None, None)

    raw = [samples.upstream_event(samples.crime_recorded(later, reported_at=datetime(2026, 3, 1, tzinfo=UTC)))]
    raw.append(samples.upstream_event(samples.outcome_recorded(later, offender="O-5151")))
    raw.append(samples.upstream_event(samples.crime_recorded(earlier, reported_at=datetime(2024, 3, 1, tzinfo=UTC))))
    raw.append(samples.upstream_event(samples.outcome_recorded(earlier, offender="O-5151")))
    events: list[CloudEvent] = [REGISTRY.parse(r) for r in raw]  # type: ignore[type-arg]
    async with pool.acquire() as conn, conn.transaction():
        with batch_scope(Privacy.disabled()):
            sent = await referral_app.take_in(conn, events) + await referral_app.take_in(conn, events[1:2])
    reoffences = [o.event for o in sent if o.event is not None and o.event.type == "rj.case.reoffence-recorded"]
    assert [(e.subject, e.data.later_crime_reference) for e in reoffences] == [(case_id, later)]
