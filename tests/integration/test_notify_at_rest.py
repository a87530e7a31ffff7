"""Notify's tables with encryption on, as a service runs: after a case's intake and its sends, no name, email
address, phone number or postal address of anyone is readable anywhere in notify's schema (state, scheduled sends,
outbox, letters), and the messages still reach the right person, opened only to send."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import timedelta

import asyncpg
import pytest
from pydantic import SecretStr

from schemas import topics
from schemas.common import Channel, Contact
from services.notify import store
from services.notify.channels import CannotLookUp, senders_from_settings
from services.notify.compose import Composer
from services.notify.sender import Sender
from services.runtime import keystore, privacy
from services.runtime.db import create_pool, migrate
from services.runtime.devstack import create_database, drop_database
from services.runtime.keystore import MasterKeys
from services.runtime.settings import Settings
from tests.integration.test_notify_compose import smtp  # noqa: F401
from tests.integration.test_notify_intake import Feed, processor
from tests.support.smtp import Inbox
from tests.unit import notify_events as ev

pytestmark = pytest.mark.integration

PERSONAL = ("Vera", "Victim", "Otto", "Offender", "vera@", "otto@", "07700900001", "07700900002", "Vic St", "Off Rd")


@pytest.fixture
def sealing() -> Iterator[None]:
    before = privacy.installed()
    privacy.install(privacy.Privacy.from_settings(Settings(master_keys=SecretStr(MasterKeys.generate("test1")))))
    yield
    privacy.install(before)


@pytest.fixture
async def sealed_pool(pg_server: str, sealing: None) -> AsyncIterator[asyncpg.Pool]:
    name = f"rj_test_{uuid.uuid4().hex[:10]}"
    url = await create_database(pg_server, name)
    pool = await create_pool(Settings(database_url=url, db_pool_size=2))
    async with pool.acquire() as conn:
        await keystore.ensure_schema(conn)
        await migrate(conn, store.SCHEMA, "services.notify.migrations")
    yield pool
    await pool.close()
    await drop_database(pg_server, name)


async def everything_in(pool: asyncpg.Pool) -> str:
    """Every row of every table of notify's schema, as text."""
    tables = await pool.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1", store.SCHEMA)
    dumped = []
    for t in tables:
        rows = await pool.fetch(f'SELECT t::text AS row FROM {store.SCHEMA}."{t["tablename"]}" AS t')
        dumped += [r["row"] for r in rows]
    return "\n".join(dumped)


async def test_notify_s_tables_hold_no_clear_personal_data_with_encryption_on(
    sealed_pool: asyncpg.Pool,
    smtp: tuple[Inbox, int],  # noqa: F811
) -> None:
    inbox, port = smtp
    feed = Feed()
    letters_only = ev.safe_contact(ev.OFFENDER, [Channel.letter], letters_to_home_ok=True)
    intake = replace(processor(sealed_pool, ev.T0), privacy=privacy.installed())  # as ServiceApp gives it
    await intake.process(
        [
            feed.add(topics.REFERRAL, ev.opened(offender_contact=Contact(address="2 Off Rd\nWorcester\nWR2 2BB")),
                     "opened"),
            feed.add(topics.REFERRAL, ev.accepted(), "accepted"),
            feed.add(topics.CONSENT, ev.assigned(), "assigned"),
            feed.add(topics.CONSENT, letters_only, "safe-contact"),
            feed.add(topics.REFERRAL, ev.victim_information_due(), "vi-due"),
            feed.add(topics.SCHEDULING, ev.booked(starts_at=ev.T0 + timedelta(days=1)), "booked"),
        ]
    )  # fmt: skip
    configured = Settings(notify_smtp_host="127.0.0.1", notify_smtp_port=port, notify_smtp_tls="none")
    sender = Sender(sealed_pool, senders_from_settings(configured, sealed_pool), Composer(configured, lambda: ev.T0),
                    clock=lambda: ev.T0, cannot_look_up=(CannotLookUp,))  # fmt: skip
    while await sender.send_due():
        pass

    assert len(inbox.to("vera@example.org")) == 2  # opened to send: the victim's information and the meeting
    letters = await sealed_pool.fetchval(f"SELECT count(*) FROM {store.SCHEMA}.letters")
    assert letters == 1  # the offender's meeting notice, by post as their record asks
    stored = await everything_in(sealed_pool)
    assert "meeting_booked" in stored  # the dump is real: kinds are there, people are not
    for personal in PERSONAL:
        found = [line[:300] for line in stored.splitlines() if personal in line]
        assert not found, (personal, found)
