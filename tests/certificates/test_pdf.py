"""The certificate PDF: renders (pdftoppm), embeds the issued JSON byte for byte, verifies offline."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path

import pytest
from pypdf import PdfReader

from compliance.certificates.envelope import EnvelopeError
from compliance.certificates.offline import (
    CertificateFormatError,
    extract_certificate_from_pdf,
    main,
    verify_certificate,
)
from compliance.certificates.pdf import render_certificate_pdf, render_certificate_pdf_bytes
from tests.certificates.factory import issue


@pytest.fixture(scope="module")
def issued():
    return issue()


@pytest.fixture(scope="module")
def pdf_path(issued, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pdf") / "certificate.pdf"
    assert render_certificate_pdf(issued.payload, issued.envelope, out) == out
    return out


def test_pdf_embeds_the_issued_json_byte_for_byte(issued, pdf_path: Path) -> None:
    reader = PdfReader(pdf_path)
    assert list(reader.attachments) == ["certificate.json"]
    assert extract_certificate_from_pdf(pdf_path.read_bytes()) == issued.envelope
    assert 1 <= len(reader.pages) <= 2
    assert not list(pdf_path.parent.glob(".*.tmp")), "atomic write left a temporary file"


def test_pdf_text_says_what_a_regulator_needs(issued, pdf_path: Path) -> None:
    text = "\n".join(page.extract_text() for page in PdfReader(pdf_path).pages)
    for expected in (
        "Certificate of erasure",
        "Example Language Models GmbH",
        "ER-2025-0042",
        "support-assistant-7b",
        "2025.02.1-er42",
        "verbatim_extraction",
        "Verdict: PASS",
        "erasure-verify",
        "\u2014",  # the em dash survives in the standard Helvetica encoding
    ):
        assert expected in text, expected


@pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="poppler-utils not installed")
def test_pdf_rasterises_to_png(pdf_path: Path, tmp_path: Path) -> None:
    subprocess.run(["pdftoppm", "-r", "40", "-png", str(pdf_path), str(tmp_path / "page")], check=True)
    pages = sorted(tmp_path.glob("page*.png"))
    assert 1 <= len(pages) <= 2
    assert pages[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pages[0].stat().st_size > 5000


def test_offline_verifier_accepts_the_pdf(issued, pdf_path: Path, capsys) -> None:
    assert verify_certificate(pdf_path.read_bytes(), issued.ring).ok
    assert main([str(pdf_path), "--key", issued.signer.public_key.to_vkey()]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith("at size 25")


def test_pdf_without_attachment_or_with_a_foreign_envelope_is_refused(issued, tmp_path: Path) -> None:
    from reportlab.pdfgen import canvas

    plain = tmp_path / "plain.pdf"
    page = canvas.Canvas(str(plain))
    page.drawString(100, 750, "Certificate of erasure")
    page.save()
    with pytest.raises(CertificateFormatError, match="embeds no certificate.json"):
        extract_certificate_from_pdf(plain.read_bytes())
    result = verify_certificate(plain.read_bytes(), issued.ring)
    assert not result.ok and "embeds no certificate.json" in result.reason
    truncated = verify_certificate(plain.read_bytes()[: len(plain.read_bytes()) // 2], issued.ring)
    assert not truncated.ok and truncated.checks[-1].name == "envelope"
    # Rendering refuses an envelope that carries a different payload than the one printed.
    other = copy.deepcopy(issued.payload)
    other["request"]["reference"] = "ER-2025-9999"
    with pytest.raises(EnvelopeError, match="different payload"):
        render_certificate_pdf_bytes(other, issued.envelope)
