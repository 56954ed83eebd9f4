"""Appending to the audit log, signing checkpoints and proofs (the whole-log check is verify.py).

The log knows events, not requests: callers pass ids, pseudonymous references and hashes. Every
string that goes into a leaf is checked against a conservative pattern so that free text (names,
e-mails, phone numbers, reasons) cannot slip in; free text belongs in the domain tables and enters
the log only as its SHA-256.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from compliance.audit import pgappend, signing
from compliance.audit.models import AuditCheckpoint, AuditHead, AuditLeaf, AuditNode
from compliance.audit.signing import current_signers, published_verifiers
from proofs import canonical, checkpoint, merkle

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
    On PostgreSQL the four steps are one statement (pgappend.py's function; the head lock is then
    held for that statement and the rest of the caller's transaction, not for four round trips);
    elsewhere, or when that function finds no head or a head without a valid frontier, they are
    done through the ORM. Call it last in the caller's transaction: the head lock is held until commit.
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
    # The row's request column holds the id as the event states it (build_event's canonical form).
    leaf_request_id = str(event["request_id"]) if "request_id" in event else None
    if connection.vendor == "postgresql":
        appended = _append_in_one_statement(leaf_bytes, leaf_hash, event_type, leaf_request_id, moment)
        if appended is not None:
            return appended
    with transaction.atomic():
        head, _ = AuditHead.objects.select_for_update().get_or_create(id=1)
        seq = head.size
        leaf = AuditLeaf.objects.create(
            seq=seq,
            leaf_bytes=leaf_bytes,
            leaf_hash=leaf_hash,
            event_type=event_type,
            request_id=leaf_request_id,
            created_at=moment,
        )
        tree = _tree_from_frontier(seq, bytes(head.frontier))
        new_nodes = [AuditNode(level=level, index=index, hash=node) for level, index, node in tree.append(leaf_hash)[1:]]
        if new_nodes:
            AuditNode.objects.bulk_create(new_nodes)
        head.size = seq + 1
        head.frontier = frontier_bytes(tree)
        head.save(update_fields=["size", "frontier"])
    return leaf


def _append_in_one_statement(
    leaf_bytes: bytes, leaf_hash: bytes, event_type: str, request_id: str | None, moment: datetime
) -> AuditLeaf | None:
    """audit_append's steps 1-4 as one call of the PostgreSQL function; None when it wrote nothing.

    No savepoint: one statement is atomic by itself, and if it fails the caller's transaction is
    aborted, so the caller's change cannot commit without its event.
    """
    # Built before the call: between the statement and the caller's commit every other appender
    # waits on the head lock, so nothing is left to do there but read the sequence number.
    leaf = AuditLeaf(
        leaf_bytes=leaf_bytes, leaf_hash=leaf_hash, event_type=event_type, request_id=request_id, created_at=moment
    )
    with connection.cursor() as cursor:
        cursor.execute(pgappend.CALL_SQL, [leaf_bytes, leaf_hash, event_type, request_id, moment])
        row = cursor.fetchone()
    if row is None or row[0] is None:
        return None
    leaf.seq = row[0]
    leaf._state.adding = False  # the row exists: what objects.create would have returned
    leaf._state.db = connection.alias
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


def frontier_bytes(tree: merkle.CompactRange) -> bytes:
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


class AuditLogTampered(RuntimeError):
    """The database no longer holds what this service signed; the signer refuses to sign on top of it."""


def checkpoint_parse_trusted(note: str | bytes) -> checkpoint.Checkpoint:
    """A checkpoint of this log signed by one of its published keys (e.g. one obtained from outside,
    for `audit_verify --against`); raises CheckpointError with the reason otherwise."""
    return checkpoint.verify_checkpoint(note, published_verifiers(), origin=settings.AUDIT_LOG_ORIGIN)


def checkpoint_create() -> AuditCheckpoint | None:
    """Sign the current tree head as the next link of the checkpoint chain.

    Returns None when the log has not grown since the last checkpoint; raises AuditLogTampered when
    the database does not extend what this service signed before.
    1. Lock the head row: the size we sign cannot move under us.
    2. The previous checkpoint is the database's newest; its note must verify and match its row.
    3. The newest checkpoint this signer recorded outside the database must still be in the database
       with the same root, and the current tree must extend it: otherwise checkpoint rows were
       deleted or the log was rolled back, and signing now would bless the rewritten log.
    4. The current tree must extend the previous checkpoint (RFC 9162 consistency proof from the
       cached nodes, checked against the signed roots).
    5. Sign with a `previous` line naming the previous checkpoint; keep the proof in the row.
    6. Once the row commits, record the note outside the database.
    """
    try:
        recorded_note = signing.read_signed_head()
        recorded = checkpoint_parse_trusted(recorded_note) if recorded_note is not None else None
    except checkpoint.CheckpointError as exc:
        raise AuditLogTampered(f"the signed-head record at {signing.signed_head_path()} is not valid: {exc}") from None
    with transaction.atomic():
        head, _ = AuditHead.objects.select_for_update().get_or_create(id=1)
        size = head.size
        previous = AuditCheckpoint.objects.order_by("-size").first()
        if previous is not None and previous.size >= size:
            return None
        store = _DbNodeStore()
        root = merkle.tree_root(size, store)
        previous_size, previous_root = 0, merkle.EMPTY_ROOT
        try:
            if previous is not None:
                signed = checkpoint_parse_trusted(previous.note)
                if (signed.size, signed.root) != (previous.size, bytes(previous.root)):
                    raise AuditLogTampered(f"{checkpoint_name(previous.pk, previous.size)}: its row disagrees with its signed note")
                previous_size, previous_root = signed.size, signed.root
            if recorded is not None:
                row = AuditCheckpoint.objects.filter(size=recorded.size).first()
                if row is None or bytes(row.root) != recorded.root:
                    raise AuditLogTampered(
                        f"the newest checkpoint this service signed (size {recorded.size}, recorded at "
                        f"{signing.signed_head_path()}) is not in the database: checkpoints were deleted or the "
                        "log was rolled back; run audit_verify (if the database was reset on purpose, move the "
                        "record aside)"
                    )
                if recorded.size > 0:
                    merkle.verify_consistency(
                        recorded.size, size, consistency_proof(recorded.size, size), recorded.root, root
                    )
            proof = consistency_proof(previous_size, size) if previous_size > 0 else []
            if previous_size > 0:
                merkle.verify_consistency(previous_size, size, proof, previous_root, root)
        except (checkpoint.CheckpointError, merkle.ProofError) as exc:
            raise AuditLogTampered(f"refusing to sign size {size}: {exc}") from None
        note = checkpoint.sign_checkpoint(
            settings.AUDIT_LOG_ORIGIN,
            size,
            root,
            current_signers(),
            extensions=[checkpoint.previous_extension(previous_size, previous_root)],
        )
        created = AuditCheckpoint.objects.create(
            size=size,
            root=root,
            note=note,
            created_at=timezone.now(),
            previous_size=previous_size,
            consistency_proof=b"".join(proof),
        )
        transaction.on_commit(lambda: signing.record_signed_head(note, size))
        return created


def latest_checkpoint() -> AuditCheckpoint | None:
    return AuditCheckpoint.objects.order_by("-size").first()


def checkpoint_name(cp_id: int, size: int) -> str:
    return f"checkpoint at size {size} (id {cp_id})"


def leaf_document(leaf: AuditLeaf) -> dict[str, object]:
    return canonical.parse_canonical(bytes(leaf.leaf_bytes))


def b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")
