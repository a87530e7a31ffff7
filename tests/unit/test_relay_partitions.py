"""The relay places each row itself: it must put a key exactly where Kafka's default partitioner would, so that
every producer of a key (the relay, ``publish``, another team's Java client) agrees on its partition."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given, settings
from hypothesis import strategies as st

from services.runtime import relay
from services.runtime.relay import partition_of


@settings(max_examples=300, deadline=None)
@given(key=st.text(max_size=80), count=st.integers(min_value=1, max_value=64))
def test_a_key_goes_where_the_default_partitioner_puts_it(key: str, count: int) -> None:
    numbers = list(range(count))
    expected = DefaultPartitioner()(key.encode(), numbers, numbers)
    assert partition_of(key, numbers) == expected
    assert partition_of(key, numbers) == expected  # remembered: the same again


def test_known_keys_keep_their_partitions_and_a_full_memory_starts_again(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Kafka's own test vectors for murmur2 (the Java client's UtilsTest), through the partition they give.
    assert relay.murmur2(b"21") == -973932308 & 0xFFFFFFFF  # Java's int, read unsigned
    assert relay.murmur2(b"foobar") == -790332482 & 0xFFFFFFFF
    monkeypatch.setattr(relay, "_KEY_HASHES", {})
    monkeypatch.setattr(relay, "_KEY_HASHES_KEPT", 3)
    numbers = [0, 1, 2, 3]
    placed = {key: partition_of(key, numbers) for key in ("a", "b", "c", "d", "e")}
    assert len(relay._KEY_HASHES) <= 3
    assert placed == {key: DefaultPartitioner()(key.encode(), numbers, numbers) for key in placed}
    assert partition_of(None, [5, 6]) == 5
