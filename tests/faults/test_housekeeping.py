"""Housekeeping against the real PostgreSQL: what pruning deletes past the retention window, and what it
must never touch (an outbox row not yet published, dead letters, parked events, anything inside the
window), in bounded batches, again and again, through a lost connection."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY

from demo import samples
from services.runtime.db import create_pool, migrate
from services.runtime.devstack import create_database, database_name, drop_database
from services.runtime.fieldcrypt import encrypt_bytes
from services.runtime.housekeeping import prune, shred_expired_days
from services.runtime.keystore import KeyStore, MasterKeys, bucket_of, ensure_schema
from services.runtime.privacy import Privacy
from services.runtime.settings import Settings
from tests.harness import System

pytestmark = pytest.mark.integration

SCHEMA = "kept"
DAY = 24 * 3600.0
WINDOW = 30 * DAY


@pytest.fixture
async def database(pg_server: str) -> AsyncIterator[str]:
    name = f"rj_test_{uuid.uuid4().hex[:10]}"
    url = await create_database(pg_server, name)
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn, SCHEMA, None)  # the runtime's tables only
    finally:
        await conn.close()
    yield url
    await drop_database(pg_server, name)


@pytest.fixture
async def conn(database: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database)
    yield conn
    await conn.close()


async def outbox_row(
    conn: asyncpg.Connection, event_id: str, created_ago_s: float, published_ago_s: float | None
) -> None:
    """An outbox row written ``created_ago_s`` ago and published ``published_ago_s`` ago (None: not yet)."""
    await conn.execute(
        f"""INSERT INTO {SCHEMA}.outbox (event_id, topic, key, value, created_at, published_at)
            VALUES ($1, 'rj.referral', 'case', '{{}}', now() - make_interval(secs => $2),
                    now() - make_interval(secs => $3))""",
        event_id,
        created_ago_s,
        published_ago_s,
    )


async def inbox_row(conn: asyncpg.Connection, event_id: str, received_ago_s: float) -> None:
    await conn.execute(
        f"""INSERT INTO {SCHEMA}.inbox (event_id, position, received_at)
            VALUES ($1, 'crime.events:0:' || $1, now() - make_interval(secs => $2))""",
        event_id,
        received_ago_s,
    )


async def ids(conn: asyncpg.Connection, table: str) -> set[str]:
    return {r[0] for r in await conn.fetch(f"SELECT event_id FROM {SCHEMA}.{table}")}


def pruned_count(table: str) -> float:
    return REGISTRY.get_sample_value("rj_pruned_rows_total", {"table": table}) or 0.0


def transient_failures() -> float:
    return REGISTRY.get_sample_value("rj_transient_failures_total", {"operation": f"{SCHEMA}.housekeeping"}) or 0.0


async def test_pruning_deletes_exactly_the_published_outbox_rows_and_inbox_ids_past_the_window(
    conn: asyncpg.Connection,
) -> None:
    # In the order a service writes them (ids follow time), oldest first.
    await outbox_row(conn, "published-long-ago", 90 * DAY, 90 * DAY)
    await outbox_row(conn, "never-published", 80 * DAY, None)  # owed (or parked): never pruned, however old
    await outbox_row(conn, "written-long-ago-published-lately", 70 * DAY, 3600)  # the window runs from publication
    await outbox_row(conn, "published-just-past-the-window", WINDOW + 120, WINDOW + 60)
    await outbox_row(conn, "published-just-inside-the-window", WINDOW - 60, WINDOW - 60)
    await outbox_row(conn, "published-lately", 60, 30)
    await outbox_row(conn, "not-yet-published", 1, None)
    for event_id, ago in [("received-long-ago", 90 * DAY), ("received-just-past", WINDOW + 60)]:
        await inbox_row(conn, event_id, ago)
    for event_id, ago in [("received-just-inside", WINDOW - 60), ("received-lately", 1)]:
        await inbox_row(conn, event_id, ago)
    await conn.execute(
        f"""INSERT INTO {SCHEMA}.dead_letters (id, source_topic, partition, "offset", original, original_sha256,
                reason, dead_lettered_at)
            VALUES ('old-letter', 'crime.events', 0, 1, 'x', 'h', 'bad', now() - '90 days'::interval)"""
    )
    await conn.execute(
        f"""INSERT INTO {SCHEMA}.parked (case_key, source_topic, partition, "offset", value, reason, parked_at)
            VALUES ('case', 'crime.events', 0, 2, 'x', 'newer', now() - '90 days'::interval)"""
    )
    before = pruned_count("outbox"), pruned_count("inbox")

    assert await prune(conn, SCHEMA, WINDOW) == {"outbox": 2, "inbox": 2}

    assert await ids(conn, "outbox") == {
        "never-published",
        "written-long-ago-published-lately",
        "published-just-inside-the-window",
        "published-lately",
        "not-yet-published",
    }
    assert await ids(conn, "inbox") == {"received-just-inside", "received-lately"}
    assert await conn.fetchval(f"SELECT count(*) FROM {SCHEMA}.dead_letters") == 1
    assert await conn.fetchval(f"SELECT count(*) FROM {SCHEMA}.parked") == 1
    assert (pruned_count("outbox") - before[0], pruned_count("inbox") - before[1]) == (2, 2)


async def test_pruning_a_backlog_goes_in_bounded_batches_each_committed_alone_and_a_second_run_finds_nothing(
    database: str,
) -> None:
    counted = await asyncpg.connect(database, connection_class=StatementCounter)
    try:
        await counted.execute(
            f"""INSERT INTO {SCHEMA}.outbox (event_id, topic, key, value, created_at, published_at)
                SELECT 'old-' || i, 'rj.referral', 'case', '{{}}', now() - '40 days'::interval + i * '1 ms'::interval,
                       CASE WHEN i % 10 = 0 THEN NULL ELSE now() - '40 days'::interval + i * '1 ms'::interval END
                FROM generate_series(1, 2500) AS i"""
        )  # every tenth never published: walked over, kept
        await counted.execute(
            f"""INSERT INTO {SCHEMA}.outbox (event_id, topic, key, value, published_at)
                SELECT 'new-' || i, 'rj.referral', 'case', '{{}}', now() FROM generate_series(1, 57) AS i"""
        )
        await counted.execute(
            f"""INSERT INTO {SCHEMA}.inbox (event_id, position, received_at)
                SELECT 'old-' || i, 'p', now() - '40 days'::interval FROM generate_series(1, 2345) AS i
                UNION ALL SELECT 'new-' || i, 'p', now() FROM generate_series(1, 61) AS i"""
        )
        counted.statements.clear()

        assert await prune(counted, SCHEMA, WINDOW, batch=100) == {"outbox": 2250, "inbox": 2345}

        deleting = [s for s in counted.statements if "DELETE" in s.sql]
        assert len(deleting) >= 2500 // 100 + 2345 // 100  # a batch of ids walked, or of rows deleted, at a time
        assert all(not s.in_transaction for s in deleting), "each batch must commit on its own"
        assert all(s.pruned is None or s.pruned <= 100 for s in deleting)
        assert await counted.fetchval(f"SELECT count(*) FROM {SCHEMA}.outbox") == 250 + 57
        assert await counted.fetchval(f"SELECT count(*) FROM {SCHEMA}.outbox WHERE published_at IS NULL") == 250
        assert await ids(counted, "inbox") == {f"new-{i}" for i in range(1, 62)}

        assert await prune(counted, SCHEMA, WINDOW, batch=100) == {"outbox": 0, "inbox": 0}
        assert await counted.fetchval(f"SELECT count(*) FROM {SCHEMA}.outbox") == 250 + 57
        assert await counted.fetchval(f"SELECT count(*) FROM {SCHEMA}.inbox") == 61
    finally:
        await counted.close()


async def test_pruning_through_a_pool_survives_its_connections_being_cut(database: str, pg_server: str) -> None:
    pool = await create_pool(Settings(database_url=database, db_pool_size=2))
    admin = await asyncpg.connect(pg_server)
    try:
        async with pool.acquire() as conn:
            await outbox_row(conn, "published-long-ago", 90 * DAY, 90 * DAY)
            await inbox_row(conn, "received-long-ago", 90 * DAY)
        # A failover: the pool's idle connection is dead; the first batch fails on it and is retried.
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            database_name(database),
        )
        # The batch on the dead connection is retried, or the pool notices it first and replaces it: either
        # way the run completes (which of the two happens is a matter of timing, so it is not asserted).
        assert await prune(pool, SCHEMA, WINDOW) == {"outbox": 1, "inbox": 1}
    finally:
        await admin.close()
        await pool.close()


async def test_pruning_refuses_a_connection_inside_a_transaction(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        with pytest.raises(ValueError, match="outside a transaction"):
            await prune(conn, SCHEMA, WINDOW)


class Statement:
    def __init__(self, sql: str, in_transaction: bool, pruned: int | None) -> None:
        self.sql, self.in_transaction, self.pruned = sql, in_transaction, pruned


class StatementCounter(asyncpg.Connection):  # type: ignore[misc]
    """A real connection that notes each query it runs, whether inside a transaction, and what it pruned."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.statements: list[Statement] = []

    async def fetchrow(self, query: str, *args: Any, **kwargs: Any) -> Any:
        in_transaction = self.is_in_transaction()
        row = await super().fetchrow(query, *args, **kwargs)
        pruned = row["pruned"] if row is not None and "pruned" in row else None
        self.statements.append(Statement(query, in_transaction, pruned))
        return row


async def test_a_running_service_prunes_on_its_own_and_what_it_pruned_was_past_the_window(system: System) -> None:
    """The service's own timer does it: applied and published rows go once past the window, and the
    intake still drops a redelivery inside it."""
    system.start("referral", retention_window_s=10, housekeeping_interval_s=0.5)
    refs = [f"HK/{i}" for i in range(20)]
    await system.publish(
        [m for r in refs for m in samples.on_crime_events(samples.crime_recorded(r), samples.outcome_recorded(r))]
    )

    async def all_in_and_out() -> bool:
        inbox = await system.fetchval("SELECT count(*) FROM referral.inbox")
        published = await system.fetchval("SELECT count(*) FROM referral.outbox WHERE published_at IS NOT NULL")
        return inbox == 40 and published > 0

    await system.wait_for(all_in_and_out, what="the crimes applied and their facts published")
    await asyncio.sleep(0.5)
    assert await system.fetchval("SELECT count(*) FROM referral.inbox") == 40, "pruned inside the window"

    async def pruned() -> bool:
        inbox = await system.fetchval("SELECT count(*) FROM referral.inbox")
        outbox = await system.fetchval("SELECT count(*) FROM referral.outbox")
        return inbox == 0 and outbox == 0

    await system.wait_for(pruned, timeout_s=30, what="inbox and outbox pruned past the window")
    files = await system.fetchval("SELECT count(*) FROM referral.crime_files WHERE status = 'accepted'")
    assert files == 20, "pruning touches the runtime's tables only"


async def test_a_days_sealing_key_is_destroyed_past_retention_unless_it_still_seals_a_parked_event(
    conn: asyncpg.Connection,
) -> None:
    store = KeyStore(MasterKeys.parse(MasterKeys.generate("h1")))
    await ensure_schema(conn)
    now = datetime.now(UTC)
    old, parked_key, recent = [await store.bucket_key(conn, now - timedelta(days=d)) for d in (40, 35, 1)]
    old_letter = encrypt_bytes(b"a victim's details", old, b"dead-letter:1")
    waiting = encrypt_bytes(b"a newer event", parked_key, b"parked:x")
    recent_letter = encrypt_bytes(b"another victim's details", recent, b"dead-letter:2")
    await conn.execute(
        f"""INSERT INTO {SCHEMA}.parked (case_key, source_topic, partition, "offset", key, value, reason)
            VALUES ('case', 'rj.commands', 0, 7, NULL, $1, 'too new')""",
        waiting,
    )
    batch = Privacy(store).new_batch()

    destroyed = await shred_expired_days(conn, store, WINDOW)

    assert destroyed == [bucket_of(now - timedelta(days=40))[0]]
    assert await batch.open_bytes(conn, old_letter, b"dead-letter:1") is None, "past retention: erased"
    assert await batch.open_bytes(conn, waiting, b"parked:x") == b"a newer event", "a parked event is owed"
    assert await batch.open_bytes(conn, recent_letter, b"dead-letter:2") == b"another victim's details"
    assert await shred_expired_days(conn, store, WINDOW) == [], "idempotent"

    await conn.execute(f"DELETE FROM {SCHEMA}.parked")  # released after the upgrade
    assert await shred_expired_days(conn, store, WINDOW) == [parked_key.bucket]
    assert await batch.open_bytes(conn, waiting, b"parked:x") is None
