"""The consent service against the real PostgreSQL, after the review: the erasure sweep's command carries the
case's force; a decline stored before pending erasures were kept is erased in time all the same; a rejection
carries the command's force whether or not the case exists; a breach is counted once its batch commits."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY

from schemas.commands import CommandRejected
from schemas.common import Actor, Channel
from schemas.consent import (
    PARTICIPATION,
    ContactMethod,
    ContactOutcome,
    DecideErasuresDue,
    DeclineConsent,
    RecordContactAttempt,
    RecordedThrough,
    RecordingMethod,
    RecordSafeContact,
)
from schemas.envelope import CloudEvent, EventData, new_event
from services.consent import app as consent_app
from services.consent import domain, store
from services.runtime.db import _RUNTIME_SQL, _migration_files, apply_migrations, create_pool, transaction
from services.runtime.devstack import create_database, drop_database
from services.runtime.outbox import Outgoing
from services.runtime.privacy import Privacy, batch_scope
from services.runtime.settings import Settings
from tests.integration.test_consent_batching import accepted

pytestmark = pytest.mark.integration

NOW = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)
DELAY = timedelta(days=7)
FORCE = "urn:police:test-force:rms"
STAFF = Actor(kind="staff", id="staff-1")
CASE = "case-a"
VICTIM = f"{CASE}-victim"


def migrations(upto: str | None = None) -> list[tuple[str, str]]:
    files = [(f"runtime/{name}", sql) for name, sql in _migration_files(_RUNTIME_SQL)]
    service = [(f"service/{n}", sql) for n, sql in _migration_files("services.consent.migrations")]
    return files + [(n, sql) for n, sql in service if upto is None or n < f"service/{upto}"]


@pytest.fixture
async def pool(pg_server: str) -> AsyncIterator[asyncpg.Pool]:
    """A consent database migrated up to (not including) 004, the erasure watch: the test finishes it."""
    name = f"rj_test_{uuid.uuid4().hex[:10]}"
    url = await create_database(pg_server, name)
    pool = await create_pool(Settings(database_url=url, db_pool_size=2))
    async with pool.acquire() as conn:
        await apply_migrations(conn, store.SCHEMA, migrations(upto="004"))
    yield pool
    await pool.close()
    await drop_database(pg_server, name)


async def migrate_all(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await apply_migrations(conn, store.SCHEMA, migrations())


async def take_in(pool: asyncpg.Pool, *events: EventData, force: str | None = FORCE) -> list[Outgoing]:
    envelopes: list[CloudEvent[Any]] = [
        new_event(e, source="urn:test", subject=e.case_id, event_id=f"in-{uuid.uuid4().hex}", force=force)  # type: ignore[attr-defined]
        for e in events
    ]
    async with transaction(pool) as conn:
        with batch_scope(Privacy.disabled()):
            return await consent_app.take_in(conn, envelopes, declined_erasure_delay=DELAY)


async def sweep(pool: asyncpg.Pool) -> list[Outgoing]:
    async with transaction(pool) as conn:
        return await consent_app.ask_about_erasures(conn, declined_erasure_delay=DELAY)


def envelope(out: Outgoing) -> dict[str, Any]:
    assert out.event is not None
    return json.loads(out.event.to_json())  # type: ignore[no-any-return]


def decline(person_id: str = VICTIM) -> DeclineConsent:
    return DeclineConsent(
        case_id=CASE,
        actor=Actor(kind="participant", id=person_id),
        person_id=person_id,
        purpose=PARTICIPATION,
        through=RecordedThrough.participant,
        method=RecordingMethod.online,
    )


async def test_rule_7_the_erasure_sweeps_command_carries_the_cases_force(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    await migrate_all(pool)
    monkeypatch.setattr(consent_app, "clock", lambda: NOW)
    await take_in(pool, accepted(CASE, False).model_copy(update={"force": FORCE}), decline())
    monkeypatch.setattr(consent_app, "clock", lambda: NOW + DELAY)
    (asked,) = await sweep(pool)
    sent = envelope(asked)
    assert (sent["type"], sent["subject"], sent.get("force")) == (DecideErasuresDue.event_type, CASE, FORCE)


async def test_rule_7_someone_who_declined_before_pending_erasures_were_kept_is_erased_after_the_grace_period(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A state row in the shape of before (no ``erasures_pending``, no ``erasure_due``), on a closed case that will
    never change again: the migration watches the decliner, the sweep asks, the state loaded decides."""
    declined_at = NOW - 2 * DELAY
    old = {
        "case_id": CASE,
        "force": FORCE,
        "participants": [{"person_id": VICTIM, "role": "victim", "required": True}],
        "consents": [{"person_id": VICTIM, "purpose": PARTICIPATION, "status": "declined", "decided_at": declined_at}],
        "withdrawn": True,
        "closed": True,
    }
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO consent.cases (key, state) VALUES ($1, $2::jsonb)", CASE, json.dumps(old, default=str)
        )
    await migrate_all(pool)
    monkeypatch.setattr(consent_app, "clock", lambda: NOW)
    (asked,) = await sweep(pool)
    assert envelope(asked).get("force") == FORCE
    command = DecideErasuresDue(case_id=CASE, actor=domain.SYSTEM_CONSENT)
    out = await take_in(pool, command)
    (due,) = [envelope(o)["data"] for o in out]
    assert due["person_id"] == VICTIM and due["due_at"] == (declined_at + DELAY).isoformat().replace("+00:00", "Z")
    assert await sweep(pool) == [], "decided once: nothing watched any more"
    assert (await take_in(pool, command)) == []


async def test_rule_3_a_participants_refusal_carries_the_force_they_sent_whether_or_not_the_case_exists(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    await migrate_all(pool)
    monkeypatch.setattr(consent_app, "clock", lambda: NOW)
    await take_in(pool, accepted(CASE, False).model_copy(update={"force": FORCE}))
    answers = []
    for case_id in (CASE, "no-such-case"):
        for sent_force in (None, "urn:police:other:rms"):
            someone = decline(person_id="stranger").model_copy(update={"case_id": case_id})
            (out,) = await take_in(pool, someone, force=sent_force)
            sent = envelope(out)
            assert sent["type"] == CommandRejected.event_type
            answers.append((case_id, sent_force, sent.get("force"), sent["data"]["reason"]))
    assert [(f, got) for _, f, got, _ in answers] == [(f, f) for _, f, _, _ in answers]
    assert len({reason for *_, reason in answers}) == 1, "the same words whether or not the case exists"


def breaches() -> float:
    return REGISTRY.get_sample_value("rj_safe_contact_breaches_total") or 0.0


class RolledBack(Exception):
    pass


async def test_rule_6_a_breach_is_counted_once_its_batch_commits_not_on_an_attempt_rolled_back(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    await migrate_all(pool)
    monkeypatch.setattr(consent_app, "clock", lambda: NOW)
    email_only = RecordSafeContact(
        case_id=CASE,
        actor=STAFF,
        person_id=VICTIM,
        safe_channels=[Channel.email],
        through=RecordedThrough.facilitator,
        method=RecordingMethod.phone,
    )
    await take_in(pool, accepted(CASE, False), email_only)
    attempt = RecordContactAttempt(
        case_id=CASE,
        actor=STAFF,
        person_id=VICTIM,
        attempted_at=NOW - timedelta(hours=1),
        method=ContactMethod.sms,
        outcome=ContactOutcome.no_answer,
    )
    event: CloudEvent[Any] = new_event(attempt, source="urn:test", subject=CASE, event_id="attempt-1")
    before = breaches()
    with pytest.raises(RolledBack):  # the batch's first attempt fails after deciding: rolled back
        async with transaction(pool) as conn:
            with batch_scope(Privacy.disabled()):
                await consent_app.take_in(conn, [event])
            raise RolledBack
    assert breaches() == before, "nothing committed: nothing counted"
    async with transaction(pool) as conn:  # the retry commits
        with batch_scope(Privacy.disabled()):
            await consent_app.take_in(conn, [event])
    assert breaches() == before + 1
