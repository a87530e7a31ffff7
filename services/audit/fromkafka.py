"""Verifying the log from the topics alone, when its database is lost (``rj audit verify --from-kafka``).

    every partition of every topic, offset 0 to the end offsets taken at the start ──► each record's leaf
    rj.audit's rj.audit-entries.appended ──► the order the log appended them in (``order.PublishedOrder``)
    the witness file and rj.audit's rj.audit-head.signed ──► the signed heads, each checked with the log's key
        ──► the tree rebuilt in that order; every head's root checked at its size

What this proves: the records on the topics, placed in the published order, hash to the root of every head the
log's key signed, so the topics hold exactly what the log committed to (a leaf binds a record's topic,
partition, offset and canonical bytes). The published order needs no trust: any other order or leaf gives
another root. What it names: the first entry whose record is missing or is not the one the log appended, or
the first head whose root, log or signature is wrong.

A record that a topic's retention removed (``crime.events``, ``rj.deadletter``: the topics that are not kept for
ever) is taken on the leaf the log published for it, and counted; one missing from a topic kept for ever was
deleted, and fails. Heads the log signed but whose order never reached rj.audit (the database was lost before
the relay sent it) cannot be checked from the topics, and fail: nothing is passed unseen.
"""

from __future__ import annotations

import asyncio
import bisect
import json
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from schemas import topics
from schemas.audit import AuditEntriesAppended, AuditHeadSigned
from schemas.registry import REGISTRY, ParseError
from services.audit import canonical, heads, merkle, order
from services.audit.app import signed_head_of
from services.audit.verify import Verdict
from services.runtime import topicread
from services.runtime.kafka import topic_config
from services.runtime.settings import Settings

if TYPE_CHECKING:
    from aiokafka import ConsumerRecord


class _Failure(Exception):
    pass


@dataclass
class PartitionLeaves:
    """One partition's records as leaf hashes, by offset, and what the broker said it held when reading began."""

    begin: int = 0
    end: int = 0
    offsets: array[int] = field(default_factory=lambda: array("q"))
    leaves: bytearray = field(default_factory=bytearray)

    def add(self, offset: int, leaf: bytes) -> None:
        if self.offsets and offset <= self.offsets[-1]:
            return  # a record fetched twice
        self.offsets.append(offset)
        self.leaves += leaf

    def leaf_at(self, offset: int) -> bytes | None:
        i = bisect.bisect_left(self.offsets, offset)
        if i == len(self.offsets) or self.offsets[i] != offset:
            return None
        return bytes(self.leaves[32 * i : 32 * i + 32])

    @property
    def read_to(self) -> int:
        """The offset after the last record read."""
        return max(self.end, self.offsets[-1] + 1 if self.offsets else 0)


@dataclass(frozen=True)
class HeldHead:
    """A signed head the auditor holds, and where it was found (a witness file line, a record of rj.audit)."""

    signed: heads.SignedTreeHead
    where: str
    from_witness: bool

    def describe(self) -> str:
        head = self.signed.head
        return f"the head of size {head.tree_size} signed {_when(head.timestamp_ms)} ({self.where})"


@dataclass
class TopicsRead:
    """What the topics hold, as the rebuild needs it."""

    partitions: dict[tuple[str, int], PartitionLeaves] = field(default_factory=dict)
    old_tombstones: dict[tuple[str, int, int], bytes] = field(default_factory=dict)
    """Each tombstone's leaf in the format of logs appended before tombstones had their own kind (body ``b"R"``,
    the same as an empty value): such an entry verifies in the form it was appended in, and is counted."""
    order: order.PublishedOrder = field(default_factory=order.PublishedOrder)
    heads: list[HeldHead] = field(default_factory=list)
    records: int = 0
    audit_records: int = 0

    def take(self, topic: str, partition: int, offset: int, value: bytes | None) -> None:
        """One record read off ``topic`` (its logical name): its leaf, and what it says if it is the log's own."""
        leaf = merkle.entry_leaf_hash(topic, partition, offset, canonical.entry_body(topic, value))
        self.partitions.setdefault((topic, partition), PartitionLeaves()).add(offset, leaf)
        if value is None:
            self.old_tombstones[(topic, partition, offset)] = merkle.entry_leaf_hash(
                topic, partition, offset, canonical.RAW_KIND
            )
        self.records += 1
        if topic == topics.AUDIT:
            self.audit_records += 1
        if topic == topics.AUDIT and value is not None:
            self._audit_fact(value, f"{topic}/{partition}@{offset}")

    def _audit_fact(self, value: bytes, where: str) -> None:
        try:
            event = REGISTRY.parse(value)
        except ParseError:
            return  # not the log's: it is an entry like any other, and says nothing about the log
        if isinstance(event.data, AuditEntriesAppended):
            self.order.add(event.data)
        elif isinstance(event.data, AuditHeadSigned):
            try:
                self.heads.append(HeldHead(signed_head_of(event.data), where, from_witness=False))
            except heads.HeadFormatError:
                return  # the contract's patterns make this rare; such a head is no head, and proves nothing


def witness_heads(path: Path) -> list[HeldHead]:
    """The heads of a witness file (one JSON head a line); a line that is not one fails, naming it."""
    held = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            head = heads.SignedTreeHead.from_json(json.loads(line))
            held.append(HeldHead(head, f"{path.name} line {number}", from_witness=True))
        except (ValueError, heads.HeadFormatError) as error:
            raise _Failure(f"{path.name} line {number} is not a signed tree head: {error}") from None
    return held


async def read_topics(settings: Settings, names: Sequence[str] = topics.ALL_TOPICS) -> TopicsRead:
    """Every record of every partition of ``names``, from offset zero to its end when reading began
    (``topicread``: a read that leaves nothing out, or fails naming what it could not read)."""
    read = TopicsRead()

    def take(topic: str, partition: int, record: ConsumerRecord[bytes, bytes]) -> None:
        read.take(topic, partition, record.offset, record.value)

    try:
        spans = await topicread.read_from_the_start(settings, names, take)
    except topicread.TopicsUnreadable as error:
        raise _Failure(f"{error}; the log cannot be checked without every record of every topic it follows") from None
    for where, span in spans.items():
        leaves = read.partitions.setdefault(where, PartitionLeaves())
        leaves.begin, leaves.end = span.begin, span.end
    return read


def rebuild_and_check(
    public_key: Ed25519PublicKey, read: TopicsRead, held: Iterable[HeldHead], expiring: Iterable[str]
) -> Verdict:
    """The tree rebuilt from ``read`` in its published order, and every head of ``held`` checked against it; the
    records of ``expiring`` topics that retention removed are taken on their published leaves."""
    try:
        return _rebuild_and_check(public_key, read, list(held), set(expiring))
    except _Failure as failure:
        return Verdict(False, str(failure))


def _rebuild_and_check(
    public_key: Ed25519PublicKey, read: TopicsRead, held: list[HeldHead], expiring: set[str]
) -> Verdict:
    if not held:
        raise _Failure("no signed head to check the topics against (none in the witness file, none on rj.audit)")
    ours = heads.log_id(public_key)
    for head in held:
        if head.signed.head.log_id != ours:
            raise _Failure(f"{head.describe()} is of another log ({head.signed.head.log_id.hex()}), not {ours.hex()}")
        if not heads.verify_tree_head(public_key, head.signed):
            raise _Failure(f"{head.describe()} does not carry a valid signature of the log's key")
    if read.order.contradiction is not None:
        c = read.order.contradiction
        raise _Failure(
            f"entry {c.index}: the order published on rj.audit places two records there "
            f"({_place(c.first)} and {_place(c.second)})"
        )
    by_size: dict[int, list[HeldHead]] = {}
    for head in held:
        by_size.setdefault(head.signed.head.tree_size, []).append(head)
    target = max(by_size)
    tree = merkle.CompactTree()
    _check_heads(tree, by_size, suspect=None, since=0)
    suspect: str | None = None  # the first entry since the last head whose record is not the leaf published
    since = 0
    expired: dict[str, int] = {}
    old_tombstones = 0
    for index in range(target):
        placed = read.order.at(index)
        if placed is None:
            raise _Failure(
                f"entry {index}: the order the log appended it in is not on rj.audit, and a signed head covers "
                f"{target} entries (the order is published with each head: was the database lost before its relay "
                f"sent it?); rj.audit held {read.audit_records} records, {len(read.order)} entries of order"
            )
        where = f"entry {index} ({_place(placed)})"
        partition = read.partitions.get((placed.topic, placed.partition))
        leaf = partition.leaf_at(placed.offset) if partition is not None else None
        if leaf is None:
            if partition is None:
                raise _Failure(f"{where}: the topic has no such partition")
            if placed.offset < partition.begin and placed.topic in expiring:
                leaf = placed.leaf  # gone by the topic's retention: the root below checks the published leaf
                expired[placed.topic] = expired.get(placed.topic, 0) + 1
            elif placed.offset >= partition.read_to:
                raise _Failure(
                    f"{where}: its record is beyond what the topic held when verify began (up to offset "
                    f"{partition.read_to}); if the system is running, verify again"
                )
            else:
                raise _Failure(f"{where}: its record is not on the topic (it was deleted)")
        elif leaf != placed.leaf and read.old_tombstones.get((placed.topic, placed.partition, placed.offset)) == (
            placed.leaf
        ):
            leaf = placed.leaf  # a tombstone appended in the old format: its record is a tombstone all the same
            old_tombstones += 1
        elif leaf != placed.leaf and suspect is None:
            suspect = where
            if placed.topic in canonical.KEPT_SEALED_WHOLE:
                suspect += (
                    f" is not the digest of its record on the topic. If this log was appended before "
                    f"{placed.topic} entries committed to the SHA-256 of the record (they committed to the record "
                    "sealed, which only the database's key store opens), this is such an old-format entry: "
                    "--from-kafka cannot recompute it; check the log with `rj audit verify` against the database. "
                    "Otherwise"
                )
        tree.append(leaf)
        if tree.size in by_size:
            _check_heads(tree, by_size, suspect, since)
            suspect, since = None, tree.size
    distinct = {h.signed for h in held}
    message = (
        f"OK from Kafka: {target} entries rebuilt from the topics, {len(distinct)} signed heads verified "
        f"({len({h.signed for h in held if h.from_witness})} from the witness file, "
        f"{len({h.signed for h in held if not h.from_witness})} from {topics.AUDIT})"
    )
    if old_tombstones:
        message += f"; {old_tombstones} tombstones appended in the old format (body R) verified in that format"
    if expired:
        gone = ", ".join(f"{n} on {topic}" for topic, n in sorted(expired.items()))
        message += f"; records removed by retention taken on the leaves the log published for them: {gone}"
    return Verdict(True, message)


def _check_heads(
    tree: merkle.CompactTree, by_size: Mapping[int, list[HeldHead]], suspect: str | None, since: int
) -> None:
    for head in by_size.get(tree.size, []):
        if head.signed.head.root_hash == tree.root():
            continue
        if suspect is not None:
            raise _Failure(
                f"{suspect}: its record on the topic is not the one the log appended (its leaf is not the one "
                f"published for it), and {head.describe()} does not match the log rebuilt from the topics"
            )
        raise _Failure(
            f"{head.describe()} does not match the log rebuilt from the topics (entries {since} to {tree.size - 1}: "
            "each record there hashes to the leaf the log published for it, so that order or those leaves were "
            "changed, or the log's key signed a root of other entries)"
        )


def _place(placed: order.Placed) -> str:
    return f"{placed.topic}/{placed.partition}@{placed.offset}"


def _when(timestamp_ms: int) -> str:
    try:
        return datetime.fromtimestamp(timestamp_ms / 1000, UTC).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return f"at {timestamp_ms} ms"


def expiring_topics(settings: Settings, names: Sequence[str] = topics.ALL_TOPICS) -> list[str]:
    """The topics whose records retention removes (not kept for ever): their missing records are not deletions."""
    return [name for name in names if topic_config(settings, name).get("retention.ms") != "-1"]


async def verify_from_kafka(settings: Settings, public_key: Ed25519PublicKey, witness: Path | None) -> Verdict:
    """``rj audit verify --from-kafka``: the witness file's heads (read first, so every one of them was signed
    before the topics' ends were taken) and rj.audit's, checked against the tree rebuilt from the topics."""
    try:
        held = witness_heads(witness) if witness is not None else []
        read = await read_topics(settings)
    except _Failure as failure:
        return Verdict(False, str(failure))
    return rebuild_and_check(public_key, read, [*held, *read.heads], expiring_topics(settings))


def run(settings: Settings, public_key: Ed25519PublicKey, witness: Path | None) -> Verdict:
    return asyncio.run(verify_from_kafka(settings, public_key, witness))
