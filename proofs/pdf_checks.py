"""Offline checks of a certificate PDF as a document: its PAdES signature (by a pinned certificate,
covering the whole file) and that its printed text says what the embedded certificate says."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cryptography import x509

from proofs.checks import Check, VerificationResult
from proofs.pdf import printed_disagreements, printed_facts, printed_text
from proofs.pdfsign import (
    PADES_SUBFILTER,
    PdfSignatureError,
    certificate_fingerprint,
    describe_certificate,
    read_pdf_signature,
)


def pdf_source(source: Any) -> bytes | None:
    if isinstance(source, bytes | bytearray) and bytes(source[:5]) == b"%PDF-":
        return bytes(source)
    return None


def pdf_signature_checks(
    data: bytes, pinned: Sequence[x509.Certificate], result: VerificationResult
) -> str | None:
    """"pdf signature", "pdf coverage", "pdf signer"; recorded, never stopping. Returns the pinned
    signer's description when all three passed."""

    def check(name: str, ok: bool, detail: str) -> None:
        result.checks.append(Check(name, ok, detail))

    try:
        signature = read_pdf_signature(data)
    except PdfSignatureError as exc:
        check("pdf signature", False, f"PDF signature: {exc}")
        return None
    if signature is None:
        check(
            "pdf signature",
            False,
            "no PDF signature: this PDF is not signed, so its printed text is not protected (certificates "
            "issued before PDF signing are not); only its embedded certificate.json, checked below, is evidence",
        )
        return None
    if signature.count != 1:
        check("pdf signature", False, f"the PDF carries {signature.count} signatures; a certificate carries exactly one")
        return None
    if signature.subfilter != PADES_SUBFILTER:
        check("pdf signature", False, f"the PDF signature is {signature.subfilter or 'untyped'}, not PAdES ({PADES_SUBFILTER})")
        return None
    if not signature.intact:
        check(
            "pdf signature",
            False,
            "the PDF was edited after it was signed: the signed bytes no longer match the signature's digest",
        )
        return None
    if not signature.valid:
        check("pdf signature", False, "the PDF signature value does not verify with the signer's certificate")
        return None
    signed_at = signature.signed_at.strftime("%Y-%m-%dT%H:%M:%SZ") if signature.signed_at else "at an unstated time"
    check(
        "pdf signature",
        True,
        f"PDF signature (PAdES, {signature.mechanism}) in field {signature.field_name} is intact, signed {signed_at}",
    )

    if signature.covers_whole_file:
        check("pdf coverage", True, "the PDF signature covers the whole file: nothing was added after signing")
    else:
        check(
            "pdf coverage",
            False,
            f"the PDF was changed after it was signed: {signature.later_revisions} incremental update(s), "
            f"{signature.unsigned_bytes} bytes, follow the signed revision, and no signature covers what they change",
        )

    signer = signature.signer
    who = describe_certificate(signer) if signer is not None else "an unnamed signer"
    pinned_fingerprints = {certificate_fingerprint(c) for c in pinned}
    if signer is None or not pinned:
        check(
            "pdf signer",
            False,
            f"the PDF is signed by {who}, but no PDF signing certificate is pinned: pin the issuer's published "
            "certificates (erasure-verify --pdf-cert FILE)",
        )
    elif certificate_fingerprint(signer) not in pinned_fingerprints:
        check("pdf signer", False, f"the PDF is signed by {who}, which is not a pinned PDF signing certificate")
    elif signature.signed_at is not None and not (
        signer.not_valid_before_utc <= signature.signed_at <= signer.not_valid_after_utc
    ):
        check("pdf signer", False, f"the PDF was signed at {signed_at}, outside the validity of its certificate {who}")
    else:
        check("pdf signer", True, f"the PDF is signed by the pinned certificate {who}")
    if all(c.ok for c in result.checks if c.name.startswith("pdf ")):
        return who
    return None


def pdf_text_check(data: bytes, payload: Mapping[str, Any]) -> Check:
    """"pdf text": the printed text agrees with the statement (which the caller authenticated)."""
    try:
        text = printed_text(data)
    except Exception as exc:  # noqa: BLE001 - pypdf raises many types on hostile input; all mean "unreadable"
        return Check("pdf text", False, f"the printed text cannot be read ({type(exc).__name__}: {exc})"[:300])
    problems = printed_disagreements(text, dict(payload))
    if problems:
        more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        return Check(
            "pdf text", False, "the printed text disagrees with the signed statement: " + "; ".join(problems[:3]) + more
        )
    return Check(
        "pdf text",
        True,
        f"the printed text agrees with the signed statement ({len(printed_facts(dict(payload)))} key facts: "
        f"certificate id, request reference, dates, versions, verdict {payload['verification']['verdict'].upper()})",
    )


def pdf_document_checks(
    data: bytes, payload: Mapping[str, Any], pdf_certificates: Sequence[x509.Certificate]
) -> list[Check]:
    """The PDF's own checks ("pdf signature", "pdf coverage", "pdf signer", "pdf text") against a
    statement the caller has verified already: the issuer's self-check of a PDF it just signed."""
    result = VerificationResult()
    pdf_signature_checks(data, pdf_certificates, result)
    result.checks.append(pdf_text_check(data, payload))
    return result.checks


