"""Verifying the whole log from the database, and exporting one case's entries with proofs.

``verify_log`` trusts nothing stored but the bodies: it recomputes every leaf from its entry's place and body,
rebuilds the tree from those leaves, and checks each stored signed head against it. A mismatch is named by the
first entry (index, topic/partition/offset) where it shows.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from services.audit import check, heads, merkle, store


@dataclass(frozen=True)
class Verdict:
    ok: bool
    message: str


async def verify_log(conn: asyncpg.Connection, public_key: Ed25519PublicKey) -> Verdict:
    """Every entry's leaf from its body, the gap-free order, each leaf against the leaf the tree was built from
    (level 0 of the stored subtrees: a swapped or moved entry shows there), every stored head's root at its
    size and its signature. Consecutive heads are consistent when both roots are roots of this one rebuilt
    sequence of leaves, which the check of each root against the rebuild establishes."""
    signed = await store.signed_heads(conn)
    by_size: dict[int, list[heads.SignedTreeHead]] = {}
    for head in signed:
        if not heads.verify_tree_head(public_key, head):
            return Verdict(False, f"head of size {head.head.tree_size} at {head.head.timestamp_ms} ms: bad signature")
        by_size.setdefault(head.head.tree_size, []).append(head)
    recorded = await store.recorded_size(conn)
    tree = merkle.CompactTree()
    problem = _check_roots(tree, by_size)
    if problem:
        return Verdict(False, problem)
    stored_leaves: dict[int, bytes] = {}
    async for entry in store.all_entries(conn):
        if entry.idx != tree.size:
            return Verdict(False, f"entry {tree.size} is missing (the next stored is {entry.place})")
        if entry.idx not in stored_leaves:
            stored_leaves = await store.stored_leaf_hashes(conn, entry.idx, entry.idx + 5000)
        try:
            leaf = merkle.entry_leaf_hash(entry.topic, entry.partition, entry.offset, entry.body)
        except ValueError as error:
            return Verdict(False, f"{entry.place}: {error}")
        if leaf != entry.leaf:
            return Verdict(False, f"{entry.place}: its body does not hash to its stored leaf (changed since appended)")
        if stored_leaves.get(entry.idx) != leaf:
            return Verdict(False, f"{entry.place}: not the leaf the tree was built with here (moved or swapped)")
        tree.append(leaf)
        problem = _check_roots(tree, by_size)
        if problem:
            return Verdict(False, f"{entry.place}: {problem}")
    if tree.size < recorded:
        return Verdict(False, f"entry {tree.size} is missing: the log recorded {recorded} entries, holds {tree.size}")
    beyond = [size for size in by_size if size > tree.size]
    if beyond:
        return Verdict(False, f"entry {tree.size} is missing: a signed head covers {max(beyond)} entries")
    return Verdict(True, f"OK: {tree.size} entries, {len(signed)} signed heads verified")


def _check_roots(tree: merkle.CompactTree, by_size: dict[int, list[heads.SignedTreeHead]]) -> str:
    for head in by_size.get(tree.size, []):
        if head.head.root_hash != tree.root():
            return f"the signed head of size {tree.size} does not match the log rebuilt up to here"
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
    proofs = await store.inclusion_proofs(conn, [e.idx for e in entries], size)
    earlier = [(s, await store.consistency_proof(conn, s.head.tree_size, size)) for s in signed if s is not latest]
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
