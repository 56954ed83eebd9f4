"""The one place where an erasure request changes status."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from django.db import transaction
from django.utils import timezone

from compliance.audit.services import audit_append
from compliance.erasure.models import ALLOWED_TRANSITIONS, ErasureRequest, Status


class TransitionNotAllowed(Exception):
    def __init__(self, reference: str, current: str, target: str) -> None:
        super().__init__(f"{reference} cannot move from {current} to {target}")
        self.current = current
        self.target = target


def text_digest(text: str) -> str:
    """SHA-256 of free text: the audit log records that a reason was given, never the reason."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def transition(
    request: ErasureRequest,
    to: str,
    *,
    actor: str,
    reason: str = "",
    fields: Mapping[str, Any] | None = None,
    artefacts: Mapping[str, str] | None = None,
    details: Mapping[str, str | int] | None = None,
    expect_from: frozenset[str] | None = None,
) -> ErasureRequest:
    """Move `request` to status `to`, atomically with its audit event.

    1. Lock the row (SELECT ... FOR UPDATE) and re-read the status: the caller's copy may be stale.
    2. Check the move against ALLOWED_TRANSITIONS (and `expect_from`, when the caller needs a
       narrower precondition); refuse with TransitionNotAllowed otherwise, changing nothing.
    3. Apply the status and any other `fields`, save only those columns.
    4. Append the audit event in the same transaction; a failure anywhere rolls back both.
    Returns the locked, updated row (the caller's object is refreshed too).
    """
    target = Status(to)
    with transaction.atomic():
        locked = ErasureRequest.objects.select_for_update().get(pk=request.pk)
        current = locked.status
        if target not in ALLOWED_TRANSITIONS[current] or (expect_from is not None and current not in expect_from):
            raise TransitionNotAllowed(locked.reference, current, target)
        updates = dict(fields or {})
        updates["status"] = target
        updates["status_changed_at"] = timezone.now()
        for name, value in updates.items():
            setattr(locked, name, value)
        locked.save(update_fields=[*updates.keys(), "updated_at"])
        audit_details: dict[str, str | int] = {"from": current, "to": str(target)}
        if details:
            audit_details.update(details)
        audit_artefacts = dict(artefacts or {})
        if reason:
            audit_artefacts["reason_sha256"] = text_digest(reason)
        audit_append(
            event_type=f"request.{target}",
            actor=actor,
            outcome="ok",
            request_id=locked.id,
            subject_ref=locked.subject_ref,
            artefacts=audit_artefacts or None,
            details=audit_details,
        )
    request.refresh_from_db()
    return locked
