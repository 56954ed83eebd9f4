"""Reads of erasure requests for the faces."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Q, QuerySet
from django.utils import timezone

from compliance.audit.models import AuditLeaf
from compliance.audit.services import leaf_document
from compliance.erasure.models import OPEN_STATUSES, ErasureRequest, Status


def queue(
    *, status: str = "", overdue: bool = False, due_soon: bool = False, assignee_id: int | None = None, reference: str = "",
    today: date | None = None,
) -> QuerySet[ErasureRequest]:
    """Requests sorted by effective deadline (open first), filtered as the officer asks."""
    today = today or timezone.localdate()
    qs = ErasureRequest.objects.select_related("assignee").defer("identifiers_sealed", "pri_explanation", "scan_summary")
    if status:
        qs = qs.filter(status=status)
    if reference:
        qs = qs.filter(reference__iexact=reference.strip())
    due = Q(extended_due_at__isnull=True, due_at__lt=today) | Q(extended_due_at__lt=today)
    if overdue:
        qs = qs.filter(due, status__in=OPEN_STATUSES)
    if due_soon:
        horizon = today + timedelta(days=settings.DUE_SOON_DAYS)
        soon = Q(extended_due_at__isnull=True, due_at__gte=today, due_at__lte=horizon) | Q(
            extended_due_at__gte=today, extended_due_at__lte=horizon
        )
        qs = qs.filter(soon, status__in=OPEN_STATUSES)
    if assignee_id is not None:
        qs = qs.filter(assignee_id=assignee_id)
    return qs.order_by("due_at", "received_at")


WAITING_FOR = {
    Status.RECEIVED: "the subject to confirm the e-mail address",
    Status.VERIFIED: "the corpus scan",
    Status.TRIAGED: "an officer's decision",
    Status.APPROVED: "dispatch to an unlearning worker (approved requests are batched for a short window)",
    Status.UNLEARNING: "the unlearning job and the attack suite",
    Status.VERIFYING: "an officer's sign-off (the certificate)",
    Status.NEEDS_DECISION: "an officer's decision on the failed verification",
}


def waiting_for(request: ErasureRequest) -> str:
    """What an open request waits for at its stage ("" once closed)."""
    return WAITING_FOR.get(Status(request.status), "")


@dataclass(frozen=True)
class TimelineEntry:
    seq: int
    at: str
    event: str
    actor: str
    details: dict[str, Any]
    leaf_hash_hex: str


def timeline(request: ErasureRequest) -> list[TimelineEntry]:
    """The request's life, read from the audit log (the single source of truth)."""
    entries = []
    for leaf in AuditLeaf.objects.filter(request_id=request.id).order_by("seq"):
        doc = leaf_document(leaf)
        entries.append(
            TimelineEntry(
                seq=leaf.seq,
                at=str(doc.get("time", "")),
                event=str(doc.get("type", "")),
                actor=str(doc.get("actor", "")),
                details=dict(doc.get("details", {}) or {}),  # type: ignore[call-overload]
                leaf_hash_hex=bytes(leaf.leaf_hash).hex(),
            )
        )
    return entries


def deadline_badge(request: ErasureRequest, today: date | None = None) -> str:
    if not request.is_open:
        return "closed"
    left = request.days_left(today)
    if left < 0:
        return "overdue"
    if left <= settings.DUE_SOON_DAYS:
        return "due-soon"
    return "on-time"
