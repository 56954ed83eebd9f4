"""The erasure request and its life (DESIGN section 6).

The status is changed by one function only, `compliance.erasure.transitions.transition`, which locks
the row, checks the move against ALLOWED_TRANSITIONS, saves and appends the audit event in the same
transaction. Personal data (the subject's identifiers and free-text details) is sealed under the
request's own data key; the rest of the row holds no personal data.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import date
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from compliance.common.models import DataKey
from pii.identifiers import SubjectIdentifiers


class Status(models.TextChoices):
    RECEIVED = "received", "Received"
    VERIFIED = "verified", "Identity verified"
    TRIAGED = "triaged", "Triaged"
    APPROVED = "approved", "Approved"
    REFUSED = "refused", "Refused"
    UNLEARNING = "unlearning", "Unlearning"
    VERIFYING = "verifying", "Verifying"
    NEEDS_DECISION = "needs_decision", "Needs a decision"
    COMPLETED = "completed", "Completed"
    SUPPRESSED = "suppressed", "Closed: suppressed, not certified"
    WITHDRAWN = "withdrawn", "Withdrawn"
    PURGED = "purged", "Purged"


OPEN_STATUSES = frozenset(
    {Status.RECEIVED, Status.VERIFIED, Status.TRIAGED, Status.APPROVED, Status.UNLEARNING, Status.VERIFYING, Status.NEEDS_DECISION}
)

# The only allowed moves. A cancelled job sends the request from unlearning/verifying back to approved;
# a job that failed for good (verification failed after its stronger retries, or the worker gave up)
# sends it to needs_decision, where an officer chooses: retry with another method (-> unlearning),
# refuse with a legal code, or close it guard-only with a recorded justification (-> suppressed: the
# inference guard keeps suppressing the person's data and the corpora are erased, but no certificate
# says the weights were cleaned).
ALLOWED_TRANSITIONS: dict[str, frozenset[str]] = {
    Status.RECEIVED: frozenset({Status.VERIFIED, Status.WITHDRAWN}),
    Status.VERIFIED: frozenset({Status.TRIAGED, Status.WITHDRAWN}),
    Status.TRIAGED: frozenset({Status.APPROVED, Status.REFUSED, Status.WITHDRAWN}),
    Status.APPROVED: frozenset({Status.UNLEARNING, Status.WITHDRAWN}),
    Status.UNLEARNING: frozenset({Status.VERIFYING, Status.APPROVED, Status.NEEDS_DECISION, Status.WITHDRAWN}),
    Status.VERIFYING: frozenset({Status.COMPLETED, Status.APPROVED, Status.NEEDS_DECISION, Status.WITHDRAWN}),
    Status.NEEDS_DECISION: frozenset({Status.UNLEARNING, Status.REFUSED, Status.SUPPRESSED, Status.WITHDRAWN}),
    Status.COMPLETED: frozenset({Status.PURGED}),
    Status.SUPPRESSED: frozenset({Status.PURGED}),
    Status.REFUSED: frozenset({Status.PURGED}),
    Status.WITHDRAWN: frozenset({Status.PURGED}),
    Status.PURGED: frozenset(),
}


class Channel(models.TextChoices):
    WEB = "web", "Public form"
    API = "api", "API"
    OFFICER = "officer", "Entered by an officer"


class Ground(models.TextChoices):
    """GDPR Art. 17(1)."""

    NO_LONGER_NECESSARY = "17(1)(a)", "Art. 17(1)(a): no longer necessary for the purposes"
    CONSENT_WITHDRAWN = "17(1)(b)", "Art. 17(1)(b): consent withdrawn"
    OBJECTION = "17(1)(c)", "Art. 17(1)(c): objection under Art. 21"
    UNLAWFUL = "17(1)(d)", "Art. 17(1)(d): unlawfully processed"
    LEGAL_OBLIGATION = "17(1)(e)", "Art. 17(1)(e): erasure required by law"
    CHILD = "17(1)(f)", "Art. 17(1)(f): collected from a child (information society services)"


class RefusalCode(models.TextChoices):
    """GDPR Art. 17(3) exemptions and Art. 12(5) manifestly unfounded or excessive requests."""

    EXPRESSION = "17(3)(a)", "Art. 17(3)(a): freedom of expression and information"
    LEGAL_OBLIGATION = "17(3)(b)", "Art. 17(3)(b): legal obligation or public task"
    PUBLIC_HEALTH = "17(3)(c)", "Art. 17(3)(c): public interest in public health"
    ARCHIVING = "17(3)(d)", "Art. 17(3)(d): archiving, research or statistics"
    LEGAL_CLAIMS = "17(3)(e)", "Art. 17(3)(e): establishment, exercise or defence of legal claims"
    UNFOUNDED = "12(5)", "Art. 12(5): manifestly unfounded or excessive"


class Decision(models.TextChoices):
    NONE = "", "Pending"
    APPROVED = "approved", "Approved"
    REFUSED = "refused", "Refused"
    GUARD_ONLY = "guard_only", "Closed guard-only (suppressed, not removed from the weights)"


def _new_subject_ref() -> str:
    """128 random bits. Never derived from the person's data, so it reveals nothing about them."""
    return secrets.token_hex(16)


class ErasureRequest(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    reference = models.CharField(max_length=20, unique=True, editable=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RECEIVED, db_index=True)
    channel = models.CharField(max_length=8, choices=Channel.choices)
    ground = models.CharField(max_length=10, choices=Ground.choices)
    subject_ref = models.CharField(max_length=32, unique=True, default=_new_subject_ref, editable=False)

    received_at = models.DateTimeField(default=timezone.now)
    verified_at = models.DateTimeField(null=True, blank=True)
    clock_started_at = models.DateField()
    due_at = models.DateField(db_index=True)
    extended_due_at = models.DateField(null=True, blank=True)
    extension_reason = models.TextField(blank=True)
    extension_notified_at = models.DateTimeField(null=True, blank=True)

    decision = models.CharField(max_length=16, choices=Decision.choices, blank=True, default=Decision.NONE)
    legal_code = models.CharField(max_length=10, choices=RefusalCode.choices, blank=True)
    decision_reason = models.TextField(blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    completed_at = models.DateTimeField(null=True, blank=True)
    purged_at = models.DateTimeField(null=True, blank=True)
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="assigned_requests"
    )

    # Personal data, sealed under data_key (see identifiers()).
    data_key = models.OneToOneField(DataKey, on_delete=models.PROTECT, related_name="erasure_request")
    identifiers_sealed = models.BinaryField(editable=False)
    # HMAC of the normalised e-mail: duplicate detection and per-person rate limits without plaintext.
    email_digest = models.CharField(max_length=64, db_index=True, editable=False)

    scope_all_models = models.BooleanField(default=True)
    scope_models = models.ManyToManyField("registry.AIModel", blank=True, related_name="+")

    pri_score = models.FloatField(null=True, blank=True)
    pri_tier = models.CharField(max_length=10, blank=True)
    pri_explanation = models.JSONField(null=True, blank=True)
    scan_summary = models.JSONField(null=True, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # When the status last changed (set by transitions.transition): how long the request has been at
    # its stage, for the queue. updated_at also moves on assignment or an extension.
    status_changed_at = models.DateTimeField(default=timezone.now)
    # Set by the purge: the day after which no copy of the key store (its backups expire after
    # KEYSTORE_BACKUP_RETENTION_DAYS) can decrypt this request's personal data. Database backups never
    # could: they hold no key.
    undecryptable_after = models.DateField(null=True, blank=True)

    class Meta:
        ordering = ["due_at", "received_at"]
        permissions = [("decide_erasurerequest", "Can approve, refuse and extend erasure requests")]
        indexes = [models.Index(fields=["status", "due_at"], name="erasure_status_due")]

    def __str__(self) -> str:
        return self.reference

    # -- personal data -------------------------------------------------------------------------
    def _aad(self) -> str:
        return f"erasure_request:{self.id}:identifiers"

    def identifiers(self) -> dict[str, Any]:
        """The subject's identifiers: full_name, email, phone, other_identifiers (list), details."""
        return dict(self.data_key.open_json(bytes(self.identifiers_sealed), aad=self._aad()))

    def subject(self) -> SubjectIdentifiers:
        """The identifiers as the one subject type every consumer takes (scan, guard, jobs, notices)."""
        return self.subject_and_dropped()[0]

    def subject_and_dropped(self) -> tuple[SubjectIdentifiers, int]:
        """subject(), and how many stored values it left out as unusable (SubjectIdentifiers.usable):
        the intake forms refuse such values, older or imported rows may hold them."""
        ids = self.identifiers()
        return SubjectIdentifiers.usable(
            full_name=str(ids.get("full_name") or ""),
            emails=[str(ids.get("email") or "")],
            phones=[str(ids.get("phone") or "")],
            other_identifiers=[str(o) for o in ids.get("other_identifiers") or []],
        )

    def seal_identifiers(self, identifiers: dict[str, Any]) -> None:
        self.identifiers_sealed = self.data_key.seal_json(identifiers, aad=self._aad())

    # -- deadlines -----------------------------------------------------------------------------
    @property
    def effective_due(self) -> date:
        return self.extended_due_at or self.due_at

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    def days_left(self, today: date | None = None) -> int:
        return (self.effective_due - (today or timezone.localdate())).days


class IdentityCheck(models.Model):
    """A single-use e-mail confirmation token. Only its SHA-256 is stored."""

    request = models.ForeignKey(ErasureRequest, on_delete=models.CASCADE, related_name="identity_checks")
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)

    def __str__(self) -> str:
        return f"identity check for {self.request_id}"


class ReferenceNumber(models.Model):
    """Allocates the number behind the human reference ER-<year>-<000123>.

    An insert into an auto-increment table never waits on another transaction (a counter row
    locked FOR UPDATE would serialise every submission until commit). Numbers are unique and
    increasing; a rolled-back submission leaves a gap, which a reference may have.
    """

    id = models.BigAutoField(primary_key=True)

    def __str__(self) -> str:
        return f"reference number {self.pk}"
