"""Checking the audit log a chunk of entries at a time, from the chunk's own rows: what ``verify`` does in its
own process and what each of its worker processes does for a range of the log (``parallel``).

What a chunk shows by itself needs nothing of the tree before it: the leaves made from its bodies, compared with
the leaf column and with the leaves the tree was built with (level 0 of the stored subtrees), and the perfect
subtrees those leaves make. That is a ``ChunkCheck``, small enough to send from one process to another. Joining
it to the tree, and checking a signed head's root at a size inside it, is the caller's (``verify._folded``).
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import asyncpg

from services.audit import merkle, store

Parts = tuple[tuple[int, bytes], ...]
"""Perfect subtrees (level, hash), largest first: a subtree of level h covers 2**h leaves."""

# Within one entry, what checking it meets first; a signed head's root at the size it completes comes last.
MISSING: Final = 0
UNHASHABLE: Final = 1
CHANGED: Final = 2
MOVED: Final = 3
HEAD_ROOT: Final = 4


@dataclass(frozen=True)
class ChunkCheck:
    """What the entries from ``start`` on show by themselves: how many rows were read, the perfect subtrees of
    the leaves made from them (up to the first that could not be made), the earliest problem among them, and,
    for each tree size asked about that ends among those leaves, the entry that completes it and the subtrees
    the chunk adds up to it (for the head of that size, whose root needs the tree before the chunk)."""

    start: int
    rows: int
    leaves: Parts
    problem: tuple[int, int, str] | None
    """(entry's place in the chunk, ``MISSING`` to ``MOVED``, message): the earliest, ordered that way."""
    ends: tuple[tuple[int, str, Parts], ...]
    """(leaves of the chunk up to the size, the place of the entry that completes it, their subtrees), by size."""

    @property
    def checked(self) -> int:
        return sum(1 << level for level, _ in self.leaves)


async def chunks_read(
    conn: asyncpg.Connection, start: int, chunk: int, end: int | None = None
) -> AsyncGenerator[tuple[int, list[asyncpg.Record], list[bytes | None]], None]:
    """``(start, rows, stored leaves)`` of each chunk of ``chunk`` entries from ``start`` (``store.entry_chunk``),
    up to ``end`` or to the first chunk with fewer rows, the next chunk's query under way while the caller checks
    this one (the database reads it meanwhile). Close it (``contextlib.aclosing``) when stopping early: the query
    under way is awaited, never left on the connection."""
    reading: asyncio.Future[Any] | None = asyncio.ensure_future(store.entry_chunk(conn, start, start + chunk))
    try:
        while reading is not None:
            rows, stored = await reading
            reading = None
            following = start + chunk
            if len(rows) == chunk and (end is None or following < end):
                reading = asyncio.ensure_future(store.entry_chunk(conn, following, following + chunk))
                await asyncio.sleep(0)  # let it send its query before this chunk is hashed
            yield start, rows, stored
            start = following
    finally:
        if reading is not None:
            await asyncio.gather(reading, return_exceptions=True)


def check_chunk(
    start: int, rows: Sequence[asyncpg.Record], stored_leaves: Sequence[bytes | None], sizes: Sequence[int]
) -> ChunkCheck:
    """The check of ``rows`` (``store.entry_chunk``'s, from entry ``start`` on); ``sizes``, sorted, are the tree
    sizes to report on (the signed heads') when they end within the chunk's leaves."""
    expected = range(start, start + len(rows))
    present = len(rows)
    if [r[0] for r in rows] != list(expected):
        present = next(i for i, r in enumerate(rows) if r[0] != start + i)
    leaves, unhashable = _leaf_hashes(rows, present)
    checked = len(leaves)
    changed = _first_difference(leaves, [r[4] for r in rows[:checked]])
    moved = _first_difference(leaves, [*stored_leaves[:checked], *[None] * (checked - len(stored_leaves))])
    found = [
        (i, order)
        for i, order in (
            (present, MISSING),
            (checked if unhashable else None, UNHASHABLE),
            (changed, CHANGED),
            (moved, MOVED),
        )
        if i is not None and i < len(rows)
    ]
    problem = None
    if found:
        i, order = min(found)
        problem = (i, order, _message(rows, i, order, start, unhashable))
    levels = _levels(leaves)
    ending = sizes[bisect.bisect_right(sizes, start) : bisect.bisect_right(sizes, start + checked)]
    ends = tuple((size - start, _place(rows[size - start - 1]), _parts(levels, size - start)) for size in ending)
    return ChunkCheck(start, len(rows), _parts(levels, checked), problem, ends)


def _message(rows: Sequence[asyncpg.Record], i: int, order: int, start: int, unhashable: str) -> str:
    if order == MISSING:
        return f"entry {start + i} is missing (the next stored is {_place(rows[i])})"
    if order == UNHASHABLE:
        return f"{_place(rows[i])}: {unhashable}"
    if order == CHANGED:
        return f"{_place(rows[i])}: its body does not hash to its stored leaf (changed since appended)"
    return f"{_place(rows[i])}: not the leaf the tree was built with here (moved or swapped)"


def _place(row: asyncpg.Record) -> str:
    return f"entry {row[0]} ({row[1]}/{row[2]}@{int.from_bytes(row[3][:8], 'big', signed=True)})"


def _leaf_hashes(rows: Sequence[asyncpg.Record], count: int) -> tuple[list[bytes], str]:
    """The leaf hashes of the first ``count`` rows (``store.entry_chunk``'s) as ``merkle.entry_leaf_hash`` makes
    them, and why the next could not be made ("" when all were). The leaf's data up to the offset depends only
    on the topic and partition, so it is hashed once for each and the hash copied."""
    leaves: list[bytes] = []
    add = leaves.append
    started: dict[tuple[str, int], Any] = {}
    for _, topic, partition, offset_and_body, _ in rows[:count]:
        prefix = started.get((topic, partition))
        if prefix is None:
            try:  # the layout's one definition: the data of offset 0 and no body, less its 8 bytes of offset
                prefix = merkle.leaf_hasher(merkle.entry_leaf_data(topic, partition, 0, b"")[:-8])
            except ValueError as error:
                return leaves, str(error)
            started[(topic, partition)] = prefix
        if offset_and_body[0] & 0x80:  # a negative offset, which the layout's unsigned 64 bits cannot hold
            return leaves, _unhashable(topic, partition, offset_and_body)
        hashing = prefix.copy()
        hashing.update(offset_and_body)
        add(hashing.digest())
    return leaves, ""


def _unhashable(topic: str, partition: int, offset_and_body: bytes) -> str:
    try:
        merkle.entry_leaf_data(topic, partition, int.from_bytes(offset_and_body[:8], "big", signed=True), b"")
    except ValueError as error:
        return str(error)
    raise AssertionError("a leaf that can be made was taken for one that cannot")


def _first_difference(ours: list[bytes], theirs: Sequence[bytes | None]) -> int | None:
    if ours == theirs:
        return None
    return next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b), None)


def _levels(leaves: list[bytes]) -> list[list[bytes]]:
    """Every perfect subtree of ``leaves`` by level (level h: the hashes of the aligned runs of 2**h leaves)."""
    levels = [leaves]
    node = merkle.node_hash
    while len(levels[-1]) > 1:
        below = levels[-1]
        levels.append([node(left, right) for left, right in zip(below[0::2], below[1::2], strict=False)])
    return levels


def _parts(levels: list[list[bytes]], count: int) -> Parts:
    """The perfect subtrees the first ``count`` leaves of a chunk are made of, largest first."""
    parts = []
    position = 0
    for level in range(count.bit_length() - 1, -1, -1):
        if count >> level & 1:
            parts.append((level, levels[level][position >> level]))
            position += 1 << level
    return tuple(parts)


def extended(tree: merkle.CompactTree, parts: Parts) -> merkle.CompactTree:
    """``tree`` with perfect subtrees appended, largest first, each merged with the frontier as
    ``CompactTree.append`` merges a leaf (a subtree of 2**h leaves is a leaf h levels up). Each must be aligned:
    the tree's size a multiple of its width, as a chunk's parts are on a tree of the chunk's start."""
    frontier = list(tree.frontier)
    size = tree.size
    for level, hashed in parts:
        if size & ((1 << level) - 1):
            raise ValueError(f"a subtree of {1 << level} leaves cannot follow {size} leaves")
        carry = size >> level
        while carry & 1:
            hashed = merkle.node_hash(frontier.pop(), hashed)
            carry >>= 1
        frontier.append(hashed)
        size += 1 << level
    return merkle.CompactTree(size, frontier)
