"""Issuing the certificate of erasure: the officer's sign-off that completes a request.

The certificate's evidence is the audit log. It must carry the request's `request.completed` leaf
(the offline verifier checks that the timeline is backed by leaves), so the completion is logged
*first*, then a checkpoint is signed over it and cosigned by the witnesses, then the certificate is
built from the leaves under that checkpoint. The completion leaf therefore cannot hold the hash of a
file that does not exist yet; it commits to the certificate's id and content instead
(`certificate_content_sha256`: everything the certificate states except the audit section and the
issue time) and to the verification report. The hash of the final file is logged right after, in
`certificate.issued`, which a checkpoint signed right after commit covers (task `audit.checkpoint`;
should that run be lost, beat signs one within AUDIT_CHECKPOINT_INTERVAL_S).

Three steps, because a witness may only ever see a committed checkpoint (one it cosigned and that
then rolled back would be a fork): the completion commits; the checkpoint over it is signed, committed
and cosigned; the certificate is built, rendered, stored and mailed in a second transaction. Should
the witnesses not answer, or the last step fail, the request stays completed without a certificate
and the next sign-off resumes at the checkpoint, checking that the content it would certify is still
what the completion leaf committed to.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from compliance.audit import services as audit_services
from compliance.audit import signing, witnessing
from compliance.audit.models import AuditCheckpoint, AuditLeaf
from compliance.certificates import pdfkeys
from compliance.certificates.evidence import (
    HEX64,
    CertificateBuildError,
    CertificateNotReady,
    Evidence,
    content_sha256,
    corpora_part,
    exact_part,
    models_part,
    one_line,
    passing_evidence,
    verification_part,
)
from compliance.certificates.models import Certificate
from compliance.common.tasks import enqueue
from compliance.erasure import notifications
from compliance.erasure.models import ErasureRequest, Status
from compliance.erasure.permissions import can_decide
from compliance.erasure.services import ErasureError, PermissionDenied, actor_of
from compliance.erasure.transitions import transition
from proofs.canonical import parse_canonical
from proofs.envelope import (
    TIMELINE_EVENT_TYPES,
)
from proofs.issuing import (
    audit_leaf_entry,
    build_certificate_payload,
    certificate_payload_bytes,
    issue_certificate,
)
from proofs.offline import verify_certificate
from proofs.pdf_checks import pdf_document_checks
from proofs.pdf_render import render_certificate_pdf_bytes, write_pdf_atomic
from proofs.pdfsign import sign_certificate_pdf

logger = logging.getLogger(__name__)


def _request_leaves(request: ErasureRequest, checkpoint: AuditCheckpoint) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Every leaf about this request under the checkpoint, with proofs, and the timeline they back.

    Leaves are included only when they name this request *and* its subject_ref (the verifier
    requires both); the timeline takes the first leaf of each type (a request that went back to
    `approved` after a failed job keeps the officer's decision time).
    """
    entries: list[dict[str, Any]] = []
    timeline: dict[str, str] = {}
    by_type = {event_type: key for key, event_type in TIMELINE_EVENT_TYPES.items()}
    rows = AuditLeaf.objects.filter(request_id=request.id, seq__lt=checkpoint.size).order_by("seq")
    for seq, raw in rows.values_list("seq", "leaf_bytes"):
        leaf_bytes = bytes(raw)
        document = parse_canonical(leaf_bytes)
        if document.get("subject_ref") != request.subject_ref or document.get("request_id") != str(request.id):
            continue
        entries.append(audit_leaf_entry(seq, leaf_bytes, audit_services.inclusion_proof(seq, checkpoint.size)))
        key = by_type.get(str(document.get("type")))
        if key is not None and key not in timeline:
            timeline[key] = str(document["time"])
    return entries, timeline


def _write_pdf(payload: dict[str, Any], envelope_json: bytes, reference: str, certificate_id: str) -> tuple[str, str]:
    """Render, sign (PAdES B-B, `pdfkeys`), check as a verifier would and write atomically to
    ARTIFACT_ROOT/certificates/<reference>-<id>.pdf; returns (relative path, sha256)."""
    relative = Path("certificates") / f"{reference}-{certificate_id}.pdf"
    target = Path(settings.ARTIFACT_ROOT) / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        key, published = pdfkeys.pdf_signing_key(), pdfkeys.published_pdf_certificates()
    except pdfkeys.PdfSigningKeyMissing as exc:
        raise CertificateBuildError(f"The certificate PDF cannot be signed: {exc}") from None
    data = sign_certificate_pdf(
        render_certificate_pdf_bytes(payload, envelope_json),
        key,
        reason=f"Certificate of erasure {reference}",
        signer_name=settings.ORGANISATION_NAME,
    )
    refused = [check for check in pdf_document_checks(data, payload, published) if not check.ok]
    if refused:
        raise CertificateBuildError(f"The signed certificate PDF does not verify: {refused[0].detail}")
    write_pdf_atomic(data, target)
    return str(relative), hashlib.sha256(data).hexdigest()


def retention_statement(issued_at: datetime) -> dict[str, str]:
    """What the certificate states about the person's data held by this service: the purge (beat,
    RETENTION_DAYS_AFTER_COMPLETION after completion; a day's margin for the hourly run) destroys its key
    in the key store, and the last key-store backup that could hold that key expires
    KEYSTORE_BACKUP_RETENTION_DAYS later. Database backups never hold a key."""
    purge_by = issued_at.date() + timedelta(days=settings.RETENTION_DAYS_AFTER_COMPLETION + 1)
    return {
        "purge_by": purge_by.isoformat(),
        "no_copy_decryptable_after": (purge_by + timedelta(days=settings.KEYSTORE_BACKUP_RETENTION_DAYS)).isoformat(),
        "key_store": settings.KEYSTORE_BACKEND,
    }


class CertificateAwaitingWitness(CertificateNotReady):
    """The request is completed, but no checkpoint over its completion carries the cosignatures of
    AUDIT_WITNESS_QUORUM witnesses yet: the certificate is issued once they do."""

    code = "awaiting_witness"


def _content(locked: ErasureRequest, evidence: Evidence, certificate_id: str) -> tuple[dict[str, Any], str]:
    """Everything the certificate states except the audit section and the issue time, and its hash."""
    parts = {
        "certificate_id": certificate_id,
        "request": {
            "reference": locked.reference,
            "request_id": str(locked.id),
            "subject_ref": locked.subject_ref,
            "ground": locked.ground,
            "decision": locked.decision or "approved",
            "legal_code": locked.legal_code or None,
        },
        "models": models_part(evidence),
        "corpora": corpora_part(locked),
        "unlearning": {
            "method": one_line(evidence.job.method, "unspecified"),
            "spec_sha256": evidence.job.spec_sha256,
            "steps": int(evidence.job.step),
            "stop_reason": one_line(evidence.job.stop_reason, "not recorded"),
            "exact": exact_part(evidence.job),
        },
        "verification": verification_part(evidence.report),
    }
    if not HEX64.match(evidence.job.spec_sha256 or ""):
        raise CertificateBuildError("The unlearning job has no spec SHA-256 recorded; it cannot be certified.")
    return parts, content_sha256(parts)


def _completion_leaf(request: ErasureRequest) -> dict[str, Any] | None:
    """The request's completion event as logged (its details name the certificate id)."""
    completed = TIMELINE_EVENT_TYPES["completed"]
    for raw in AuditLeaf.objects.filter(request_id=request.id, event_type=completed).order_by("seq").values_list(
        "leaf_bytes", flat=True
    ):
        document = parse_canonical(bytes(raw))
        if document.get("type") == completed and document.get("request_id") == str(request.id):
            return document
    return None


def _complete(request: ErasureRequest, officer: User) -> tuple[str, dict[str, Any], Evidence] | Certificate:
    """Phase 1, one transaction: lock, re-check, and complete the request (verifying -> completed),
    the completion leaf committing to the certificate's id, content and report. A request completed
    earlier whose certificate is not issued yet (no witness quorum then, or a failure after the
    completion) resumes here: its content is recomputed and must hash to what the leaf committed to."""
    with transaction.atomic():
        locked = ErasureRequest.objects.select_for_update().get(pk=request.pk)
        existing = Certificate.objects.filter(request_id=locked.pk).first()
        if existing is not None:
            return existing
        if locked.status == Status.COMPLETED:
            leaf = _completion_leaf(locked)
            details = leaf.get("details") if leaf else None
            committed = (leaf or {}).get("artefacts", {}).get("certificate_content_sha256")
            if not isinstance(details, dict) or not details.get("certificate_id") or not committed:
                raise CertificateNotReady(f"{locked.reference} was completed without a certificate id; it cannot be certified.")
            evidence = passing_evidence(locked)
            parts, content_digest = _content(locked, evidence, str(details["certificate_id"]))
            if content_digest != committed:
                raise CertificateBuildError(
                    f"What the certificate of {locked.reference} would state changed since its completion was logged."
                )
            return str(details["certificate_id"]), parts, evidence
        if locked.status != Status.VERIFYING:
            raise CertificateNotReady(
                f"{locked.reference} is {locked.get_status_display().lower()}; a certificate is issued only "
                "for a request whose unlearning has been verified."
            )
        evidence = passing_evidence(locked)
        certificate_id = str(uuid.uuid4())
        parts, content_digest = _content(locked, evidence, certificate_id)
        artefacts = {"certificate_content_sha256": content_digest}
        if HEX64.match(evidence.report.report_sha256 or ""):
            artefacts["verification_report_sha256"] = evidence.report.report_sha256
        transition(
            locked,
            Status.COMPLETED,
            actor=actor_of(officer),
            fields={"completed_at": timezone.now()},
            artefacts=artefacts,
            details={"certificate_id": certificate_id},
            expect_from=frozenset({Status.VERIFYING}),
        )
    return certificate_id, parts, evidence


def _witnessed_checkpoint(request: ErasureRequest) -> AuditCheckpoint:
    """Phase 2, outside any transaction: a committed checkpoint over the completion leaf, sent to the
    witnesses; with AUDIT_WITNESS_QUORUM > 0 it must come back cosigned by that many of them."""
    audit_services.checkpoint_create()
    completed = AuditLeaf.objects.filter(request_id=request.id, event_type=TIMELINE_EVENT_TYPES["completed"]).first()
    covering = AuditCheckpoint.objects.filter(size__gt=completed.seq if completed else 0).order_by("size")
    if settings.AUDIT_WITNESS_QUORUM <= 0:
        checkpoint = covering.last()
    else:
        witnessing.witness_submit_pending()
        checkpoint = next((cp for cp in reversed(list(covering)) if witnessing.quorum_met(cp)), None)
        if checkpoint is None:
            raise CertificateAwaitingWitness(
                f"{request.reference} is completed, but no checkpoint over its completion is cosigned by "
                f"{settings.AUDIT_WITNESS_QUORUM} witness(es) yet (see the portal's health page); the certificate "
                "is issued as soon as it is (sign off again, or wait for the next beat)."
            )
    if checkpoint is None:  # pragma: no cover - checkpoint_create above always covers the completion
        raise CertificateBuildError("The audit log could not be checkpointed.")
    return checkpoint


def certificate_issue(*, request: ErasureRequest, officer: User) -> Certificate:
    """Sign off a verified request: complete it and issue its certificate (idempotent).

    Preconditions: `officer` can decide; the request is `verifying` (or `completed` without its
    certificate yet); its latest job's latest verification report passed. A request that already has
    a certificate gets that one back.

    1. (transaction) Lock the request; re-check the preconditions under the lock; gather what the
       certificate states (models and corpora before/after with SHA-256, method and spec hash, the
       exact-erasure proof if the job retrained shards, verification rows) and fail before writing
       anything if it is incomplete; transition verifying -> completed, the completion leaf
       committing to the certificate id, that content and the report's hash.
    2. Sign a checkpoint over the log (it now holds every leaf of the request) and, with witnesses
       configured, have it cosigned: only a committed checkpoint is ever shown to a witness, and
       without AUDIT_WITNESS_QUORUM cosignatures no certificate is issued (CertificateAwaitingWitness;
       the request stays completed and a later sign-off or beat resumes here).
    3. (transaction) Build the payload with each leaf's inclusion proof under the cosigned checkpoint,
       sign it (DSSE, the log's current keys) and check it with the offline verifier against the
       published key ring and the witnesses' keys; render the PDF atomically; store the certificate
       row; log `certificate.issued` with the hashes of the JSON, payload and PDF; e-mail the subject
       after commit; then sign a checkpoint over `certificate.issued` (task `audit.checkpoint`).
    A failure in step 3 rolls that transaction back and removes the PDF; the request stays completed
    and step 3 is retried by the next sign-off.
    """
    if not can_decide(officer):
        raise PermissionDenied("Only privacy officers can sign off a request and issue its certificate.")
    existing = Certificate.objects.filter(request_id=request.pk).first()
    if existing is not None:
        return existing
    completed = _complete(request, officer)
    if isinstance(completed, Certificate):
        return completed
    certificate_id, parts, _evidence = completed
    checkpoint = _witnessed_checkpoint(request)
    pdf_written: Path | None = None
    try:
        with transaction.atomic():
            locked = ErasureRequest.objects.select_for_update().get(pk=request.pk)
            existing = Certificate.objects.filter(request_id=locked.pk).first()
            if existing is not None:
                return existing
            leaves, timeline = _request_leaves(locked, checkpoint)
            if "completed" not in timeline:
                raise CertificateBuildError("The completion event is not under the checkpoint.")
            ring = signing.keyring()
            issued_at = timezone.now()
            payload = build_certificate_payload(
                certificate_id=certificate_id,
                issued_at=issued_at,
                organisation=settings.ORGANISATION_NAME,
                log_origin=settings.AUDIT_LOG_ORIGIN,
                request=parts["request"],
                timeline={key: timeline.get(key) for key in TIMELINE_EVENT_TYPES},
                models=parts["models"],
                corpora=parts["corpora"],
                unlearning=parts["unlearning"],
                verification=parts["verification"],
                leaves=leaves,
                checkpoint=witnessing.cosigned_note(checkpoint),
                keyring=ring,
                retention=retention_statement(issued_at),
            )
            envelope_json = issue_certificate(payload, signing.current_signers())
            payload_bytes = certificate_payload_bytes(payload)
            check = verify_certificate(envelope_json, ring, witnesses=witnessing.witness_cosigners(),
                                       witness_quorum=settings.AUDIT_WITNESS_QUORUM)
            if not check.ok:
                raise CertificateBuildError(f"The new certificate does not verify: {check.reason}")

            pdf_path, pdf_sha256 = _write_pdf(payload, envelope_json, locked.reference, certificate_id)
            pdf_written = Path(settings.ARTIFACT_ROOT) / pdf_path
            envelope_sha256 = hashlib.sha256(envelope_json).hexdigest()
            payload_sha256 = hashlib.sha256(payload_bytes).hexdigest()
            certificate = Certificate.objects.create(
                certificate_id=uuid.UUID(certificate_id),
                request=locked,
                payload=payload_bytes,
                payload_sha256=payload_sha256,
                envelope=envelope_json,
                envelope_sha256=envelope_sha256,
                pdf_path=pdf_path,
                pdf_sha256=pdf_sha256,
                checkpoint_size=checkpoint.size,
                issued_at=issued_at,
                issued_by=officer,
            )
            actor = actor_of(officer)
            audit_services.audit_append(
                event_type="certificate.issued",
                actor=actor,
                outcome="ok",
                request_id=locked.id,
                subject_ref=locked.subject_ref,
                artefacts={
                    "certificate_sha256": envelope_sha256,
                    "payload_sha256": payload_sha256,
                    "pdf_sha256": pdf_sha256,
                },
                details={"checkpoint_size": checkpoint.size, "leaves": len(leaves)},
            )
            # Put `certificate.issued` under a checkpoint now rather than at the next beat, so that
            # every event of the certificate is covered by a (cosigned) checkpoint a verifier can fetch.
            enqueue("audit.checkpoint")
            notifications.send_after_commit("completed", locked)
    except BaseException:
        # The row and the log entries rolled back with the transaction; the file must go too.
        if pdf_written is not None:
            pdf_written.unlink(missing_ok=True)
        raise
    request.refresh_from_db()
    logger.info("certificate %s issued for %s", certificate.certificate_id, request.reference)
    return certificate


def certificate_for(request: ErasureRequest) -> Certificate | None:
    return Certificate.objects.filter(request_id=request.pk).select_related("request").first()


class CertificateFileDamaged(RuntimeError):
    """The stored PDF is missing or its bytes no longer match the SHA-256 logged at issue."""

    title = "Certificate PDF unavailable"
    public_message = (
        "The PDF file could not be read intact. The signed JSON certificate is still available; please contact us."
    )


def certificate_pdf_bytes(certificate: Certificate) -> bytes:
    """The PDF as issued; refuses to serve a file whose hash changed since issue."""
    try:
        data = certificate.pdf_file.read_bytes()
    except OSError as exc:
        logger.error("certificate PDF for %s is missing", certificate.request.reference)
        raise CertificateFileDamaged(f"certificate PDF of {certificate.request.reference} is missing") from exc
    if hashlib.sha256(data).hexdigest() != certificate.pdf_sha256:
        logger.error("certificate PDF for %s does not match its logged hash", certificate.request.reference)
        raise CertificateFileDamaged(f"certificate PDF of {certificate.request.reference} does not match its hash")
    return data


def certificate_file(certificate: Certificate, kind: str) -> tuple[bytes, str, str]:
    """(bytes, content type, file name) of the certificate's JSON or PDF, for every face's download."""
    if kind == "json":
        return bytes(certificate.envelope), "application/json", f"{certificate.download_stem}.json"
    return certificate_pdf_bytes(certificate), "application/pdf", f"{certificate.download_stem}.pdf"


def certificates_issue_pending() -> list[str]:
    """Beat: issue the certificates of requests completed while no witness quorum answered (or whose
    last step failed), in the name of the officer who signed them off. Returns the references issued."""
    issued = []
    waiting = ErasureRequest.objects.filter(status=Status.COMPLETED, certificate__isnull=True, purged_at__isnull=True)
    for request in waiting.order_by("completed_at")[:50]:
        leaf = _completion_leaf(request)
        actor = str((leaf or {}).get("actor", ""))
        officer = User.objects.filter(pk=actor.removeprefix("user:")).first() if actor.startswith("user:") else None
        if officer is None or not can_decide(officer):
            continue  # the officer left or lost the role: the next officer to sign off issues it
        try:
            certificate_issue(request=request, officer=officer)
        except CertificateNotReady as exc:  # still no quorum: tried again at the next beat
            logger.info("%s: %s", request.reference, exc.code)
            continue
        except ErasureError as exc:
            logger.warning("%s: certificate not issued (%s)", request.reference, exc.code)
            continue
        issued.append(request.reference)
    return issued
