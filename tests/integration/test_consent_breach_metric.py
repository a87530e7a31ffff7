"""A contact attempt that broke a person's safe-contact record is counted for operators to alert on
(``rj_safe_contact_breaches``, like referral's ``rj_victim_information_before_contact_allowed``): the consent
service's real ``take_in`` against the real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY

from schemas.common import Actor, Channel
from schemas.consent import (
    ContactMethod,
    ContactOutcome,
    RecordContactAttempt,
    RecordedThrough,
    RecordingMethod,
    RecordSafeContact,
)
from schemas.envelope import CloudEvent, EventData, new_event
from services.consent import app as consent_app
from services.consent import store
from services.runtime.db import create_pool, migrate, transaction
from services.runtime.devstack import create_database, drop_database
from services.runtime.privacy import Privacy, batch_scope
from services.runtime.settings import Settings
from tests.integration.test_consent_batching import NOW, accepted

pytestmark = pytest.mark.integration

STAFF = Actor(kind="staff", id="staff-1")
CASE = "case-a"
VICTIM = f"{CASE}-victim"


@pytest.fixture
async def pool(pg_server: str) -> AsyncIterator[asyncpg.Pool]:
    name = f"rj_test_{uuid.uuid4().hex[:10]}"
    url = await create_database(pg_server, name)
    pool = await create_pool(Settings(database_url=url, db_pool_size=2))
    async with pool.acquire() as conn:
        await migrate(conn, store.SCHEMA, "services.consent.migrations")
    yield pool
    await pool.close()
    await drop_database(pg_server, name)


def breaches() -> float:
    return REGISTRY.get_sample_value("rj_safe_contact_breaches_total") or 0.0


def attempt(method: ContactMethod, minutes: int) -> RecordContactAttempt:
    return RecordContactAttempt(
        case_id=CASE,
        actor=STAFF,
        person_id=VICTIM,
        attempted_at=NOW - timedelta(hours=1) + timedelta(minutes=minutes),
        method=method,
        outcome=ContactOutcome.no_answer,
    )


async def take_in(pool: asyncpg.Pool, *events: EventData) -> None:
    envelopes: list[CloudEvent[Any]] = [
        new_event(e, source="urn:test", subject=CASE, event_id=f"in-{uuid.uuid4().hex}") for e in events
    ]
    async with transaction(pool) as conn:
        with batch_scope(Privacy.disabled()):
            await consent_app.take_in(conn, envelopes)


async def test_rule_6_each_contact_attempt_that_broke_the_safe_contact_record_is_counted(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(consent_app, "clock", lambda: datetime(2030, 1, 1, 9, 0, tzinfo=UTC))
    email_only = RecordSafeContact(
        case_id=CASE,
        actor=STAFF,
        person_id=VICTIM,
        safe_channels=[Channel.email],
        through=RecordedThrough.facilitator,
        method=RecordingMethod.phone,
    )
    await take_in(pool, accepted(CASE, False), email_only)
    before = breaches()
    await take_in(pool, attempt(ContactMethod.email, 1))  # allowed: not counted
    assert breaches() == before
    await take_in(pool, attempt(ContactMethod.sms, 2), attempt(ContactMethod.phone, 3), attempt(ContactMethod.email, 4))
    assert breaches() == before + 2
