"""Deadline reminders to the officers: what is overdue and what is due within DUE_SOON_DAYS."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.urls import reverse

from compliance.erasure import selectors


def send_deadline_reminders() -> int:
    """One digest e-mail per officer. Returns the number of requests listed."""
    overdue = list(selectors.queue(overdue=True))
    soon = list(selectors.queue(due_soon=True))
    if not overdue and not soon:
        return 0
    lines = [f"OVERDUE  {r.reference}  due {r.effective_due}  {r.status}" for r in overdue]
    lines += [f"due soon {r.reference}  due {r.effective_due}  {r.status}" for r in soon]
    body = "\n".join(lines) + f"\n\nQueue: {settings.SITE_URL}{reverse('portal:queue')}\n"
    officers = get_user_model().objects.filter(is_active=True, groups__name="officer").exclude(email="")
    recipients = sorted({o.email for o in officers})
    if recipients:
        send_mail(f"{len(overdue)} overdue, {len(soon)} due soon: erasure requests", body, settings.DEFAULT_FROM_EMAIL, recipients)
    return len(overdue) + len(soon)
