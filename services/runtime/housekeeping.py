"""Housekeeping: deleting what the retention window no longer needs from a service's runtime tables.

Only two kinds of row ever go: outbox rows the relay published (``published_at`` set) longer ago than the
window, and inbox ids taken in longer ago than it. An unpublished outbox row (owed, or parked) is never
touched, nor are ``dead_letters`` or ``parked``. The window must reach further back than any redelivery
of an id can (see the README): an inbox id pruned too soon lets a late copy be applied twice.

Dead letters are kept sealed whole under the key of their day: ``shred_expired_days`` destroys a day's key
once the day is past retention (crypto-shredding), sparing a day that still seals a parked event.

Deletions go in bounded batches, each its own short statement and transaction, so that pruning a month
of backlog holds no lock for long and writes no burst of WAL.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime

import asyncpg
import structlog

from services.runtime import metrics
from services.runtime.db import retry_transient
from services.runtime.fieldcrypt import BYTES_MAGIC
from services.runtime.keystore import KeyStore

log = structlog.get_logger()

# The outbox is walked in id order, a batch of ids at a time: a row whose id is past the walk's end
# cannot be pruned if it was created after the cutoff (published_at >= created_at). Ids are taken in
# the order rows are written, so the walk stops at the first batch holding a row created after the
# cutoff, instead of reading the whole table every time there is nothing to prune (a row a concurrent
# transaction wrote out of order at that edge waits for the next run).
_OUTBOX_BATCH = """
    WITH walked AS (
        SELECT id, created_at FROM {schema}.outbox WHERE id > $1 ORDER BY id LIMIT $2
    ), pruned AS (
        DELETE FROM {schema}.outbox o USING walked w
        WHERE o.id = w.id AND o.published_at IS NOT NULL AND o.published_at < $3
        RETURNING o.id
    )
    SELECT (SELECT count(*) FROM pruned) AS pruned, (SELECT max(id) FROM walked) AS last,
           coalesce((SELECT bool_or(created_at >= $3) FROM walked), false) AS past_cutoff,
           (SELECT count(*) FROM walked) AS walked
"""

# Inbox ids are random (no order to walk): each batch takes up to $2 rows past the cutoff.
_INBOX_BATCH = """
    WITH pruned AS (
        DELETE FROM {schema}.inbox
        WHERE event_id = ANY(ARRAY(SELECT event_id FROM {schema}.inbox WHERE received_at < $1 LIMIT $2))
          AND received_at < $1
        RETURNING 1
    )
    SELECT count(*) AS pruned FROM pruned
"""


async def prune(
    pool_or_conn: asyncpg.Pool | asyncpg.Connection, schema: str, window_s: float, *, batch: int = 10_000
) -> dict[str, int]:
    """Delete published outbox rows and inbox ids older than ``window_s`` from ``schema``, ``batch`` rows
    per statement; return how many went, by table. Transient failures are retried (each batch alone).

    Pass the pool in a service: each batch takes a connection of its own, so a lost one is replaced. A
    connection given must not be inside a transaction (each batch must commit on its own)."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", schema):
        raise ValueError(f"bad schema name {schema!r}")
    if batch < 1:
        raise ValueError(f"batch must be at least 1, not {batch}")
    if window_s <= 0:
        raise ValueError(f"the retention window must be positive, not {window_s}")
    if isinstance(pool_or_conn, asyncpg.Connection) and pool_or_conn.is_in_transaction():
        raise ValueError("prune commits each batch: give it a pool or a connection outside a transaction")

    async def run(sql: str, *args: object) -> asyncpg.Record:
        async def attempt() -> asyncpg.Record:
            if isinstance(pool_or_conn, asyncpg.Connection):
                return await pool_or_conn.fetchrow(sql, *args)
            async with pool_or_conn.acquire() as conn:
                return await conn.fetchrow(sql, *args)

        return await retry_transient(attempt, what=f"{schema}.housekeeping")

    # One cutoff for the whole run, from the database's clock (the one that wrote the timestamps).
    cutoff: datetime = (await run("SELECT now() - make_interval(secs => $1) AS cutoff", float(window_s)))["cutoff"]

    outbox = 0
    after = 0
    while True:
        row = await run(_OUTBOX_BATCH.format(schema=schema), after, batch, cutoff)
        outbox += row["pruned"]
        metrics.PRUNED.labels(table="outbox").inc(row["pruned"])
        if row["walked"] < batch or row["past_cutoff"]:
            break
        after = row["last"]

    inbox = 0
    while True:
        row = await run(_INBOX_BATCH.format(schema=schema), cutoff, batch)
        inbox += row["pruned"]
        metrics.PRUNED.labels(table="inbox").inc(row["pruned"])
        if row["pruned"] < batch:
            break

    pruned = {"outbox": outbox, "inbox": inbox}
    if outbox or inbox:
        log.info("pruned_past_retention_window", schema=schema, window_s=window_s, cutoff=cutoff.isoformat(), **pruned)
    else:
        log.debug("nothing_past_retention_window", schema=schema, window_s=window_s)
    return pruned


async def shred_expired_days(conn: asyncpg.Connection, store: KeyStore, retention_s: float) -> list[str]:
    """Retention for records kept sealed whole (dead letters and their copies on ``rj.deadletter``): destroy
    the key of each day older than ``retention_s``, so that what was sealed under it can never be read again.
    A day whose key still seals a parked event (it waits for an upgrade, and is owed to its service) is
    spared until the event is let go. Returns the days destroyed. Idempotent: every replica may run it."""
    schemas = await conn.fetch(
        "SELECT table_schema FROM information_schema.tables WHERE table_name = 'parked' AND table_type = 'BASE TABLE'"
    )
    sparing: set[str] = set()
    for row in schemas:
        schema = row["table_schema"]
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", schema):
            continue
        held = await conn.fetch(
            f"""SELECT DISTINCT substring(value FROM {len(BYTES_MAGIC) + 1} FOR 16) AS key_id FROM {schema}.parked
                WHERE substring(value FROM 1 FOR {len(BYTES_MAGIC)}) = $1""",
            BYTES_MAGIC,
        )
        sparing |= {str(uuid.UUID(bytes=r["key_id"])) for r in held if len(r["key_id"]) == 16}
    cutoff = await conn.fetchval("SELECT now() - make_interval(secs => $1)", float(retention_s))
    destroyed = await store.destroy_buckets_ending_before(
        conn, cutoff, by="housekeeping", reason=f"retention of sealed records ({retention_s:.0f} s)", sparing=sparing
    )
    if destroyed:
        log.info("sealed_records_past_retention_shredded", days=destroyed, spared=len(sparing))
    return destroyed
