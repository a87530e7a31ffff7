"""The read model given a mixed batch in one transaction writes exactly what it writes given the same facts one
transaction each: api.cases (force, updated_at, status...), the timeline (every sealed value compared by the
(person, case) whose key sealed it), command answers (a staff closure's included), no case row for answers-only,
view-log or registration facts; a PersonErased over two cases included. (Written by a reviewer of the batching.)"""

from __future__ import annotations

import re
import uuid
from datetime import time
from typing import Any

import asyncpg
import pytest

from schemas.api import ViewLogged
from schemas.commands import CommandRejected
from schemas.envelope import new_event
from schemas.privacy import PersonErased
from schemas.scheduling import CaseClosed, ClosureReason, FacilitatorRegistered, WeeklyHours
from services.runtime import privacy
from services.runtime.db import create_pool, migrate
from services.runtime.devstack import create_database, drop_database
from services.runtime.keystore import ensure_schema
from services.runtime.settings import Settings
from tests.integration.test_api_read_model_order import FORCE, STAFF, at, case_facts, feed, pool  # noqa: F401

pytestmark = pytest.mark.integration

TOKEN = re.compile(r"enc:v1:([0-9a-f-]{36}):[A-Za-z0-9+/=_\-]+")
TABLES = ("cases", "participants", "consents", "meetings", "notes", "deadlines", "timeline", "command_answers")


def events() -> list[Any]:
    a, b = "case-A", "case-B"
    fa, fb = case_facts(a), case_facts(b)[:3]
    ev = lambda data, subject, minute, eid, force=FORCE: new_event(  # noqa: E731
        data, source="urn:test", subject=subject, time=at(minute), force=force, event_id=eid
    )
    rejected_x = CommandRejected(case_id="case-X", command_id="cmd-x", command_type="rj.case.close",
                                 service="scheduling", reason="no such case", rejected_at=at(1))  # fmt: skip
    viewed_y = ViewLogged(case_id="case-Y", viewer_id="s-1", role="auditor", viewed_at=at(2), fields=["x"], what="p")
    viewed_a = ViewLogged(case_id=a, viewer_id="s-1", role="auditor", viewed_at=at(99), fields=["x"], what="p")
    registered = FacilitatorRegistered(
        facilitator_id="F-NEW", specialist=False, timezone="Europe/London", registered_at=at(3), registered_by=STAFF,
        working_hours=[WeeklyHours(weekday=0, start=time(9), end=time(17))],
    )  # fmt: skip
    erased = PersonErased(erased_person_id="V-1", case_id=None, cases=[a, b], keys_destroyed=2, erased_by=STAFF,
                          reason="their request", erased_at=at(20))  # fmt: skip
    refused_close = CommandRejected(case_id=a, command_id="close-1", command_type="rj.case.close",
                                    service="scheduling", reason="on hold", rejected_at=at(21))  # fmt: skip
    closed = CaseClosed(case_id=a, reason=ClosureReason.not_suitable, closed_at=at(22), closed_by=STAFF)
    out = [
        ev(rejected_x, "case-X", 1, "e-rej-x"), ev(viewed_y, "case-Y", 2, "e-view-y", force=None),
        *fa[:6], ev(registered, "F-NEW", 3, "e-reg"), *fb, *fa[6:],
        ev(viewed_a, a, 99, "e-view-a", force=None),
        ev(erased, "person:V-1", 20, "e-erased"), ev(refused_close, a, 21, "e-refused"), ev(closed, a, 22, "e-closed"),
    ]  # fmt: skip
    out.insert(4, out[3])  # a repeat inside the batch (bypassing the inbox, as the property test does)
    return out


async def prepare(conn: asyncpg.Connection) -> None:
    for command_id, minute in (("close-1", 0), ("close-2", 1)):
        await conn.execute(
            """INSERT INTO api.commands_sent (command_id, case_id, command_type, staff_id, sent_at)
               VALUES ($1, 'case-A', 'rj.case.close', $2, $3)""",
            command_id, STAFF.id, at(minute),
        )  # fmt: skip


async def snapshot(db: asyncpg.Pool) -> dict[str, list[str]]:
    async with db.acquire() as conn:
        owners = {str(r[0]): f"KEY({r[1]},{r[2]},{'destroyed' if r[3] else 'live'})" for r in await conn.fetch(
            "SELECT key_id, person_id, case_id, wrapped_key IS NULL FROM keystore.data_keys")}  # fmt: skip
        out = {}
        for table in TABLES:
            rows = await conn.fetch(f"SELECT to_jsonb(t)::text AS j FROM api.{table} t")
            out[table] = sorted(TOKEN.sub(lambda m: owners[m.group(1)], r["j"]) for r in rows)
        return out


async def test_a_mixed_batch_writes_what_its_facts_write_one_transaction_each(
    pool: asyncpg.Pool,  # noqa: F811
    pg_server: str,
) -> None:
    name = f"rj_test_{uuid.uuid4().hex[:10]}"
    url = await create_database(pg_server, name)
    alone = await create_pool(Settings(database_url=url, db_pool_size=2))
    try:
        async with alone.acquire() as conn:
            await migrate(conn, "api", "services.api.migrations")
            await ensure_schema(conn)
        for db, one in ((pool, False), (alone, True)):
            async with db.acquire() as conn:
                await prepare(conn)
            await feed(db, events(), one_at_a_time=one)
            store = privacy.installed().store
            assert store is not None
        batched, single = await snapshot(pool), await snapshot(alone)
        for table in TABLES:
            assert batched[table] == single[table], table
        cases = [r for r in batched["cases"]]
        assert not any('"case-X"' in c or '"case-Y"' in c for c in cases), "no case row from an answer or a view"
        answers = batched["command_answers"]
        assert any('"close-2"' in a and "rj.case.closed" in a for a in answers)
    finally:
        await alone.close()
        await drop_database(pg_server, name)
