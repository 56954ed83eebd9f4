"""E-mails to the data subject, rendered from templates/emails/<kind>.txt (first line = subject).

Sent after the transaction commits, so a rolled-back change never mails anyone. The address is
unsealed only here, at send time; it never travels through the broker or the logs. A failing mail
server does not lose the request: the failure is logged (without the address) and the officer can
resend from the portal.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.mail import EmailMessage
from django.db import transaction
from django.template.loader import render_to_string
from django.urls import reverse

from compliance.erasure.models import ErasureRequest, Status
from compliance.erasure.progress import HEADLINES
from compliance.erasure.tokens import status_token

logger = logging.getLogger(__name__)

KINDS = frozenset({"confirm_email", "withdrawn", "approved", "refused", "extended", "completed", "guard_only"})


def _status_url(request: ErasureRequest) -> str:
    return settings.SITE_URL + reverse("public:status", args=[status_token(request)])


def render(kind: str, request: ErasureRequest, **context: Any) -> tuple[str, str]:
    if kind not in KINDS:
        raise ValueError(f"unknown notice kind {kind!r}")
    ctx = {
        "request": request,
        # The same words as the status page's headline (compliance.erasure.progress).
        "headline": HEADLINES.get(Status(request.status), ""),
        "full_name": request.subject().full_name,
        "status_url": _status_url(request),
        "organisation": settings.ORGANISATION_NAME,
        "authority": settings.SUPERVISORY_AUTHORITY,
        "site_url": settings.SITE_URL,
        **context,
    }
    if "token" in context:
        ctx["confirm_url"] = settings.SITE_URL + reverse("public:confirm", args=[context["token"]])
    text = render_to_string(f"emails/{kind}.txt", ctx)
    subject, _, body = text.strip().partition("\n")
    return subject.strip(), body.strip() + "\n"


def send(kind: str, request: ErasureRequest, **context: Any) -> bool:
    request.refresh_from_db()
    try:
        subject, body = render(kind, request, **context)
        address = request.subject().emails[0]
        EmailMessage(subject=subject, body=body, from_email=settings.DEFAULT_FROM_EMAIL, to=[address]).send()
        return True
    except Exception:  # a mail outage must not undo the committed change; the officer can resend
        logger.exception("notice %s for request %s could not be sent", kind, request.reference)
        return False


def send_after_commit(kind: str, request: ErasureRequest, **context: Any) -> None:
    transaction.on_commit(lambda: send(kind, request, **context))


def erase_spooled_mail(request: ErasureRequest) -> int:
    """Delete the request's messages from the mail spool (the file backend of the embedded set-up and
    a local compose stack writes each message to its own file under EMAIL_FILE_PATH). With SMTP the
    messages left this service; the mail server's retention applies. Returns how many were deleted."""
    folder = getattr(settings, "EMAIL_FILE_PATH", None)
    if settings.EMAIL_BACKEND != "django.core.mail.backends.filebased.EmailBackend" or not folder:
        return 0
    from pathlib import Path

    deleted = 0
    marker = request.reference.encode()
    for path in Path(folder).glob("*"):
        try:
            if path.is_file() and marker in path.read_bytes():
                path.unlink()
                deleted += 1
        except OSError:
            logger.warning("mail spool file %s could not be removed", path.name)
    return deleted
