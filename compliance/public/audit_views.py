"""Public, unauthenticated endpoints of the audit log: its keys and latest checkpoint."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse

from compliance.audit import services, signing


def public_keys(request: HttpRequest) -> HttpResponse:
    """Every current and retired public key, stable URL, for offline verifiers to pin."""
    response = JsonResponse(signing.keyring().to_json())
    response["Cache-Control"] = "public, max-age=300"
    return response


def latest_checkpoint(request: HttpRequest) -> HttpResponse:
    checkpoint = services.latest_checkpoint()
    if checkpoint is None:
        return HttpResponse("no checkpoint yet\n", status=404, content_type="text/plain; charset=utf-8")
    return HttpResponse(checkpoint.note, content_type="text/plain; charset=utf-8")
