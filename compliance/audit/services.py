"""Appending to the audit log, signing checkpoints, proofs, and the full verification.

The log knows events, not requests: callers pass ids, pseudonymous references and hashes. Every
string that goes into a leaf is checked against a conservative pattern so that free text (names,
e-mails, phone numbers, reasons) cannot slip in; free text belongs in the domain tables and enters
the log only as its SHA-256.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from compliance.audit import canonical, checkpoint, merkle
from compliance.audit.models import AuditCheckpoint, AuditHead, AuditLeaf, AuditNode
from compliance.audit.signing import current_signers, published_verifiers

# Codes, ids and hashes only: letters, digits and a little punctuation; no spaces, no "@"; <= 80 chars.
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.:()/+\-]{0,80}$")
# Seven or more digits in a row (optionally separated) look like a phone or account number.
_LONG_NUMBER = re.compile(r"(?:\d[\s\-.]?){7,}")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SUBJECT_REF = re.compile(r"^[0-9a-f]{32}$")
_EVENT_TYPE = re.compile(r"^[a-z][a-z0-9_.]{2,63}$")
_ACTOR = re.compile(r"^(system|subject|user:\d+|worker:[A-Za-z0-9_.@\-]{1,80}|api:\d+)$")


class UnsafeAuditValue(ValueError):
    """A value that could carry personal data was offered to the audit log."""


def _check_code(path: str, value: str) -> str:
    if _ISO_DATE.match(value) or _UUID.match(value):  # dates our code computes; ids of our own rows
        return value
    if not _SAFE_VALUE.match(value) or _LONG_NUMBER.search(value):
        # The message names the key only: the value itself may be personal data.
        raise UnsafeAuditValue(f"audit field {path!r} must be a code, id or hash")
    return value


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def build_event(
    *,
    event_type: str,
    actor: str,
    outcome: str,
    at: datetime,
    request_id: uuid.UUID | str | None = None,
    subject_ref: str | None = None,
    artefacts: Mapping[str, str] | None = None,
    details: Mapping[str, str | int] | None = None,
) -> dict[str, object]:
    """The leaf document, validated. Artefacts map a name to a SHA-256 hex digest."""
    if not _EVENT_TYPE.match(event_type):
        raise UnsafeAuditValue("event_type must be a dotted lower-case code")
    if not _ACTOR.match(actor):
        raise UnsafeAuditValue("actor must be system, subject, user:<id>, api:<id> or worker:<host>")
    event: dict[str, object] = {
        "v": 1,
        "type": event_type,
        "actor": actor,
        "outcome": _check_code("outcome", outcome),
        "time": _rfc3339(at),
    }
    if request_id is not None:
        event["request_id"] = str(uuid.UUID(str(request_id)))
    if subject_ref is not None:
        if not _SUBJECT_REF.match(subject_ref):
            raise UnsafeAuditValue("subject_ref must be 32 lower-case hex digits")
        event["subject_ref"] = subject_ref
    if artefacts:
        for name, digest in artefacts.items():
            _check_code("artefacts", name)
            if not _HEX64.match(digest):
                raise UnsafeAuditValue(f"artefact {name!r} must be a SHA-256 hex digest")
        event["artefacts"] = dict(artefacts)
    if details:
        clean: dict[str, str | int] = {}
        for key, value in details.items():
            _check_code("details", key)
            if isinstance(value, bool) or not isinstance(value, int | str):
                raise UnsafeAuditValue(f"detail {key!r} must be a string or an integer")
            clean[key] = _check_code(f"details.{key}", value) if isinstance(value, str) else value
        event["details"] = clean
    return event


class _DbNodeStore:
    """Complete-subtree hashes from the database: level 0 from the leaves, the rest from the node cache."""

    def __init__(self) -> None:
        self._memo: dict[tuple[int, int], bytes] = {}

    def get(self, level: int, index: int) -> bytes:
        key = (level, index)
        if key not in self._memo:
            if level == 0:
                self._memo[key] = bytes(AuditLeaf.objects.values_list("leaf_hash", flat=True).get(seq=index))
            else:
                self._memo[key] = bytes(
                    AuditNode.objects.values_list("hash", flat=True).get(level=level, index=index)
                )
        return self._memo[key]


def audit_append(
    *,
    event_type: str,
    actor: str,
    outcome: str,
    request_id: uuid.UUID | str | None = None,
    subject_ref: str | None = None,
    artefacts: Mapping[str, str] | None = None,
    details: Mapping[str, str | int] | None = None,
    at: datetime | None = None,
) -> AuditLeaf:
    """Append one event inside the caller's transaction (a rollback removes it too).

    1. Lock the head row: sequence numbers are allocated one at a time, dense, with no gaps.
    2. Store the canonical bytes and their leaf hash.
    3. Cache every subtree that this leaf completes (at most log2(n) nodes), computed from the
       frontier kept in the head row: no node is read.
    4. Advance the head and its frontier.
    Call it last in the caller's transaction: the head lock is held until commit.
    """
    moment = at or timezone.now()
    event = build_event(
        event_type=event_type,
        actor=actor,
        outcome=outcome,
        at=moment,
        request_id=request_id,
        subject_ref=subject_ref,
        artefacts=artefacts,
        details=details,
    )
    leaf_bytes = canonical.canonical_bytes(event)
    leaf_hash = merkle.leaf_hash(leaf_bytes)
    with transaction.atomic():
        head, _ = AuditHead.objects.select_for_update().get_or_create(id=1)
        seq = head.size
        leaf = AuditLeaf.objects.create(
            seq=seq,
            leaf_bytes=leaf_bytes,
            leaf_hash=leaf_hash,
            event_type=event_type,
            request_id=event.get("request_id"),
            created_at=moment,
        )
        tree = _tree_from_frontier(seq, bytes(head.frontier))
        new_nodes = [AuditNode(level=level, index=index, hash=node) for level, index, node in tree.append(leaf_hash)[1:]]
        if new_nodes:
            AuditNode.objects.bulk_create(new_nodes)
        head.size = seq + 1
        head.frontier = _frontier_bytes(tree)
        head.save(update_fields=["size", "frontier"])
    return leaf


def _tree_from_frontier(size: int, frontier: bytes) -> merkle.CompactRange:
    """The compact range of a tree of `size` leaves from its stored frontier (see AuditHead)."""
    entries = [(frontier[i], frontier[i + 1 : i + 33]) for i in range(0, len(frontier), 33)]
    try:
        return merkle.CompactRange.resume(size, entries)
    except ValueError:
        # A head written before the frontier existed: rebuild it from the cached complete subtrees.
        store = _DbNodeStore()
        rebuilt, offset = [], 0
        for level in range(size.bit_length() - 1, -1, -1):
            if size >> level & 1:
                rebuilt.append((level, store.get(level, offset >> level)))
                offset += 1 << level
        return merkle.CompactRange.resume(size, rebuilt)


def _frontier_bytes(tree: merkle.CompactRange) -> bytes:
    return b"".join(bytes([level]) + node for level, node in tree.frontier())


def log_size() -> int:
    head = AuditHead.objects.filter(id=1).first()
    return head.size if head else 0


def tree_root(size: int | None = None) -> tuple[int, bytes]:
    n = log_size() if size is None else size
    return n, merkle.tree_root(n, _DbNodeStore())


def inclusion_proof(seq: int, size: int) -> list[bytes]:
    return merkle.inclusion_proof(seq, size, _DbNodeStore())


def consistency_proof(size1: int, size2: int) -> list[bytes]:
    return merkle.consistency_proof(size1, size2, _DbNodeStore())


def checkpoint_create() -> AuditCheckpoint | None:
    """Sign the current tree head, after checking it is consistent with the previous checkpoint.

    Returns None when the log has not grown since the last checkpoint.
    """
    with transaction.atomic():
        # Hold the head lock: the size we sign cannot move under us.
        head, _ = AuditHead.objects.select_for_update().get_or_create(id=1)
        size = head.size
        previous = AuditCheckpoint.objects.order_by("-size").first()
        if previous is not None and previous.size >= size:
            return None
        root = merkle.tree_root(size, _DbNodeStore())
        if previous is not None:
            proof = consistency_proof(previous.size, size)
            merkle.verify_consistency(previous.size, size, proof, bytes(previous.root), root)
            checkpoint.verify_checkpoint(previous.note, published_verifiers(), origin=settings.AUDIT_LOG_ORIGIN)
        note = checkpoint.sign_checkpoint(settings.AUDIT_LOG_ORIGIN, size, root, current_signers())
        return AuditCheckpoint.objects.create(size=size, root=root, note=note, created_at=timezone.now())


def latest_checkpoint() -> AuditCheckpoint | None:
    return AuditCheckpoint.objects.order_by("-size").first()


# --- verification -------------------------------------------------------------------------------


@dataclass
class VerifyReport:
    leaves: int = 0
    nodes: int = 0
    checkpoints: int = 0
    problems: list[str] = field(default_factory=list)
    first_bad_seq: int | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    # Evidence ranks: a leaf whose own bytes are wrong (0) names the row exactly; a cached node (1)
    # or a checkpoint (2) that disagrees only bounds where the edit is, so they name a seq only
    # when no better evidence exists.
    _rank: int = 1000

    def fail(self, message: str, seq: int | None = None, *, rank: int = 0) -> None:
        self.problems.append(message)
        if seq is None:
            return
        if rank < self._rank or (rank == self._rank and (self.first_bad_seq is None or seq < self.first_bad_seq)):
            self.first_bad_seq = seq
            self._rank = rank


def _iter_leaves(batch: int = 5000) -> Iterator[tuple[int, bytes, bytes, str, object]]:
    last = -1
    while True:
        rows = list(
            AuditLeaf.objects.filter(seq__gt=last)
            .order_by("seq")
            .values_list("seq", "leaf_bytes", "leaf_hash", "event_type", "request_id")[:batch]
        )
        if not rows:
            return
        for seq, raw, stored_hash, event_type, request_id in rows:
            yield seq, bytes(raw), bytes(stored_hash), event_type, request_id
        last = rows[-1][0]


def audit_verify() -> VerifyReport:
    """Recompute everything from the leaf bytes and compare with what is stored.

    1. Every sequence number is present, dense from 0; every leaf hash equals SHA-256(0x00 || bytes);
       every leaf is canonical JSON whose type and request id match the indexed columns.
    2. Every cached subtree node equals the hash recomputed from the leaves.
    3. Every checkpoint's root equals the recomputed root at its size, its signature verifies with a
       published key, and consecutive checkpoints are consistent (RFC 9162 proof).
    """
    report = VerifyReport()
    stored_nodes = {(lvl, idx): bytes(h) for lvl, idx, h in AuditNode.objects.values_list("level", "index", "hash")}
    report.nodes = len(stored_nodes)
    recomputed_nodes: dict[tuple[int, int], bytes] = {}
    checkpoints = list(AuditCheckpoint.objects.order_by("size"))
    roots_wanted = {cp.size for cp in checkpoints}
    roots_at: dict[int, bytes] = {}
    tree = merkle.CompactRange()
    expected = 0
    for seq, raw, stored_hash, event_type, request_id in _iter_leaves():
        if seq != expected:
            report.fail(f"sequence gap: expected {expected}, found {seq}", expected)
            break
        expected += 1
        computed = merkle.leaf_hash(raw)
        if computed != stored_hash:
            report.fail(f"leaf {seq}: stored hash does not match its bytes", seq)
        try:
            document = canonical.parse_canonical(raw)
            if document.get("type") != event_type or (document.get("request_id") or None) != (
                str(request_id) if request_id else None
            ):
                report.fail(f"leaf {seq}: indexed columns disagree with the leaf bytes", seq)
        except ValueError:
            report.fail(f"leaf {seq}: not canonical JSON", seq)
        for level, index, node in tree.append(computed)[1:]:
            recomputed_nodes[(level, index)] = node
        size = seq + 1
        if size in roots_wanted:
            roots_at[size] = tree.root()
        report.leaves = size
    head_size = log_size()
    if report.leaves != head_size:
        report.fail(f"log head says {head_size} leaves but {report.leaves} were read", report.leaves)
    for key, value in stored_nodes.items():
        if recomputed_nodes.get(key) != value:
            level, index = key
            report.fail(f"cached node level {level} index {index} does not match the leaves", index << level, rank=1 + level)
    verifiers = published_verifiers()
    previous: AuditCheckpoint | None = None
    for cp in checkpoints:
        report.checkpoints += 1
        if roots_at.get(cp.size) != bytes(cp.root):
            report.fail(f"checkpoint at size {cp.size}: root does not match the leaves", cp.size - 1, rank=100)
        try:
            parsed = checkpoint.verify_checkpoint(cp.note, verifiers, origin=settings.AUDIT_LOG_ORIGIN)
            if parsed.size != cp.size or parsed.root != bytes(cp.root):
                report.fail(f"checkpoint at size {cp.size}: signed note disagrees with its row", cp.size - 1, rank=100)
        except (checkpoint.CheckpointError, ValueError) as exc:
            report.fail(f"checkpoint at size {cp.size}: {exc}", cp.size - 1, rank=100)
        if previous is not None and cp.size in roots_at and previous.size in roots_at:
            try:
                proof = consistency_proof(previous.size, cp.size)
                merkle.verify_consistency(previous.size, cp.size, proof, bytes(previous.root), bytes(cp.root))
            except (merkle.ProofError, AuditNode.DoesNotExist, AuditLeaf.DoesNotExist) as exc:
                report.fail(f"checkpoints {previous.size} -> {cp.size} are not consistent: {exc}", previous.size, rank=100)
        previous = cp
    return report


def leaf_document(leaf: AuditLeaf) -> dict[str, object]:
    return canonical.parse_canonical(bytes(leaf.leaf_bytes))


def b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")
