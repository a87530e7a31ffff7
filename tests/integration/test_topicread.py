"""Whole-topic reads (``services/runtime/topicread.py``) against the real broker: a topic the broker does not have
fails the read by name, and asking for it does not create it (a wrong TOPIC_PREFIX must never read as a system
with no records, nor leave empty topics behind)."""

from __future__ import annotations

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from schemas import topics
from services.runtime import topicread
from tests.harness import System

pytestmark = pytest.mark.integration


async def test_a_topic_the_broker_does_not_have_fails_the_read_by_name_and_is_not_created(system: System) -> None:
    taken: list[tuple[str, int, int]] = []
    wrong = system.settings.model_copy(update={"topic_prefix": "not-ours."})
    with pytest.raises(topicread.TopicsUnreadable, match=r"^rj\.consent: not on .*'not-ours\.'"):
        await topicread.read_from_the_start(wrong, [topics.CONSENT], lambda t, p, r: taken.append((t, p, r.offset)),
                                            stall_s=1.0)  # fmt: skip
    admin = AIOKafkaAdminClient(bootstrap_servers=system.settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        assert "not-ours.rj.consent" not in await admin.list_topics()
    finally:
        await admin.close()
    assert taken == []

    spans = await topicread.read_from_the_start(system.settings, [topics.CONSENT], lambda t, p, r: None)
    assert {p for t, p in spans} == set(range(system.settings.topic_partitions))
    assert all(span.begin == span.end == 0 for span in spans.values())
