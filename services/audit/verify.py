"""Verifying the whole log from the database, and exporting one case's entries with proofs.

``verify_log`` trusts nothing stored but the bodies: it recomputes every leaf from its entry's place and body,
rebuilds the tree from those leaves, and checks each stored signed head against it. A mismatch is named by the
first entry (index, topic/partition/offset) where it shows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from services.audit import check, heads, merkle, store


@dataclass(frozen=True)
class Verdict:
    ok: bool
    message: str


CHUNK: Final = 1 << 13
"""Entries a query reads. A power of two: the log's first ``k * CHUNK`` leaves end on a perfect subtree, so each
full chunk's leaves join the rebuilt tree as one subtree hashed level by level, rather than one leaf at a time."""


async def verify_log(conn: asyncpg.Connection, public_key: Ed25519PublicKey) -> Verdict:
    """Every entry's leaf from its body, the gap-free order, each leaf against the leaf the tree was built from
    (level 0 of the stored subtrees: a swapped or moved entry shows there), every stored head's root at its
    size and its signature. Consecutive heads are consistent when both roots are roots of this one rebuilt
    sequence of leaves, which the check of each root against the rebuild establishes.

    The log is read a chunk of ``CHUNK`` entries at a time, the next chunk's query already under way while this
    one is hashed (the database reads it meanwhile), and checked in bulk; what is reported is what checking one
    entry at a time, in index order, would report first (``_rebuilt_with``)."""
    signed = await store.signed_heads(conn)
    by_size: dict[int, list[heads.SignedTreeHead]] = {}
    for head in signed:
        if not heads.verify_tree_head(public_key, head):
            return Verdict(False, f"head of size {head.head.tree_size} at {head.head.timestamp_ms} ms: bad signature")
        by_size.setdefault(head.head.tree_size, []).append(head)
    recorded = await store.recorded_size(conn)
    tree = merkle.CompactTree()
    problem = _check_roots(tree.size, tree.root(), by_size)
    if problem:
        return Verdict(False, problem)
    reading = asyncio.ensure_future(store.entry_chunk(conn, 0, CHUNK))
    while True:
        rows, stored_leaves = await reading
        following = None
        if len(rows) == CHUNK:
            following = asyncio.ensure_future(store.entry_chunk(conn, tree.size + CHUNK, tree.size + 2 * CHUNK))
            await asyncio.sleep(0)  # let it send its query: the database reads the next chunk while this one is hashed
        try:
            problem, tree = _rebuilt_with(tree, rows, stored_leaves, by_size)
        except BaseException:
            if following is not None:
                await asyncio.gather(following, return_exceptions=True)  # never leave a query on the connection
            raise
        if problem:
            if following is not None:
                await asyncio.gather(following, return_exceptions=True)
            return Verdict(False, problem)
        if following is None:
            break
        reading = following
    after = await store.entry_from(conn, tree.size)
    if after is not None:
        return Verdict(False, f"entry {tree.size} is missing (the next stored is {after.place})")
    if tree.size < recorded:
        return Verdict(False, f"entry {tree.size} is missing: the log recorded {recorded} entries, holds {tree.size}")
    beyond = [size for size in by_size if size > tree.size]
    if beyond:
        return Verdict(False, f"entry {tree.size} is missing: a signed head covers {max(beyond)} entries")
    return Verdict(True, f"OK: {tree.size} entries, {len(signed)} signed heads verified")


def _check_roots(size: int, root: bytes, by_size: dict[int, list[heads.SignedTreeHead]]) -> str:
    for head in by_size.get(size, []):
        if head.head.root_hash != root:
            return f"the signed head of size {size} does not match the log rebuilt up to here"
    return ""


def _rebuilt_with(
    tree: merkle.CompactTree,
    rows: Sequence[asyncpg.Record],
    stored_leaves: Sequence[bytes | None],
    by_size: dict[int, list[heads.SignedTreeHead]],
) -> tuple[str, merkle.CompactTree]:
    """The first problem in ``rows`` (``store.entry_chunk``'s, from entry ``tree.size`` on), or "" and the tree
    with their leaves appended."""
    start = tree.size
    expected = range(start, start + len(rows))
    present = len(rows)
    if [r[0] for r in rows] != list(expected):
        present = next(i for i, r in enumerate(rows) if r[0] != start + i)
    leaves, unhashable = _leaf_hashes(rows, present)
    checked = len(leaves)
    changed = _first_difference(leaves, [r[4] for r in rows[:checked]])
    moved = _first_difference(leaves, [*stored_leaves[:checked], *[None] * (checked - len(stored_leaves))])
    levels = _levels(leaves)
    mismatched = next(
        (
            size - start - 1
            for size in sorted(s for s in by_size if start < s <= start + checked)
            if _check_roots(size, _root_within(tree, levels, size - start), by_size)
        ),
        None,
    )
    # What one entry at a time would meet first: the earliest entry with a problem; within one entry, a gap, a
    # leaf that cannot be made, a changed body, a moved leaf, then the heads of the size it completes.
    found = [
        (i, order, what)
        for i, order, what in (
            (present, 0, "missing"),
            (checked if unhashable else None, 1, "unhashable"),
            (changed, 2, "changed"),
            (moved, 3, "moved"),
            (mismatched, 4, "root"),
        )
        if i is not None and i < len(rows)
    ]
    if not found:
        return "", _extended(tree, levels, len(leaves))
    i, _, what = min(found)
    if what == "missing":
        return f"entry {start + i} is missing (the next stored is {_place(rows[i])})", tree
    if what == "unhashable":
        return f"{_place(rows[i])}: {unhashable}", tree
    if what == "changed":
        return f"{_place(rows[i])}: its body does not hash to its stored leaf (changed since appended)", tree
    if what == "moved":
        return f"{_place(rows[i])}: not the leaf the tree was built with here (moved or swapped)", tree
    size = start + i + 1
    return f"{_place(rows[i])}: {_check_roots(size, _root_within(tree, levels, i + 1), by_size)}", tree


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


def _parts(levels: list[list[bytes]], count: int) -> list[tuple[int, bytes]]:
    """The perfect subtrees (level, hash) the first ``count`` leaves of a chunk are made of, largest first."""
    parts = []
    position = 0
    for level in range(count.bit_length() - 1, -1, -1):
        if count >> level & 1:
            parts.append((level, levels[level][position >> level]))
            position += 1 << level
    return parts


def _root_within(tree: merkle.CompactTree, levels: list[list[bytes]], count: int) -> bytes:
    """The root of ``tree`` with the chunk's first ``count`` leaves appended."""
    return _extended(tree, levels, count).root()


def _extended(tree: merkle.CompactTree, levels: list[list[bytes]], count: int) -> merkle.CompactTree:
    """``tree`` with the chunk's ``count`` leaves appended: each of their perfect subtrees, largest first, merged
    with the frontier as ``CompactTree.append`` merges a leaf (a subtree of 2**h leaves is a leaf h levels up)."""
    frontier = list(tree.frontier)
    size = tree.size
    for level, hashed in _parts(levels, count):
        carry = size >> level
        while carry & 1:
            hashed = merkle.node_hash(frontier.pop(), hashed)
            carry >>= 1
        frontier.append(hashed)
        size += 1 << level
    return merkle.CompactTree(size, frontier)


async def export_case(conn: asyncpg.Connection, key: Ed25519PrivateKey, case_id: str) -> dict[str, object]:
    """The case's entries under the latest signed head, with inclusion proofs from the stored subtrees, and
    the earlier heads with their consistency proofs, in ``check``'s format (``check.write_export``)."""
    signed = await store.signed_heads(conn)
    if not signed:
        raise LookupError("no signed head yet: run `rj audit sign-head` first")
    latest = max(signed, key=lambda s: (s.head.tree_size, s.head.timestamp_ms))
    size = latest.head.tree_size
    entries = await store.case_entries(conn, case_id, size)
    others = [s for s in signed if s is not latest]
    proofs, consistency = await store.proofs(conn, [e.idx for e in entries], size, [s.head.tree_size for s in others])
    earlier = list(zip(others, consistency, strict=True))
    return check.write_export(
        key,
        latest,
        case_id,
        [
            check.ExportEntry(e.idx, e.topic, e.partition, e.offset, e.body, proof)
            for e, proof in zip(entries, proofs, strict=True)
        ],
        earlier,
    )
