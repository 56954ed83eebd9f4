"""Issued certificates of erasure.

A certificate is written once, by `compliance.certificates.services.certificate_issue`, in the same
transaction that completes its request; nothing updates it afterwards. The row keeps the exact
bytes that were signed (canonical payload JSON) and handed out (the DSSE envelope, i.e. the
`certificate.json` file), so downloads are byte-identical to what the audit log's
`certificate.issued` event hashes. The PDF is a rendering kept on the artifact volume; its SHA-256
is stored so a damaged or swapped file is detected before it is served.

Nothing here is personal data: the payload names the request by reference, id and subject_ref only.
It outlives the purge of the request's personal data, like the audit trail it summarises.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from django.conf import settings
from django.db import models


class Certificate(models.Model):
    certificate_id = models.UUIDField(unique=True, default=uuid.uuid4, editable=False)
    request = models.OneToOneField(
        "erasure.ErasureRequest", on_delete=models.PROTECT, related_name="certificate", editable=False
    )
    payload = models.BinaryField(editable=False, help_text="Canonical JSON of the signed payload")
    payload_sha256 = models.CharField(max_length=64, editable=False)
    envelope = models.BinaryField(editable=False, help_text="The DSSE envelope: the certificate.json file")
    envelope_sha256 = models.CharField(max_length=64, editable=False)
    # Relative to settings.ARTIFACT_ROOT, so the artifact volume can be mounted elsewhere.
    pdf_path = models.CharField(max_length=500, editable=False)
    pdf_sha256 = models.CharField(max_length=64, editable=False)
    checkpoint_size = models.BigIntegerField(editable=False, help_text="Audit log size the proofs refer to")
    issued_at = models.DateTimeField(editable=False)
    issued_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+", editable=False
    )

    class Meta:
        ordering = ["-issued_at"]

    def __str__(self) -> str:
        return f"certificate {self.certificate_id}"

    @property
    def pdf_file(self) -> Path:
        return Path(settings.ARTIFACT_ROOT) / self.pdf_path

    @property
    def download_stem(self) -> str:
        """File name stem offered to browsers: the reference is safe ASCII (ER-2026-000123)."""
        return f"certificate-{self.request.reference}"
