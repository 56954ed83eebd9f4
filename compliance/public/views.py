"""Public pages for data subjects: no account, no logic (services do the work)."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from compliance.certificates.selectors import certificate_log_coverage
from compliance.common.net import client_ip
from compliance.common.ratelimit import RateLimited
from compliance.erasure import progress, selectors, services
from compliance.erasure.models import Status
from compliance.erasure.services import ErasureError, SubjectInput, TokenInvalid
from compliance.erasure.transitions import TransitionNotAllowed


def home(request: HttpRequest) -> HttpResponse:
    return render(request, "public/home.html")


@require_http_methods(["GET", "POST"])
def request_form(request: HttpRequest) -> HttpResponse:
    from compliance.public.forms import ErasureRequestForm

    if request.method == "GET":
        return render(request, "public/request_form.html", {"form": ErasureRequestForm()})
    form = ErasureRequestForm(request.POST)
    if not form.is_valid():
        return render(request, "public/request_form.html", {"form": form}, status=400)
    try:
        services.erasure_request_submit(
            subject=SubjectInput(**form.subject_data()),
            ground=form.cleaned_data["ground"],
            channel="web",
            client_ip=client_ip(request),
        )
    except RateLimited as exc:
        response = render(request, "public/error.html", {"title": "Too many requests", "message": str(exc)}, status=429)
        response["Retry-After"] = str(exc.retry_after_s)
        return response
    # The same page whether the request is new or a duplicate: it reveals nothing about others.
    return redirect("public:sent")


def sent(request: HttpRequest) -> HttpResponse:
    return render(request, "public/sent.html", {"ttl_hours": settings.IDENTITY_TOKEN_TTL_HOURS})


@require_http_methods(["GET", "POST"])
def confirm(request: HttpRequest, token: str) -> HttpResponse:
    # GET only shows a button: mail scanners that prefetch links must not consume the token.
    if request.method == "GET":
        return render(request, "public/confirm.html", {"token": token})
    try:
        erasure_request = services.identity_confirm(token=token)
    except TokenInvalid as exc:
        return render(request, "public/error.html", {"title": "Link not valid", "message": str(exc)}, status=400)
    return redirect("public:status", token=services.status_token(erasure_request))


def status(request: HttpRequest, token: str) -> HttpResponse:
    try:
        erasure_request = services.request_from_status_token(token)
    except TokenInvalid as exc:
        return render(request, "public/error.html", {"title": "Link not valid", "message": str(exc)}, status=404)
    if erasure_request.status == Status.PURGED:
        # Nothing about the person is left to show: a neutral page, no reference, no history.
        return render(request, "public/error.html", {
            "title": "Request closed",
            "message": "This request is closed and the personal data it held has been destroyed, as our retention "
                       "policy requires. If you kept your certificate of erasure, it stays valid and verifiable.",
        })
    certificate = getattr(erasure_request, "certificate", None)
    timeline = selectors.timeline(erasure_request)
    return render(
        request,
        "public/status.html",
        {
            "req": erasure_request,
            "token": token,
            "timeline": progress.subject_timeline(timeline),
            "progress": progress.subject_progress(erasure_request, timeline),
            "certificate_meaning": progress.CERTIFICATE_MEANING,
            "can_withdraw": erasure_request.is_open,
            "certificate": certificate,
            "certificate_log": certificate_log_coverage(certificate) if certificate is not None else None,
            "authority": settings.SUPERVISORY_AUTHORITY,
            "Status": Status,
        },
    )


@require_http_methods(["POST"])
def withdraw(request: HttpRequest, token: str) -> HttpResponse:
    try:
        erasure_request = services.request_from_status_token(token)
        services.erasure_request_withdraw(request=erasure_request)
    except TokenInvalid as exc:
        return render(request, "public/error.html", {"title": "Link not valid", "message": str(exc)}, status=404)
    except (TransitionNotAllowed, ErasureError):
        return render(
            request, "public/error.html", {"title": "Cannot withdraw", "message": "This request can no longer be withdrawn."}, status=409
        )
    return redirect("public:status", token=token)


def healthz(request: HttpRequest) -> HttpResponse:
    """Liveness and readiness for the load balancer and compose: the database answers and the cache
    answers. 200 {"ok": true}, or 503 naming what failed (never an exception text)."""
    from django.core.cache import cache
    from django.db import connection
    from django.http import JsonResponse

    failed = []
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:  # noqa: BLE001 - reported as a failed dependency
        failed.append("database")
    try:
        cache.set("healthz", "1", timeout=5)
        if cache.get("healthz") != "1":
            failed.append("cache")
    except Exception:  # noqa: BLE001
        failed.append("cache")
    response = JsonResponse({"ok": not failed, "failed": failed}, status=503 if failed else 200)
    response["Cache-Control"] = "no-store"
    return response
