"""Dead letters: what a service could not process, kept whole in its ``dead_letters`` table (bytea, with
a SHA-256) and copied, bounded, onto ``rj.deadletter`` with a pointer to the row."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol

import asyncpg
import structlog

from schemas import topics
from schemas.deadletter import DeadLetter
from schemas.envelope import derived_event_id
from services.runtime import metrics
from services.runtime.outbox import Outgoing
from services.runtime.records import Record, printable

log = structlog.get_logger()

#: The most of a dead record's bytes copied onto ``rj.deadletter``; the whole is kept in PostgreSQL.
DEAD_LETTER_COPY_BYTES = 64 * 1024


class Letter(Protocol):
    @property
    def record(self) -> Record: ...
    @property
    def reason(self) -> str: ...
    @property
    def event_id(self) -> str | None: ...
    @property
    def event_type(self) -> str | None: ...


async def store_dead_letters(
    conn: asyncpg.Connection, schema: str, service: str, letters: Sequence[Letter]
) -> list[Outgoing]:
    """Keep each letter's whole original in ``dead_letters`` and return its bounded copy for ``rj.deadletter``.
    Every text is made printable and bounded, so that writing a dead letter cannot fail for its data."""
    if not letters:
        return []
    rows, outgoing = [], []
    for item in letters:
        record = item.record
        letter_id = derived_event_id("dead-letter", service, record.topic, str(record.partition), str(record.offset))
        original = record.value or b""
        digest = hashlib.sha256(original).hexdigest()
        reason = printable(item.reason)[:4000]
        event_id = printable(item.event_id)[:200] if item.event_id else None
        event_type = printable(item.event_type)[:200] if item.event_type else None
        rows.append((letter_id, record.topic, record.partition, record.offset, record.key, record.value, digest,
                     reason, event_id, event_type))  # fmt: skip
        copy = original[:DEAD_LETTER_COPY_BYTES]
        letter = DeadLetter(
            id=letter_id,
            service=service,
            reason=reason,
            source_topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key_b64=base64.b64encode(record.key[:DEAD_LETTER_COPY_BYTES]).decode() if record.key else None,
            original_b64=base64.b64encode(copy).decode(),
            original_size=len(record.value) if record.value is not None else None,
            original_sha256=digest,
            truncated=len(copy) < len(original),
            stored_as=f"{schema}.dead_letters/{letter_id}",
            event_id=event_id,
            event_type=event_type,
            dead_lettered_at=datetime.now(UTC),
        )
        outgoing.append(
            Outgoing(letter_id, topics.DEADLETTER, record.case_key[:200] or None, letter.model_dump_json().encode())
        )
        metrics.DEAD_LETTERS.labels(topic=record.topic).inc()
        log.warning("dead_lettered", service=service, position=record.position, reason=reason[:300])
    await conn.executemany(
        f"""INSERT INTO {schema}.dead_letters (id, source_topic, partition, "offset", key, original,
                original_sha256, reason, event_id, event_type)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (id) DO NOTHING""",
        rows,
    )
    return outgoing
