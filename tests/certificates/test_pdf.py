"""The certificate PDF: renders (pdftoppm), embeds the issued JSON byte for byte, verifies offline,
states the threat model (v2) and still renders a v1 certificate."""

from __future__ import annotations

import base64
import copy
import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from pypdf import PdfReader

from proofs.checks import CertificateFormatError
from proofs.dsse import EnvelopeError
from proofs.keys import KeyRing
from proofs.offline import extract_certificate_from_pdf, main, verify_certificate
from proofs.pdf_render import render_certificate_pdf, render_certificate_pdf_bytes
from proofs.pdfsign import certificates_pem, generate_pdf_signing_key, sign_certificate_pdf
from tests.certificates.factory import THREAT_MODEL_NOT_RECORDED, V1_CERTIFICATE, fixed_signer, issue


@pytest.fixture(scope="module")
def issued():
    return issue()


@pytest.fixture(scope="module")
def pdf_key():
    return generate_pdf_signing_key("Example Language Models GmbH")


@pytest.fixture(scope="module")
def pdf_path(issued, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pdf") / "certificate.pdf"
    assert render_certificate_pdf(issued.payload, issued.envelope, out) == out
    return out


def pdf_text(data: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)


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


def test_pdf_states_the_threat_model(pdf_path: Path) -> None:
    text = pdf_text(pdf_path.read_bytes())
    section = text[text.index("Threat model") : text.index("Evidence")]
    for expected in (
        "candidate_rank, direct_probe, membership_inference, quantization, relearning",
        "up to 1 per attack",
        "20 samples per prompt",
        "true value among 999 candidates",
        "full:50:1e-3, full:100:1e-3, lora:100:1e-3",
        "Relearning data\n1330 texts without the subjects, 1050 of them from the training corpus",
        "int8, int4",
        "10 people the model never saw, held out from training",
        "Mean z: subjects vs control (band)",
        "candidate_rank\n-0.21 vs 0.05 (band 1.3)\n0.0 vs 0.0\n0.0 vs -",  # no control top-10 figure: "-"
        "relearning\n0.4 vs 0.05 (band 1.3)\n0.0 vs 0.0\n0.1 vs 0.033",
    ):
        assert expected in section, expected
    # The adaptive check is listed with no base-model value, and the mark is explained.
    assert "relearning.rank1_share\n-\n0.0\n0.05\npassed" in text
    assert "Before -: not run on the base model" in text


def test_pdf_of_a_report_without_threat_model_says_none_recorded() -> None:
    bare = issue(threat_model=THREAT_MODEL_NOT_RECORDED)
    text = pdf_text(render_certificate_pdf_bytes(bare.payload, bare.envelope))
    section = text[text.index("Threat model") : text.index("Evidence")]
    assert "Attack families\nnone recorded" in section and "Never-seen control\nnone recorded" in section
    assert "Sampling budget\n-" in section and "Mean z" not in section
    assert "Relearning data\n-" in section  # v5 with nothing recorded


def test_v1_certificate_still_renders_and_says_it_states_no_threat_model() -> None:
    envelope = V1_CERTIFICATE.read_bytes()
    payload = json.loads(base64.b64decode(json.loads(envelope)["payload"]))
    data = render_certificate_pdf_bytes(payload, envelope)
    text = pdf_text(data)
    assert "This certificate (erasure-certificate/v1) does not state the threat model." in text
    assert "verbatim_extraction\n0.62" in text
    signer = fixed_signer("erasure.example.org/audit-2025", 1)
    key = generate_pdf_signing_key("Example Language Models GmbH")
    signed = sign_certificate_pdf(data, key, reason="v1", signer_name="Example Language Models GmbH")
    result = verify_certificate(signed, KeyRing.of([signer.public_key]), pdf_certificates=[key.certificate])
    assert result.ok, result.reason
    assert "verdict PASS" in [c for c in result.checks if c.name == "pdf text"][0].detail


@pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="poppler-utils not installed")
def test_pdf_rasterises_to_png(pdf_path: Path, tmp_path: Path) -> None:
    subprocess.run(["pdftoppm", "-r", "40", "-png", str(pdf_path), str(tmp_path / "page")], check=True)
    pages = sorted(tmp_path.glob("page*.png"))
    assert 1 <= len(pages) <= 2
    assert pages[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pages[0].stat().st_size > 5000


def test_offline_verifier_accepts_the_signed_pdf_and_not_the_unsigned_rendering(
    issued, pdf_path: Path, pdf_key, tmp_path: Path, capsys
) -> None:
    signed = tmp_path / "signed.pdf"
    signed.write_bytes(sign_certificate_pdf(pdf_path.read_bytes(), pdf_key, reason="test", signer_name="test"))
    pem = tmp_path / "pdf-signing.pem"
    pem.write_bytes(certificates_pem([pdf_key.certificate]))
    assert verify_certificate(signed.read_bytes(), issued.ring, pdf_certificates=[pdf_key.certificate]).ok
    assert main([str(signed), "--key", issued.signer.public_key.to_vkey(), "--pdf-cert", str(pem)]) == 0
    assert "at size 25; PDF signed by" in capsys.readouterr().out.splitlines()[-1]
    # The rendering alone carries a valid statement but no PDF signature: not verified, and it says why.
    unsigned = verify_certificate(pdf_path.read_bytes(), issued.ring, pdf_certificates=[pdf_key.certificate])
    assert not unsigned.ok and unsigned.reason.startswith("no PDF signature")
    assert main([str(pdf_path), "--key", issued.signer.public_key.to_vkey(), "--pdf-cert", str(pem)]) == 1


def test_pdf_without_attachment_or_with_a_foreign_envelope_is_refused(issued, tmp_path: Path) -> None:
    from reportlab.pdfgen import canvas

    plain = tmp_path / "plain.pdf"
    page = canvas.Canvas(str(plain))
    page.drawString(100, 750, "Certificate of erasure")
    page.save()
    with pytest.raises(CertificateFormatError, match="embeds no certificate.json"):
        extract_certificate_from_pdf(plain.read_bytes())
    result = verify_certificate(plain.read_bytes(), issued.ring)
    assert not result.ok and "embeds no certificate.json" in result.checks[-1].detail
    truncated = verify_certificate(plain.read_bytes()[: len(plain.read_bytes()) // 2], issued.ring)
    assert not truncated.ok and truncated.checks[-1].name == "envelope"
    # Rendering refuses an envelope that carries a different payload than the one printed.
    other = copy.deepcopy(issued.payload)
    other["request"]["reference"] = "ER-2025-9999"
    with pytest.raises(EnvelopeError, match="different payload"):
        render_certificate_pdf_bytes(other, issued.envelope)
