"""Kafka administration the services need: making sure their topics exist."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import NamedTuple

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from schemas import topics
from schemas.kafka_binding import STRUCTURED_MODE_HEADERS
from services.runtime.settings import Settings

log = structlog.get_logger()


def topic_config(settings: Settings, name: str) -> dict[str, str]:
    """The settings a topic is created with: ours (``rj.*``) are the system's log, which auditors replay
    from offset zero, so they are kept for ever; upstream's ``crime.events`` for a setting's time, and so
    is ``rj.deadletter``, whose records carry bounded copies of what could not be processed."""
    if name == topics.DEADLETTER:  # copies of records (personal data among them) kept whole in PostgreSQL
        return {"retention.ms": str(settings.deadletter_retention_ms), "retention.bytes": "-1"}
    if name.startswith("rj."):
        return {"retention.ms": "-1", "retention.bytes": "-1"}
    return {"retention.ms": str(settings.crime_events_retention_ms), "retention.bytes": "-1"}


async def ensure_topics(settings: Settings, names: Iterable[str] = topics.ALL_TOPICS) -> None:
    """Create the (prefixed) topics that do not exist yet, with explicit partitions and retention
    (``topic_config``). Safe to call from every service at start."""
    names = list(names)
    wanted = [settings.topic(n) for n in names]
    for attempt in range(30):
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [t for t in wanted if t not in existing]
            if missing:
                try:
                    response = await admin.create_topics(
                        [
                            NewTopic(
                                settings.topic(n),
                                settings.topic_partitions,
                                settings.topic_replication_factor,
                                topic_configs=topic_config(settings, n),
                            )
                            for n in names
                            if settings.topic(n) in missing
                        ]
                    )
                except TopicAlreadyExistsError:
                    response = None
                # The admin client returns each topic's error rather than raising it.
                for topic, code, *message in getattr(response, "topic_errors", ()):
                    if code not in (0, TopicAlreadyExistsError.errno):
                        raise for_code(code)(f"creating {topic}: {message[0] if message else ''}")
                log.info("topics_created", topics=missing)
            return
        except (KafkaError, OSError) as exc:
            log.warning("topics_not_ready", error=repr(exc), attempt=attempt)
            await asyncio.sleep(min(0.2 * (attempt + 1), 2.0))
        finally:
            await admin.close()
    raise RuntimeError(f"could not create topics on {settings.kafka_bootstrap_servers}")


async def topic_problems(settings: Settings, names: Iterable[str] = topics.ALL_TOPICS) -> list[str]:
    """How the existing topics differ from what ``ensure_topics`` makes (a topic created by an older version, by
    hand, or by a broker creating topics on first use): retention other than ``topic_config``'s (the broker's
    default of 7 days would lose the audit trail), or, on a topic keyed by case (``topics.CASE_KEYED``), a partition
    count other than ``TOPIC_PARTITIONS`` (a case's records land on the same partition number in every such topic
    only when all have the same count: that is what keeps a case in one lane, its records applied one transaction
    at a time, in order). Each a sentence for an operator."""
    names = list(names)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    try:
        await admin.start()
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, settings.topic(n)) for n in names]
        )
        described = await admin.describe_topics([settings.topic(n) for n in names])
    finally:
        await admin.close()
    partitions = {t["topic"]: len(t["partitions"]) for t in described if t.get("error_code", 0) == 0}
    found: dict[str, dict[str, str]] = {}
    for response in responses:
        for code, _, _, resource, entries in response.resources:
            if code == 0:
                found[resource] = {entry[0]: entry[1] for entry in entries}
    problems = []
    for name in names:
        have = found.get(settings.topic(name))
        if have is None:
            problems.append(f"{settings.topic(name)}: its configuration cannot be read")
            continue
        for key, want in topic_config(settings, name).items():
            if key == "retention.ms" and have.get(key) != want:
                problems.append(
                    f"{settings.topic(name)}: retention.ms is {have.get(key, 'the broker default')}, not {want}"
                )
        count = partitions.get(settings.topic(name))
        if name in topics.CASE_KEYED and count is not None and count != settings.topic_partitions:
            problems.append(
                f"{settings.topic(name)}: {count} partitions, not {settings.topic_partitions} (TOPIC_PARTITIONS): a "
                "case's records on it would not share a lane with its records on the other topics"
            )
    return problems


class Sent(NamedTuple):
    """Where the broker put a published record: its logical topic, partition and offset."""

    topic: str
    partition: int
    offset: int

    @property
    def position(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"


async def publish(settings: Settings, messages: Iterable[tuple[str, str | None, bytes]]) -> int:
    """Publish (logical topic, key, value) messages as structured-mode CloudEvents; wait until the broker has all."""
    return len(
        await publish_raw(settings, ((t, k.encode() if k is not None else None, v, None) for t, k, v in messages))
    )


async def publish_raw(
    settings: Settings, messages: Iterable[tuple[str, bytes | None, bytes, int | None]]
) -> list[Sent]:
    """Publish (logical topic, key bytes, value, partition or None for the key's) messages as structured-mode
    CloudEvents, keys and values as they are; wait until the broker has all and return where each went."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", enable_idempotence=False, linger_ms=5
    )
    await producer.start()
    # aiokafka's C record builder takes headers only as a list; it never changes it, so one serves all.
    headers = list(STRUCTURED_MODE_HEADERS)
    try:
        futures = []
        for topic, key, value, partition in messages:
            futures.append(
                await producer.send(settings.topic(topic), value, key=key, partition=partition, headers=headers)
            )
        sent = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [Sent(m.topic.removeprefix(settings.topic_prefix), m.partition, m.offset) for m in sent]
