"""RFC 6962 / RFC 9162 Merkle tree hashing, proofs and proof verification (pure: no Django).

Hashing (RFC 9162 section 2.1.1):

    MTH({})       = SHA-256()                                   -> EMPTY_ROOT
    MTH({d0})     = SHA-256(0x00 || d0)                         -> leaf_hash(d0)
    MTH(D[n])     = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n])) -> node_hash(left, right)
                    where k is the largest power of two smaller than n.

Storage model. A *complete subtree* at (level, index) covers the leaves
[index * 2**level, (index + 1) * 2**level); level 0 are the leaf hashes themselves. Once a log has
at least (index + 1) * 2**level leaves that subtree never changes, so the Django side caches each one
as it becomes complete (`complete_subtrees_to_add`) and this module computes roots and proofs from
those cached hashes through the `NodeStore` protocol. Any MTH(D[lo:hi]) that RFC 6962 asks for is
the right fold of at most log2(n) complete subtrees (`_range_blocks`), and a proof touches at most one
range that is not itself complete, so a root or proof costs O(log n) store reads.

Verification follows RFC 9162 sections 2.1.3.2 (inclusion) and 2.1.4.2 (consistency) step by step.
Both verifiers return None on success and raise `ProofError` with a precise reason otherwise; they
also check up front that the proof has exactly the length that the (index, size) or (size1, size2)
pair implies, so a truncated or padded proof is reported as such rather than as a root mismatch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Protocol

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()


class ProofError(ValueError):
    """A Merkle proof, root or size did not verify; the message says which step failed."""


def leaf_hash(leaf: bytes) -> bytes:
    """RFC 6962 leaf hash: SHA-256(0x00 || leaf). The prefix separates leaves from inner nodes."""
    return hashlib.sha256(LEAF_PREFIX + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _largest_power_of_two_below(n: int) -> int:
    """The k of RFC 6962: the largest power of two strictly smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH of a list of leaf hashes, computed bottom-up in O(n) without recursion."""
    builder = CompactRange()
    for value in leaf_hashes:
        builder.append(value)
    return builder.root()


# --- storage-agnostic tree ------------------------------------------------------------------------


class NodeStore(Protocol):
    """Read access to complete-subtree hashes; level 0 are the leaf hashes.

    `get(level, index)` must return the hash of the complete subtree covering leaves
    [index << level, (index + 1) << level) and raise (KeyError, DoesNotExist, ...) when absent.
    """

    def get(self, level: int, index: int) -> bytes: ...


def _range_blocks(lo: int, hi: int) -> list[tuple[int, int]]:
    """The complete subtrees, left to right, whose right fold is MTH(D[lo:hi]).

    Precondition (true of every range RFC 6962's recursion produces): lo is a multiple of the
    largest power of two not exceeding hi - lo. The range then splits into aligned blocks of
    strictly decreasing size, one per set bit of hi - lo.
    """
    blocks: list[tuple[int, int]] = []
    start, width = lo, hi - lo
    for level in range(width.bit_length() - 1, -1, -1):
        if width >> level & 1:
            if start % (1 << level):
                raise ValueError(f"range [{lo}, {hi}) is not aligned to complete subtrees")
            blocks.append((level, start >> level))
            start += 1 << level
    return blocks


def _range_hash(lo: int, hi: int, store: NodeStore) -> bytes:
    """MTH(D[lo:hi]) from at most log2(hi - lo) + 1 store reads."""
    blocks = _range_blocks(lo, hi)
    # RFC 6962 splits off the largest complete left subtree first, so the hash is a right fold.
    value = store.get(*blocks[-1])
    for level, index in reversed(blocks[:-1]):
        value = node_hash(store.get(level, index), value)
    return value


def tree_root(size: int, store: NodeStore) -> bytes:
    """MTH of the first `size` leaves."""
    if size < 0:
        raise ValueError("tree size must be >= 0")
    if size == 0:
        return EMPTY_ROOT
    return _range_hash(0, size, store)


def inclusion_proof(index: int, size: int, store: NodeStore) -> list[bytes]:
    """PATH(index, D[size]) of RFC 6962 section 2.1.1, leaf-side sibling first."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is outside a tree of size {size}")
    path: list[bytes] = []
    lo, hi, m = 0, size, index
    # Walk down from the root; siblings are collected top-down and returned bottom-up.
    while hi - lo > 1:
        k = _largest_power_of_two_below(hi - lo)
        if m < k:
            path.append(_range_hash(lo + k, hi, store))
            hi = lo + k
        else:
            path.append(_range_hash(lo, lo + k, store))
            lo, m = lo + k, m - k
    path.reverse()
    return path


def consistency_proof(size1: int, size2: int, store: NodeStore) -> list[bytes]:
    """PROOF(size1, D[size2]) of RFC 6962 section 2.1.2; empty when size1 == size2.

    RFC 9162 defines the proof only for 0 < size1 <= size2: every tree is trivially an extension of
    the empty tree, so callers skip the check when the earlier size is 0.
    """
    if not 0 < size1 <= size2:
        raise ValueError(f"consistency proofs need 0 < size1 <= size2 (got {size1}, {size2})")
    proof: list[bytes] = []
    lo, hi, m, complete = 0, size2, size1, True
    while m != hi - lo:
        k = _largest_power_of_two_below(hi - lo)
        if m <= k:
            proof.append(_range_hash(lo + k, hi, store))
            hi = lo + k
        else:
            proof.append(_range_hash(lo, lo + k, store))
            lo, m, complete = lo + k, m - k, False
    if not complete:
        # SUBPROOF(m, D[m], false) = {MTH(D[m])}: the old root is not a node of the new tree.
        proof.append(_range_hash(lo, hi, store))
    proof.reverse()
    return proof


def complete_subtrees_to_add(index: int, leaf: bytes, store: NodeStore) -> list[tuple[int, int, bytes]]:
    """The (level, index, hash) nodes that become complete when leaf hash `leaf` is appended at `index`.

    Includes the leaf itself at level 0. Reads the left siblings (already complete) from `store`;
    the caller writes the returned nodes in the same transaction as the leaf.
    """
    if index < 0:
        raise ValueError("leaf index must be >= 0")
    _check_hash("leaf hash", leaf)
    nodes = [(0, index, leaf)]
    level, position, value = 0, index, leaf
    while position % 2 == 1:
        value = node_hash(store.get(level, position - 1), value)
        level, position = level + 1, position // 2
        nodes.append((level, position, value))
    return nodes


class InMemoryNodeStore:
    """A NodeStore held in a dict, for tests, benchmarks and offline tools."""

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self.nodes: dict[tuple[int, int], bytes] = {}
        self.size = 0
        self.reads = 0
        for value in leaf_hashes:
            self.append(value)

    def get(self, level: int, index: int) -> bytes:
        self.reads += 1
        return self.nodes[(level, index)]

    def append(self, leaf: bytes) -> int:
        """Append a leaf hash, cache the subtrees it completes, return its index."""
        index = self.size
        for level, position, value in complete_subtrees_to_add(index, leaf, self):
            self.nodes[(level, position)] = value
        self.size += 1
        return index

    def root(self) -> bytes:
        return tree_root(self.size, self)


class CompactRange:
    """Streaming MTH: the stack of complete subtrees of the prefix seen so far (O(log n) memory).

    `append` returns the (level, index, hash) nodes that the new leaf completes, which lets a full
    audit compare every cached node while reading the leaves once; `root()` is the current MTH.
    """

    def __init__(self) -> None:
        self.size = 0
        self._stack: list[tuple[int, bytes]] = []

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        index = self.size
        completed = [(0, index, leaf)]
        level, value = 0, leaf
        while self._stack and self._stack[-1][0] == level:
            _, left = self._stack.pop()
            value = node_hash(left, value)
            level, index = level + 1, index // 2
            completed.append((level, index, value))
        self._stack.append((level, value))
        self.size += 1
        return completed

    @classmethod
    def resume(cls, size: int, frontier: Sequence[tuple[int, bytes]]) -> CompactRange:
        """Continue a tree of `size` leaves from its frontier: the (level, hash) of each complete
        subtree of the prefix, largest first (one per set bit of size)."""
        levels = [level for level in range(size.bit_length() - 1, -1, -1) if size >> level & 1]
        if [level for level, _ in frontier] != levels or any(len(node) != 32 for _, node in frontier):
            raise ValueError(f"frontier does not describe a tree of size {size}")
        tree = cls()
        tree.size = size
        tree._stack = [(level, bytes(node)) for level, node in frontier]
        return tree

    def frontier(self) -> list[tuple[int, bytes]]:
        return list(self._stack)

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        value = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            value = node_hash(left, value)
        return value


# --- verification (RFC 9162 sections 2.1.3.2 and 2.1.4.2) ---------------------------------------


def _check_hash(what: str, value: bytes) -> None:
    if not isinstance(value, bytes | bytearray) or len(value) != HASH_SIZE:
        length = len(value) if isinstance(value, bytes | bytearray) else type(value).__name__
        raise ProofError(f"{what} must be {HASH_SIZE} bytes (got {length})")


def _inner_and_border(index: int, size: int) -> tuple[int, int]:
    """Split an inclusion path for leaf `index` of a tree of `size` into inner and border parts.

    `inner` is the number of levels where the path to `index` and the path to the last leaf
    (size - 1) run in different subtrees; above them the path runs along the right border, where
    one sibling is needed per set bit of index >> inner. Their sum is the exact proof length.
    """
    inner = (index ^ (size - 1)).bit_length()
    border = bin(index >> inner).count("1")
    return inner, border


def inclusion_proof_length(index: int, size: int) -> int:
    """Exact number of hashes in PATH(index, D[size]) (0 <= index < size)."""
    inner, border = _inner_and_border(index, size)
    return inner + border


def consistency_proof_length(size1: int, size2: int) -> int:
    """Exact number of hashes in PROOF(size1, D[size2]) (0 < size1 <= size2)."""
    if size1 == size2:
        return 0
    inner, border = _inner_and_border(size1 - 1, size2)
    shift = (size1 & -size1).bit_length() - 1  # trailing zero bits of size1
    # When size1 is a power of two its root is a node of the new tree and is not sent (RFC 9162).
    seed = 0 if size1 == 1 << shift else 1
    return seed + inner - shift + border


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """RFC 9162 section 2.1.3.2; raises ProofError, returns None when `leaf` is at `index` under `root`."""
    if size <= 0:
        raise ProofError(f"tree size must be positive (got {size})")
    # Step 1.
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not less than tree size {size}")
    _check_hash("leaf hash", leaf)
    _check_hash("root", root)
    for position, value in enumerate(proof):
        _check_hash(f"proof[{position}]", value)
    expected = inclusion_proof_length(index, size)
    if len(proof) != expected:
        raise ProofError(
            f"inclusion proof for leaf {index} in a tree of size {size} must have {expected} hashes, "
            f"got {len(proof)}"
        )
    # Steps 2 and 3.
    fn, sn, r = index, size - 1, bytes(leaf)
    # Step 4.
    for p in proof:
        if sn == 0:  # 4a
            raise ProofError("inclusion proof is longer than the path to the root")
        if fn & 1 or fn == sn:  # 4b
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1  # 4c
    # Step 5.
    if sn != 0:
        raise ProofError("inclusion proof is shorter than the path to the root")
    if r != root:
        raise ProofError(f"inclusion proof for leaf {index} in a tree of size {size}: root mismatch")


def verify_consistency(size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes) -> None:
    """RFC 9162 section 2.1.4.2; raises ProofError, returns None when tree size2 extends tree size1."""
    if size1 < 0 or size2 < 0:
        raise ProofError("tree sizes must be >= 0")
    if size2 < size1:
        raise ProofError(f"size2 ({size2}) is smaller than size1 ({size1}): a log cannot shrink")
    if size1 == size2:
        # Same tree: nothing to prove but equality (RFC 9162 defines no proof for this case).
        if proof:
            raise ProofError(f"sizes are equal ({size1}) but the proof is not empty")
        if root1 != root2:
            raise ProofError(f"sizes are equal ({size1}) but the roots differ")
        if size1 == 0 and root1 != EMPTY_ROOT:
            raise ProofError("a tree of size 0 must have the empty root")
        return
    if size1 == 0:
        raise ProofError("size1 is 0: RFC 9162 defines consistency proofs only for 0 < size1 < size2")
    _check_hash("root1", root1)
    _check_hash("root2", root2)
    for position, value in enumerate(proof):
        _check_hash(f"proof[{position}]", value)
    # Step 1.
    if not proof:
        raise ProofError("consistency proof is empty")
    expected = consistency_proof_length(size1, size2)
    if len(proof) != expected:
        raise ProofError(
            f"consistency proof from size {size1} to {size2} must have {expected} hashes, got {len(proof)}"
        )
    path = list(proof)
    # Step 2.
    if size1 & (size1 - 1) == 0:
        path.insert(0, bytes(root1))
    # Step 3.
    fn, sn = size1 - 1, size2 - 1
    # Step 4.
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    # Step 5.
    fr = sr = path[0]
    # Step 6.
    for c in path[1:]:
        if sn == 0:  # 6a
            raise ProofError("consistency proof is longer than the path to the root")
        if fn & 1 or fn == sn:  # 6b
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1  # 6c
    # Step 7.
    if sn != 0:
        raise ProofError("consistency proof is shorter than the path to the root")
    if fr != root1:
        raise ProofError(f"consistency proof from size {size1} to {size2}: root1 mismatch")
    if sr != root2:
        raise ProofError(f"consistency proof from size {size1} to {size2}: root2 mismatch")
