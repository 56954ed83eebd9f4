"""Erasure-request services: the only code that creates or changes requests.

Faces (public pages, portal, API) parse input and call these; they hold no logic of their own.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, User
from django.db import transaction
from django.utils import timezone

from compliance.audit.services import audit_append
from compliance.common.models import DataKey
from compliance.common.ratelimit import hit
from compliance.common.tasks import enqueue
from compliance.erasure import deadlines, notifications
from compliance.erasure.models import (
    Channel,
    Decision,
    ErasureRequest,
    Ground,
    IdentityCheck,
    ReferenceNumber,
    RefusalCode,
    Status,
)
from compliance.erasure.permissions import can_decide
from compliance.erasure.tokens import STATUS_SALT, status_token
from compliance.erasure.transitions import TransitionNotAllowed, text_digest, transition
from compliance.guard.services import (
    requests_with_active_rules,
    suppression_rules_create,
    suppression_rules_rederive,
    suppression_rules_remove,
)
from pii.normalize import normalize_email


class ErasureError(Exception):
    """A request that cannot be carried out as asked; the message is safe to show (no PII)."""

    code = "invalid"


class PermissionDenied(ErasureError):
    code = "forbidden"


class TokenInvalid(ErasureError):
    code = "token_invalid"


__all__ = ["ErasureError", "PermissionDenied", "TokenInvalid", "TransitionNotAllowed"]


def actor_of(user: AbstractBaseUser | AnonymousUser | None) -> str:
    if user is None or not user.is_authenticated:
        return "subject"
    return f"user:{user.pk}"


def email_digest(email: str) -> str:
    """Keyed digest of the normalised address: lets us find duplicates without storing the address."""
    key = hashlib.sha256(b"email-digest:" + settings.FIELD_ENCRYPTION_KEY.encode()).digest()
    return hmac.new(key, normalize_email(email).encode("utf-8"), hashlib.sha256).hexdigest()


def _next_reference(today: date) -> str:
    number = ReferenceNumber.objects.create().pk
    return f"ER-{today.year}-{number:06d}"


@dataclass(frozen=True)
class SubjectInput:
    """What the person tells us. Validated by the faces' forms/serializers before it gets here."""

    full_name: str
    email: str
    phone: str = ""
    other_identifiers: list[str] = field(default_factory=list)
    details: str = ""  # what data, where (free text, sealed)


@dataclass(frozen=True)
class SubmitResult:
    request: ErasureRequest
    created: bool
    status_token: str


def request_from_status_token(token: str) -> ErasureRequest:
    """The request behind a private status link, or TokenInvalid (forged, altered, unknown)."""
    from django.core import signing

    try:
        request_id = signing.loads(token, salt=STATUS_SALT, max_age=timedelta(days=settings.STATUS_LINK_TTL_DAYS))
    except signing.SignatureExpired as exc:
        raise TokenInvalid("This status link has expired. The latest e-mail we sent you has a fresh one.") from exc
    except signing.BadSignature as exc:
        raise TokenInvalid("This status link is not valid.") from exc
    request = ErasureRequest.objects.filter(pk=request_id).first()
    if request is None:
        raise TokenInvalid("This status link is not valid.")
    return request


def _issue_identity_check(request: ErasureRequest) -> str:
    token = secrets.token_urlsafe(32)
    now = timezone.now()
    # A new link replaces older unused ones: only the latest e-mail works.
    IdentityCheck.objects.filter(request=request, used_at__isnull=True).update(expires_at=now)
    IdentityCheck.objects.create(
        request=request,
        token_hash=hashlib.sha256(token.encode()).hexdigest(),
        expires_at=now + timedelta(hours=settings.IDENTITY_TOKEN_TTL_HOURS),
    )
    return token


def erasure_request_submit(
    *,
    subject: SubjectInput,
    ground: str,
    channel: str,
    client_ip: str,
    actor: str = "subject",
    received_at: Any = None,
) -> SubmitResult:
    """File a request (or return the open one the same person filed within the duplicate window).

    1. Rate limits per client IP and per e-mail digest (RateLimited propagates, nothing written).
    2. Duplicate check on the e-mail digest among open requests of the window.
    3. Create the data key, the request with its sealed identifiers, deadlines from receipt.
    4. Audit event, identity check, confirmation e-mail after commit.
    Requests entered by an officer or over the API by an authenticated client skip e-mail
    confirmation only if the caller verifies identity itself; they still start as received.
    """
    Ground(ground)  # ValueError for an unknown ground
    Channel(channel)
    digest = email_digest(subject.email)
    hit("submit-ip", client_ip, limit=settings.RATE_LIMIT_SUBMIT_PER_IP, window_s=3600)
    hit("submit-email", digest, limit=settings.RATE_LIMIT_SUBMIT_PER_EMAIL, window_s=86400)
    now = received_at or timezone.now()
    with transaction.atomic():
        window_start = now - timedelta(hours=settings.DUPLICATE_WINDOW_HOURS)
        existing = (
            ErasureRequest.objects.select_for_update()
            .filter(email_digest=digest, received_at__gte=window_start, status__in=[Status.RECEIVED, Status.VERIFIED, Status.TRIAGED])
            .order_by("received_at")
            .first()
        )
        if existing is not None:
            if existing.status == Status.RECEIVED:
                token = _issue_identity_check(existing)
                notifications.send_after_commit("confirm_email", existing, token=token)
            audit_append(
                event_type="request.duplicate",
                actor=actor,
                outcome="merged",
                request_id=existing.id,
                subject_ref=existing.subject_ref,
            )
            return SubmitResult(existing, False, status_token(existing))
        today = timezone.localdate(now)
        data_key = DataKey.create()
        request = ErasureRequest(
            reference=_next_reference(today),
            channel=channel,
            ground=ground,
            received_at=now,
            clock_started_at=today,
            due_at=deadlines.first_deadline(today),
            data_key=data_key,
            email_digest=digest,
        )
        request.seal_identifiers(
            {
                "full_name": subject.full_name,
                "email": subject.email,
                "phone": subject.phone,
                "other_identifiers": list(subject.other_identifiers),
                "details": subject.details,
            }
        )
        request.save()
        token = _issue_identity_check(request)
        # Last statement of the transaction: the audit head lock is held only until the commit.
        audit_append(
            event_type="request.received",
            actor=actor,
            outcome="ok",
            request_id=request.id,
            subject_ref=request.subject_ref,
            details={"channel": channel, "ground": ground, "due": request.due_at.isoformat()},
        )
        notifications.send_after_commit("confirm_email", request, token=token)
    return SubmitResult(request, True, status_token(request))


def identity_confirm(*, token: str) -> ErasureRequest:
    """Consume an e-mail confirmation token and mark the request verified.

    Unknown, expired, reused or exhausted tokens raise TokenInvalid and change nothing.
    """
    if not token or len(token) > 200:
        raise TokenInvalid("This confirmation link is not valid.")
    token_hash = hashlib.sha256(token.encode()).hexdigest()
    with transaction.atomic():
        check = IdentityCheck.objects.select_for_update().select_related("request").filter(token_hash=token_hash).first()
        now = timezone.now()
        if check is None:
            raise TokenInvalid("This confirmation link is not valid.")
        if check.used_at is not None:
            raise TokenInvalid("This confirmation link has already been used.")
        if check.expires_at <= now:
            raise TokenInvalid("This confirmation link has expired. File the request again to get a new one.")
        if check.attempts >= settings.IDENTITY_MAX_ATTEMPTS:
            raise TokenInvalid("This confirmation link has been tried too many times.")
        check.used_at = now
        check.attempts += 1
        check.save(update_fields=["used_at", "attempts"])
        request = check.request
        if request.status != Status.RECEIVED:
            raise TokenInvalid("This request has already been confirmed.")
        transition(request, Status.VERIFIED, actor="subject", fields={"verified_at": now})
        enqueue("erasure.scan_request", request_id=str(request.id))
    return request


def erasure_request_withdraw(*, request: ErasureRequest, actor: str = "subject") -> ErasureRequest:
    transition(request, Status.WITHDRAWN, actor=actor)
    notifications.send_after_commit("withdrawn", request)
    return request


def _require_decider(user: User) -> None:
    if not can_decide(user):
        raise PermissionDenied("Only privacy officers can decide on erasure requests.")


def erasure_request_assign(*, request: ErasureRequest, officer: User, assignee: User | None) -> ErasureRequest:
    _require_decider(officer)
    if assignee is not None and not can_decide(assignee) and not assignee.has_perm("erasure.view_erasurerequest"):
        raise ErasureError("The assignee must be an officer or a reviewer.")
    if not request.is_open:
        raise ErasureError("A closed request cannot be assigned.")
    with transaction.atomic():
        locked = ErasureRequest.objects.select_for_update().get(pk=request.pk)
        locked.assignee = assignee
        locked.save(update_fields=["assignee", "updated_at"])
        audit_append(
            event_type="request.assigned",
            actor=actor_of(officer),
            outcome="ok",
            request_id=locked.id,
            subject_ref=locked.subject_ref,
            details={"assignee": f"user:{assignee.pk}" if assignee else "none"},
        )
    request.refresh_from_db()
    return request


def erasure_request_approve(*, request: ErasureRequest, officer: User, reason: str = "") -> ErasureRequest:
    """Approve: the guard suppresses the person's PII at once; unlearning is dispatched after commit."""

    _require_decider(officer)
    with transaction.atomic():
        transition(
            request,
            Status.APPROVED,
            actor=actor_of(officer),
            reason=reason,
            fields={"decision": Decision.APPROVED, "decided_at": timezone.now(), "decided_by": officer, "decision_reason": reason},
            expect_from=frozenset({Status.TRIAGED}),
        )
        subject, unusable = request.subject_and_dropped()
        suppression_rules_create(request=request, subject=subject, unusable=unusable, actor=actor_of(officer))
        enqueue("jobs.dispatch")
    notifications.send_after_commit("approved", request)
    return request


def _close_with_notice(
    request: ErasureRequest, officer: User, *, to: Status, decision: Decision, reason: str, notice: str,
    details: dict[str, str | int], extra: dict[str, Any] | None = None, expect_from: frozenset[str] | None = None,
) -> ErasureRequest:
    """An officer's closing decision: the transition with who decided, when and the reason the subject
    reads (audited by digest), then the notice after commit."""
    transition(
        request,
        to,
        actor=actor_of(officer),
        reason=reason,
        fields={"decision": decision, "decision_reason": reason.strip(), "decided_at": timezone.now(), "decided_by": officer,
                **(extra or {})},
        details=details,
        expect_from=expect_from,
    )
    notifications.send_after_commit(notice, request)
    return request


def erasure_request_refuse(
    *, request: ErasureRequest, officer: User, legal_code: str, reason: str
) -> ErasureRequest:
    _require_decider(officer)
    if not legal_code:
        raise ErasureError("A refusal needs a legal code (Art. 17(3)(a)-(e) or Art. 12(5)).")
    try:
        RefusalCode(legal_code)
    except ValueError as exc:
        raise ErasureError("Unknown legal code for a refusal.") from exc
    if not reason.strip():
        raise ErasureError("A refusal needs a reason the data subject can read.")
    return _close_with_notice(request, officer, to=Status.REFUSED, decision=Decision.REFUSED, reason=reason, notice="refused",
                              details={"legal_code": legal_code}, extra={"legal_code": legal_code})


def erasure_request_close_guard_only(*, request: ErasureRequest, officer: User, justification: str) -> ErasureRequest:
    """Close a request whose erasure from the weights could not be verified (needs_decision) without a
    certificate: the corpora stay erased and the inference guard keeps suppressing the person's data.
    The officer's justification is required and sent to the subject with the notice."""
    _require_decider(officer)
    if not justification.strip():
        raise ErasureError("Closing guard-only needs a justification; it is sent to the data subject.")
    return _close_with_notice(request, officer, to=Status.SUPPRESSED, decision=Decision.GUARD_ONLY, reason=justification,
                              notice="guard_only", details={"decision": "guard_only"},
                              expect_from=frozenset({Status.NEEDS_DECISION}))


def erasure_request_extend(*, request: ErasureRequest, officer: User, reason: str, today: date | None = None) -> ErasureRequest:
    """Extend the deadline once by two months (Art. 12(3)), only before the first deadline, with notice."""
    _require_decider(officer)
    if not reason.strip():
        raise ErasureError("An extension needs a reason; it is sent to the data subject.")
    today = today or timezone.localdate()
    with transaction.atomic():
        locked = ErasureRequest.objects.select_for_update().get(pk=request.pk)
        if locked.extended_due_at is not None:
            raise ErasureError("The deadline has already been extended once; Art. 12(3) allows one extension.")
        if not locked.is_open:
            raise ErasureError("Only open requests can be extended.")
        if today > locked.due_at:
            raise ErasureError("The first deadline has passed; an extension must be notified before it.")
        locked.extended_due_at = deadlines.extended_deadline(locked.clock_started_at)
        locked.extension_reason = reason.strip()
        locked.extension_notified_at = timezone.now()
        locked.save(update_fields=["extended_due_at", "extension_reason", "extension_notified_at", "updated_at"])
        audit_append(
            event_type="request.extended",
            actor=actor_of(officer),
            outcome="ok",
            request_id=locked.id,
            subject_ref=locked.subject_ref,
            artefacts={"reason_sha256": text_digest(reason.strip())},
            details={"due": locked.extended_due_at.isoformat()},
        )
        notifications.send_after_commit("extended", locked)
    request.refresh_from_db()
    return request


def erasure_request_purge(*, request: ErasureRequest, actor: str = "system") -> ErasureRequest:
    """Crypto-shred a closed request: destroy its data key in the key store, drop located-record texts.

    What remains is the pseudonymous row, the audit trail and the certificate the subject holds. The key
    is destroyed last, inside the transaction: if the commit then fails, the data is already
    unreadable and the next purge run records it (erasure errs towards erasing). `undecryptable_after`
    is the day the last key-store backup that could hold the key expires.
    """
    with transaction.atomic():
        locked = ErasureRequest.objects.select_for_update().get(pk=request.pk)
        status_before = locked.status
        now = timezone.now()
        undecryptable = (now + timedelta(days=settings.KEYSTORE_BACKUP_RETENTION_DAYS)).date()
        # Free text the officer wrote to the subject may name them: it goes too (the log holds its digest).
        transition(locked, Status.PURGED, actor=actor,
                   fields={"purged_at": now, "undecryptable_after": undecryptable, "decision_reason": "", "extension_reason": "",
                           "email_digest": ""},
                   details={"undecryptable_after": undecryptable.isoformat()})
        locked.forget_items.update(text_sealed=None)
        if status_before in (Status.REFUSED, Status.WITHDRAWN):
            # Nothing was erased, so nothing is suppressed: the guard's keyed digests of the person's
            # identifiers go with the rest (completed and guard-only requests keep theirs for good).

            suppression_rules_remove(request=locked)
        notifications.erase_spooled_mail(locked)
        locked.data_key.destroy()
    request.refresh_from_db()
    return request


def purge_due_requests(*, today: date | None = None) -> int:
    """Purge every closed request past the retention period. Returns how many were purged."""
    cutoff = timezone.now() - timedelta(days=settings.RETENTION_DAYS_AFTER_COMPLETION)
    # Counted from when the request was closed (status_changed_at), not from its last update: an edit
    # after closing must not postpone the purge past the date the certificate states.
    closed = ErasureRequest.objects.filter(
        status__in=[Status.COMPLETED, Status.SUPPRESSED, Status.REFUSED, Status.WITHDRAWN], status_changed_at__lt=cutoff
    )
    count = 0
    for request in closed:
        erasure_request_purge(request=request)
        count += 1
    return count


def erasure_guard_rules_rederive(*, actor: str, dry_run: bool = False) -> Any:
    """Re-derive the guard's rules of every request that has active ones, with the current matcher
    (guard.services.suppression_rules_rederive; the requests' identifiers are unsealed here, one at
    a time, so the guard never reads the request desk's tables)."""

    requests = ErasureRequest.objects.filter(pk__in=requests_with_active_rules()).select_related("data_key").order_by("pk")
    return suppression_rules_rederive(
        subjects=((request, request.subject) for request in requests.iterator()), actor=actor, dry_run=dry_run
    )
