"""Reads about issued certificates."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from compliance.audit import selectors as audit_selectors
from compliance.audit.models import AuditLeaf
from compliance.certificates.models import Certificate


@dataclass(frozen=True)
class LogCoverage:
    """Whether a signed checkpoint covers every audit event of a certificate.

    The certificate's own proofs stop at the checkpoint it was built on; its last event,
    `certificate.issued`, is appended after that and is covered only by a later checkpoint (signed
    right after issue, or by beat within `interval_s`). Covering that leaf covers every earlier one.
    """

    issued_seq: int | None  # leaf of `certificate.issued`; None only if the log lacks it
    checkpoint_size: int  # the newest signed checkpoint's size (0: none yet)
    interval_s: int

    @property
    def covered(self) -> bool:
        return self.issued_seq is not None and self.checkpoint_size > self.issued_seq


def certificate_log_coverage(certificate: Certificate) -> LogCoverage:
    issued_seq = (
        AuditLeaf.objects.filter(request_id=certificate.request.pk, event_type="certificate.issued")
        .order_by("seq")
        .values_list("seq", flat=True)
        .first()
    )
    return LogCoverage(
        issued_seq=issued_seq,
        checkpoint_size=audit_selectors.signed_size(),
        interval_s=settings.AUDIT_CHECKPOINT_INTERVAL_S,
    )
