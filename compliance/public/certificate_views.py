"""Public certificate pages: the subject's downloads (through the private status link), the
verification page and the published PDF signing certificates. The officer's downloads and sign-off are
in compliance/portal/certificate_views.py. Views parse, fetch through one helper, call one service."""

from __future__ import annotations

import json
import logging
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_http_methods

from compliance.audit import signing
from compliance.certificates import pdfkeys, services
from compliance.certificates.models import Certificate
from compliance.common.downloads import error_page, private_download
from compliance.erasure.services import TokenInvalid, request_from_status_token
from proofs.canonical import JSONLimitError, loads_limited
from proofs.checks import CertificateFormatError, VerificationResult
from proofs.offline import extract_certificate_from_pdf, verify_certificate
from proofs.pdf import exact_facts
from proofs.pdfsign import certificate_fingerprint, describe_certificate

logger = logging.getLogger(__name__)


def _download(request: HttpRequest, certificate: Certificate, kind: str) -> HttpResponse:
    try:
        return private_download(*services.certificate_file(certificate, kind))
    except services.CertificateFileDamaged as damaged:
        return error_page(request, 500, damaged.title, damaged.public_message)


# --- data subject (through the private status link) ---------------------------------------------


def _subject_certificate(request: HttpRequest, token: str) -> Certificate | HttpResponse:
    try:
        erasure_request = request_from_status_token(token)
    except TokenInvalid as exc:
        return error_page(request, 404, "Link not valid", str(exc))
    certificate = services.certificate_for(erasure_request)
    if certificate is None:
        return error_page(request, 404, "No certificate yet", "A certificate is issued when your request is completed.")
    return certificate


@require_http_methods(["GET", "HEAD"])
def subject_pdf(request: HttpRequest, token: str) -> HttpResponse:
    found = _subject_certificate(request, token)
    return found if isinstance(found, HttpResponse) else _download(request, found, "pdf")


@require_http_methods(["GET", "HEAD"])
def subject_json(request: HttpRequest, token: str) -> HttpResponse:
    found = _subject_certificate(request, token)
    return found if isinstance(found, HttpResponse) else _download(request, found, "json")


# --- public verification -----------------------------------------------------------------------------


class UploadRejected(ValueError):
    """The upload is not something we can verify; the message says what to upload instead."""


def read_certificate_upload(data: bytes) -> bytes | dict[str, Any]:
    """Sniff an uploaded file: a certificate PDF (returned whole: its signature and printed text are
    checked too) or a JSON envelope object."""
    if data[:5] == b"%PDF-":
        try:
            extract_certificate_from_pdf(data)
        except CertificateFormatError as exc:
            raise UploadRejected(f"This PDF is not a certificate of erasure: {exc}.") from None
        return data
    try:
        document = loads_limited(data)
    except JSONLimitError as exc:
        raise UploadRejected(f"This file is not a certificate: {exc}.") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UploadRejected(
            "This file is neither a certificate PDF nor certificate JSON. Upload the .pdf or .json file you received."
        ) from None
    if not isinstance(document, dict):
        raise UploadRejected("This JSON file is not a certificate (it must be a JSON object with a signature envelope).")
    return data


VERIFY_TEMPLATE = "certificate/verify.html"  # public/verify.html plus the "Exact erasure" card


def verification_context(result: VerificationResult) -> dict[str, Any]:
    # What the certificate states is shown only once every check passed.
    payload = result.payload if result.ok else None
    exact = payload["unlearning"].get("exact") if payload is not None else None
    facts = exact_facts(payload["unlearning"]) if payload is not None and exact else []
    return {"result": result, "payload": payload, "exact_facts": facts}


@require_http_methods(["GET", "POST"])
def verify_page(request: HttpRequest) -> HttpResponse:
    """Upload a certificate (JSON or PDF) and see every check, against the log's published keys."""
    limit = settings.CERTIFICATE_UPLOAD_MAX_BYTES
    pdf_certificates = pdfkeys.published_pdf_certificates()
    context: dict[str, Any] = {
        "limit_kb": limit // 1024,
        "keys": [entry.to_json() for entry in signing.keyring().entries],
        "pdf_certificates": [
            {"name": describe_certificate(c), "sha256": certificate_fingerprint(c)} for c in pdf_certificates
        ],
    }
    if request.method == "GET":
        return render(request, VERIFY_TEMPLATE, context)

    def rejected(message: str, status: int = 400) -> HttpResponse:
        return render(request, VERIFY_TEMPLATE, {**context, "error": message}, status=status)

    # Refuse an oversized body before Django spools it (the multipart overhead is small).
    declared = request.META.get("CONTENT_LENGTH") or "0"
    if declared.isdigit() and int(declared) > limit + 16 * 1024:
        return rejected(f"The file is larger than {limit // 1024} KB; a certificate is much smaller.", 413)
    if not (request.content_type or "").startswith("multipart/form-data"):
        return rejected("Upload the certificate with the form on this page.")
    upload = request.FILES.get("certificate")
    if upload is None:
        return rejected("Choose the certificate file (.pdf or .json) to verify.")
    if upload.size is None or upload.size > limit:
        return rejected(f"The file is larger than {limit // 1024} KB; a certificate is much smaller.", 413)
    data = upload.read(limit + 1)
    if not data:
        return rejected("The file is empty.")
    try:
        certificate = read_certificate_upload(data)
    except UploadRejected as exc:
        return rejected(str(exc))
    result = verify_certificate(certificate, signing.keyring(), pdf_certificates=pdf_certificates)
    return render(request, VERIFY_TEMPLATE, {**context, **verification_context(result), "filename": upload.name})


@require_http_methods(["GET", "HEAD"])
def pdf_signing_certificates(request: HttpRequest) -> HttpResponse:
    """Every published PDF signing certificate (PEM), stable URL, for `erasure-verify --pdf-cert` to pin."""
    response = HttpResponse(pdfkeys.published_pdf_certificates_pem(), content_type="application/x-pem-file")
    response["Content-Disposition"] = 'inline; filename="pdf-signing.pem"'
    response["Cache-Control"] = "public, max-age=300"
    return response
