"""RFC 6962 Merkle tree: known answers, proofs round trip, O(log n) reads, mutations rejected."""

from __future__ import annotations

import hashlib

import pytest

from proofs import merkle
from proofs.merkle import ProofError


def naive_mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 section 2.1 written out recursively, independent of the code under test."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + naive_mth(leaves[:k]) + naive_mth(leaves[k:])).digest()


LEAVES = [f"leaf {i}".encode() * (i % 3 + 1) for i in range(64)]


@pytest.fixture(scope="module")
def store() -> merkle.InMemoryNodeStore:
    return merkle.InMemoryNodeStore(merkle.leaf_hash(leaf) for leaf in LEAVES)


@pytest.fixture(scope="module")
def roots() -> list[bytes]:
    return [naive_mth(LEAVES[:n]) for n in range(len(LEAVES) + 1)]


def test_empty_tree_root_is_sha256_of_nothing() -> None:
    assert merkle.EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert merkle.root_of([]) == merkle.EMPTY_ROOT
    assert merkle.tree_root(0, merkle.InMemoryNodeStore()) == merkle.EMPTY_ROOT


def test_leaf_hash_of_empty_string() -> None:
    assert merkle.leaf_hash(b"").hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"


def test_node_hash_domain_separated_from_leaf_hash() -> None:
    left, right = b"\xaa" * 32, b"\xbb" * 32
    assert merkle.node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()
    assert merkle.node_hash(left, right) != merkle.leaf_hash(left + right)


def test_roots_of_small_trees_match_naive_recursion(
    store: merkle.InMemoryNodeStore, roots: list[bytes]
) -> None:
    for n in range(len(LEAVES) + 1):
        hashes = [merkle.leaf_hash(leaf) for leaf in LEAVES[:n]]
        assert merkle.tree_root(n, store) == roots[n], n
        assert merkle.root_of(hashes) == roots[n], n


def test_compact_range_reports_every_completed_subtree() -> None:
    compact = merkle.CompactRange()
    for i, leaf in enumerate(LEAVES):
        for level, index, value in compact.append(merkle.leaf_hash(leaf)):
            assert value == naive_mth(LEAVES[index << level : (index + 1) << level])
        assert compact.root() == naive_mth(LEAVES[: i + 1])


def test_complete_subtrees_to_add_lists_exactly_the_new_nodes() -> None:
    store = merkle.InMemoryNodeStore()
    for i, leaf in enumerate(LEAVES):
        added = merkle.complete_subtrees_to_add(i, merkle.leaf_hash(leaf), store)
        # Leaf i completes one node per trailing one bit of i, plus the leaf itself.
        trailing_ones = len(bin(i)) - len(bin(i).rstrip("1"))
        assert len(added) == 1 + trailing_ones
        for level, index, value in added:
            assert value == naive_mth(LEAVES[index << level : (index + 1) << level])
            store.nodes[(level, index)] = value
        store.size += 1


def test_inclusion_round_trip_for_every_index_and_size(
    store: merkle.InMemoryNodeStore, roots: list[bytes]
) -> None:
    for size in range(1, 65):
        for index in range(size):
            proof = merkle.inclusion_proof(index, size, store)
            assert len(proof) == merkle.inclusion_proof_length(index, size)
            merkle.verify_inclusion(merkle.leaf_hash(LEAVES[index]), index, size, proof, roots[size])


def test_consistency_round_trip_for_every_pair_of_sizes(
    store: merkle.InMemoryNodeStore, roots: list[bytes]
) -> None:
    for size2 in range(1, 65):
        for size1 in range(1, size2 + 1):
            proof = merkle.consistency_proof(size1, size2, store)
            assert len(proof) == merkle.consistency_proof_length(size1, size2)
            merkle.verify_consistency(size1, size2, proof, roots[size1], roots[size2])


def test_root_and_proofs_cost_logarithmic_reads() -> None:
    size = 5000
    big = merkle.InMemoryNodeStore(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(size))
    for operation in (
        lambda: merkle.tree_root(size, big),
        lambda: merkle.inclusion_proof(1234, size, big),
        lambda: merkle.inclusion_proof(size - 1, size, big),
        lambda: merkle.consistency_proof(3001, size, big),
    ):
        big.reads = 0
        operation()
        # log2(5000) ~ 12.3: a proof needs at most one sibling per level plus one right-edge range.
        assert big.reads <= 2 * 13 + 2


def test_proof_generation_rejects_impossible_requests(store: merkle.InMemoryNodeStore) -> None:
    with pytest.raises(ValueError):
        merkle.inclusion_proof(5, 5, store)
    with pytest.raises(ValueError):
        merkle.consistency_proof(0, 5, store)
    with pytest.raises(ValueError):
        merkle.consistency_proof(6, 5, store)


# --- mutations ------------------------------------------------------------------------------------

INCLUSION_CASES = [
    (0, 1),
    (0, 2),
    (1, 2),
    (2, 3),
    (5, 7),
    (6, 7),
    (0, 8),
    (7, 8),
    (12, 13),
    (20, 37),
    (63, 64),
]
CONSISTENCY_CASES = [(1, 2), (2, 3), (3, 7), (4, 8), (6, 8), (7, 13), (16, 33), (31, 64), (1, 64)]


def flips(value: bytes):
    for bit in range(len(value) * 8):
        mutated = bytearray(value)
        mutated[bit // 8] ^= 1 << (bit % 8)
        yield bytes(mutated)


@pytest.mark.parametrize(("index", "size"), INCLUSION_CASES)
def test_inclusion_rejects_every_single_bit_flip(
    index: int, size: int, store: merkle.InMemoryNodeStore, roots: list[bytes]
) -> None:
    leaf = merkle.leaf_hash(LEAVES[index])
    proof = merkle.inclusion_proof(index, size, store)
    root = roots[size]
    for bad_leaf in flips(leaf):
        with pytest.raises(ProofError, match="root mismatch"):
            merkle.verify_inclusion(bad_leaf, index, size, proof, root)
    for bad_root in flips(root):
        with pytest.raises(ProofError, match="root mismatch"):
            merkle.verify_inclusion(leaf, index, size, proof, bad_root)
    for position, node in enumerate(proof):
        for bad_node in flips(node):
            bad_proof = [*proof[:position], bad_node, *proof[position + 1 :]]
            with pytest.raises(ProofError, match="root mismatch"):
                merkle.verify_inclusion(leaf, index, size, bad_proof, root)


@pytest.mark.parametrize(("index", "size"), INCLUSION_CASES)
def test_inclusion_rejects_wrong_index_size_and_proof_length(
    index: int, size: int, store: merkle.InMemoryNodeStore, roots: list[bytes]
) -> None:
    leaf = merkle.leaf_hash(LEAVES[index])
    proof = merkle.inclusion_proof(index, size, store)
    root = roots[size]
    for other in range(size + 2):
        if other != index:
            with pytest.raises(ProofError):
                merkle.verify_inclusion(leaf, other, size, proof, root)
    # Sizes whose path has a different shape. (size +/- 1 may share the shape and so verify
    # against the same root: a root commits to its size only through the signed checkpoint, which
    # is why checkpoints sign size and root together.)
    for other_size in {0, size * 2, size // 2} - {size}:
        with pytest.raises(ProofError):
            merkle.verify_inclusion(leaf, index, other_size, proof, root)
    with pytest.raises(ProofError, match="must have"):
        merkle.verify_inclusion(leaf, index, size, [*proof, b"\x00" * 32], root)
    if proof:
        with pytest.raises(ProofError, match="must have"):
            merkle.verify_inclusion(leaf, index, size, proof[:-1], root)
        with pytest.raises(ProofError, match="32 bytes"):
            merkle.verify_inclusion(leaf, index, size, [proof[0][:31], *proof[1:]], root)


@pytest.mark.parametrize(("size1", "size2"), CONSISTENCY_CASES)
def test_consistency_rejects_every_single_bit_flip(
    size1: int, size2: int, store: merkle.InMemoryNodeStore, roots: list[bytes]
) -> None:
    proof = merkle.consistency_proof(size1, size2, store)
    root1, root2 = roots[size1], roots[size2]
    for bad in flips(root1):
        with pytest.raises(ProofError, match="mismatch"):
            merkle.verify_consistency(size1, size2, proof, bad, root2)
    for bad in flips(root2):
        with pytest.raises(ProofError, match="root2 mismatch"):
            merkle.verify_consistency(size1, size2, proof, root1, bad)
    for position, node in enumerate(proof):
        for bad_node in flips(node):
            bad_proof = [*proof[:position], bad_node, *proof[position + 1 :]]
            with pytest.raises(ProofError, match="mismatch"):
                merkle.verify_consistency(size1, size2, bad_proof, root1, root2)


@pytest.mark.parametrize(("size1", "size2"), CONSISTENCY_CASES)
def test_consistency_rejects_wrong_sizes_and_proof_length(
    size1: int, size2: int, store: merkle.InMemoryNodeStore, roots: list[bytes]
) -> None:
    proof = merkle.consistency_proof(size1, size2, store)
    root1, root2 = roots[size1], roots[size2]
    # As for inclusion, size2 +/- 1 can share the proof's shape; a changed size1 or a doubled size2 cannot.
    for s1, s2 in {(0, size2), (size1 - 1, size2), (size1 + 1, size2), (size1, size2 * 2), (size2, size1)}:
        if (s1, s2) != (size1, size2):
            with pytest.raises(ProofError):
                merkle.verify_consistency(s1, s2, proof, root1, root2)
    with pytest.raises(ProofError, match="must have"):
        merkle.verify_consistency(size1, size2, [*proof, b"\x00" * 32], root1, root2)
    with pytest.raises(ProofError):
        merkle.verify_consistency(size1, size2, proof[:-1], root1, root2)
    with pytest.raises(ProofError):
        merkle.verify_consistency(size1, size2, proof, root2, root1)


def test_equal_sizes_need_an_empty_proof_and_equal_roots(roots: list[bytes]) -> None:
    merkle.verify_consistency(5, 5, [], roots[5], roots[5])
    merkle.verify_consistency(0, 0, [], merkle.EMPTY_ROOT, merkle.EMPTY_ROOT)
    with pytest.raises(ProofError, match="roots differ"):
        merkle.verify_consistency(5, 5, [], roots[5], roots[4])
    with pytest.raises(ProofError, match="not empty"):
        merkle.verify_consistency(5, 5, [roots[5]], roots[5], roots[5])
    with pytest.raises(ProofError, match="size1 is 0"):
        merkle.verify_consistency(0, 5, [], merkle.EMPTY_ROOT, roots[5])
