"""Reading whole topics from offset zero with a plain consumer (no group: nothing committed, no one's position
moved), for the readers that must see every record: ``rj audit verify --from-kafka`` and the subject access
export.

Three things have each left records out of such a read here, and are guarded against:

- **A seek overtaken by a reset.** On ``assign`` a consumer with no committed offsets starts looking up its
  default reset offset (aiokafka's default: the latest); ``seek_to_beginning`` meanwhile asks for the earliest,
  but the first lookup's answer is applied to any partition still awaiting a reset, so a read "from the
  beginning" may start at the end. The consumer here resets to the earliest either way.
- **An end listed inside the last record batch.** The embedded broker (Tansu) lists a partition's end
  (ListOffsets) as one past the start of its last record batch: five records sent in one batch list an end
  of 1. A partition is read to the larger of its listed end and the high watermark of the first fetch answer
  for it, which has been right each time.
- **A topic missing from cached metadata.** A consumer's ``partitions_for_topic`` reads metadata that its
  ``topics()`` does not refresh; the partitions are asked of the broker, again until it names every topic, and a
  topic it never names is an error, never a topic read as empty. The topics are listed before any is described:
  a metadata request that names a topic creates it on a broker that creates topics on demand (Tansu does), and a
  wrong ``TOPIC_PREFIX`` must fail, not make empty topics.

A partition read to its end is paused, so that traffic elsewhere neither piles up in memory nor counts as
progress for a partition that is stuck. What retention left of a partition (its ``begin``) is listed after the
read: a record trimmed while the read went on is then below it, not taken for a deleted one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from services.runtime.settings import Settings

if TYPE_CHECKING:
    from aiokafka import ConsumerRecord

STALL_S: Final = 30.0
"""How long a read may bring nothing before it gives up on a partition that has not reached its end."""


class TopicsUnreadable(Exception):
    """A topic the broker did not name, or a partition that could not be read to its end: a sentence."""


@dataclass(frozen=True)
class Span:
    """What a partition held as it was read: its first offset (what retention left) and the offset after its end."""

    begin: int
    end: int


Take = Callable[[str, int, "ConsumerRecord[bytes, bytes]"], None]
"""Called with each record read: the topic's logical name (no prefix), the partition, the record."""


async def read_from_the_start(
    settings: Settings, names: Sequence[str], take: Take, *, stall_s: float = STALL_S
) -> dict[tuple[str, int], Span]:
    """Every record of every partition of the topics ``names`` (logical names), from offset zero to its end as
    it was when the read began (or a little later), each handed to ``take``; what each partition held."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    known = await partitions_of(settings, [settings.topic(name) for name in names], stall_s=stall_s)
    missing = [name for name in names if not known.get(settings.topic(name))]
    if missing:
        where = f"{settings.kafka_bootstrap_servers} (prefix {settings.topic_prefix!r})"
        raise TopicsUnreadable(f"{', '.join(missing)}: not on {where} within {stall_s:.0f} s")
    partitions = [TopicPartition(settings.topic(name), p) for name in names for p in known[settings.topic(name)]]
    logical = {tp: tp.topic.removeprefix(settings.topic_prefix) for tp in partitions}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=settings.fetch_max_partition_bytes,
    )
    await consumer.start()
    try:
        consumer.assign(partitions)
        ends = dict(await consumer.end_offsets(partitions))
        await consumer.seek_to_beginning(*partitions)
        left = set(partitions)
        answered: set[TopicPartition] = set()
        quiet_since = time.monotonic()
        while left:
            batches = await consumer.getmany(*left, timeout_ms=500)
            moved = False
            for tp, records in batches.items():
                for record in records:
                    take(logical[tp], tp.partition, record)
                moved = moved or (bool(records) and tp in left)
            for tp in list(left):
                highwater = consumer.highwater(tp)
                if highwater is None:
                    continue  # no fetch answer for it yet
                if tp not in answered:
                    answered.add(tp)
                    ends[tp] = max(ends[tp], highwater)
                    moved = True
                if await consumer.position(tp) >= ends[tp]:
                    left.discard(tp)
                    consumer.pause(tp)  # read: what comes later is not this read's, and is not fetched
            if moved:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > stall_s:
                tp = min(left)
                raise TopicsUnreadable(f"{logical[tp]}/{tp.partition} could not be read to its end offset {ends[tp]}")
        begins = await consumer.beginning_offsets(partitions)
    finally:
        await consumer.stop()
    return {(logical[tp], tp.partition): Span(begins[tp], ends[tp]) for tp in partitions}


async def partitions_of(settings: Settings, names: Sequence[str], *, stall_s: float = STALL_S) -> dict[str, list[int]]:
    """Each topic's partitions (``names`` as the broker knows them), asked of the broker until it names them all
    or ``stall_s`` passes; a topic it does not name has none. Only topics the broker lists are described: naming
    a topic in a metadata request creates it on a broker that creates topics on demand."""
    from aiokafka.admin import AIOKafkaAdminClient

    deadline = time.monotonic() + stall_s
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        while True:
            known: dict[str, list[int]] = {name: [] for name in names}
            listed = set(await admin.list_topics())
            present = [name for name in names if name in listed]
            described = await admin.describe_topics(present) if present else []
            for topic in described:
                if topic["error_code"] == 0 and topic["topic"] in known:
                    known[topic["topic"]] = sorted(p["partition"] for p in topic["partitions"] if p["error_code"] == 0)
            if all(known.values()) or time.monotonic() > deadline:
                return known
            await asyncio.sleep(0.5)
    finally:
        await admin.close()
