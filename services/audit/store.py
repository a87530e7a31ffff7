"""The audit log's SQL: appending records under one lock, the tree's stored subtrees and states, signed heads,
and reading it all back for proofs and verification."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import asyncpg

from services.audit import heads, merkle
from services.runtime.records import Record

SCHEMA: Final = "audit"
APPENDER_ROLE: Final = "rj_audit_appender"
LOG_LOCK: Final = 0x72_6A_61_75_64_69_74  # "rjaudit": one appender at a time, across replicas


@dataclass(frozen=True)
class Appended:
    """A record to append, with the canonical bytes its leaf commits to (and, for a record kept sealed whole, the
    sealed record, which the body commits to by digest)."""

    record: Record
    body: bytes
    sealed_record: bytes | None = None


@dataclass(frozen=True)
class Entry:
    idx: int
    topic: str
    partition: int
    offset: int
    key: str | None
    body: bytes
    leaf: bytes

    @property
    def place(self) -> str:
        return f"entry {self.idx} ({self.topic}/{self.partition}@{self.offset})"


async def append(conn: asyncpg.Connection, batch: Sequence[Appended], now: datetime) -> int:
    """Append what of ``batch`` the log does not hold yet, in the batch's order, as the appender role, and
    return how many. The caller's transaction must still be open: the role and the lock end with it."""
    await conn.execute(f"SET LOCAL ROLE {APPENDER_ROLE}")
    await lock_log(conn)
    held = await conn.fetch(
        f"""SELECT e.topic, e.partition, e."offset" FROM {SCHEMA}.entries e
            JOIN unnest($1::text[], $2::int[], $3::bigint[]) AS b(topic, partition, "offset")
              ON (e.topic, e.partition, e."offset") = (b.topic, b.partition, b."offset")""",
        [a.record.topic for a in batch],
        [a.record.partition for a in batch],
        [a.record.offset for a in batch],
    )
    seen = {(r["topic"], r["partition"], r["offset"]) for r in held}
    fresh: list[Appended] = []
    for item in batch:
        where = (item.record.topic, item.record.partition, item.record.offset)
        if where not in seen:
            seen.add(where)
            fresh.append(item)
    if fresh:
        tree = await latest_tree(conn)
        first = tree.size
        leaves: list[bytes] = []
        completed: list[merkle.Subtree] = []
        for item in fresh:
            r = item.record
            leaf = merkle.entry_leaf_hash(r.topic, r.partition, r.offset, item.body)
            leaves.append(leaf)
            completed += tree.append_with_subtrees(leaf)
        await conn.execute(
            f"""INSERT INTO {SCHEMA}.entries
                    (idx, topic, partition, "offset", key, appended_at, body, leaf, sealed_record)
                SELECT i, t, p, o, k, $6, b, l, s
                FROM unnest($1::bigint[], $2::text[], $3::int[], $4::bigint[], $5::text[], $7::bytea[], $8::bytea[],
                            $9::bytea[])
                  AS x(i, t, p, o, k, b, l, s)""",
            list(range(first, first + len(fresh))),
            [a.record.topic for a in fresh],
            [a.record.partition for a in fresh],
            [a.record.offset for a in fresh],
            [a.record.case_key if a.record.key is not None else None for a in fresh],
            now,
            [a.body for a in fresh],
            leaves,
            [a.sealed_record for a in fresh],
        )
        await conn.execute(
            f"""INSERT INTO {SCHEMA}.subtrees (level, position, hash)
                SELECT * FROM unnest($1::smallint[], $2::bigint[], $3::bytea[])""",
            [_level(s) for s in completed],
            [s.start >> _level(s) for s in completed],
            [s.hash for s in completed],
        )
        await conn.execute(
            f"INSERT INTO {SCHEMA}.tree_states (size, root, compact) VALUES ($1, $2, $3)",
            tree.size,
            tree.root(),
            tree.to_bytes(),
        )
    await conn.execute("RESET ROLE")
    return len(fresh)


async def lock_log(conn: asyncpg.Connection) -> None:
    """Hold the log still until the transaction ends: no append, and no other head, in between."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", LOG_LOCK)


def _level(subtree: merkle.Subtree) -> int:
    return (subtree.end - subtree.start).bit_length() - 1


async def latest_tree(conn: asyncpg.Connection) -> merkle.CompactTree:
    data = await conn.fetchval(f"SELECT compact FROM {SCHEMA}.tree_states ORDER BY size DESC LIMIT 1")
    return merkle.CompactTree() if data is None else merkle.CompactTree.from_bytes(data)


# --- proofs from stored subtrees ---------------------------------------------------------------------------


def _aligned_parts(start: int, end: int) -> list[tuple[int, int]]:
    """The stored perfect subtrees ``(level, position)`` that ``[start, end)`` is made of, left to right.
    Proofs only ask for ranges whose start is aligned to the largest power of two in their length."""
    parts = []
    position = start
    length = end - start
    for level in range(length.bit_length() - 1, -1, -1):
        if length >> level & 1:
            if position % (1 << level):
                raise ValueError(f"[{start}, {end}) is not made of aligned subtrees")
            parts.append((level, position >> level))
            position += 1 << level
    return parts


class StoredSubtrees:
    """``merkle.SubtreeHash`` answered from the stored subtrees: ``load`` fetches, in one query, every hash the
    proofs a caller will ask for need (what they ask for depends on indexes and sizes only, never on hashes)."""

    def __init__(self) -> None:
        self._hashes: dict[tuple[int, int], bytes] = {}

    async def load(self, conn: asyncpg.Connection, ranges: Sequence[tuple[int, int]]) -> None:
        wanted = sorted({part for start, end in ranges for part in _aligned_parts(start, end)} - set(self._hashes))
        if not wanted:
            return
        rows = await conn.fetch(
            f"""SELECT s.level, s.position, s.hash FROM {SCHEMA}.subtrees s
                JOIN unnest($1::smallint[], $2::bigint[]) AS w(level, position)
                  ON (s.level, s.position) = (w.level, w.position)""",
            [level for level, _ in wanted],
            [position for _, position in wanted],
        )
        self._hashes.update({(r["level"], r["position"]): bytes(r["hash"]) for r in rows})

    def __call__(self, start: int, end: int) -> bytes:
        parts = [self._hashes[part] for part in _aligned_parts(start, end)]
        hashed = parts[-1]
        for left in reversed(parts[:-1]):
            hashed = merkle.node_hash(left, hashed)
        return hashed


def _asked(make_proof: object) -> list[tuple[int, int]]:
    asked: list[tuple[int, int]] = []

    def record(start: int, end: int) -> bytes:
        asked.append((start, end))
        return merkle.EMPTY_ROOT

    make_proof(record)  # type: ignore[operator]
    return asked


async def inclusion_proofs(conn: asyncpg.Connection, indexes: Sequence[int], size: int) -> list[list[bytes]]:
    """The inclusion proof of each leaf of ``indexes`` in the tree of ``size`` leaves, from stored subtrees."""
    return (await proofs(conn, indexes, size, []))[0]


async def consistency_proof(conn: asyncpg.Connection, first: int, second: int) -> list[bytes]:
    return (await proofs(conn, [], second, [first]))[1][0]


async def proofs(
    conn: asyncpg.Connection, indexes: Sequence[int], size: int, earlier_sizes: Sequence[int]
) -> tuple[list[list[bytes]], list[list[bytes]]]:
    """The inclusion proofs of ``indexes`` and the consistency proofs from each of ``earlier_sizes``, all in the
    tree of ``size`` leaves, from stored subtrees read in one query (an export asks for both at once)."""
    inclusion = [lambda f, i=i: merkle.inclusion_proof(f, i, size) for i in indexes]
    consistency = [lambda f, e=e: merkle.consistency_proof(f, e, size) for e in earlier_sizes]
    hashes = StoredSubtrees()
    await hashes.load(conn, [r for make in (*inclusion, *consistency) for r in _asked(make)])
    return [make(hashes) for make in inclusion], [make(hashes) for make in consistency]


# --- signed heads ------------------------------------------------------------------------------------------


async def store_head(conn: asyncpg.Connection, signed: heads.SignedTreeHead, order_from: int | None = None) -> None:
    """Store a signed head; ``order_from``: the first entry whose append order is published with it."""
    await conn.execute(f"SET LOCAL ROLE {APPENDER_ROLE}")
    head = signed.head
    await conn.execute(
        f"""INSERT INTO {SCHEMA}.signed_heads (tree_size, timestamp_ms, root, log_id, signature, order_from)
            VALUES ($1, $2, $3, $4, $5, $6)""",
        head.tree_size,
        head.timestamp_ms,
        head.root_hash,
        head.log_id,
        signed.signature,
        order_from,
    )
    await conn.execute("RESET ROLE")


async def order_published_up_to(conn: asyncpg.Connection) -> int:
    """How many entries, from the first, have had their append order published with a head."""
    size = await conn.fetchval(f"SELECT max(tree_size) FROM {SCHEMA}.signed_heads WHERE order_from IS NOT NULL")
    return 0 if size is None else int(size)


async def signed_heads(conn: asyncpg.Connection) -> list[heads.SignedTreeHead]:
    """Every stored head, oldest first."""
    rows = await conn.fetch(f"SELECT * FROM {SCHEMA}.signed_heads ORDER BY timestamp_ms, tree_size")
    return [
        heads.SignedTreeHead(
            heads.TreeHead(bytes(r["log_id"]), r["tree_size"], bytes(r["root"]), r["timestamp_ms"]),
            bytes(r["signature"]),
        )
        for r in rows
    ]


# --- reading the log ---------------------------------------------------------------------------------------


def _entry(r: asyncpg.Record) -> Entry:
    return Entry(r["idx"], r["topic"], r["partition"], r["offset"], r["key"], bytes(r["body"]), bytes(r["leaf"]))


async def all_entries(conn: asyncpg.Connection, chunk: int = 5000) -> AsyncIterator[Entry]:
    """Every entry in index order, a chunk at a time (the log may be far larger than memory)."""
    after = -1
    while True:
        rows = await conn.fetch(
            f'SELECT idx, topic, partition, "offset", key, body, leaf FROM {SCHEMA}.entries '
            "WHERE idx > $1 ORDER BY idx LIMIT $2",
            after,
            chunk,
        )
        for r in rows:
            yield _entry(r)
        if len(rows) < chunk:
            return
        after = rows[-1]["idx"]


async def placed_leaves(
    conn: asyncpg.Connection, start: int, end: int, chunk: int = 5000
) -> AsyncIterator[tuple[str, int, int, bytes]]:
    """(topic, partition, offset, leaf) of each entry of ``[start, end)``, in index order, a chunk at a time; a
    missing entry raises ``LookupError`` (the index of each is its place in this sequence, never guessed)."""
    while start < end:
        rows = await conn.fetch(
            f'SELECT idx, topic, partition, "offset", leaf FROM {SCHEMA}.entries '
            "WHERE idx >= $1 AND idx < $2 ORDER BY idx",
            start,
            min(start + chunk, end),
        )
        for r in rows:
            if r["idx"] != start:
                raise LookupError(f"entry {start} is missing from the log")
            yield r["topic"], r["partition"], r["offset"], bytes(r["leaf"])
            start += 1
        if not rows:
            raise LookupError(f"entry {start} is missing from the log")


async def stored_leaf_hashes(conn: asyncpg.Connection, start: int, end: int) -> dict[int, bytes]:
    rows = await conn.fetch(
        f"SELECT position, hash FROM {SCHEMA}.subtrees WHERE level = 0 AND position >= $1 AND position < $2",
        start,
        end,
    )
    return {r["position"]: bytes(r["hash"]) for r in rows}


async def case_entries(conn: asyncpg.Connection, case_id: str, below: int) -> list[Entry]:
    rows = await conn.fetch(
        f'SELECT idx, topic, partition, "offset", key, body, leaf FROM {SCHEMA}.entries '
        "WHERE key = $1 AND idx < $2 ORDER BY idx",
        case_id,
        below,
    )
    return [_entry(r) for r in rows]


async def recorded_size(conn: asyncpg.Connection) -> int:
    return await conn.fetchval(f"SELECT coalesce(max(size), 0) FROM {SCHEMA}.tree_states")  # type: ignore[no-any-return]


async def entry_chunk(
    conn: asyncpg.Connection, start: int, end: int
) -> tuple[list[asyncpg.Record], list[bytes | None]]:
    """What verifying reads of the entries with index in ``[start, end)``: rows in index order (idx, topic,
    partition, the offset as 8 bytes big-endian followed by the body, leaf), and the leaf the tree was built with
    (level 0 of the stored subtrees) at each index from ``start``, None where none is stored.

    The offset's bytes and the body come as one value, as the leaf's data has them (``merkle.entry_leaf_data``):
    a column fewer to decode for each of a million rows, and the offset needs no encoding here."""
    rows = await conn.fetch(
        f'SELECT idx, topic, partition, int8send("offset") || body, leaf FROM {SCHEMA}.entries '
        "WHERE idx >= $1 AND idx < $2 ORDER BY idx",
        start,
        end,
    )
    # One value for the whole range rather than a row each; its count and bounds say whether any is missing.
    stored = await conn.fetchrow(
        f"""SELECT count(*) AS n, min(position) AS first, max(position) AS last,
                   string_agg(hash, ''::bytea ORDER BY position) AS hashes
            FROM {SCHEMA}.subtrees WHERE level = 0 AND position >= $1 AND position < $2""",
        start,
        end,
    )
    assert stored is not None
    joined: bytes = stored["hashes"] or b""
    hashes: list[bytes | None] = [joined[i : i + merkle.HASH_SIZE] for i in range(0, len(joined), merkle.HASH_SIZE)]
    if stored["n"] and (stored["first"] != start or stored["last"] - stored["first"] + 1 != stored["n"]):
        positions = await conn.fetch(
            f"SELECT position, hash FROM {SCHEMA}.subtrees WHERE level = 0 AND position >= $1 AND position < $2",
            start,
            end,
        )
        at = {r["position"]: bytes(r["hash"]) for r in positions}
        hashes = [at.get(i) for i in range(start, end)]
    return rows, hashes


async def entry_from(conn: asyncpg.Connection, start: int) -> Entry | None:
    """The first entry stored at index ``start`` or after it."""
    row = await conn.fetchrow(
        f'SELECT idx, topic, partition, "offset", key, body, leaf FROM {SCHEMA}.entries '
        "WHERE idx >= $1 ORDER BY idx LIMIT 1",
        start,
    )
    return None if row is None else _entry(row)
