"""The inbox and outbox tables: what a transaction records as taken in and as owed to the world."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from schemas.envelope import CloudEvent, derived_event_id, new_event
from services.runtime import privacy
from services.runtime.decision import Emit
from services.runtime.records import Record


@dataclass(frozen=True)
class Outgoing:
    """A message owed to a topic, written to the outbox in the transaction that decided it."""

    event_id: str
    topic: str  # logical name; the relay applies the deployment's topic prefix
    key: str | None
    value: bytes
    """The record's bytes; empty for an event with personal data, which ``write_outbox`` writes, sealed."""
    event: CloudEvent[Any] | None = field(default=None, compare=False, repr=False)
    """The event ``value`` encodes, kept so that its personal fields are sealed as it is written."""
    caused_by: str | None = field(default=None, compare=False)
    """The id of the event (a command, say) this was decided on, even where the envelope does not say so (a
    participant-facing fact starts a chain of its own): how the runtime knows a command was answered."""

    @classmethod
    def event_of(cls, topic: str, event: CloudEvent[Any], *, caused_by: str | None = None) -> Outgoing:
        # An event with personal data is serialised once, as it is sealed: not here, to be done again there.
        value = b"" if privacy.has_personal_data(event.data) else event.to_json()
        return cls(event_id=event.id, topic=topic, key=event.subject, value=value, event=event, caused_by=caused_by)


def facts(
    topic: str,
    source: str,
    subject: str,
    emits: Iterable[Emit],
    *,
    cause: CloudEvent[Any] | None,
    now: datetime,
    force: str | None = None,
) -> list[Outgoing]:
    """Wrap decided facts as events about ``subject`` (continuing ``cause``'s chain), bound for ``topic``, with
    the ``force`` the case belongs to.

    Their ids are derived from the source, the subject and each decision's identity: a decision
    replayed for whatever reason yields the same id, which the outbox then refuses to hold twice.
    """
    return [
        Outgoing.event_of(
            topic,
            new_event(
                emit.data,
                source=source,
                subject=subject,
                cause=cause,
                event_id=derived_event_id(source, subject, emit.identity),
                time=now,
                force=force,
            ),
            caused_by=cause.id if cause is not None else None,
        )
        for emit in emits
    ]


def notify_channel(schema: str) -> str:
    return f"{schema}_outbox"


async def claim_inbox(conn: asyncpg.Connection, schema: str, claims: Sequence[tuple[str, str]]) -> set[str]:
    """Record each ``(event id, position)`` as taken in; return the ids not seen before (the rest are
    repeats). The position (topic:partition:offset) of an id's first copy is kept to tell a redelivery
    of that record from the same id sent again."""
    if not claims:
        return set()
    first = dict(reversed(claims))  # the first position of each id
    rows = await conn.fetch(
        f"INSERT INTO {schema}.inbox (event_id, position) SELECT * FROM unnest($1::text[], $2::text[]) "
        "ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
        list(first),
        list(first.values()),
    )
    return {r["event_id"] for r in rows}


async def first_positions(
    conn: asyncpg.Connection, schema: str, event_ids: Sequence[str]
) -> dict[str, tuple[str | None, datetime]]:
    """Where and when each of ``event_ids`` was first taken in."""
    rows = await conn.fetch(
        f"SELECT event_id, position, received_at FROM {schema}.inbox WHERE event_id = ANY($1::text[])",
        list(event_ids),
    )
    return {r["event_id"]: (r["position"], r["received_at"]) for r in rows}


async def write_outbox(
    conn: asyncpg.Connection,
    schema: str,
    messages: Sequence[Outgoing],
    *,
    positions: Mapping[tuple[str, int], int] | None = None,
) -> None:
    """Append ``messages`` to the outbox, their events' personal fields sealed (``privacy``); an id already
    there (a replayed decision) is not written twice. ``positions``: the next offset to read of each (topic,
    partition) the batch applied, stored with it in the same statement (``store_positions``; never backwards)."""
    if not messages:
        if positions:
            await store_positions(conn, schema, positions)
        return
    messages = await privacy.batch().seal_outgoing(conn, messages)
    args: list[Any] = [
        [m.event_id for m in messages],
        [m.topic for m in messages],
        [m.key for m in messages],
        [m.value for m in messages],
        notify_channel(schema),
    ]
    moved = ""
    if positions:
        # A batch's one closing round trip: its facts, where it read up to, and a wake-up for the relay (delivered
        # when the transaction commits). Every data-modifying WITH runs, read or not.
        moved = f", moved AS ({_STORE_POSITIONS.format(schema=schema, first=6, second=7, third=8)} RETURNING 1)"
        args += [[t for t, _ in positions], [p for _, p in positions], list(positions.values())]
    await conn.execute(
        f"WITH written AS (INSERT INTO {schema}.outbox (event_id, topic, key, value) "
        "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[]) "
        f"ON CONFLICT (event_id) DO NOTHING RETURNING 1){moved} "
        "SELECT pg_notify($5, '')",
        *args,
    )


_STORE_POSITIONS = """INSERT INTO {schema}.consumer_positions AS p (topic, partition, next_offset)
    SELECT * FROM unnest(${first}::text[], ${second}::int[], ${third}::bigint[])
    ON CONFLICT (topic, partition) DO UPDATE SET next_offset = GREATEST(p.next_offset, EXCLUDED.next_offset)"""


def next_positions(records: Iterable[Record]) -> dict[tuple[str, int], int]:
    """The next offset to read of each (topic, partition) ``records`` came from."""
    nexts: dict[tuple[str, int], int] = {}
    for record in records:
        where = (record.topic, record.partition)
        nexts[where] = max(nexts.get(where, 0), record.offset + 1)
    return nexts


async def store_positions(conn: asyncpg.Connection, schema: str, positions: Mapping[tuple[str, int], int]) -> None:
    """Record, with what was applied, the next offset to read of each partition (never backwards)."""
    if not positions:
        return
    await conn.execute(
        _STORE_POSITIONS.format(schema=schema, first=1, second=2, third=3),
        [t for t, _ in positions],
        [p for _, p in positions],
        list(positions.values()),
    )


async def parked_rows(conn: asyncpg.Connection, schema: str) -> list[asyncpg.Record]:
    """Outbox rows the relay parked as unpublishable, oldest first (and how many rows wait behind each)."""
    return await conn.fetch(
        f"""SELECT p.id, p.event_id, p.topic, p.key, length(p.value) AS size, p.parked_at, p.parked_reason,
                   (SELECT count(*) FROM {schema}.outbox o WHERE o.key = p.key AND o.id > p.id
                      AND o.published_at IS NULL) AS waiting_behind
              FROM {schema}.outbox p WHERE p.published_at IS NULL AND p.parked_at IS NOT NULL ORDER BY p.id"""
    )


async def release_parked_row(conn: asyncpg.Connection, schema: str, row_id: int) -> bool:
    """Let the relay try a parked row again (after the broker's limit was raised, say): it goes first,
    ahead of its key's rows that waited behind it. False if no such parked row."""
    status = await conn.execute(
        f"""UPDATE {schema}.outbox SET parked_at = NULL, parked_reason = NULL
             WHERE id = $1 AND parked_at IS NOT NULL AND published_at IS NULL""",
        row_id,
    )
    if status.endswith(" 1"):
        await conn.execute("SELECT pg_notify($1, '')", notify_channel(schema))
        return True
    return False
