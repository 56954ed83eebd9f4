"""Public reads of the audit log: the newest signed checkpoint and proofs against signed sizes.

What the public may see is hashes and sizes, never leaf bytes (they carry request ids and
pseudonymous subject references). Proofs are served only for sizes up to the newest signed
checkpoint: a proof is worth something only against a root someone signed, and the tail after it
is not yet part of any signed tree.
"""

from __future__ import annotations

from dataclasses import dataclass

from compliance.audit import services
from compliance.audit.models import AuditCheckpoint, AuditLeaf


class ProofRequestInvalid(ValueError):
    """A proof was asked for an index or sizes the signed log does not have; the message says which."""


@dataclass(frozen=True)
class InclusionProof:
    index: int
    size: int
    leaf_hash: bytes  # RFC 6962 leaf hash: SHA-256(0x00 || leaf bytes); the bytes stay private
    proof: list[bytes]  # PATH(index, D[size]), leaf-side sibling first


@dataclass(frozen=True)
class ConsistencyProof:
    first: int
    second: int
    proof: list[bytes]  # PROOF(first, D[second]) of RFC 6962 section 2.1.2


def checkpoint_latest() -> AuditCheckpoint | None:
    return services.latest_checkpoint()


def signed_size() -> int:
    """The size of the newest signed checkpoint (0 when none was signed yet)."""
    newest = services.latest_checkpoint()
    return newest.size if newest is not None else 0


def _check_size(name: str, size: int) -> None:
    newest = signed_size()
    if size > newest:
        raise ProofRequestInvalid(
            f"{name} {size} is beyond the newest signed checkpoint (size {newest}); "
            "proofs are served for signed sizes only"
        )


def inclusion_proof_public(*, index: int, size: int) -> InclusionProof:
    """The leaf hash at `index` and its inclusion proof in the tree of `size` leaves (0 <= index < size)."""
    if index >= size:
        raise ProofRequestInvalid(f"index {index} is not less than size {size}: the leaf is not in that tree")
    _check_size("size", size)
    leaf_hash = bytes(AuditLeaf.objects.values_list("leaf_hash", flat=True).get(seq=index))
    return InclusionProof(index=index, size=size, leaf_hash=leaf_hash, proof=services.inclusion_proof(index, size))


def consistency_proof_public(*, first: int, second: int) -> ConsistencyProof:
    """The proof that the tree of `second` leaves extends the tree of `first` (0 < first <= second)."""
    if first > second:
        raise ProofRequestInvalid(f"first ({first}) is larger than second ({second}): a log only grows")
    _check_size("second", second)
    if first == 0:
        raise ProofRequestInvalid(
            "first must be at least 1: every tree extends the empty one, and RFC 9162 defines no proof for it"
        )
    return ConsistencyProof(first=first, second=second, proof=services.consistency_proof(first, second))
