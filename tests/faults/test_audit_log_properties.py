"""The audit log's appender and verifier by property, over a real PostgreSQL.

- Appending is idempotent whatever the delivery: records repeated within and across batches, batches reordered,
  and crashes between batches (a batch's transaction rolled back, as when the process dies before committing)
  leave every record once, in the order it was first committed, with a tree (stored subtrees and tree states)
  that is the tree of those leaves, proofs that verify, and ``verify_log`` saying OK.
- ``verify_log`` reads the log in chunks and checks them in bulk; on any log, tampered with or not, it says
  exactly what the straightforward verifier (one entry at a time, as it was written first: ``reference_verify``
  below) says, with chunks small enough that every tampering meets chunk boundaries.
"""

from __future__ import annotations

import random
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.audit import heads, merkle, store, verify
from services.runtime.db import migrate
from services.runtime.devstack import database_for_run
from services.runtime.records import Record

pytestmark = pytest.mark.integration

KEY = Ed25519PrivateKey.generate()
TOPICS = ("crime.events", "rj.commands", "rj.consent", "rj.ünïcode")
NOW = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)
PROPERTY = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
async def log_db(pg_server: str) -> AsyncIterator[asyncpg.Connection]:
    async with database_for_run(pg_server, "rj_audit_props") as url:
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn, "audit", "services.audit.migrations")
            yield conn
        finally:
            await conn.close()


async def emptied(conn: asyncpg.Connection) -> asyncpg.Connection:
    await conn.execute("TRUNCATE audit.entries, audit.subtrees, audit.tree_states, audit.signed_heads")
    return conn


def records(count: int, seed: int) -> list[store.Appended]:
    """``count`` distinct records spread over topics and partitions, offsets increasing on each, with bodies."""
    rng = random.Random(seed)
    offsets: dict[tuple[str, int], int] = {}
    out = []
    for _ in range(count):
        topic, partition = rng.choice(TOPICS), rng.randrange(3)
        offset = offsets.get((topic, partition), rng.randrange(5))
        offsets[(topic, partition)] = offset + 1 + rng.randrange(2)
        key = rng.choice([None, b"case-1", b"case-2", "cas\u00e9".encode()])
        body = rng.choice([b"J", b"R"]) + rng.randbytes(rng.randrange(0, 300))
        out.append(store.Appended(Record(topic, partition, offset, key, b"unused"), body))
    return out


async def append(conn: asyncpg.Connection, batch: list[store.Appended]) -> int:
    async with conn.transaction():
        return await store.append(conn, batch, NOW)


class Crash(Exception):
    """The process dying after appending, before its transaction commits."""


async def append_and_crash(conn: asyncpg.Connection, batch: list[store.Appended]) -> None:
    with pytest.raises(Crash):
        async with conn.transaction():
            await store.append(conn, batch, NOW)
            raise Crash


async def sign_latest(conn: asyncpg.Connection, timestamp_ms: int = 1) -> heads.SignedTreeHead:
    tree = await store.latest_tree(conn)
    signed = heads.sign_tree_head(KEY, tree.size, tree.root(), timestamp_ms)
    async with conn.transaction():
        await store.store_head(conn, signed)
    return signed


# --- the appender --------------------------------------------------------------------------------------------


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[int, list[tuple[list[int], bool]]]:
    """How many records, and batches of their indexes as a consumer might hand them over: with repeats (a batch
    redelivered after a crash, or a record twice in one), out of order (a rebalance), each batch committed or
    crashed before its commit."""
    count = draw(st.integers(1, 40))
    batches = draw(
        st.lists(
            st.tuples(st.lists(st.integers(0, count - 1), min_size=1, max_size=25), st.booleans()),
            max_size=8,
        )
    )
    return count, batches


@PROPERTY
@given(plan=deliveries(), seed=st.integers(0, 2**32))
async def test_every_record_is_appended_once_in_first_committed_order_however_it_is_delivered_and_crashes(
    log_db: asyncpg.Connection, plan: tuple[int, list[tuple[list[int], bool]]], seed: int
) -> None:
    conn = await emptied(log_db)
    count, batches = plan
    universe = records(count, seed)
    expected: list[int] = []
    for indexes, crashes in batches:
        batch = [universe[i] for i in indexes]
        if crashes:
            await append_and_crash(conn, batch)
            continue
        fresh = [i for i in dict.fromkeys(indexes) if i not in expected]
        assert await append(conn, batch) == len(fresh)
        expected += fresh
    # After the last crash the consumer starts again from its committed offsets: everything, in Kafka's order.
    await append(conn, universe)
    expected += [i for i in range(count) if i not in expected]

    rows = await conn.fetch('SELECT idx, topic, partition, "offset", key, body, leaf FROM audit.entries ORDER BY idx')
    assert [r["idx"] for r in rows] == list(range(count))
    placed = [(r["topic"], r["partition"], r["offset"], bytes(r["body"])) for r in rows]
    want = [universe[i] for i in expected]
    assert placed == [(a.record.topic, a.record.partition, a.record.offset, a.body) for a in want]
    assert [r["key"] for r in rows] == [a.record.case_key if a.record.key is not None else None for a in want]
    leaves = [merkle.entry_leaf_hash(t, p, o, b) for t, p, o, b in placed]
    assert [bytes(r["leaf"]) for r in rows] == leaves

    # The stored tree is the tree of those leaves: every perfect subtree, and the state after each batch.
    memory = merkle.MemoryTree(leaves)
    subtrees = {(r["level"], r["position"]): bytes(r["hash"]) for r in await conn.fetch("SELECT * FROM audit.subtrees")}
    assert subtrees == {
        (level, position): memory.subtree_hash(position << level, (position + 1) << level)
        for level in range(count.bit_length())
        for position in range(count >> level)
    }
    for state in await conn.fetch("SELECT size, root, compact FROM audit.tree_states"):
        assert bytes(state["root"]) == memory.root(state["size"])
        assert merkle.CompactTree.from_bytes(bytes(state["compact"])).root() == memory.root(state["size"])
    assert (await store.latest_tree(conn)).size == count

    signed = await sign_latest(conn)
    proofs = await store.inclusion_proofs(conn, list(range(count)), count)
    assert all(
        merkle.verify_inclusion(leaf, i, count, proof, signed.head.root_hash)
        for i, (leaf, proof) in enumerate(zip(leaves, proofs, strict=True))
    )
    verdict = await verify.verify_log(conn, KEY.public_key())
    assert verdict.ok, verdict.message


# --- the verifier --------------------------------------------------------------------------------------------


async def reference_verify(conn: asyncpg.Connection, public_key: Ed25519PublicKey) -> verify.Verdict:
    """``verify_log`` as first written: one entry at a time, each leaf made and checked, the tree appended a
    leaf at a time and every head's root checked at its size. What it says is what ``verify_log`` must say."""
    signed = await store.signed_heads(conn)
    by_size: dict[int, list[heads.SignedTreeHead]] = {}
    for head in signed:
        if not heads.verify_tree_head(public_key, head):
            return verify.Verdict(
                False, f"head of size {head.head.tree_size} at {head.head.timestamp_ms} ms: bad signature"
            )
        by_size.setdefault(head.head.tree_size, []).append(head)
    recorded = await store.recorded_size(conn)
    tree = merkle.CompactTree()

    def roots() -> str:
        for head in by_size.get(tree.size, []):
            if head.head.root_hash != tree.root():
                return f"the signed head of size {tree.size} does not match the log rebuilt up to here"
        return ""

    if problem := roots():
        return verify.Verdict(False, problem)
    stored_leaves: dict[int, bytes] = {}
    async for entry in store.all_entries(conn, chunk=7):
        if entry.idx != tree.size:
            return verify.Verdict(False, f"entry {tree.size} is missing (the next stored is {entry.place})")
        if entry.idx not in stored_leaves:
            stored_leaves = await store.stored_leaf_hashes(conn, entry.idx, entry.idx + 5)
        try:
            leaf = merkle.entry_leaf_hash(entry.topic, entry.partition, entry.offset, entry.body)
        except ValueError as error:
            return verify.Verdict(False, f"{entry.place}: {error}")
        if leaf != entry.leaf:
            return verify.Verdict(
                False, f"{entry.place}: its body does not hash to its stored leaf (changed since appended)"
            )
        if stored_leaves.get(entry.idx) != leaf:
            return verify.Verdict(False, f"{entry.place}: not the leaf the tree was built with here (moved or swapped)")
        tree.append(leaf)
        if problem := roots():
            return verify.Verdict(False, f"{entry.place}: {problem}")
    if tree.size < recorded:
        return verify.Verdict(
            False, f"entry {tree.size} is missing: the log recorded {recorded} entries, holds {tree.size}"
        )
    beyond = [size for size in by_size if size > tree.size]
    if beyond:
        return verify.Verdict(False, f"entry {tree.size} is missing: a signed head covers {max(beyond)} entries")
    return verify.Verdict(True, f"OK: {tree.size} entries, {len(signed)} signed heads verified")


def tamperings(count: int) -> st.SearchStrategy[list[tuple[Any, ...]]]:
    at = st.integers(0, count - 1)
    one = st.one_of(
        st.tuples(st.just("body"), at, st.integers(0, 255)),
        st.tuples(st.just("leaf column"), at),
        st.tuples(st.just("stored leaf"), at),
        st.tuples(st.just("no stored leaf"), at),
        st.tuples(st.just("delete"), at),
        st.tuples(st.just("truncate"), at),
        st.tuples(st.just("swap"), at, at),
        st.tuples(st.just("negative offset"), at),
        st.tuples(st.just("negative partition"), at),
        st.tuples(st.just("huge partition"), at),
        st.tuples(st.just("wrong root"), st.integers(1, count)),
        st.tuples(st.just("head beyond"), st.integers(count + 1, count + 40)),
        st.tuples(st.just("bad signature"), st.integers(0, count)),
    )
    return st.lists(one, min_size=1, max_size=2)


async def tamper(conn: asyncpg.Connection, what: tuple[Any, ...]) -> None:
    """One change an administrator might make behind the log's back (one that the table's constraints refuse,
    such as two entries made to claim one place, is simply not made)."""
    kind, *args = what
    statements: dict[str, list[str]] = {
        "body": ["UPDATE audit.entries SET body = body || $2::bytea WHERE idx = $1"],
        "leaf column": ["UPDATE audit.entries SET leaf = sha256(leaf) WHERE idx = $1"],
        "stored leaf": ["UPDATE audit.subtrees SET hash = sha256(hash) WHERE level = 0 AND position = $1"],
        "no stored leaf": ["DELETE FROM audit.subtrees WHERE level = 0 AND position = $1"],
        "delete": ["DELETE FROM audit.entries WHERE idx = $1"],
        "truncate": ["DELETE FROM audit.entries WHERE idx >= $1"],
        "swap": [
            "UPDATE audit.entries SET idx = -1 WHERE idx = $1",
            "UPDATE audit.entries SET idx = $1 WHERE idx = $2",
            "UPDATE audit.entries SET idx = $2 WHERE idx = -1 AND $1::bigint IS NOT NULL",
        ],
        "negative offset": ['UPDATE audit.entries SET "offset" = -1 - "offset" WHERE idx = $1'],
        "negative partition": ["UPDATE audit.entries SET partition = -1 WHERE idx = $1"],
        "huge partition": ["UPDATE audit.entries SET partition = 2147483647 WHERE idx = $1"],
        "wrong root": ["INSERT INTO audit.signed_heads VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING"],
        "head beyond": ["INSERT INTO audit.signed_heads VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING"],
        "bad signature": ["INSERT INTO audit.signed_heads VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING"],
    }
    if kind == "body":
        args = [args[0], bytes([args[1]])]
    elif kind == "swap" and args[0] == args[1]:
        return
    elif kind in ("wrong root", "head beyond", "bad signature"):
        root = merkle.EMPTY_ROOT if kind == "bad signature" else merkle.leaf_hash(b"not the root")
        signer = Ed25519PrivateKey.generate() if kind == "bad signature" else KEY
        signature = heads.sign_tree_head(signer, args[0], root, 10 + args[0]).signature
        args = [args[0], 10 + args[0], root, heads.log_id(KEY.public_key()), signature]
    try:
        async with conn.transaction():
            for statement in statements[kind]:
                await conn.execute(statement, *args[: max(int(n) for n in re.findall(r"\$(\d)", statement))])
    except asyncpg.UniqueViolationError:
        pass


@PROPERTY
@given(
    data=st.data(),
    count=st.integers(0, 45),
    batch=st.integers(1, 9),
    chunk=st.sampled_from([1, 2, 4, 8, 16]),
    seed=st.integers(0, 2**32),
)
async def test_verify_says_what_checking_one_entry_at_a_time_says_about_any_log_tampered_or_not(
    log_db: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
    data: st.DataObject,
    count: int,
    batch: int,
    chunk: int,
    seed: int,
) -> None:
    conn = await emptied(log_db)
    universe = records(count, seed)
    head_every = data.draw(st.integers(1, 12), label="a head every so many batches")
    for n, start in enumerate(range(0, count, batch)):
        await append(conn, universe[start : start + batch])
        if n % head_every == 0:
            await sign_latest(conn, timestamp_ms=100 + n)
    if count and data.draw(st.integers(0, 4), label="tampered unless 0"):
        for what in data.draw(tamperings(count), label="tampering"):
            await tamper(conn, what)
    monkeypatch.setattr(verify, "CHUNK", chunk)
    ours = await verify.verify_log(conn, KEY.public_key())
    assert ours == await reference_verify(conn, KEY.public_key())


async def test_verify_of_a_large_log_names_a_change_a_gap_and_a_swap_in_a_later_chunk_as_one_at_a_time_does(
    log_db: asyncpg.Connection,
) -> None:
    """The real chunk size, a log of several chunks with heads inside and between them."""
    conn = await emptied(log_db)
    count = 3 * verify.CHUNK + 123
    universe = records(count, seed=7)
    for start in range(0, count, 500):
        await append(conn, universe[start : start + 500])
        await sign_latest(conn, timestamp_ms=start)
    await sign_latest(conn, timestamp_ms=count)
    clean = await verify.verify_log(conn, KEY.public_key())
    assert clean == await reference_verify(conn, KEY.public_key()) and clean.ok
    for statements in (
        [f"UPDATE audit.entries SET body = body || '\\x00'::bytea WHERE idx = {2 * verify.CHUNK + 5}"],
        [f"DELETE FROM audit.entries WHERE idx = {verify.CHUNK}"],
        [f"DELETE FROM audit.entries WHERE idx >= {verify.CHUNK} AND idx < {3 * verify.CHUNK}"],
        [
            f"UPDATE audit.entries SET idx = -1 WHERE idx = {verify.CHUNK - 1}",
            f"UPDATE audit.entries SET idx = {verify.CHUNK - 1} WHERE idx = {verify.CHUNK}",
            f"UPDATE audit.entries SET idx = {verify.CHUNK} WHERE idx = -1",
        ],
    ):
        tampering = conn.transaction()
        await tampering.start()
        try:
            for statement in statements:
                await conn.execute(statement)
            ours = await verify.verify_log(conn, KEY.public_key())
            assert not ours.ok and ours == await reference_verify(conn, KEY.public_key())
        finally:
            await tampering.rollback()
    assert (await verify.verify_log(conn, KEY.public_key())).ok
