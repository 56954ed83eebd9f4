"""Officer certificate pages: downloads of a request's certificate and the sign-off that completes the
request and issues it. The subject's downloads and the public verification page are in
compliance/public/certificate_views.py. Views parse, fetch through one helper, call one service."""

from __future__ import annotations

import logging

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_http_methods

from compliance.certificates import services
from compliance.certificates.models import Certificate
from compliance.common.downloads import error_page, private_download
from compliance.erasure.models import ErasureRequest
from compliance.erasure.permissions import can_decide, can_view
from compliance.erasure.services import ErasureError
from compliance.erasure.transitions import TransitionNotAllowed

logger = logging.getLogger(__name__)


def _download(request: HttpRequest, certificate: Certificate, kind: str) -> HttpResponse:
    try:
        return private_download(*services.certificate_file(certificate, kind))
    except services.CertificateFileDamaged as damaged:
        return error_page(request, 500, damaged.title, damaged.public_message)


def _officer_certificate(request: HttpRequest, reference: str) -> Certificate | HttpResponse:
    if not can_view(request.user):
        return error_page(request, 403, "Not allowed", "Your account has no portal role.")
    erasure_request = get_object_or_404(ErasureRequest, reference=reference)
    certificate = services.certificate_for(erasure_request)
    if certificate is None:
        return error_page(request, 404, "No certificate yet", f"{reference} has no certificate yet.")
    return certificate


@login_required
@require_http_methods(["GET", "HEAD"])
def officer_pdf(request: HttpRequest, reference: str) -> HttpResponse:
    found = _officer_certificate(request, reference)
    return found if isinstance(found, HttpResponse) else _download(request, found, "pdf")


@login_required
@require_http_methods(["GET", "HEAD"])
def officer_json(request: HttpRequest, reference: str) -> HttpResponse:
    found = _officer_certificate(request, reference)
    return found if isinstance(found, HttpResponse) else _download(request, found, "json")


@login_required
def sign_off(request: HttpRequest, reference: str) -> HttpResponse:
    """POST from the request page: complete the request and issue its certificate."""
    if request.method != "POST":
        response = error_page(
            request, 405, "Use the sign-off button",
            "Signing off completes the request and issues its certificate; it is done with the button on the request page.",
        )  # fmt: skip
        response["Allow"] = "POST"
        return response
    erasure_request = get_object_or_404(ErasureRequest, reference=reference)
    if not can_decide(request.user):
        return error_page(request, 403, "Not allowed", "Only privacy officers can sign off a request and issue its certificate.")
    try:
        certificate = services.certificate_issue(request=erasure_request, officer=request.user)  # type: ignore[arg-type]
    except (ErasureError, TransitionNotAllowed) as exc:
        messages.error(request, str(exc))
        return redirect("portal:detail", reference=reference)
    messages.success(
        request,
        f"{reference} is completed. Certificate {certificate.certificate_id} was issued and the subject was notified.",
    )
    return redirect("portal:detail", reference=reference)
