"""The PDF signing key (a file or secret, never the database) and its published certificates.

PDF_SIGNING_KEY_FILE holds the private key (PEM PKCS#8, ECDSA P-256, mode 0600). PDF_SIGNING_CERTS_FILE
is published: every certificate that has signed certificate PDFs, the current one first, served at
/verify/pdf-signing.pem for verifiers to pin (`erasure-verify --pdf-cert`). The key signs only when its
certificate is in that file. Like the audit keys (`compliance.audit.signing`): in the embedded set-up a
first key is generated on first use; production refuses to sign without both files (create them with
`manage.py pdf_keygen`). Rotation (`pdf_keygen --rotate`) adds a certificate and keeps the old ones
published, so that PDFs signed before keep verifying.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography import x509
from django.conf import settings

from proofs.pdfsign import (
    PdfKeyError,
    PdfSigningKey,
    certificates_pem,
    generate_pdf_signing_key,
    load_pdf_certificates,
    load_pdf_signing_key,
)
from unlearning_worker.files import write_atomic


class PdfSigningKeyMissing(RuntimeError):
    """The PDF signing key or its published certificates are not where the settings say."""


def _write(path: Path, data: bytes, mode: int) -> None:
    """Atomic replace (temporary sibling, fsync, rename): a reader sees the old file or the new one,
    never half of one. The temporary file is created 0600, so a key is never readable by others."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda stream: stream.write(data))
    os.chmod(path, mode)


def ensure_pdf_signing_key(*, create_in_production: bool = False) -> None:
    """Create the first key and publish its certificate if neither exists yet: on first use in the
    embedded set-up; in production only when an operator asks (`manage.py pdf_keygen`)."""
    key_file, certs_file = Path(settings.PDF_SIGNING_KEY_FILE), Path(settings.PDF_SIGNING_CERTS_FILE)
    if key_file.exists() and certs_file.exists():
        return
    if settings.PRODUCTION and not create_in_production:
        raise PdfSigningKeyMissing(
            "PDF_SIGNING_KEY_FILE and PDF_SIGNING_CERTS_FILE must exist in production (create them with manage.py pdf_keygen)"
        )
    if key_file.exists() != certs_file.exists():
        raise PdfSigningKeyMissing(
            "only one of the PDF signing key and its certificates file exists; restore the other"
        )
    _create(key_file, certs_file, [])


def _create(key_file: Path, certs_file: Path, older: list[x509.Certificate]) -> x509.Certificate:
    key = generate_pdf_signing_key(settings.ORGANISATION_NAME)
    # Certificates first: a key may only sign once verifiers can pin its certificate.
    _write(certs_file, certificates_pem([key.certificate, *older]), 0o644)
    _write(key_file, key.private_key_pem(), 0o600)
    return key.certificate


def published_pdf_certificates() -> list[x509.Certificate]:
    """Every published PDF signing certificate (the current one first)."""
    ensure_pdf_signing_key()
    try:
        return load_pdf_certificates(Path(settings.PDF_SIGNING_CERTS_FILE).read_bytes())
    except PdfKeyError as exc:
        raise PdfSigningKeyMissing(f"PDF_SIGNING_CERTS_FILE: {exc}") from None


def published_pdf_certificates_pem() -> bytes:
    return certificates_pem(published_pdf_certificates())


def pdf_signing_key() -> PdfSigningKey:
    """The key that signs new certificate PDFs, with its published certificate."""
    published = published_pdf_certificates()
    try:
        return load_pdf_signing_key(Path(settings.PDF_SIGNING_KEY_FILE).read_bytes(), published)
    except PdfKeyError as exc:
        raise PdfSigningKeyMissing(f"PDF_SIGNING_KEY_FILE: {exc}") from None


def pdf_signing_key_rotate() -> x509.Certificate:
    """A new key and certificate; the old certificates stay published (PDFs they signed keep verifying)."""
    current = pdf_signing_key()
    older = [current.certificate, *(c for c in published_pdf_certificates() if c != current.certificate)]
    return _create(Path(settings.PDF_SIGNING_KEY_FILE), Path(settings.PDF_SIGNING_CERTS_FILE), older)
