"""Commitments to a training set: a sorted RFC 6962 tree with membership and non-membership proofs.

A training shard's data is committed to as the Merkle tree head (RFC 6962 hashing, `merkle`) over
its *record commitments*, sorted bytewise. A record commitment is

    SHA-256("erasure-record/v1" 0x00 record_id 0x00 SHA-256(text))

so it names one exact record text without revealing it (a record is a long text; its hash is not a
dictionary-guessable value). Because the leaves are sorted, the absence of a commitment x is proved by
the two neighbouring leaves L[i] < x < L[i+1] with their inclusion proofs at adjacent indices (or by
the first / last leaf alone when x sorts before / after every leaf). An offline verifier holding only
the tree head (size, root) and the proof checks that a located record of the subject is not in the
data a shard was trained on.

Pure: no Django, no environment reads.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from proofs import merkle

RECORD_DOMAIN = b"erasure-record/v1"


def record_commitment(record_id: str, text: str) -> bytes:
    """The 32-byte commitment to one record (its id and exact text)."""
    if not isinstance(record_id, str) or not record_id or "\x00" in record_id:
        raise ValueError("a record id must be a non-empty string without NUL")
    text_hash = hashlib.sha256(text.encode("utf-8")).digest()
    return hashlib.sha256(RECORD_DOMAIN + b"\x00" + record_id.encode("utf-8") + b"\x00" + text_hash).digest()


class _ListStore:
    """merkle.NodeStore over an in-memory list of leaf hashes (complete subtrees computed on demand)."""

    def __init__(self, leaf_hashes: Sequence[bytes]) -> None:
        self._levels: list[list[bytes]] = [list(leaf_hashes)]
        while len(self._levels[-1]) > 1:
            below = self._levels[-1]
            self._levels.append([merkle.node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)])

    def get(self, level: int, index: int) -> bytes:
        return self._levels[level][index]


@dataclass(frozen=True)
class SortedSet:
    """A set of 32-byte commitments, sorted, with its tree head and proofs."""

    leaves: tuple[bytes, ...]

    @classmethod
    def of(cls, commitments: Iterable[bytes]) -> SortedSet:
        items = sorted(set(commitments))
        for item in items:
            if len(item) != merkle.HASH_SIZE:
                raise ValueError("commitments are 32-byte hashes")
        return cls(tuple(items))

    @property
    def size(self) -> int:
        return len(self.leaves)

    def root(self) -> bytes:
        if not self.leaves:
            return merkle.EMPTY_ROOT
        return merkle.tree_root(self.size, _ListStore([merkle.leaf_hash(x) for x in self.leaves]))

    def __contains__(self, item: object) -> bool:
        if not isinstance(item, bytes):
            return False
        i = bisect.bisect_left(self.leaves, item)
        return i < len(self.leaves) and self.leaves[i] == item

    def _proof_at(self, store: _ListStore, index: int) -> dict[str, Any]:
        return {
            "index": index,
            "leaf": self.leaves[index].hex(),
            "path": [h.hex() for h in merkle.inclusion_proof(index, self.size, store)],
        }

    def absence_proof(self, item: bytes) -> dict[str, Any]:
        """Proof that `item` is not in the set: its neighbours (at most two) with inclusion proofs."""
        if item in self:
            raise ValueError("the commitment is in the set: no absence proof exists")
        store = _ListStore([merkle.leaf_hash(x) for x in self.leaves])
        i = bisect.bisect_left(self.leaves, item)
        neighbours = [self._proof_at(store, j) for j in (i - 1, i) if 0 <= j < self.size]
        return {"commitment": item.hex(), "neighbours": neighbours}


class CommitmentError(ValueError):
    """A commitment proof did not verify; the message says why."""


def verify_absence(proof: dict[str, Any], *, size: int, root_hex: str) -> bytes:
    """Check an absence proof against a tree head (size, root). Returns the proven-absent commitment.

    Raises CommitmentError unless the neighbours are leaves of the tree at adjacent indices, bracket the
    commitment strictly, and cover the tree's ends where the commitment sorts before or after them.
    """
    try:
        item = bytes.fromhex(proof["commitment"])
        root = bytes.fromhex(root_hex)
        neighbours = [(int(n["index"]), bytes.fromhex(n["leaf"]), [bytes.fromhex(h) for h in n["path"]])
                      for n in proof["neighbours"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise CommitmentError(f"malformed absence proof: {exc}") from exc
    if len(item) != merkle.HASH_SIZE:
        raise CommitmentError("the commitment is not a 32-byte hash")
    if size == 0:
        if neighbours or root != merkle.EMPTY_ROOT:
            raise CommitmentError("an empty tree has no leaves and the empty root")
        return item
    if not 1 <= len(neighbours) <= 2:
        raise CommitmentError("an absence proof names one or two neighbouring leaves")
    for index, leaf, path in neighbours:
        try:
            merkle.verify_inclusion(merkle.leaf_hash(leaf), index, size, path, root)
        except (merkle.ProofError, ValueError) as exc:
            raise CommitmentError(f"neighbour {index} is not a leaf of the tree: {exc}") from exc
    if len(neighbours) == 2:
        (i, low, _), (j, high, _) = neighbours
        if j != i + 1 or not low < item < high:
            raise CommitmentError("the neighbours are not adjacent leaves on either side of the commitment")
    else:
        index, leaf, _ = neighbours[0]
        if not ((index == 0 and item < leaf) or (index == size - 1 and item > leaf)):
            raise CommitmentError("a single neighbour must be the first leaf (above) or the last (below)")
    return item
