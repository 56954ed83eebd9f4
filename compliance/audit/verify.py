"""Verifying the whole log (`manage.py audit_verify`, the portal's health page): every leaf's hash
against its stored document, the Merkle tree rebuilt from the leaves against every signed checkpoint,
each checkpoint's signature and its consistency with the one before, and optionally a checkpoint an
auditor kept (`--against`), so a rewritten, truncated or forked log is found."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction

from compliance.audit import signing
from compliance.audit.models import AuditCheckpoint, AuditHead, AuditLeaf, AuditNode
from compliance.audit.services import checkpoint_name, frontier_bytes
from compliance.audit.signing import published_verifiers
from proofs import canonical, checkpoint, merkle


@dataclass
class VerifyReport:
    leaves: int = 0
    nodes: int = 0
    checkpoints: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # facts worth knowing that are not failures
    first_bad_seq: int | None = None
    first_bad_checkpoint: int | None = None  # id of the first checkpoint row (in chain order) that fails
    unsigned_tail: int = 0  # leaves after the newest checkpoint that verified: nothing signed covers them

    @property
    def ok(self) -> bool:
        return not self.problems

    # Evidence ranks: a leaf whose own bytes are wrong (0) names the row exactly; a cached node (1)
    # or a checkpoint (100) that disagrees only bounds where the edit is, so they name a seq only
    # when no better evidence exists.
    _rank: int = 1000

    def fail(self, message: str, seq: int | None = None, *, rank: int = 0, checkpoint_id: int | None = None) -> None:
        self.problems.append(message)
        if checkpoint_id is not None and self.first_bad_checkpoint is None:
            self.first_bad_checkpoint = checkpoint_id
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


@dataclass
class _SignedHead:
    """A verified checkpoint and where it came from, for the messages."""

    label: str  # "checkpoint at size 8 (id 3)", "the supplied checkpoint at size 8", ...
    size: int
    root: bytes
    checkpoint_id: int | None = None


def _split_hashes(blob: bytes | memoryview | None) -> list[bytes]:  # BinaryField: memoryview on PostgreSQL
    raw = bytes(blob or b"")
    if len(raw) % merkle.HASH_SIZE:
        raise merkle.ProofError("stored proof is not a whole number of hashes")
    return [raw[i : i + merkle.HASH_SIZE] for i in range(0, len(raw), merkle.HASH_SIZE)]


def _leaves_text(lo: int, hi: int) -> str:
    return f"leaf {lo}" if hi - lo == 1 else f"leaves {lo}-{hi - 1}"


def audit_verify(*, against: checkpoint.Checkpoint | None = None) -> VerifyReport:
    """Recompute the whole tree from the leaf bytes and check it against everything signed or stored.

    1. Checkpoint notes, in the order the rows were inserted: each verifies with a published key and
       matches its row. The signed-head record kept outside the database, and `against` (a checkpoint
       obtained from outside, already verified by `checkpoint_parse_trusted`), join them as anchors.
    2. Leaves: every sequence number is present, dense from 0; every leaf hash equals
       SHA-256(0x00 || bytes); every leaf is canonical JSON whose type and request id match the
       indexed columns. The tree is rebuilt on the way, keeping the root at every signed size.
    3. Head and node cache: the head's size and frontier, and the set of cached nodes (none missing,
       none extra, each equal to its recomputed hash).
    4. The chain: sizes grow from row to row; each note's `previous` line names exactly the row before
       it; the stored consistency proof links the two signed roots; no two notes sign one size with
       different roots; every signed root equals the recomputed root at its size.
    5. The anchors: each is covered by the leaves, matches them, and is present in the database.
    """
    # Read the record before the database: it is written after its row commits, so the snapshot
    # below contains it unless the row was deleted.
    recorded_note = signing.read_signed_head()
    if connection.in_atomic_block:  # the caller's transaction decides what is visible
        return _audit_verify(recorded_note, against)
    with transaction.atomic():
        if connection.vendor == "postgresql":
            # One snapshot for every table: appends and checkpoints that commit meanwhile are not seen
            # half-way (SQLite's read transaction is a snapshot already).
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        return _audit_verify(recorded_note, against)


def _audit_verify(recorded_note: str | None, against: checkpoint.Checkpoint | None) -> VerifyReport:
    report = VerifyReport()
    verifiers = published_verifiers()
    origin = settings.AUDIT_LOG_ORIGIN
    for unnamed in signing.keys_not_named_by_origin():
        report.notes.append(
            f"current key {unnamed.key_hint} is not named by the log origin {origin} (C2SP wants key name = origin): "
            f"rotate with audit_keygen --rotate, then audit_keygen --retire {unnamed.key_hint}"
        )

    # 1. Checkpoint rows and anchors.
    rows = list(
        AuditCheckpoint.objects.order_by("id").values_list(
            "id", "size", "root", "note", "previous_size", "consistency_proof"
        )
    )
    report.checkpoints = len(rows)
    notes: dict[int, checkpoint.Checkpoint] = {}
    for cp_id, size, _root, note, _prev, _proof in rows:
        try:
            notes[cp_id] = checkpoint.verify_checkpoint(note, verifiers, origin=origin)
        except checkpoint.CheckpointError as exc:
            report.fail(f"{checkpoint_name(cp_id, size)}: {exc}", checkpoint_id=cp_id)
    anchors: list[_SignedHead] = []
    if recorded_note is None:
        report.notes.append(
            "no signed-head record outside the database yet: deletion of the newest checkpoints cannot be ruled out"
        )
    else:
        try:
            recorded = checkpoint.verify_checkpoint(recorded_note, verifiers, origin=origin)
            anchors.append(
                _SignedHead(
                    f"the newest checkpoint recorded outside the database (size {recorded.size})",
                    recorded.size,
                    recorded.root,
                )
            )
        except checkpoint.CheckpointError as exc:
            report.fail(f"the signed-head record outside the database is not valid: {exc}")
    if against is not None:
        anchors.append(_SignedHead(f"the supplied checkpoint at size {against.size}", against.size, against.root))
    roots_wanted = {size for _, size, *_ in rows} | {cp.size for cp in notes.values()} | {a.size for a in anchors}
    roots_at: dict[int, bytes] = {0: merkle.EMPTY_ROOT}

    # 2. Leaves, rebuilding the tree.
    stored_nodes = {(lvl, idx): bytes(h) for lvl, idx, h in AuditNode.objects.values_list("level", "index", "hash")}
    report.nodes = len(stored_nodes)
    recomputed_nodes: dict[tuple[int, int], bytes] = {}
    tree = merkle.CompactRange()
    expected = 0
    for seq, raw, stored_hash, event_type, request_id in _iter_leaves():
        if seq != expected:
            report.fail(f"leaf {expected} is missing (the next leaf stored is {seq})", expected)
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
        if expected in roots_wanted:
            roots_at[expected] = tree.root()
    report.leaves = expected

    # 3. Head and node cache.
    head = AuditHead.objects.filter(id=1).first()
    head_size = head.size if head else 0
    if head_size != report.leaves:
        report.fail(f"head: says the log has {head_size} leaves but {report.leaves} consecutive leaves were read", min(head_size, report.leaves))
    elif head is not None and bytes(head.frontier) and bytes(head.frontier) != frontier_bytes(tree):
        report.fail("head: stored frontier does not match the tree recomputed from the leaves", rank=200)
    if report.leaves == head_size and report.nodes != len(recomputed_nodes):
        report.fail(f"node cache: {report.nodes} cached nodes for a log of {report.leaves} leaves, expected {len(recomputed_nodes)}")
    for key, value in sorted(stored_nodes.items()):
        level, index = key
        span = _leaves_text(index << level, (index + 1) << level)
        recomputed = recomputed_nodes.get(key)
        if recomputed is None:
            report.fail(f"cached node level {level} index {index} ({span}) is not part of the log's tree", rank=300)
        elif recomputed != value:
            report.fail(f"cached node level {level} index {index} ({span}) does not match the leaves", index << level, rank=1 + level)
    for key in sorted(recomputed_nodes.keys() - stored_nodes.keys()):
        level, index = key
        span = _leaves_text(index << level, (index + 1) << level)
        # A deleted cache entry says nothing about which leaf is bad: no seq.
        report.fail(f"cached node level {level} index {index} ({span}) is missing: nodes were deleted")

    # Sizes whose signed root matches the leaves: the leaves below them are authentic, which bounds
    # where an edit under a failing checkpoint can be.
    signed_roots = [(cp.size, cp.root) for cp in notes.values()] + [(a.size, a.root) for a in anchors]
    good_sizes = sorted({size for size, root in signed_roots if roots_at.get(size) == root})

    def _check_root(head_: _SignedHead) -> None:
        if head_.size > report.leaves:
            report.fail(
                f"{head_.label} covers {_leaves_text(report.leaves, head_.size)}, which are "
                f"gone: the log has only {report.leaves} consecutive leaves (truncated or deleted)",
                report.leaves,
                rank=100,
                checkpoint_id=head_.checkpoint_id,
            )
        elif roots_at.get(head_.size) != head_.root:
            lo = max((s for s in good_sizes if s < head_.size), default=0)
            report.fail(
                f"{head_.label}: signed root does not match the leaves; the edit is in "
                f"{_leaves_text(lo, head_.size)}",
                lo,
                rank=100,
                checkpoint_id=head_.checkpoint_id,
            )

    # 4. The chain, in insertion order.
    previous: _SignedHead | None = None
    by_size: dict[int, _SignedHead] = {}
    linked_seen = False
    for cp_id, size, row_root, _note, previous_size, proof_blob in rows:
        parsed = notes.get(cp_id)
        if parsed is None:
            continue  # reported above: an unverifiable note proves nothing
        current = _SignedHead(checkpoint_name(cp_id, parsed.size), parsed.size, parsed.root, cp_id)
        if (parsed.size, parsed.root) != (size, bytes(row_root)):
            report.fail(f"{checkpoint_name(cp_id, size)}: the row disagrees with its signed note", checkpoint_id=cp_id)
        other = by_size.get(parsed.size)
        if other is not None and other.root != parsed.root:
            report.fail(
                f"{other.label} and {current.label} sign the same size with different roots: the log forked",
                checkpoint_id=cp_id,
            )
        by_size.setdefault(parsed.size, current)
        if previous is not None and parsed.size <= previous.size:
            report.fail(
                f"{current.label} was inserted after the {previous.label}: "
                "sizes only grow, so an older checkpoint was replayed or re-inserted",
                checkpoint_id=cp_id,
            )
        try:
            link = checkpoint.previous_link(parsed)
        except checkpoint.CheckpointError as exc:
            report.fail(f"{current.label}: {exc}", checkpoint_id=cp_id)
            link = None
        if link is None:
            if linked_seen:
                report.fail(f"{current.label} has no previous line but follows linked checkpoints", checkpoint_id=cp_id)
        else:
            linked_seen = True
            link_size, link_root = link
            expected_link = (previous.size, previous.root) if previous is not None else (0, merkle.EMPTY_ROOT)
            if link != expected_link:
                before = f"the row before it is the {previous.label}" if previous else "no checkpoint row precedes it"
                if previous is not None and link_size == previous.size:
                    cause = "the log forked"
                elif previous is None or link_size > previous.size:
                    cause = "checkpoint rows were deleted"
                else:
                    cause = "checkpoint rows were re-inserted or reordered"
                report.fail(
                    f"{current.label} was signed after a checkpoint at size {link_size}, but "
                    f"{before}: {cause}",
                    checkpoint_id=cp_id,
                )
            if previous_size != link_size:
                report.fail(f"{current.label}: previous_size column disagrees with its signed note", checkpoint_id=cp_id)
            if 0 < link_size < parsed.size:
                try:
                    merkle.verify_consistency(link_size, parsed.size, _split_hashes(proof_blob), link_root, parsed.root)
                except merkle.ProofError as exc:
                    report.fail(
                        f"{current.label}: stored consistency proof from size {link_size} does not verify: {exc}",
                        checkpoint_id=cp_id,
                    )
        _check_root(current)
        previous = current

    # 5. Anchors from outside the database.
    for anchor in anchors:
        _check_root(anchor)
        twin = by_size.get(anchor.size)
        if twin is None:
            report.fail(f"{anchor.label} is not in the database: checkpoint rows were deleted")
        elif twin.root != anchor.root:
            report.fail(
                f"{anchor.label} and the {twin.label} sign the same size with different roots: the log forked",
                checkpoint_id=twin.checkpoint_id,
            )
    newest = max(good_sizes, default=0)
    report.unsigned_tail = max(report.leaves - newest, 0)
    if report.unsigned_tail:
        report.notes.append(
            f"{_leaves_text(newest, report.leaves)} {'is' if report.unsigned_tail == 1 else 'are'} not yet under a "
            "signed checkpoint: an edit there is "
            "detected only after the next checkpoint"
        )
    return report


