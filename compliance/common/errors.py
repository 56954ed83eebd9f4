"""Error pages: HTML for people, RFC 9457 problem+json under /api/. Never a stack trace, never PII."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string

_TITLES = {
    400: "Bad request", 403: "Not allowed", 404: "Not found", 405: "Method not allowed", 413: "Request too large",
    429: "Too many attempts", 500: "Server error",
}


def _respond(request: HttpRequest, status: int, message: str) -> HttpResponse:
    if request.path.startswith("/api/"):
        return JsonResponse(
            {"type": "about:blank", "title": _TITLES.get(status, "Error"), "status": status, "detail": message},
            status=status,
            content_type="application/problem+json",
        )
    # The organisation's name comes in directly: the page must render even where the request's own
    # context (processors, session, user) is what failed, so it is rendered without the request.
    context = {"title": _TITLES.get(status, "Error"), "message": message, "ORGANISATION_NAME": settings.ORGANISATION_NAME}
    html = render_to_string("public/error.html", context, request=None)
    return HttpResponse(html, status=status)


def bad_request(request: HttpRequest, exception: Any = None) -> HttpResponse:
    return _respond(request, 400, "The request could not be understood (malformed or too large).")


def forbidden(request: HttpRequest, exception: Any = None) -> HttpResponse:
    return _respond(request, 403, "You are not allowed to do this.")


def not_found(request: HttpRequest, exception: Any = None) -> HttpResponse:
    return _respond(request, 404, "There is nothing here.")


def server_error(request: HttpRequest) -> HttpResponse:
    return _respond(request, 500, "Something went wrong on our side. Nothing was changed; please try again.")


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    return _respond(request, 403, "The form was missing its security token (CSRF). Reload the page and try again.")


def locked_out(request: HttpRequest, original_response: Any = None, credentials: Any = None) -> HttpResponse:
    """django-axes: a login locked after too many failures (the account and address are not named)."""
    minutes = int(float(settings.AXES_COOLOFF_TIME) * 60)
    response = _respond(request, 429, f"Too many failed logins. This login is locked for {minutes} minutes.")
    response["Retry-After"] = str(minutes * 60)
    return response
