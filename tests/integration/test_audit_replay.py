"""``rj audit replay`` over a real PostgreSQL: a case's facts, sealed as the services publish them and stored in
audit.entries as the audit service stores them, replay to the state the API's read model gives the same facts, at
the end and at a middle moment; personal values stay sealed unless opened with a reason; an erased person's case
replays without their data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

import asyncpg
import pytest
from pydantic import SecretStr

from schemas import topics
from schemas.envelope import CloudEvent
from schemas.referral import REFERRAL_EVENTS
from schemas.scheduling import SCHEDULING_EVENTS
from services.api import queries, readmodel
from services.audit import canonical, merkle, replay
from services.runtime import privacy
from services.runtime.db import create_pool, migrate, transaction
from services.runtime.devstack import database_for_run
from services.runtime.keystore import MasterKeys, ensure_schema
from services.runtime.outbox import Outgoing
from services.runtime.privacy import Privacy, batch_scope
from services.runtime.settings import Settings
from tests.integration.test_api_read_model_order import at, case_facts

pytestmark = pytest.mark.integration

MASTER_KEYS = MasterKeys.generate("t1")
ENTRIES = """CREATE SCHEMA IF NOT EXISTS audit;
CREATE TABLE audit.entries (idx bigint PRIMARY KEY, topic text NOT NULL, partition int NOT NULL,
    "offset" bigint NOT NULL, key text NULL, appended_at timestamptz NOT NULL, body bytea NOT NULL,
    leaf bytea NOT NULL, UNIQUE (topic, partition, "offset"))"""


@pytest.fixture
async def database(pg_server: str) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    async with database_for_run(pg_server, "rj_replay") as url:
        pool = await create_pool(Settings(database_url=url, db_pool_size=2))
        async with pool.acquire() as conn:
            await migrate(conn, "api", "services.api.migrations")
            await ensure_schema(conn)
            await conn.execute(ENTRIES)
        before = privacy.installed()
        privacy.install(Privacy.from_settings(Settings(master_keys=SecretStr(MASTER_KEYS))))
        try:
            yield url, pool
        finally:
            privacy.install(before)
            await pool.close()


def topic_of(event: CloudEvent[Any]) -> str:
    if type(event.data) in REFERRAL_EVENTS:
        return topics.REFERRAL
    return topics.SCHEDULING if type(event.data) in SCHEDULING_EVENTS else topics.CONSENT


async def record(pool: asyncpg.Pool, events: Sequence[CloudEvent[Any]]) -> None:
    """What the audit service appends: each fact as published (sealed), canonical bytes and its leaf."""
    with batch_scope():
        async with transaction(pool) as conn:
            start = await conn.fetchval("SELECT count(*) FROM audit.entries")
            outgoing = [Outgoing.event_of(topic_of(e), e) for e in events]
            for i, message in enumerate(await privacy.batch().seal_outgoing(conn, outgoing)):
                body = canonical.canonical_record(message.value)
                idx = start + i
                await conn.execute(
                    """INSERT INTO audit.entries (idx, topic, partition, "offset", key, appended_at, body, leaf)
                       VALUES ($1, $2, 0, $1, $3, now(), $4, $5)""",
                    idx, message.topic, message.key, body, merkle.entry_leaf_hash(message.topic, 0, idx, body),
                )  # fmt: skip


async def read_model(pool: asyncpg.Pool, events: Sequence[CloudEvent[Any]], case_id: str) -> dict[str, Any]:
    with batch_scope():
        async with transaction(pool) as conn:
            await readmodel.take_in(conn, events)
    async with pool.acquire() as conn:
        page = await queries.case_detail(conn, case_id, personal=True)
    assert page is not None
    return json.loads(page.model_dump_json())  # type: ignore[no-any-return]


def rj_replay(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": url, "MASTER_KEYS": MASTER_KEYS, "LOG_LEVEL": "WARNING"}
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "audit", "replay", *args], env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip


def state_of(url: str, case_id: str, *more: str) -> dict[str, Any]:
    """Replayed as JSON; at the end of the case unless ``more`` says ``--at`` (its facts are dated 2030)."""
    moment = [] if "--at" in more else ["--at", at(60 * 24 * 365).isoformat()]
    done = rj_replay(url, "--case", case_id, "--json", *moment, *more)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def as_replayed(document: dict[str, Any], case_id: str) -> replay.CaseState:
    state = document["state"]
    return replay.CaseState(
        case_id=case_id, at=datetime.fromisoformat(state["at"]), status=state["status"],
        facilitator_ids=state["facilitator_ids"], roles={p["person_id"]: p["role"] for p in state["participants"]},
        consents=state["consents"], on_hold=state["hold"]["on_hold"], meetings=state["meetings"],
        agreement_items=state["agreement_items"], closure_reason=state["closure"]["reason"],
    )  # fmt: skip


async def test_replay_gives_the_state_the_read_model_shows_at_the_end_and_at_a_middle_moment(
    database: tuple[str, asyncpg.Pool],
) -> None:
    url, pool = database
    case_id, middle_twin = f"case-{uuid.uuid4().hex[:8]}", f"case-{uuid.uuid4().hex[:8]}"
    facts = case_facts(case_id)
    await record(pool, facts)

    whole = state_of(url, case_id, "--reason", "audit of complaint 77")
    page = await read_model(pool, facts, case_id)
    assert replay.differences(as_replayed(whole, case_id), page) == []
    assert whole["state"]["consents"]["O-1"] == {"participation": "withdrawn"}
    assert len(whole["timeline"]) == 15 and "Vera Victim" in json.dumps(whole)

    # At minute 10 (the meeting booked, no hold yet) as the read model fed only the facts up to then.
    middle = state_of(url, case_id, "--at", at(10).isoformat(), "--reason", "audit of complaint 77")
    twin_page = await read_model(pool, [f for f in case_facts(middle_twin) if f.time <= at(10)], middle_twin)
    assert replay.differences(as_replayed(middle, case_id), twin_page) == []
    assert middle["state"]["meetings"] == {"M1": "booked"} and len(middle["timeline"]) == 11


async def test_facts_recorded_in_reverse_order_replay_to_what_the_read_model_shows(
    database: tuple[str, asyncpg.Pool],
) -> None:
    url, pool = database
    case_id = f"case-{uuid.uuid4().hex[:8]}"
    facts = list(reversed(case_facts(case_id)))  # topics overtaking each other, at the extreme
    await record(pool, facts)
    replayed = state_of(url, case_id, "--reason", "audit of complaint 77")
    assert replay.differences(as_replayed(replayed, case_id), await read_model(pool, facts, case_id)) == []
    assert replayed["state"]["meetings"] == {"M1": "cancelled"} and replayed["state"]["hold"]["on_hold"]


async def test_personal_values_stay_sealed_without_a_reason_and_an_erased_person_shows_erased(
    database: tuple[str, asyncpg.Pool],
) -> None:
    url, pool = database
    case_id = f"case-{uuid.uuid4().hex[:8]}"
    await record(pool, case_facts(case_id))

    sealed = state_of(url, case_id)
    text = json.dumps(sealed)
    assert "Vera Victim" not in text and "Not ready to face her" not in text and replay.SEALED in text
    assert sealed["state"]["consents"][replay.SEALED] == {"participation": "withdrawn"}  # who withdrew is sealed

    keys = Privacy.from_settings(Settings(master_keys=SecretStr(MASTER_KEYS))).store
    assert keys is not None
    async with pool.acquire() as conn:
        await keys.destroy(conn, "V-1", case_id, by="staff:coord-1", reason="subject erasure request")
    erased = state_of(url, case_id, "--reason", "audit of complaint 77")
    text = json.dumps(erased)
    assert "Vera Victim" not in text and "vera@example.org" not in text and "[erased]" in text
    assert "Oscar Offender" in text and erased["state"]["status"] == "ready"


async def test_an_unknown_case_or_a_time_without_a_zone_is_refused_with_a_reason(
    database: tuple[str, asyncpg.Pool],
) -> None:
    url, _ = database
    unknown = rj_replay(url, "--case", "no-such-case")
    assert unknown.returncode == 2 and "no entries for case" in unknown.stderr
    naive = rj_replay(url, "--case", "x", "--at", "2030-01-07T09:00:00")
    assert naive.returncode == 2 and "with a zone" in naive.stderr
