"""Takes a batch of Kafka records to committed state: exactly-once effects over at-least-once delivery.

One PostgreSQL transaction per batch: claim the event ids in the inbox (repeats drop out), let the
service decide, write its new state and its outgoing events to the outbox, commit. Faust acks the
batch when the loop asks for the next one *and* when the loop body raises, so ``process`` never
raises: transient failures are retried in place until they pass, and a message that can never
succeed is dead-lettered with its reason, in the same transaction that records it as handled.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog

from schemas import topics
from schemas.deadletter import DeadLetter
from schemas.envelope import CloudEvent, derived_event_id
from schemas.registry import ParseError, Registry
from services.runtime.db import is_transient, retry_transient, transaction
from services.runtime.outbox import Outgoing, claim_inbox, write_outbox

log = structlog.get_logger()

Event = CloudEvent[Any]
BatchHandler = Callable[[asyncpg.Connection, Sequence[Event]], Awaitable[Sequence[Outgoing]]]


@dataclass(frozen=True)
class Record:
    """One Kafka record as received: where it came from and its untouched bytes."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


@dataclass(frozen=True)
class _Parsed:
    record: Record
    event: Event


def first_of_each(events: Sequence[Event]) -> list[Event]:
    """``events`` without repeats of an id, each kept at its first position."""
    seen: set[str] = set()
    unique = []
    for event in events:
        if event.id not in seen:
            seen.add(event.id)
            unique.append(event)
    return unique


class BatchProcessor:
    def __init__(
        self,
        *,
        service: str,
        schema: str,
        pool: asyncpg.Pool,
        registry: Registry,
        consumes: frozenset[str],
        handler: BatchHandler,
        max_backoff_s: float = 5.0,
    ) -> None:
        self.service = service
        self.schema = schema
        self.pool = pool
        self.registry = registry
        self.consumes = consumes
        self.handler = handler
        self.max_backoff_s = max_backoff_s

    async def process(self, records: Sequence[Record]) -> None:
        """Apply a batch exactly once. Never raises (but for cancellation): see the module docstring."""
        parsed: list[_Parsed] = []
        dead: list[Outgoing] = []
        for record in records:
            try:
                event = self.registry.parse(record.value)
            except ParseError as exc:
                dead.append(self._dead_letter(record, str(exc)))
                continue
            if event.type in self.consumes:
                parsed.append(_Parsed(record, event))
            # Other known types share our input topics (e.g. commands for other services): not ours.
        try:
            await self._commit(parsed, dead)
        except Exception as exc:  # a permanent failure somewhere in the batch: find the culprit
            log.warning("batch_failed_isolating", size=len(parsed), error=repr(exc))
            await self._commit_one_by_one(parsed, dead)

    async def _commit(self, parsed: Sequence[_Parsed], dead: Sequence[Outgoing]) -> None:
        async def attempt() -> None:
            async with transaction(self.pool) as conn:
                fresh = await claim_inbox(conn, self.schema, [p.event.id for p in parsed])
                new_events = [p.event for p in parsed if p.event.id in fresh]
                # A repeat within the batch itself is taken once, at its first position.
                unique = first_of_each(new_events)
                outgoing = list(await self.handler(conn, unique)) if unique else []
                await write_outbox(conn, self.schema, [*outgoing, *dead])

        await retry_transient(attempt, what=f"{self.service}.batch", max_backoff_s=self.max_backoff_s)

    async def _commit_one_by_one(self, parsed: Sequence[_Parsed], dead: Sequence[Outgoing]) -> None:
        await self._commit_or_dead_letter([], dead)
        for item in parsed:
            await self._commit_or_dead_letter([item], [])

    async def _commit_or_dead_letter(self, parsed: Sequence[_Parsed], dead: Sequence[Outgoing]) -> None:
        try:
            await self._commit(parsed, dead)
            return
        except Exception as exc:
            if is_transient(exc):  # pragma: no cover - _commit retries these itself
                raise
            reason = f"{self.service} could not apply it: {type(exc).__name__}: {exc}"
            log.error("event_dead_lettered", reason=reason, event_ids=[p.event.id for p in parsed])
        letters = [self._dead_letter(p.record, reason, p.event) for p in parsed]

        async def record_as_handled() -> None:
            async with transaction(self.pool) as conn:
                await claim_inbox(conn, self.schema, [p.event.id for p in parsed])
                await write_outbox(conn, self.schema, letters)

        await retry_transient(record_as_handled, what=f"{self.service}.dead_letter")

    def _dead_letter(self, record: Record, reason: str, event: Event | None = None) -> Outgoing:
        letter = DeadLetter(
            id=derived_event_id("dead-letter", self.service, record.topic, str(record.partition), str(record.offset)),
            service=self.service,
            reason=reason,
            source_topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key_b64=base64.b64encode(record.key).decode() if record.key is not None else None,
            original_b64=base64.b64encode(record.value).decode(),
            event_id=event.id if event else None,
            event_type=event.type if event else None,
            dead_lettered_at=datetime.now(UTC),
        )
        if event is None:
            log.warning("message_dead_lettered", topic=record.topic, offset=record.offset, reason=reason)
        key = record.key.decode(errors="replace") if record.key is not None else None
        return Outgoing(event_id=letter.id, topic=topics.DEADLETTER, key=key, value=letter.model_dump_json().encode())
