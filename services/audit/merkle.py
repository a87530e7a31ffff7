"""The Merkle tree over the audit log, as Certificate Transparency defines it (RFC 6962 section 2.1, kept
unchanged by RFC 9162 section 2.1): the hashes, the tree hash of n leaves, an append-only compact tree, and
inclusion and consistency proofs with the verification algorithms of RFC 9162 sections 2.1.3.2 and 2.1.4.2.

Why RFC 6962 exactly, rather than a hash chain or a tree of our own: an auditor can check one case's entries
against a signed head without seeing any other case (inclusion proofs), and can check that a later head
extends an earlier one, so nothing was truncated or rewritten (consistency proofs); and any CT library or
independent verifier agrees with our roots, which the known-answer tests pin.

Proof generation never needs the leaves in memory: it asks a ``SubtreeHash`` callable for the hash of
``[start, end)``, and only ever for ranges whose ``start`` is a multiple of the largest power of two not above
their length (the subtrees RFC 6962's recursion visits), which a store answers from the perfect subtree hashes
it kept while appending (``CompactTree.append_with_subtrees`` hands them over). ``MemoryTree`` is the in-memory
store, for tests and small logs.

Stdlib only: an auditor is handed this file with ``heads.py`` and ``check.py``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

HASH_SIZE: Final = 32
EMPTY_ROOT: Final = hashlib.sha256(b"").digest()
"""The tree hash of the empty log: SHA-256 of the empty string (RFC 6962 section 2.1)."""

_LEAF_PREFIX: Final = b"\x00"
_NODE_PREFIX: Final = b"\x01"

SubtreeHash = Callable[[int, int], bytes]
"""``subtree_hash(start, end)`` is the Merkle Tree Hash of leaves ``[start, end)``, ``0 <= start < end``."""


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data): the prefix keeps a leaf from ever passing for an interior node."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def leaf_hasher(data_start: bytes) -> hashlib._Hash:
    """A SHA-256 already fed the leaf prefix and ``data_start``: ``copy()`` it, ``update`` it with the rest of a
    leaf's data and its ``digest()`` is ``leaf_hash(data_start + rest)``, the shared start hashed only once."""
    return hashlib.sha256(_LEAF_PREFIX + data_start)


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def split_point(n: int) -> int:
    """The largest power of two strictly less than ``n`` (n >= 2): where RFC 6962 splits a tree of n leaves."""
    if n < 2:
        raise ValueError(f"a tree of {n} leaves has no split")
    return 1 << ((n - 1).bit_length() - 1)


def tree_hash(leaf_hashes: Sequence[bytes]) -> bytes:
    """The Merkle Tree Hash (MTH) of a list of leaf hashes (hashes, not data: call ``leaf_hash`` first)."""
    tree = CompactTree()
    for leaf in leaf_hashes:
        tree.append(leaf)
    return tree.root()


# The leaf of our log: what one entry commits to ---------------------------------------------------------------

ENTRY_LEAF_VERSION: Final = 1


def entry_leaf_data(topic: str, partition: int, offset: int, canonical: bytes) -> bytes:
    """The bytes one log entry's leaf hashes: where the event was read and its canonical bytes.

    Binding topic, partition and offset into the leaf means an entry cannot be moved to another place in
    the stream without its proof failing. Layout, version 1 (all integers big-endian, unsigned):
    ``0x01 | u16 len(topic) | topic (UTF-8) | u32 partition | u64 offset | canonical bytes (the rest)``.
    Changing it needs a new version byte, so a checker never reads one layout as another.
    """
    name = topic.encode()
    if len(name) > 0xFFFF:
        raise ValueError("topic name too long")
    if not 0 <= partition <= 0xFFFF_FFFF or not 0 <= offset <= 0xFFFF_FFFF_FFFF_FFFF:
        raise ValueError("partition or offset out of range")
    return (
        bytes([ENTRY_LEAF_VERSION])
        + len(name).to_bytes(2, "big")
        + name
        + partition.to_bytes(4, "big")
        + offset.to_bytes(8, "big")
        + canonical
    )


def entry_leaf_hash(topic: str, partition: int, offset: int, canonical: bytes) -> bytes:
    return leaf_hash(entry_leaf_data(topic, partition, offset, canonical))


# The compact tree: the append-only frontier ------------------------------------------------------------------


@dataclass(frozen=True)
class Subtree:
    """A perfect subtree that an append completed: leaves ``[start, end)`` hash to ``hash``."""

    start: int
    end: int
    hash: bytes


class CompactTreeFormatError(ValueError):
    """Stored compact-tree bytes or JSON that do not describe a tree."""


_COMPACT_VERSION: Final = 1


class CompactTree:
    """The log's tree as its frontier: the roots of the perfect subtrees that make up its ``size`` leaves,
    left to right, one per set bit of ``size`` (largest first). Appending is O(log n), the root is
    available at any time, and the frontier is small enough (at most 64 hashes) to store with every batch."""

    __slots__ = ("_size", "_frontier")

    def __init__(self, size: int = 0, frontier: Sequence[bytes] = ()) -> None:
        if size < 0 or len(frontier) != size.bit_count():
            raise CompactTreeFormatError(f"a tree of {size} leaves has {size.bit_count()} frontier hashes")
        if any(len(h) != HASH_SIZE for h in frontier):
            raise CompactTreeFormatError("frontier hashes are 32 bytes")
        self._size = size
        self._frontier = [bytes(h) for h in frontier]

    @property
    def size(self) -> int:
        return self._size

    @property
    def frontier(self) -> tuple[bytes, ...]:
        return tuple(self._frontier)

    def append(self, leaf: bytes) -> None:
        """Add one leaf hash. Each trailing 1 bit of the old size is a perfect subtree the new leaf completes."""
        if len(leaf) != HASH_SIZE:
            raise ValueError("a leaf hash is 32 bytes")
        frontier = self._frontier
        hashed = leaf
        size = self._size
        while size & 1:
            hashed = node_hash(frontier.pop(), hashed)
            size >>= 1
        frontier.append(hashed)
        self._size += 1

    def append_with_subtrees(self, leaf: bytes) -> list[Subtree]:
        """Add one leaf hash and say which perfect subtrees it completed (the leaf itself first, then each
        larger one), so a store can keep them and answer ``SubtreeHash`` for proofs without the leaves."""
        if len(leaf) != HASH_SIZE:
            raise ValueError("a leaf hash is 32 bytes")
        index = self._size
        completed = [Subtree(index, index + 1, leaf)]
        hashed = leaf
        width = 1
        size = self._size
        while size & 1:
            hashed = node_hash(self._frontier.pop(), hashed)
            width <<= 1
            completed.append(Subtree(index + 1 - width, index + 1, hashed))
            size >>= 1
        self._frontier.append(hashed)
        self._size += 1
        return completed

    def root(self) -> bytes:
        """The Merkle Tree Hash of every leaf so far: the frontier folded from the right, as RFC 6962's split
        puts the largest perfect subtree on the left at each level."""
        if not self._frontier:
            return EMPTY_ROOT
        hashed = self._frontier[-1]
        for left in reversed(self._frontier[:-1]):
            hashed = node_hash(left, hashed)
        return hashed

    def copy(self) -> CompactTree:
        return CompactTree(self._size, self._frontier)

    def to_bytes(self) -> bytes:
        """``u8 version (1) | u64 size | frontier hashes``, big-endian: what a service stores with a batch."""
        return bytes([_COMPACT_VERSION]) + self._size.to_bytes(8, "big") + b"".join(self._frontier)

    @classmethod
    def from_bytes(cls, data: bytes) -> CompactTree:
        if len(data) < 9 or data[0] != _COMPACT_VERSION:
            raise CompactTreeFormatError("not a version 1 compact tree")
        size = int.from_bytes(data[1:9], "big")
        body = data[9:]
        if len(body) != HASH_SIZE * size.bit_count():
            raise CompactTreeFormatError(f"a tree of {size} leaves has {size.bit_count()} frontier hashes")
        return cls(size, [body[i : i + HASH_SIZE] for i in range(0, len(body), HASH_SIZE)])

    def to_json(self) -> dict[str, Any]:
        return {"version": _COMPACT_VERSION, "size": self._size, "frontier": [h.hex() for h in self._frontier]}

    @classmethod
    def from_json(cls, value: Any) -> CompactTree:
        if isinstance(value, str | bytes):
            try:
                value = json.loads(value)
            except ValueError as error:
                raise CompactTreeFormatError("not JSON") from error
        if not isinstance(value, dict) or value.get("version") != _COMPACT_VERSION:
            raise CompactTreeFormatError("not a version 1 compact tree")
        size, frontier = value.get("size"), value.get("frontier")
        if not isinstance(size, int) or isinstance(size, bool) or not isinstance(frontier, list):
            raise CompactTreeFormatError("size must be an integer and frontier a list")
        try:
            hashes = [bytes.fromhex(h) for h in frontier]
        except (TypeError, ValueError) as error:
            raise CompactTreeFormatError("frontier hashes are hex") from error
        return cls(size, hashes)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CompactTree) and (self._size, self._frontier) == (other._size, other._frontier)

    def __repr__(self) -> str:
        return f"CompactTree(size={self._size}, root={self.root().hex()})"


# An in-memory store of perfect subtrees ------------------------------------------------------------------------


class MemoryTree:
    """Every perfect subtree hash of a log held in memory (level h holds the hashes of the aligned runs of
    2**h leaves): what a database-backed store keeps in a table, here in lists, for tests and small logs."""

    def __init__(self, leaf_hashes: Sequence[bytes] = ()) -> None:
        self._levels: list[list[bytes]] = [[]]
        self._compact = CompactTree()
        for leaf in leaf_hashes:
            self.append(leaf)

    @property
    def size(self) -> int:
        return len(self._levels[0])

    def append(self, leaf: bytes) -> None:
        for subtree in self._compact.append_with_subtrees(leaf):
            level = (subtree.end - subtree.start).bit_length() - 1
            if level == len(self._levels):
                self._levels.append([])
            self._levels[level].append(subtree.hash)

    def leaf(self, index: int) -> bytes:
        return self._levels[0][index]

    def root(self, size: int | None = None) -> bytes:
        size = self.size if size is None else size
        if not 0 <= size <= self.size:
            raise ValueError(f"the log has {self.size} leaves, not {size}")
        return EMPTY_ROOT if size == 0 else self.subtree_hash(0, size)

    def subtree_hash(self, start: int, end: int) -> bytes:
        """MTH of leaves ``[start, end)``: the aligned perfect subtrees it is made of, folded from the right.
        A range that is not aligned that way (proofs never ask for one) is hashed from its leaves."""
        if not 0 <= start < end <= self.size:
            raise ValueError(f"no subtree [{start}, {end}) in a log of {self.size} leaves")
        length = end - start
        if start % (1 << (length.bit_length() - 1)):
            return tree_hash(self._levels[0][start:end])
        parts = []
        position = start
        for level in range(length.bit_length() - 1, -1, -1):
            if length >> level & 1:
                parts.append(self._levels[level][position >> level])
                position += 1 << level
        hashed = parts[-1]
        for left in reversed(parts[:-1]):
            hashed = node_hash(left, hashed)
        return hashed


def _subtree_source(leaves_or_store: Sequence[bytes] | SubtreeHash | MemoryTree) -> SubtreeHash:
    if isinstance(leaves_or_store, MemoryTree):
        return leaves_or_store.subtree_hash
    if callable(leaves_or_store):
        return leaves_or_store
    return MemoryTree(leaves_or_store).subtree_hash


# Proofs --------------------------------------------------------------------------------------------------------


def inclusion_proof(leaves_or_store: Sequence[bytes] | SubtreeHash | MemoryTree, index: int, size: int) -> list[bytes]:
    """The audit path of leaf ``index`` in the tree of the first ``size`` leaves (RFC 6962 PATH(m, D[n])):
    the sibling hashes from the leaf up to the root. ``leaves_or_store`` is a list of leaf hashes, a
    ``MemoryTree``, or a ``SubtreeHash`` callable (a store that need not hold the leaves in memory)."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size} leaves")
    subtree = _subtree_source(leaves_or_store)
    siblings = []
    start, end = 0, size
    while end - start > 1:
        k = split_point(end - start)
        if index < start + k:
            siblings.append(subtree(start + k, end))
            end = start + k
        else:
            siblings.append(subtree(start, start + k))
            start += k
    siblings.reverse()
    return siblings


def consistency_proof(
    leaves_or_store: Sequence[bytes] | SubtreeHash | MemoryTree, first: int, second: int
) -> list[bytes]:
    """The proof that the tree of ``second`` leaves extends the tree of ``first`` (RFC 6962 PROOF(m, D[n])).
    Empty when ``first`` is 0 or equals ``second``: those are consistent by definition."""
    if not 0 <= first <= second:
        raise ValueError(f"no consistency proof from {first} leaves to {second}")
    if first == 0 or first == second:
        return []
    subtree = _subtree_source(leaves_or_store)
    siblings = []
    start, end, remaining = 0, second, first
    whole_old_tree = True  # SUBPROOF's b: is [start, end)'s left edge still the old tree's root?
    while remaining != end - start:
        k = split_point(end - start)
        if remaining <= k:
            siblings.append(subtree(start + k, end))
            end = start + k
        else:
            siblings.append(subtree(start, start + k))
            start += k
            remaining -= k
            whole_old_tree = False
    siblings.reverse()
    return siblings if whole_old_tree else [subtree(start, end), *siblings]


def _is_hash(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == HASH_SIZE


def root_from_inclusion_proof(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes | None:
    """The root an inclusion proof leads to (RFC 9162 section 2.1.3.2, steps 1 to 4), or None if the proof
    cannot belong to leaf ``index`` of a tree of ``size`` leaves (too long, too short, malformed)."""
    if not _is_hash(leaf) or not all(_is_hash(p) for p in proof):
        return None
    if not 0 <= index < size:
        return None
    fn, sn = index, size - 1
    hashed = leaf
    for sibling in proof:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            hashed = node_hash(sibling, hashed)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            hashed = node_hash(hashed, sibling)
        fn >>= 1
        sn >>= 1
    return hashed if sn == 0 else None


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """True only if ``proof`` shows leaf hash ``leaf`` at ``index`` in the tree of ``size`` leaves with root
    ``root`` (RFC 9162 section 2.1.3.2). Never raises on malformed input: a bad proof is just False."""
    return _is_hash(root) and root_from_inclusion_proof(leaf, index, size, proof) == root


def verify_consistency(first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]) -> bool:
    """True only if ``proof`` shows the tree of ``second`` leaves (root ``second_root``) is the tree of
    ``first`` leaves (root ``first_root``) with leaves appended (RFC 9162 section 2.1.4.2).

    The two cases RFC 9162 leaves out (it assumes 0 < first < second): equal sizes are consistent when the
    roots are equal and the proof empty; a first tree of 0 leaves is consistent with any later tree when its
    root is the empty tree's and the proof empty. Never raises on malformed input.
    """
    if not _is_hash(first_root) or not _is_hash(second_root) or not all(_is_hash(p) for p in proof):
        return False
    if not 0 <= first <= second:
        return False
    if first == second:
        return not proof and first_root == second_root
    if first == 0:
        return not proof and first_root == EMPTY_ROOT
    # Step 1.
    if not proof:
        return False
    path = list(proof)
    # Step 2: an old tree that is a perfect subtree is itself the first node of the path.
    if first & (first - 1) == 0:
        path.insert(0, first_root)
    # Step 3.
    fn, sn = first - 1, second - 1
    # Step 4.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # Step 5.
    first_hash = second_hash = path[0]
    # Step 6.
    for node in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            first_hash = node_hash(node, first_hash)
            second_hash = node_hash(node, second_hash)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            second_hash = node_hash(second_hash, node)
        fn >>= 1
        sn >>= 1
    # Step 7.
    return sn == 0 and first_hash == first_root and second_hash == second_root
