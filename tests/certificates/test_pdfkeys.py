"""The PDF signing key and its published certificates (compliance.certificates.pdfkeys): created on
first use in the embedded set-up, never in production, written atomically with the key private;
rotation keeps older certificates published so that PDFs they signed keep verifying."""

# Fixtures are imported from tests.certificates.test_issue_helpers and named as test arguments.
# ruff: noqa: F811

from __future__ import annotations

import stat
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from compliance.audit import signing
from compliance.certificates import pdfkeys, services
from proofs.offline import verify_certificate
from proofs.pdfsign import load_pdf_certificates, read_pdf_signature
from tests.certificates.test_issue_helpers import (  # noqa: F401 - fixtures
    ADA,
    isolated_files,
    officer,
    verifying_request,
)


@pytest.fixture
def pdf_files(settings: Any, tmp_path: Path) -> tuple[Path, Path]:
    settings.PDF_SIGNING_KEY_FILE = tmp_path / "secrets" / "pdf_signing.key"
    settings.PDF_SIGNING_CERTS_FILE = tmp_path / "public" / "pdf_signing_certs.pem"
    return settings.PDF_SIGNING_KEY_FILE, settings.PDF_SIGNING_CERTS_FILE


def test_first_use_creates_a_private_key_and_a_published_certificate(pdf_files: tuple[Path, Path]) -> None:
    key_file, certs_file = pdf_files
    key = pdfkeys.pdf_signing_key()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(certs_file.stat().st_mode) == 0o644
    assert load_pdf_certificates(certs_file.read_bytes()) == [key.certificate]
    assert not list(key_file.parent.glob(".tmp-*")) and not list(certs_file.parent.glob(".tmp-*"))
    before = (key_file.read_bytes(), certs_file.read_bytes())
    pdfkeys.ensure_pdf_signing_key()  # idempotent: an existing key is never replaced
    assert (key_file.read_bytes(), certs_file.read_bytes()) == before


def test_production_creates_a_key_only_when_an_operator_asks(pdf_files: tuple[Path, Path], settings: Any) -> None:
    settings.PRODUCTION = True
    with pytest.raises(pdfkeys.PdfSigningKeyMissing, match="pdf_keygen"):
        pdfkeys.pdf_signing_key()
    assert not pdf_files[0].exists() and not pdf_files[1].exists()
    out = StringIO()
    call_command("pdf_keygen", stdout=out)  # an operator's explicit command does create it
    assert pdf_files[0].exists() and out.getvalue().startswith("current ")


def test_half_a_key_pair_is_refused(pdf_files: tuple[Path, Path]) -> None:
    pdfkeys.ensure_pdf_signing_key()
    pdf_files[1].unlink()
    with pytest.raises(pdfkeys.PdfSigningKeyMissing, match="only one of"):
        pdfkeys.pdf_signing_key()


def test_a_key_whose_certificate_is_not_published_does_not_sign(pdf_files: tuple[Path, Path]) -> None:
    pdfkeys.ensure_pdf_signing_key()
    other = pdf_files[1].read_bytes()
    pdfkeys.pdf_signing_key_rotate()
    pdf_files[1].write_bytes(other)  # the old certificate only: the new key is not published
    with pytest.raises(pdfkeys.PdfSigningKeyMissing, match="not among the published"):
        pdfkeys.pdf_signing_key()


def test_rotation_keeps_older_pdfs_verifying(pdf_files: tuple[Path, Path], officer: Any) -> None:
    certificate = services.certificate_issue(request=verifying_request(ADA, officer), officer=officer)
    old = pdfkeys.pdf_signing_key().certificate
    out = StringIO()
    call_command("pdf_keygen", "--rotate", stdout=out)
    new = pdfkeys.pdf_signing_key().certificate
    assert new != old and pdfkeys.published_pdf_certificates() == [new, old]
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("new PDF signing key") and lines[1].startswith("current ") and lines[2].startswith("older ")
    pdf = certificate.pdf_file.read_bytes()
    signature = read_pdf_signature(pdf)
    assert signature is not None and signature.signer == old
    result = verify_certificate(pdf, signing.keyring(), pdf_certificates=pdfkeys.published_pdf_certificates())
    assert result.ok, result.reason
    assert not verify_certificate(pdf, signing.keyring(), pdf_certificates=[new]).ok  # the pin matters


def test_issue_refuses_to_write_an_unsigned_pdf(pdf_files: tuple[Path, Path], settings: Any, officer: Any) -> None:
    request = verifying_request(ADA, officer)
    signing.ensure_keys()  # the audit log's keys exist...
    settings.PRODUCTION = True  # ...but in production nothing creates a missing PDF signing key
    with pytest.raises(services.CertificateBuildError, match="cannot be signed: PDF_SIGNING_KEY_FILE"):
        services.certificate_issue(request=request, officer=officer)
    assert not list(Path(settings.ARTIFACT_ROOT).rglob("*.pdf"))


def test_export_writes_the_published_pdf_certificates(pdf_files: tuple[Path, Path], officer: Any, tmp_path: Path) -> None:
    request = verifying_request(ADA, officer)
    services.certificate_issue(request=request, officer=officer)
    out = StringIO()
    call_command("certificate_export", request.reference, "--out", str(tmp_path / "export"), "--pdf-certs", stdout=out)
    paths = [Path(line) for line in out.getvalue().split()]
    assert [p.name for p in paths][-1] == "pdf-signing.pem"
    assert load_pdf_certificates(paths[-1].read_bytes()) == pdfkeys.published_pdf_certificates()
    result = verify_certificate(paths[1].read_bytes(), signing.keyring(), pdf_certificates=load_pdf_certificates(paths[-1].read_bytes()))
    assert result.ok, result.reason
