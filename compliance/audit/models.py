"""The append-only audit log tables.

`AuditLeaf` rows are the log: dense 0-based sequence numbers, canonical JSON bytes stored raw (never
re-serialised) and their RFC 6962 leaf hash. `AuditNode` caches the hash of every complete subtree
of level >= 1, so roots and proofs cost O(log n) reads. `AuditCheckpoint` holds signed tree heads,
each linked to the one before it.
All three are append-only: database triggers (see triggers.py) refuse UPDATE, DELETE and TRUNCATE.
`AuditHead` is the one mutable row: the allocation lock and the current size.
"""

from __future__ import annotations

from django.db import models


class AuditHead(models.Model):
    """Single row (id=1). Appenders lock it FOR UPDATE to allocate the next sequence number."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    size = models.BigIntegerField(default=0)
    # The compact range of the tree: one (level byte, 32-byte hash) entry per complete subtree of
    # the current prefix, largest first. An append needs it and nothing else, so it reads no
    # nodes; audit_verify recomputes it like everything else.
    frontier = models.BinaryField(default=b"")

    class Meta:
        verbose_name = "audit log head"

    def __str__(self) -> str:
        return f"audit log head at size {self.size}"


class AuditLeaf(models.Model):
    seq = models.BigIntegerField(primary_key=True)
    leaf_bytes = models.BinaryField()
    leaf_hash = models.BinaryField(max_length=32)
    # Denormalised from the leaf bytes for look-ups; audit_verify checks they agree.
    event_type = models.CharField(max_length=64, db_index=True)
    request_id = models.UUIDField(null=True, blank=True, db_index=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["seq"]
        verbose_name = "audit leaf"

    def __str__(self) -> str:
        return f"#{self.seq} {self.event_type}"


class AuditNode(models.Model):
    """Hash of the complete subtree covering leaves [index * 2**level, (index + 1) * 2**level)."""

    level = models.PositiveSmallIntegerField()
    index = models.BigIntegerField()
    hash = models.BinaryField(max_length=32)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["level", "index"], name="audit_node_level_index")]

    def __str__(self) -> str:
        return f"node level {self.level} index {self.index}"


class AuditCheckpoint(models.Model):
    size = models.BigIntegerField(unique=True)
    root = models.BinaryField(max_length=32)
    note = models.TextField()  # the signed note, verbatim
    created_at = models.DateTimeField()
    # The chain: the size of the checkpoint signed before this one (0 for the first) and the RFC 9162
    # consistency proof from it to this one (concatenated 32-byte hashes). The signed note itself
    # carries the previous size and root in its `previous` extension line, so these columns are
    # conveniences that audit_verify checks, not the authority. Null on checkpoints signed before
    # the chain existed.
    previous_size = models.BigIntegerField(null=True, blank=True)
    consistency_proof = models.BinaryField(null=True, blank=True)

    class Meta:
        ordering = ["size"]
        get_latest_by = "size"

    def __str__(self) -> str:
        return f"checkpoint at size {self.size}"


class AuditCosignature(models.Model):
    """A witness's cosignature on one of our checkpoints (C2SP tlog-cosignature), as it answered.
    The line is self-authenticating: it verifies against the checkpoint's note text and the
    witness's public key, so it is kept as the witness sent it."""

    checkpoint_size = models.BigIntegerField(db_index=True)
    witness = models.CharField(max_length=300)  # the witness's key hint: <name>+<hex key id>
    timestamp = models.BigIntegerField()  # the witness's signing time (POSIX seconds)
    line = models.TextField()  # the signature line, with its newline
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["checkpoint_size", "witness"]
        constraints = [models.UniqueConstraint(fields=["checkpoint_size", "witness"], name="one_cosignature_per_witness")]

    def __str__(self) -> str:
        return f"cosignature by {self.witness} at size {self.checkpoint_size}"


class AuditWitnessAlert(models.Model):
    """A witness refused a checkpoint for a reason other than a stale old size: a fork, a shrink, a
    tree that does not extend what it cosigned, or our signature not accepted. Shown to officers."""

    witness = models.CharField(max_length=300)
    checkpoint_size = models.BigIntegerField()
    status = models.IntegerField()  # the witness's HTTP status
    reason = models.CharField(max_length=500)
    created_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"witness {self.witness} refused size {self.checkpoint_size} ({self.status})"
