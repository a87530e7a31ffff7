"""The raw batch path: records handed over as they came, with no registry, inbox or dead letters.

For a service that must keep every record exactly as it was (the audit log): a tombstone, bytes that are
not JSON and a type no one knows are all data to it, never faults. ``BatchConsumer`` drives it like the
event path: the handler's writes and the consumer positions commit in one transaction, and only then are
the offsets committed to Kafka. A failure of any kind is retried for ever (and alerted on, see
``retry_transient``); since nothing is dead-lettered, a record that keeps failing holds up its partition
rather than being skipped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import asyncpg
import structlog

from services.runtime import privacy
from services.runtime.db import retry_transient, transaction
from services.runtime.outbox import next_positions, store_positions
from services.runtime.records import Record

log = structlog.get_logger()

RawHandler = Callable[[asyncpg.Connection, Sequence[Record]], Awaitable[None]]


@dataclass
class RawBatchSteps:
    """``BatchSteps`` over untouched records: ``handler`` sees each batch in the order it was read."""

    service: str
    schema: str
    pool: asyncpg.Pool
    handler: RawHandler
    privacy: privacy.Privacy
    max_backoff_s: float = 5.0

    def prepare(self, records: Sequence[Record]) -> Sequence[Record]:
        return list(records)

    async def commit(self, items: Sequence[Record]) -> None:
        if not items:
            return

        async def attempt() -> None:
            with privacy.batch_scope(self.privacy):
                async with transaction(self.pool) as conn:
                    await self.handler(conn, items)
                    await store_positions(conn, self.schema, next_positions(items))

        # A "data fault" here is ours, not the record's (the handler takes any bytes): retry it too.
        while True:
            try:
                await retry_transient(attempt, what=f"{self.service} raw batch", max_backoff_s=self.max_backoff_s)
                return
            except Exception as exc:  # logged and retried; never skipped
                log.error("raw_batch_failed_retrying", service=self.service, error=repr(exc))
                await asyncio.sleep(self.max_backoff_s)

    async def stored_positions(self) -> dict[tuple[str, int], int]:
        rows = await self.pool.fetch(f"SELECT topic, partition, next_offset FROM {self.schema}.consumer_positions")
        return {(r["topic"], r["partition"]): r["next_offset"] for r in rows}
