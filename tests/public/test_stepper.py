"""The subject's status page: a stepper in plain language at every stage, and the same words as the e-mails."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from compliance.erasure import selectors, services
from compliance.erasure.models import ErasureRequest, Status
from compliance.erasure.progress import HEADLINES, STEPS, subject_progress
from compliance.erasure.transitions import transition
from tests import factories

pytestmark = pytest.mark.django_db

KEYS = [key for key, _label, _event in STEPS]


def _walk(status: str) -> ErasureRequest:
    """A request moved through the real transitions to `status`."""
    if status in (Status.RECEIVED, Status.VERIFIED, Status.TRIAGED, Status.APPROVED, Status.REFUSED):
        return factories.request_in(status)
    request = factories.request_in(Status.APPROVED)
    moves = {
        Status.UNLEARNING: [Status.UNLEARNING],
        Status.NEEDS_DECISION: [Status.UNLEARNING, Status.NEEDS_DECISION],
        Status.VERIFYING: [Status.UNLEARNING, Status.VERIFYING],
        Status.COMPLETED: [Status.UNLEARNING, Status.VERIFYING, Status.COMPLETED],
        Status.SUPPRESSED: [Status.UNLEARNING, Status.NEEDS_DECISION, Status.SUPPRESSED],
        Status.WITHDRAWN: [Status.WITHDRAWN],
    }[Status(status)]
    for to in moves:
        transition(request, to, actor="system")
    request.refresh_from_db()
    return request


# status -> the state of each of the six steps
EXPECTED = {
    Status.RECEIVED: ["done", "current", "todo", "todo", "todo", "todo"],
    Status.VERIFIED: ["done", "done", "current", "todo", "todo", "todo"],
    Status.TRIAGED: ["done", "done", "current", "todo", "todo", "todo"],
    Status.APPROVED: ["done", "done", "done", "current", "todo", "todo"],
    Status.UNLEARNING: ["done", "done", "done", "current", "todo", "todo"],
    Status.NEEDS_DECISION: ["done", "done", "done", "current", "todo", "todo"],
    Status.VERIFYING: ["done", "done", "done", "done", "done", "current"],
    Status.COMPLETED: ["done"] * 6,
    Status.REFUSED: ["done", "done", "stopped", "stopped", "stopped", "stopped"],
    Status.WITHDRAWN: ["done", "done", "done", "stopped", "stopped", "stopped"],
    Status.SUPPRESSED: ["done", "done", "done", "stopped", "stopped", "stopped"],
}


@pytest.mark.parametrize("status", list(EXPECTED))
def test_each_stage_has_its_steps_and_headline(status: str) -> None:
    request = _walk(status)
    assert request.status == status
    progress = subject_progress(request, selectors.timeline(request))
    assert [s.state for s in progress.steps] == EXPECTED[Status(status)]
    assert progress.headline == HEADLINES[Status(status)]
    assert all(s.when for s in progress.steps if s.state == "done")  # a done step says when
    assert (progress.due is None) == (status not in ("received", "verified", "triaged", "approved", "unlearning",
                                                      "needs_decision", "verifying"))
    assert progress.waiting_on_you == (status == Status.RECEIVED)


@pytest.mark.parametrize("status", list(EXPECTED))
def test_the_page_shows_the_stepper_without_internal_codes(client: Client, status: str) -> None:
    request = _walk(status)
    page = client.get(reverse("public:status", args=[services.status_token(request)]))
    assert page.status_code == 200
    html = page.content.decode()
    states = re.findall(r'<li class="step (\w+)" data-step="(\w+)"', html)
    assert states == list(zip(EXPECTED[Status(status)], KEYS, strict=True))
    assert HEADLINES[Status(status)].replace("'", "&#x27;") in html
    # Internal codes never reach the subject: status names, audit event types, job bookkeeping.
    for code in ("triaged", "needs_decision", "unlearning", "verifying", "suppressed"):
        assert code not in html.lower(), code
    assert not re.search(r"\b(request|job|guard|audit|certificate)\.[a-z_]+", html), re.findall(r"\b\w+\.[a-z_]+", html)


def test_the_approval_email_says_what_the_page_says(django_capture_on_commit_callbacks: Any) -> None:
    from django.core import mail

    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        factories.request_in(Status.APPROVED)
    [notice] = [m for m in mail.outbox if "approved" in m.subject]
    assert " ".join(HEADLINES[Status.APPROVED].split()) in " ".join(notice.body.split())


def test_emails_are_plain_text_not_html_escaped(django_capture_on_commit_callbacks: Any) -> None:
    """A name with an apostrophe reaches the person as written (the e-mails are text, not HTML)."""
    from django.core import mail

    person = services.SubjectInput(full_name="Siobhán O'Brien", email="siobhan@example.org")
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        factories.request_in(Status.APPROVED, person=person)
    assert mail.outbox and all("&#x27;" not in m.body and "&amp;" not in m.body for m in mail.outbox)
    assert any("Dear Siobhán O'Brien," in m.body for m in mail.outbox)
