"""Verifying the whole log from the database, and exporting one case's entries with proofs.

``verify_log`` trusts nothing stored but the bodies: it recomputes every leaf from its entry's place and body,
rebuilds the tree from those leaves, and checks each stored signed head against it. A mismatch is named by the
first entry (index, topic/partition/offset) where it shows. It checks the log a chunk at a time (``chunks``), in
its own process or, over a large log, in worker processes a range of chunks each (``parallel``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Final

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from services.audit import check, chunks, heads, merkle, parallel, store
from services.audit.parallel import VerifyIncomplete

__all__ = ["CHUNK", "PARALLEL_FROM", "Verdict", "VerifyIncomplete", "export_case", "verify_log"]


@dataclass(frozen=True)
class Verdict:
    ok: bool
    message: str


CHUNK: Final = 1 << 13
"""Entries a query reads. A power of two: the log's first ``k * CHUNK`` leaves end on a perfect subtree, so each
full chunk's leaves join the rebuilt tree as one subtree hashed level by level, rather than one leaf at a time."""


PARALLEL_FROM: Final = 12
"""Chunks a log needs (by the size it recorded) before ``verify_log``, left to choose, starts worker processes:
below it, starting them costs more than the second core gives back (measured on 2 cores: 8 chunks took 142 ms in
one process and 224 ms in two workers, 16 chunks 435 ms and 335 ms; a worker is up about 0.12 s after it starts)."""


async def verify_log(
    conn: asyncpg.Connection,
    public_key: Ed25519PublicKey,
    *,
    database_url: str | None = None,
    workers: int | None = None,
) -> Verdict:
    """Every entry's leaf from its body, the gap-free order, each leaf against the leaf the tree was built from
    (level 0 of the stored subtrees: a swapped or moved entry shows there), every stored head's root at its
    size and its signature. Consecutive heads are consistent when both roots are roots of this one rebuilt
    sequence of leaves, which the check of each root against the rebuild establishes.

    The log is read a chunk of ``CHUNK`` entries at a time, the next chunk's query already under way while this
    one is hashed (the database reads it meanwhile), and checked in bulk; what is reported is what checking one
    entry at a time, in index order, would report first (``chunks.check_chunk`` and ``_folded``).

    Given ``database_url``, the chunks are checked by ``workers`` processes (default: one a core, at most
    ``parallel.MAX_WORKERS``; left to choose, only for a log of ``PARALLEL_FROM`` chunks or more), each reading
    ranges of whole chunks over a connection of its own, all in one snapshot exported by a read-only transaction
    on ``conn`` (so not when ``conn`` is already in a transaction: workers could not see what it sees). This
    process joins their chunks to the tree as subtrees, in index order, checks the heads and reads on past the
    workers' ranges as above: the verdict is the same. A worker that fails or dies raises ``VerifyIncomplete``."""
    count = parallel.default_workers() if workers is None else workers
    if database_url is None or count < 2 or conn.is_in_transaction():
        return await _verified(conn, public_key)
    if workers is None and await store.recorded_size(conn) < PARALLEL_FROM * CHUNK:
        return await _verified(conn, public_key)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        # The workers' snapshot lasts as long as this transaction, which only waits for them meanwhile: the
        # session's idle-in-transaction timeout must not end it however long the log takes.
        await conn.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
        snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
        return await _verified(conn, public_key, parallel.Spread(database_url, snapshot, count))


async def _verified(
    conn: asyncpg.Connection, public_key: Ed25519PublicKey, spread: parallel.Spread | None = None
) -> Verdict:
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
    sizes = sorted(by_size)
    ended = False
    if spread is not None:
        problem, tree, ended = await _folded_from_workers(tree, by_size, sizes, spread, recorded)
    if not problem and not ended:
        problem, tree = await _folded_as_read(conn, tree, by_size, sizes)
    if problem:
        return Verdict(False, problem)
    after = await store.entry_from(conn, tree.size)
    if after is not None:
        return Verdict(False, f"entry {tree.size} is missing (the next stored is {after.place})")
    if tree.size < recorded:
        return Verdict(False, f"entry {tree.size} is missing: the log recorded {recorded} entries, holds {tree.size}")
    beyond = [size for size in by_size if size > tree.size]
    if beyond:
        return Verdict(False, f"entry {tree.size} is missing: a signed head covers {max(beyond)} entries")
    return Verdict(True, f"OK: {tree.size} entries, {len(signed)} signed heads verified")


async def _folded_as_read(
    conn: asyncpg.Connection,
    tree: merkle.CompactTree,
    by_size: dict[int, list[heads.SignedTreeHead]],
    sizes: list[int],
) -> tuple[str, merkle.CompactTree]:
    """The first problem from entry ``tree.size`` on, read here up to the first chunk with fewer rows, or "" and
    the tree of every entry up to there."""
    async with contextlib.aclosing(chunks.chunks_read(conn, tree.size, CHUNK)) as reading:
        async for start, rows, stored in reading:
            problem, tree = _folded(tree, chunks.check_chunk(start, rows, stored, sizes), by_size)
            if problem:
                return problem, tree
    return "", tree


async def _folded_from_workers(
    tree: merkle.CompactTree,
    by_size: dict[int, list[heads.SignedTreeHead]],
    sizes: list[int],
    spread: parallel.Spread,
    recorded: int,
) -> tuple[str, merkle.CompactTree, bool]:
    """As ``_folded_as_read``, from the workers' checks of the chunks up to the size the log recorded, and
    whether they reached a chunk with fewer rows (False: the log may go on, to be read here). The recorded size
    only spreads the work: what is checked does not depend on it."""
    end = -(-recorded // CHUNK) * CHUNK
    if not end:
        return "", tree, False
    async with contextlib.aclosing(parallel.chunk_checks(spread, CHUNK, end, sizes)) as checks:
        async for checked in checks:
            problem, tree = _folded(tree, checked, by_size)
            if problem:
                return problem, tree, True
            if checked.rows < CHUNK:
                return "", tree, True
    return "", tree, False


def _folded(
    tree: merkle.CompactTree, checked: chunks.ChunkCheck, by_size: dict[int, list[heads.SignedTreeHead]]
) -> tuple[str, merkle.CompactTree]:
    """The first problem of a chunk that starts where ``tree`` ends, or "" and the tree with its leaves appended.
    What one entry at a time would meet first: the earliest entry with a problem; within one entry, a gap, a
    leaf that cannot be made, a changed body, a moved leaf (all found in the chunk alone), then the heads of the
    size it completes (their roots need the tree before the chunk)."""
    if checked.start != tree.size:
        raise VerifyIncomplete(f"a chunk checked from entry {checked.start} came where entry {tree.size} was due")
    due = sorted(size for size in by_size if tree.size < size <= tree.size + checked.checked)
    if [tree.size + count for count, _, _ in checked.ends] != due:  # a worker's answer is checked, not trusted
        raise VerifyIncomplete(f"the check of the chunk from entry {checked.start} did not answer for every head in it")
    mismatched = None
    for count, place, parts in checked.ends:
        problem = _check_roots(tree.size + count, chunks.extended(tree, parts).root(), by_size)
        if problem:
            mismatched = (count - 1, chunks.HEAD_ROOT, f"{place}: {problem}")
            break
    found = [p for p in (checked.problem, mismatched) if p is not None]
    if found:
        return min(found)[2], tree
    return "", chunks.extended(tree, checked.leaves)


def _check_roots(size: int, root: bytes, by_size: dict[int, list[heads.SignedTreeHead]]) -> str:
    for head in by_size.get(size, []):
        if head.head.root_hash != root:
            return f"the signed head of size {size} does not match the log rebuilt up to here"
    return ""


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
