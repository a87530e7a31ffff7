"""The audit log's Merkle tree against RFC 6962's reference vectors and, by property, against its definition."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.audit.merkle import (
    EMPTY_ROOT,
    CompactTree,
    CompactTreeFormatError,
    MemoryTree,
    consistency_proof,
    entry_leaf_data,
    inclusion_proof,
    leaf_hash,
    leaf_hasher,
    node_hash,
    split_point,
    tree_hash,
    verify_consistency,
    verify_inclusion,
)

# The Certificate Transparency reference test vectors (RFC 6962 trees of the first n of these 8 leaves).
REFERENCE_LEAVES = [
    bytes.fromhex(h)
    for h in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
]
REFERENCE_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
REFERENCE_INCLUSION = [  # (leaf index, tree size, audit path)
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]  # fmt: skip
REFERENCE_CONSISTENCY = [  # (first size, second size, proof)
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]  # fmt: skip
REFERENCE_LEAF_HASHES = [leaf_hash(data) for data in REFERENCE_LEAVES]


def _root(size: int) -> bytes:
    return bytes.fromhex(REFERENCE_ROOTS[size - 1])


def _leaves(count: int, seed: int = 0) -> list[bytes]:
    return [leaf_hash(f"{seed}:{i}".encode()) for i in range(count)]


def _flip_bit(value: bytes, bit: int) -> bytes:
    flipped = bytearray(value)
    flipped[bit // 8 % len(value)] ^= 1 << (bit % 8)
    return bytes(flipped)


def test_the_empty_tree_hashes_to_sha256_of_the_empty_string():
    assert EMPTY_ROOT == hashlib.sha256(b"").digest()
    assert tree_hash([]) == EMPTY_ROOT
    assert CompactTree().root() == EMPTY_ROOT


def test_leaves_and_nodes_are_hashed_with_rfc_6962s_prefixes():
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    left, right = leaf_hash(b"l"), leaf_hash(b"r")
    assert node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()


def test_trees_of_the_reference_leaves_have_the_reference_roots():
    for size in range(1, 9):
        assert tree_hash(REFERENCE_LEAF_HASHES[:size]).hex() == REFERENCE_ROOTS[size - 1]


@pytest.mark.parametrize(("index", "size", "path"), REFERENCE_INCLUSION)
def test_inclusion_proofs_of_the_reference_tree_are_the_reference_paths(index, size, path):
    proof = inclusion_proof(REFERENCE_LEAF_HASHES, index, size)
    assert [node.hex() for node in proof] == path
    assert verify_inclusion(REFERENCE_LEAF_HASHES[index], index, size, proof, _root(size))


@pytest.mark.parametrize(("first", "second", "path"), REFERENCE_CONSISTENCY)
def test_consistency_proofs_of_the_reference_tree_are_the_reference_proofs(first, second, path):
    proof = consistency_proof(REFERENCE_LEAF_HASHES, first, second)
    assert [node.hex() for node in proof] == path
    assert verify_consistency(first, second, _root(first), _root(second), proof)


def test_the_split_is_the_largest_power_of_two_below_n_not_the_midpoint():
    assert [split_point(n) for n in (2, 3, 4, 5, 6, 7, 8, 9, 1000)] == [1, 2, 2, 4, 4, 4, 4, 8, 512]


def test_the_compact_tree_root_equals_the_tree_hash_for_every_size_up_to_300():
    leaves = _leaves(300)
    memory = MemoryTree()
    tree = CompactTree()
    for size in range(1, 301):
        tree.append(leaves[size - 1])
        memory.append(leaves[size - 1])
        expected = tree_hash(leaves[:size])
        assert tree.root() == expected, size
        assert memory.root() == expected, size
        assert tree.size == size and len(tree.frontier) == size.bit_count()


def test_append_with_subtrees_reports_every_perfect_subtree_it_completes():
    leaves = _leaves(12)
    tree = CompactTree()
    for index in range(11):
        tree.append(leaves[index])
    completed = tree.append_with_subtrees(leaves[11])  # leaf 11 completes [11,12), [10,12) and [8,12)
    assert [(s.start, s.end) for s in completed] == [(11, 12), (10, 12), (8, 12)]
    assert all(s.hash == tree_hash(leaves[s.start : s.end]) for s in completed)


def test_a_compact_tree_round_trips_through_bytes_and_json():
    tree = CompactTree()
    for leaf in _leaves(13):
        tree.append(leaf)
    assert CompactTree.from_bytes(tree.to_bytes()) == tree
    assert CompactTree.from_json(tree.to_json()) == tree
    restored = CompactTree.from_json(tree.to_json())
    restored.append(leaf_hash(b"next"))
    tree.append(leaf_hash(b"next"))
    assert restored.root() == tree.root()


@pytest.mark.parametrize(
    "stored",
    [b"", b"\x02" + bytes(8), b"\x01" + (3).to_bytes(8, "big") + bytes(32), b"\x01" + (1).to_bytes(8, "big")],
)
def test_stored_bytes_that_are_not_a_compact_tree_are_refused(stored):
    with pytest.raises(CompactTreeFormatError):
        CompactTree.from_bytes(stored)


def test_proofs_ask_the_store_only_for_aligned_subtrees_and_never_read_leaves():
    memory = MemoryTree(_leaves(1000))
    asked: list[tuple[int, int]] = []

    def subtree_hash(start: int, end: int) -> bytes:
        asked.append((start, end))
        return memory.subtree_hash(start, end)

    for size in (1, 2, 7, 64, 513, 1000):
        for index in (0, size // 3, size - 1):
            proof = inclusion_proof(subtree_hash, index, size)
            assert verify_inclusion(memory.leaf(index), index, size, proof, memory.root(size))
        for first in (1, size // 2, size):
            proof = consistency_proof(subtree_hash, first, size)
            assert verify_consistency(first, size, memory.root(first), memory.root(size), proof)
    for start, end in asked:
        assert start % (1 << ((end - start).bit_length() - 1)) == 0, (start, end)
    assert len(asked) < 1000  # O(log n) a proof, not O(n)


def test_an_entrys_leaf_binds_its_topic_partition_and_offset():
    base = entry_leaf_data("rj.consent", 0, 7, b"J{}")
    assert base != entry_leaf_data("rj.consentx", 0, 7, b"J{}")
    assert base != entry_leaf_data("rj.consent", 1, 7, b"J{}")
    assert base != entry_leaf_data("rj.consent", 0, 8, b"J{}")
    assert base[0] == 1


@st.composite
def sizes_and_index(draw):
    size = draw(st.integers(min_value=1, max_value=300))
    return size, draw(st.integers(min_value=0, max_value=size - 1))


@settings(max_examples=150, deadline=None)
@given(sizes_and_index(), st.integers(min_value=0, max_value=255), st.integers(min_value=0))
def test_every_inclusion_proof_verifies_and_fails_for_a_flipped_bit_another_index_or_size(case, bit, other):
    size, index = case
    memory = MemoryTree(_leaves(size + 1))
    leaf, root = memory.leaf(index), memory.root(size)
    proof = inclusion_proof(memory, index, size)
    assert verify_inclusion(leaf, index, size, proof, root)

    assert not verify_inclusion(_flip_bit(leaf, bit), index, size, proof, root)
    assert not verify_inclusion(leaf, index, size, proof, _flip_bit(root, bit))
    for position in range(len(proof)):
        tampered = [*proof[:position], _flip_bit(proof[position], bit), *proof[position + 1 :]]
        assert not verify_inclusion(leaf, index, size, tampered, root)
    other_index = other % size
    if other_index != index:
        assert not verify_inclusion(leaf, other_index, size, proof, root)
    # A size whose tree puts the leaf at another depth (sizes with the same path shape, such as 3 and 4 for
    # leaf 0, share proofs by design: the signed root is what pins the size).
    for other_size in (size * 2, size // 2):
        assert not verify_inclusion(leaf, index, other_size, proof, root)
    if proof:
        assert not verify_inclusion(leaf, index, size, proof[:-1], root)
    assert not verify_inclusion(leaf, index, size, [*proof, root], root)


@st.composite
def two_sizes(draw):
    second = draw(st.integers(min_value=1, max_value=300))
    return draw(st.integers(min_value=1, max_value=second)), second


@settings(max_examples=150, deadline=None)
@given(two_sizes(), st.integers(min_value=0, max_value=255), st.integers(min_value=0))
def test_every_consistency_proof_verifies_and_fails_on_a_truncated_or_rewritten_log(sizes, bit, choice):
    first, second = sizes
    leaves = _leaves(second)
    memory = MemoryTree(leaves)
    first_root, second_root = memory.root(first), memory.root(second)
    proof = consistency_proof(memory, first, second)
    assert verify_consistency(first, second, first_root, second_root, proof)
    assert verify_consistency(0, second, EMPTY_ROOT, second_root, consistency_proof(memory, 0, second))
    if first == second:
        return

    # Rewritten: one entry of the old tree changed, then the log grew to the same size.
    rewritten = list(leaves)
    rewritten[choice % first] = _flip_bit(rewritten[choice % first], bit)
    rewritten_tree = MemoryTree(rewritten)
    assert not verify_consistency(
        first, second, first_root, rewritten_tree.root(second), consistency_proof(rewritten_tree, first, second)
    )
    # Truncated: the old tree's last entries dropped, and other entries appended in their place.
    keep = choice % first
    truncated = MemoryTree(leaves[:keep] + _leaves(second - keep, seed=1))
    assert not verify_consistency(
        first, second, first_root, truncated.root(second), consistency_proof(truncated, first, second)
    )
    # A log that shrank below an earlier head is never consistent with it.
    assert not verify_consistency(second, first, second_root, first_root, proof)
    # The proof itself tampered with.
    for position in range(len(proof)):
        tampered = [*proof[:position], _flip_bit(proof[position], bit), *proof[position + 1 :]]
        assert not verify_consistency(first, second, first_root, second_root, tampered)
    assert not verify_consistency(first, second, first_root, second_root, proof[:-1])
    assert not verify_consistency(first, second, first_root, second_root, [*proof, second_root])
    assert not verify_consistency(first, second, _flip_bit(first_root, bit), second_root, proof)


def test_the_degenerate_consistency_cases_hold_only_with_an_empty_proof_and_matching_roots():
    root = _root(4)
    assert verify_consistency(4, 4, root, root, [])
    assert not verify_consistency(4, 4, root, _root(5), [])
    assert not verify_consistency(4, 4, root, root, [root])
    assert verify_consistency(0, 8, EMPTY_ROOT, _root(8), [])
    assert not verify_consistency(0, 8, _root(1), _root(8), [])
    assert not verify_consistency(0, 8, EMPTY_ROOT, _root(8), [EMPTY_ROOT])


@pytest.mark.parametrize(
    "proof",
    [[b"short"], ["not bytes"], [bytes(33)]],
)
def test_malformed_proofs_are_false_never_an_exception(proof):
    assert not verify_inclusion(REFERENCE_LEAF_HASHES[0], 0, 2, proof, _root(2))
    assert not verify_consistency(1, 2, _root(1), _root(2), proof)
    assert not verify_inclusion(REFERENCE_LEAF_HASHES[0], -1, 2, [], _root(2))
    assert not verify_inclusion(REFERENCE_LEAF_HASHES[0], 0, 0, [], EMPTY_ROOT)


@given(start=st.binary(max_size=80), rest=st.binary(max_size=300))
def test_a_leaf_hasher_copied_and_fed_the_rest_gives_the_leaf_hash_of_the_whole(start: bytes, rest: bytes) -> None:
    hashing = leaf_hasher(start).copy()
    hashing.update(rest)
    assert hashing.digest() == leaf_hash(start + rest)
