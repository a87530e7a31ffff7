"""Reading topics from their beginning, without a consumer group (no join wait): what the demo prints, and what
tests read back. Services consume with ``services.runtime.consumer``, never with this."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import NamedTuple

from services.runtime.settings import Settings


class RawRecord(NamedTuple):
    """A record as it is on the topic, headers included."""

    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes | None], ...]


class TopicReader:
    """Reads topics from their beginning without a consumer group (no join wait)."""

    def __init__(self, settings: Settings, names: Iterable[str]) -> None:
        from aiokafka import AIOKafkaConsumer

        self._names = [settings.topic(n) for n in names]
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )

    async def start(self) -> None:
        from aiokafka import TopicPartition

        await self._consumer.start()
        partitions = []
        for name in self._names:
            for _ in range(50):
                found = self._consumer.partitions_for_topic(name)
                if found:
                    break
                await self._consumer._client.force_metadata_update()  # noqa: SLF001 - no public way
                await asyncio.sleep(0.1)
            partitions += [TopicPartition(name, p) for p in sorted(found or [])]
        self._consumer.assign(partitions)
        await self._consumer.seek_to_beginning(*partitions)

    async def read(self, timeout_s: float = 0.5) -> list[tuple[str, bytes | None, bytes]]:
        """Whatever arrived since the last read: (topic, key, value) triples."""
        batches = await self._consumer.getmany(timeout_ms=int(timeout_s * 1000))
        return [(tp.topic, m.key, m.value) for tp, msgs in batches.items() for m in msgs]

    async def read_records(self, timeout_s: float = 0.5) -> list[RawRecord]:
        """Whatever arrived since the last read, with each record's headers: for checking the wire format."""
        batches = await self._consumer.getmany(timeout_ms=int(timeout_s * 1000))
        return [RawRecord(tp.topic, m.key, m.value, tuple(m.headers)) for tp, msgs in batches.items() for m in msgs]

    async def stop(self) -> None:
        await self._consumer.stop()
