"""Rebuilding the log from the topics alone (``rj audit verify --from-kafka``), without a broker: records as a plain
consumer reads them, the order and heads the audit service publishes on rj.audit, and every way the two can
disagree named at the first entry or head where it shows."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import topics
from schemas.audit import AuditEntriesAppended
from services.audit import canonical, heads, merkle, order
from services.audit.app import head_event, order_event
from services.audit.fromkafka import HeldHead, PartitionLeaves, TopicsRead, rebuild_and_check, witness_heads

KEY = Ed25519PrivateKey.generate()
EXPIRING = (topics.CRIME_EVENTS, topics.DEADLETTER)


@dataclass(frozen=True)
class Rec:
    topic: str
    partition: int
    offset: int
    value: bytes | None


def event(n: int) -> bytes:
    return json.dumps({"specversion": "1.0", "id": f"e{n}", "type": "rj.case.opened", "data": {"n": n}}).encode()


# The records on the topics, and the order the audit service appended them in (interleaving partitions).
RECORDS = [
    Rec(topics.CONSENT, 0, 0, event(0)),
    Rec(topics.CRIME_EVENTS, 1, 0, '{"upstream": "Siân"}'.encode()),
    Rec(topics.CONSENT, 0, 1, event(1)),
    Rec(topics.COMMANDS, 2, 0, None),  # a tombstone
    Rec(topics.CRIME_EVENTS, 1, 1, b"{not json"),
    Rec(topics.CONSENT, 0, 2, event(2)),
    Rec(topics.CONSENT, 0, 3, event(3)),
    Rec(topics.COMMANDS, 2, 1, b""),
]


def leaf_of(r: Rec) -> bytes:
    return merkle.entry_leaf_hash(r.topic, r.partition, r.offset, canonical.entry_body(r.topic, r.value))


def placed(records: Sequence[Rec]) -> list[order.Placed]:
    return [order.Placed(r.topic, r.partition, r.offset, leaf_of(r)) for r in records]


def head_at(size: int, key: Ed25519PrivateKey = KEY, root: bytes | None = None) -> heads.SignedTreeHead:
    tree = merkle.CompactTree()
    for r in RECORDS[:size]:
        tree.append(leaf_of(r))
    return heads.sign_tree_head(key, size, tree.root() if root is None else root, 1_700_000_000_000 + size)


def on_topics(records: Sequence[Rec], begin: dict[tuple[str, int], int] | None = None) -> TopicsRead:
    """What a plain consumer reads: each partition's records in offset order."""
    read = TopicsRead()
    for r in sorted(records, key=lambda r: (r.topic, r.partition, r.offset)):
        read.take(r.topic, r.partition, r.offset, r.value)
    for (topic, partition), leaves in read.partitions.items():
        leaves.end = max(leaves.offsets) + 1
        leaves.begin = (begin or {}).get((topic, partition), 0)
    return read


def publish_order(read: TopicsRead, signed: heads.SignedTreeHead, first: int, entries: Sequence[order.Placed]) -> None:
    """What the audit service puts on rj.audit with a head: the order, then the head, read as records of the topic."""
    offset = len(read.partitions.get((topics.AUDIT, 0), PartitionLeaves()).offsets)
    log_id = signed.head.log_id.hex()
    values = [order_event(signed, e).value for e in order.appended_events(log_id, first, entries)]
    for value in [*values, head_event(signed).value]:
        read.take(topics.AUDIT, 0, offset, value)
        offset += 1


def witnessed(*signed: heads.SignedTreeHead) -> list[HeldHead]:
    return [HeldHead(s, f"witness line {n}", from_witness=True) for n, s in enumerate(signed, start=1)]


def published_log(records: Sequence[Rec] = RECORDS, appended: Sequence[Rec] = RECORDS) -> TopicsRead:
    """The topics holding ``records``, and on rj.audit the order of ``appended`` with heads at 3 and at the end."""
    read = on_topics(records)
    publish_order(read, head_at(3), 0, placed(appended[:3]))
    publish_order(read, head_at(len(appended)), 3, placed(appended[3:]))
    return read


def verify(read: TopicsRead, held: Sequence[HeldHead] = ()) -> tuple[bool, str]:
    verdict = rebuild_and_check(KEY.public_key(), read, [*held, *read.heads], EXPIRING)
    return verdict.ok, verdict.message


def test_the_log_rebuilt_from_the_topics_in_the_published_order_matches_every_signed_head():
    ok, message = verify(published_log(), witnessed(head_at(3), head_at(len(RECORDS))))
    assert ok, message
    assert message.startswith(f"OK from Kafka: {len(RECORDS)} entries rebuilt from the topics, 2 signed heads")
    assert "2 from the witness file, 2 from rj.audit" in message


def test_an_upstream_record_is_committed_by_its_digest_so_the_topic_alone_rebuilds_it():
    body = canonical.entry_body(topics.CRIME_EVENTS, '{"upstream": "Siân"}'.encode())
    assert body[:1] == canonical.DIGEST_KIND and len(body) == 33 and "Siân".encode() not in body
    assert canonical.entry_body(topics.CRIME_EVENTS, None) == canonical.TOMBSTONE_KIND
    assert canonical.entry_body(topics.CONSENT, event(1)) == canonical.canonical_record(event(1))


def test_a_record_changed_on_its_topic_is_named_at_its_entry():
    changed = [*RECORDS[:5], Rec(topics.CONSENT, 0, 2, event(99)), *RECORDS[6:]]
    ok, message = verify(published_log(records=changed))
    assert not ok and message.startswith("entry 5 (rj.consent/0@2): its record on the topic is not the one"), message


def test_a_record_deleted_from_a_topic_kept_for_ever_is_named_at_its_entry():
    ok, message = verify(published_log(records=[r for r in RECORDS if (r.topic, r.offset) != (topics.CONSENT, 1)]))
    assert not ok and message == "entry 2 (rj.consent/0@1): its record is not on the topic (it was deleted)"


def test_records_removed_by_retention_are_taken_on_their_published_leaves_and_counted():
    kept = [r for r in RECORDS if r.topic != topics.CRIME_EVENTS]
    read = on_topics(kept)
    read.partitions[(topics.CRIME_EVENTS, 1)] = PartitionLeaves(begin=2, end=2)  # retention removed offsets 0, 1
    publish_order(read, head_at(3), 0, placed(RECORDS[:3]))
    publish_order(read, head_at(len(RECORDS)), 3, placed(RECORDS[3:]))
    ok, message = verify(read)
    assert ok and "removed by retention taken on the leaves the log published for them: 2 on crime.events" in message


def test_an_expired_record_whose_published_leaf_was_changed_fails_at_the_head():
    read = on_topics([r for r in RECORDS if r.topic != topics.CRIME_EVENTS])
    read.partitions[(topics.CRIME_EVENTS, 1)] = PartitionLeaves(begin=2, end=2)
    forged = placed(RECORDS[:3])
    forged[1] = forged[1]._replace(leaf=bytes(32))
    publish_order(read, head_at(3), 0, forged)
    ok, message = verify(read)
    assert not ok and "the head of size 3 signed" in message and "does not match the log rebuilt" in message


def test_a_head_from_another_key_is_named():
    stranger = head_at(3, key=Ed25519PrivateKey.generate())
    ok, message = verify(published_log(), witnessed(head_at(3), stranger))
    assert not ok and "(witness line 2) is of another log" in message


def test_a_head_of_this_key_whose_root_does_not_match_is_named():
    wrong = head_at(5, root=bytes(32))
    ok, message = verify(published_log(), witnessed(wrong))
    assert not ok and message.startswith("the head of size 5 signed") and "(witness line 1) does not match" in message


def test_a_head_whose_signature_was_broken_is_named():
    good = head_at(3)
    forged = heads.SignedTreeHead(good.head, bytes(64))
    ok, message = verify(published_log(), witnessed(forged))
    assert not ok and "does not carry a valid signature of the log's key" in message


def test_two_entries_swapped_in_the_published_order_fail_at_the_head_that_covers_them():
    swapped = [RECORDS[0], RECORDS[2], RECORDS[1], *RECORDS[3:]]
    ok, message = verify(published_log(appended=swapped))
    assert not ok and message.startswith("the head of size 3 signed") and "entries 0 to 2" in message


def test_a_head_beyond_the_published_order_cannot_be_checked_and_fails():
    read = on_topics(RECORDS)
    publish_order(read, head_at(3), 0, placed(RECORDS[:3]))
    ok, message = verify(read, witnessed(head_at(len(RECORDS))))
    assert not ok and message.startswith("entry 3: the order the log appended it in is not on rj.audit")


def test_with_no_head_at_all_nothing_is_verified():
    ok, message = verify(on_topics(RECORDS))
    assert not ok and message.startswith("no signed head")


def test_two_published_orders_that_place_different_records_at_one_index_are_named():
    read = published_log()
    publish_order(read, head_at(3), 1, placed(RECORDS[3:4]))
    ok, message = verify(read)
    assert not ok and message.startswith("entry 1: the order published on rj.audit places two records there")


def test_the_witness_file_is_read_a_head_a_line_and_a_bad_line_is_named(tmp_path: Path):
    path = tmp_path / "witness.jsonl"
    path.write_text(json.dumps(head_at(3).to_json()) + "\n\n" + json.dumps(head_at(5).to_json()) + "\n")
    assert [h.signed for h in witness_heads(path)] == [head_at(3), head_at(5)]
    path.write_text(path.read_text() + "{not a head}\n")
    with pytest.raises(Exception, match="witness.jsonl line 4 is not a signed tree head"):
        witness_heads(path)


places = st.lists(
    st.tuples(st.sampled_from(["rj.a", "rj.b"]), st.integers(0, 2), st.integers(0, 3)),
    min_size=1, max_size=60, unique=True,
)  # fmt: skip


def split(entries: list[order.Placed], per_event: int, first: int = 10) -> list[AuditEntriesAppended]:
    original = order.ENTRIES_PER_EVENT
    order.ENTRIES_PER_EVENT = per_event
    try:
        return order.appended_events("ab" * 32, first, entries)
    finally:
        order.ENTRIES_PER_EVENT = original


@settings(max_examples=60)
@given(places, st.integers(1, 7), st.integers(1, 7))
def test_the_published_order_reads_back_exactly_however_it_is_split_into_events_and_sent(where, per_event, other):
    entries = [order.Placed(t, p, o, bytes([n % 256]) * 32) for n, (t, p, o) in enumerate(where)]
    events = split(entries, per_event)
    assert all(e.entries <= per_event for e in events)
    published = order.PublishedOrder()
    for e in [*events, *reversed(events), *split(entries, other)]:  # sent twice, out of order, split otherwise
        published.add(e)
    assert [published.at(10 + i) for i in range(len(entries))] == entries and published.contradiction is None
    assert published.at(9) is None and published.at(10 + len(entries)) is None and len(published) == len(entries)


@given(places, st.integers(0, 59))
def test_an_order_that_places_another_record_at_an_index_is_a_contradiction_named_there(where, at):
    entries = [order.Placed(t, p, o, bytes([n % 256]) * 32) for n, (t, p, o) in enumerate(where)]
    at %= len(entries)
    published = order.PublishedOrder()
    for e in [*split(entries, 3), *split([entries[at]._replace(leaf=b"\xee" * 32)], 1, first=10 + at)]:
        published.add(e)
    assert published.contradiction is not None and published.contradiction.index == 10 + at


def old_format_leaf(r: Rec, sealed: bytes = b"ciphertext of the record") -> bytes:
    """A leaf as the log appended it before crime.events entries were digests and tombstones had their own kind:
    ``b"R"`` and the record sealed (which only the database's key store opens), ``b"R"`` alone for a tombstone."""
    if r.value is None:
        return merkle.entry_leaf_hash(r.topic, r.partition, r.offset, canonical.RAW_KIND)
    if r.topic in canonical.KEPT_SEALED_WHOLE:
        return merkle.entry_leaf_hash(r.topic, r.partition, r.offset, canonical.RAW_KIND + sealed)
    return leaf_of(r)


def old_format_log(old: set[int]) -> tuple[TopicsRead, heads.SignedTreeHead]:
    """The topics holding RECORDS, and on rj.audit their order with the entries at ``old`` in the old format, and
    a head over them all."""
    leaves = [old_format_leaf(r) if n in old else leaf_of(r) for n, r in enumerate(RECORDS)]
    tree = merkle.CompactTree()
    for leaf in leaves:
        tree.append(leaf)
    signed = heads.sign_tree_head(KEY, len(RECORDS), tree.root(), 1_700_000_000_000)
    read = on_topics(RECORDS)
    entries = [order.Placed(r.topic, r.partition, r.offset, leaf) for r, leaf in zip(RECORDS, leaves, strict=True)]
    publish_order(read, signed, 0, entries)
    return read, signed


def test_a_tombstone_appended_in_the_old_format_verifies_in_that_format_and_is_counted():
    read, _ = old_format_log({3})
    ok, message = verify(read)
    assert ok, message
    assert "1 tombstones appended in the old format (body R) verified in that format" in message


def test_a_crime_events_entry_appended_in_the_old_format_is_named_with_what_to_do_rather_than_a_bare_mismatch():
    read, _ = old_format_log({1, 3})
    ok, message = verify(read)
    assert not ok
    assert message.startswith("entry 1 (crime.events/1@0) is not the digest of its record on the topic"), message
    assert "old-format entry" in message and "rj audit verify` against the database" in message


def test_an_old_format_tombstone_leaf_is_not_accepted_for_a_record_that_is_not_a_tombstone():
    leaves = [leaf_of(r) for r in RECORDS]
    empty = RECORDS[7]  # an empty value: its leaf in the old tombstone form must not pass for it
    leaves[7] = merkle.entry_leaf_hash(empty.topic, empty.partition, empty.offset, canonical.TOMBSTONE_KIND)
    tree = merkle.CompactTree()
    for leaf in leaves:
        tree.append(leaf)
    signed = heads.sign_tree_head(KEY, len(RECORDS), tree.root(), 1_700_000_000_001)
    read = on_topics(RECORDS)
    entries = [order.Placed(r.topic, r.partition, r.offset, leaf) for r, leaf in zip(RECORDS, leaves, strict=True)]
    publish_order(read, signed, 0, entries)
    ok, message = verify(read)
    assert not ok and message.startswith("entry 7 (rj.commands/2@1): its record on the topic is not the one"), message
