"""The PDF signature of a certificate (PAdES B-B, pyHanko) and the offline verifier's PDF checks: an
untouched signed PDF verifies and poppler's pdfsig calls its signature valid; an edited, extended,
re-signed or unsigned copy is rejected with the check that caught it named. No Django."""

from __future__ import annotations

import copy
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from proofs.checks import VerificationResult
from proofs.offline import main, verify_certificate
from proofs.pdf import printed_disagreements, printed_facts, printed_text
from proofs.pdf_render import render_certificate_pdf_bytes
from proofs.pdfsign import (
    PdfKeyError,
    certificates_pem,
    generate_pdf_signing_key,
    load_pdf_certificates,
    load_pdf_signing_key,
    read_pdf_signature,
    sign_certificate_pdf,
)
from tests.certificates import pdftamper
from tests.certificates.factory import ORGANISATION, issue

REFERENCE = b"ER-2025-0042"


@pytest.fixture(scope="module")
def issued():
    return issue()


@pytest.fixture(scope="module")
def key():
    return generate_pdf_signing_key(ORGANISATION)


@pytest.fixture(scope="module")
def unsigned(issued) -> bytes:
    return render_certificate_pdf_bytes(issued.payload, issued.envelope)


@pytest.fixture(scope="module")
def signed(unsigned: bytes, key) -> bytes:
    return sign_certificate_pdf(unsigned, key, reason="Certificate of erasure ER-2025-0042", signer_name=ORGANISATION)


def verify(data: bytes, issued, key) -> VerificationResult:
    return verify_certificate(data, issued.ring, pdf_certificates=[key.certificate])


def check(result: VerificationResult, name: str):
    found = [c for c in result.checks if c.name == name]
    assert len(found) == 1, [c.name for c in result.checks]
    return found[0]


def pdfsig(path: Path) -> str:
    # Not skipped: ./scripts/services installs poppler-utils (pdfsig) wherever the suite runs.
    assert shutil.which("pdfsig"), "pdfsig (poppler-utils) is missing: run ./scripts/services as root"
    return subprocess.run(["pdfsig", str(path)], capture_output=True, text=True, timeout=60).stdout


# --- the untouched certificate ------------------------------------------------------------------------


def test_untouched_signed_pdf_verifies_with_every_pdf_check_named(signed: bytes, issued, key) -> None:
    result = verify(signed, issued, key)
    assert result.ok, result.reason
    names = [c.name for c in result.checks]
    assert names[:3] == ["pdf signature", "pdf coverage", "pdf signer"] and names[-1] == "pdf text"
    assert "envelope" in names and "timeline" in names  # the statement is checked as before
    assert "PAdES, sha256_ecdsa" in check(result, "pdf signature").detail
    assert "certificates of erasure" in check(result, "pdf signer").detail
    assert "verdict PASS" in check(result, "pdf text").detail
    assert "PDF signed by" in result.summary


def test_signature_is_pades_certification_over_the_whole_file(signed: bytes, key) -> None:
    signature = read_pdf_signature(signed)
    assert signature is not None
    assert (signature.count, signature.subfilter, signature.intact, signature.valid) == (1, "/ETSI.CAdES.detached", True, True)
    assert signature.covers_whole_file and signature.unsigned_bytes == 0 and signature.later_revisions == 0
    assert signature.signer == key.certificate and signature.mechanism == "sha256_ecdsa"
    assert b"/DocMDP" in signed  # a certification signature: readers flag any later change


def test_pdfsig_reports_the_untouched_signature_valid(signed: bytes, tmp_path: Path) -> None:
    path = tmp_path / "certificate.pdf"
    path.write_bytes(signed)
    report = pdfsig(path)
    assert "Signature Type: ETSI.CAdES.detached" in report
    assert "Signature Validation: Signature is Valid." in report
    assert "Total document signed" in report


# --- edited copies --------------------------------------------------------------------------------------


def test_rewritten_text_breaks_the_signature_for_the_verifier_and_for_pdfsig(
    signed: bytes, issued, key, tmp_path: Path
) -> None:
    edited = pdftamper.rewrite_text(signed, REFERENCE, b"ER-2025-0043")
    assert b"ER-2025-0043" in printed_text(edited).encode()  # the visible text really changed
    result = verify(edited, issued, key)
    assert not result.ok
    assert check(result, "pdf signature").ok is False
    assert "edited after it was signed" in result.reason
    assert result.summary.startswith("certificate NOT verified: the PDF was edited after it was signed")
    assert check(result, "envelope").ok  # the embedded statement itself is untouched, and says so
    text = check(result, "pdf text")
    assert not text.ok and "request reference" in text.detail
    path = tmp_path / "edited.pdf"
    path.write_bytes(edited)
    report = pdfsig(path)
    assert "Signature is Valid." not in report and "Digest Mismatch" in report


def test_incremental_update_that_edits_the_text_fails_coverage_and_text(
    signed: bytes, issued, key, tmp_path: Path
) -> None:
    edited = pdftamper.edit_text_incrementally(signed, b"Verdict: PASS", b"Verdict: FAIL")
    assert edited.startswith(signed)  # the signed revision is untouched
    result = verify(edited, issued, key)
    assert not result.ok
    assert check(result, "pdf signature").ok  # intact for the revision it covers...
    coverage = check(result, "pdf coverage")
    assert not coverage.ok and "1 incremental update(s)" in coverage.detail  # ...which is not the file
    assert result.reason == coverage.detail
    text = check(result, "pdf text")
    assert not text.ok and "'Verdict: FAIL' but the statement's verdict is pass" in text.detail
    path = tmp_path / "incremental.pdf"
    path.write_bytes(edited)
    assert "Not total document signed" in pdfsig(path)


def test_incremental_update_that_only_adds_text_fails_coverage(signed: bytes, issued, key) -> None:
    edited = pdftamper.add_text_incrementally(signed, "Revoked: this erasure was not carried out")
    assert "Revoked" in printed_text(edited)
    result = verify(edited, issued, key)
    assert not result.ok and not check(result, "pdf coverage").ok
    assert "after it was signed" in result.reason


def test_text_edited_and_signed_again_by_another_key_is_refused_by_the_pin(issued, key) -> None:
    # The genuine statement under a page that says the opposite verdict, signed with the forger's key.
    page = render_certificate_pdf_bytes(issued.payload, issued.envelope)
    page = pdftamper.rewrite_text(page, b"Verdict: PASS", b"Verdict: FAIL")
    forger = generate_pdf_signing_key(ORGANISATION)  # same names, different key
    forged = sign_certificate_pdf(page, forger, reason="x", signer_name=ORGANISATION)
    result = verify(forged, issued, key)
    assert not result.ok
    signer = check(result, "pdf signer")
    assert not signer.ok and "not a pinned PDF signing certificate" in signer.detail
    assert check(result, "pdf signature").ok and check(result, "pdf coverage").ok
    assert not check(result, "pdf text").ok


def test_text_edited_then_signed_with_the_genuine_key_still_fails_the_text_check(issued, key) -> None:
    """A stolen PDF key alone cannot make the page say what the log-signed statement does not."""
    page = pdftamper.rewrite_text(
        render_certificate_pdf_bytes(issued.payload, issued.envelope), b"2025.02.1-er42", b"2025.03.9-er42"
    )
    resigned = sign_certificate_pdf(page, key, reason="x", signer_name=ORGANISATION)
    result = verify(resigned, issued, key)
    assert [c.name for c in result.checks if not c.ok] == ["pdf text"]
    assert "model support-assistant-7b versions" in result.reason


def test_statement_intact_but_signature_removed_is_refused(signed: bytes, unsigned: bytes, issued, key) -> None:
    stripped = pdftamper.strip_signature(signed)
    assert read_pdf_signature(stripped) is None
    for data in (stripped, unsigned):
        result = verify(data, issued, key)
        assert not result.ok
        assert result.reason.startswith("no PDF signature")
        # Everything else passes: the statement and the printed text are genuine, only unprotected.
        assert [c.name for c in result.checks if not c.ok] == ["pdf signature"]
        assert check(result, "pdf text").ok


def test_pdf_without_pinned_certificate_is_not_verified(signed: bytes, issued) -> None:
    result = verify_certificate(signed, issued.ring)
    assert not result.ok and [c.name for c in result.checks if not c.ok] == ["pdf signer"]
    assert "--pdf-cert" in result.reason


def test_signature_dated_outside_the_certificate_validity_is_refused(unsigned: bytes, issued) -> None:
    expired = generate_pdf_signing_key(ORGANISATION, now=datetime.now(UTC) - timedelta(days=4000))
    result = verify(sign_certificate_pdf(unsigned, expired, reason="x", signer_name="x"), issued, expired)
    assert [c.name for c in result.checks if not c.ok] == ["pdf signer"]
    assert "outside the validity" in result.reason


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],
        lambda data: data.replace(b"/ByteRange", b"/ByteRangX", 1),
        lambda data: data[:-400] + b"\x00" * 400,
        lambda data: b"%PDF-1.7\n" + bytes(range(256)) * 20,
    ],
    ids=["truncated", "no-byte-range", "zeroed-tail", "garbage"],
)
def test_damaged_pdf_is_refused_without_raising(signed: bytes, issued, key, damage) -> None:
    result = verify(damage(signed), issued, key)
    assert not result.ok and result.reason
    assert result.checks[0].name == "pdf signature"


# --- the printed text against the statement -----------------------------------------------------------


def test_printed_facts_are_what_the_page_shows(unsigned: bytes, issued) -> None:
    facts = {fact.what: fact.text for fact in printed_facts(issued.payload)}
    assert facts["certificate id"] == "Certificate c5d0b3a2-2f61-4bb4-9d59-0e4f0d7a1e20"
    assert facts["request reference"] == "Request reference ER-2025-0042"
    assert facts["completed date"] == "Completed 06 Mar 2025, 12:30 UTC"
    assert facts["verdict"] == "Verdict: PASS"
    assert printed_disagreements(printed_text(unsigned), issued.payload) == []
    other = copy.deepcopy(issued.payload)
    other["timeline"]["completed"] = "2025-03-07T12:30:00.000000Z"
    assert printed_disagreements(printed_text(unsigned), other) == [
        "it does not show the statement's completed date ('Completed 07 Mar 2025, 12:30 UTC')"
    ]


# --- keys and certificates ------------------------------------------------------------------------------


def test_key_loads_only_with_its_published_certificate(key) -> None:
    other = generate_pdf_signing_key(ORGANISATION)
    published = load_pdf_certificates(certificates_pem([other.certificate, key.certificate]))
    assert load_pdf_signing_key(key.private_key_pem(), published).certificate == key.certificate
    with pytest.raises(PdfKeyError, match="not among the published"):
        load_pdf_signing_key(key.private_key_pem(), [other.certificate])
    rsa_pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(PdfKeyError, match="ECDSA P-256"):
        load_pdf_signing_key(rsa_pem, published)
    with pytest.raises(PdfKeyError, match="not a PEM file"):
        load_pdf_certificates(b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    assert "PRIVATE" not in repr(key)


# --- command line -----------------------------------------------------------------------------------------


def test_cli_verifies_the_signed_pdf_and_names_the_failing_check(signed: bytes, issued, key, tmp_path: Path, capsys) -> None:
    pem = tmp_path / "pdf-signing.pem"
    pem.write_bytes(certificates_pem([key.certificate]))
    vkey = issued.signer.public_key.to_vkey()
    good, edited = tmp_path / "certificate.pdf", tmp_path / "edited.pdf"
    good.write_bytes(signed)
    edited.write_bytes(pdftamper.rewrite_text(signed, REFERENCE, b"ER-2025-0043"))
    assert main([str(good), "--key", vkey, "--pdf-cert", str(pem)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("ok  PDF signature (PAdES") and "PDF signed by" in out[-1]
    assert main([str(edited), "--key", vkey, "--pdf-cert", str(pem)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("FAIL the PDF was edited after it was signed")
    assert out[-1].startswith("certificate NOT verified: the PDF was edited after it was signed")
    assert main([str(good), "--key", vkey]) == 1  # nothing pinned for the PDF
    assert "--pdf-cert" in capsys.readouterr().out.splitlines()[-1]
    bad = tmp_path / "bad.pem"
    bad.write_bytes(b"not a certificate")
    assert main([str(good), "--key", vkey, "--pdf-cert", str(bad)]) == 2
    assert "--pdf-cert" in capsys.readouterr().err


def test_signing_and_reading_work_while_an_event_loop_runs(unsigned: bytes, key) -> None:
    """pyHanko's synchronous API calls asyncio.run(), which refuses inside a running loop (an ASGI
    server, an async worker, or a test session whose browser driver keeps one running: CI failed so)."""
    import asyncio
    import threading

    async def inside_a_loop() -> object:
        signed = sign_certificate_pdf(unsigned, key, reason="r", signer_name=ORGANISATION)
        return read_pdf_signature(signed)

    # In a thread of its own: this test's thread may already run a loop (the browser tests' driver).
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(asyncio.run(inside_a_loop())))
    thread.start()
    thread.join()
    signature = result[0]
    assert signature is not None and signature.intact and signature.valid and signature.covers_whole_file
