"""Referral opening a case asks the key store once for the keys it makes: the offender's (sealing the outcome kept on
file) and the case's monitoring key (sealing the fact that opens the case) together (``privacy.Batch.expect``), not
in a round trip each. At a few cases a second, each such round trip is a call of the key store's PL/pgSQL function:
about half a millisecond of the database's time."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from demo import samples
from schemas.envelope import CloudEvent
from schemas.registry import REGISTRY
from services.referral import app as referral_app
from services.runtime import db, keystore, outbox
from services.runtime.devstack import create_database, drop_database
from services.runtime.fieldcrypt import TOKEN_PREFIX
from services.runtime.keystore import MONITORING_PERSON, KeyStore, MasterKeys
from services.runtime.privacy import Privacy, batch_scope
from services.runtime.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool(pg_server: str) -> AsyncIterator[asyncpg.Pool]:
    name = f"rj_test_{uuid.uuid4().hex[:10]}"
    url = await create_database(pg_server, name)
    pool = await db.create_pool(Settings(database_url=url, db_pool_size=2))
    async with pool.acquire() as conn:
        await db.migrate(conn, "referral", "services.referral.migrations")
        await keystore.ensure_schema(conn)
    yield pool
    await pool.close()
    await drop_database(pg_server, name)


def upstream(*payloads: Any) -> list[CloudEvent[Any]]:
    return [REGISTRY.parse(samples.upstream_event(p)) for p in payloads]


async def test_an_outcome_that_opens_a_case_makes_the_offenders_and_the_monitoring_key_in_one_round_trip(
    pool: asyncpg.Pool,
) -> None:
    privacy = Privacy(KeyStore(MasterKeys.parse(MasterKeys.generate("v1"))))
    ref = "WM/2026/008001"
    async with db.transaction(pool) as conn:
        with batch_scope(privacy):
            await referral_app.take_in(conn, upstream(samples.crime_recorded(ref)))
    made: list[list[str]] = []

    async with db.transaction(pool) as conn:
        conn.add_query_logger(lambda q: made.append([q.query]) if "data_keys_make_packed" in q.query else None)
        with batch_scope(privacy) as batch:
            out = await referral_app.take_in(conn, upstream(samples.outcome_recorded(ref)))
            await outbox.write_outbox(conn, "referral", out)
            owners = set(batch.keys.by_pair)

    opened = [o for o in out if o.event is not None and o.event.type == "rj.case.opened"]
    assert len(opened) == 1
    case_id = opened[0].event.subject
    assert (MONITORING_PERSON, case_id) in owners
    assert len(made) == 1, "the offender's key and the monitoring key are made in one round trip"
    async with pool.acquire() as conn:
        values = await conn.fetch("SELECT convert_from(value, 'UTF8') FROM referral.outbox")
        [value] = [v[0] for v in values if '"type":"rj.case.opened"' in v[0]]
        monitoring = await conn.fetchval(
            "SELECT key_id::text FROM keystore.data_keys WHERE person_id = $1 AND case_id = $2",
            MONITORING_PERSON,
            case_id,
        )
    assert f"{TOKEN_PREFIX}{monitoring}:" in value, "the age band is sealed under the monitoring key made with it"
