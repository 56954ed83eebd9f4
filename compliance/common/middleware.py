"""Refuse oversized bodies before any view reads them.

Django enforces DATA_UPLOAD_MAX_MEMORY_SIZE only when a view reads request.body or POST; DRF's
parsers read the stream directly and would accept any size. This middleware checks the declared
Content-Length for every path, with larger limits for the two endpoints that take documents.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from compliance.common.errors import _respond


def _limit_for(path: str) -> int:
    if path.startswith(("/api/v1/guard",)):
        return int(settings.GUARD_MAX_BODY_BYTES)
    if path.startswith(("/api/v1/certificates/verify", "/verify/")):
        return int(settings.CERTIFICATE_UPLOAD_MAX_BYTES) + 64 * 1024  # multipart framing
    return int(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)


class BodySizeLimitMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        declared = request.META.get("CONTENT_LENGTH") or "0"
        try:
            length = int(declared)
        except ValueError:
            return _respond(request, 400, "The Content-Length header is not a number.")
        if length > _limit_for(request.path):
            return _respond(request, 413, "The request body is too large.")
        return self.get_response(request)


class NoStoreMiddleware:
    """`Cache-Control: no-store` on every response that does not say how it may be cached.

    Pages with personal data (the officer's portal, the subject's status page, API answers) must not
    stay in a shared or browser cache. The few public, person-free documents (key rings, checkpoints,
    the verification page's certificates) set their own caching; static files never reach this
    middleware (WhiteNoise answers them first).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if not response.has_header("Cache-Control"):
            response["Cache-Control"] = "no-store"
        return response
