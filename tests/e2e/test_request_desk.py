"""A person files a request, follows the e-mailed link and sees the status; an officer logs in and approves."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.core import mail

from compliance.erasure.models import ErasureRequest, Status
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)


def _link(body: str, marker: str) -> str:
    return next(re.search(r"https?://\S+", line).group(0) for line in body.splitlines() if marker in line)  # type: ignore[union-attr]


def test_subject_files_confirms_and_officer_approves(live_server: Any, page: Any, settings: Any) -> None:
    settings.SITE_URL = live_server.url
    page.goto(f"{live_server.url}/request/")
    page.fill("#id_full_name", "Ada Quartermaine")
    page.fill("#id_email", "ada.quartermaine@example.com")
    page.fill("#id_phone", "+44 20 7946 0018")
    page.select_option("#id_ground", "17(1)(b)")
    page.check("#id_confirm")
    page.click("button[type=submit]")
    page.wait_for_url("**/request/sent/")
    assert "Check your e-mail" in page.content()

    confirm_url = _link(mail.outbox[-1].body, "/confirm/")
    page.goto(confirm_url)
    page.click("#confirm-button")
    page.wait_for_url("**/status/**")
    # Plain language, no internal codes: the e-mail step is done, the review is under way.
    assert page.get_attribute("li[data-step=confirmed]", "class") == "step done"
    assert page.get_attribute("li[data-step=review]", "class") == "step current"
    assert "triaged" not in page.content().lower()
    assert "Ada" not in page.url and "example.com" not in page.url

    request = ErasureRequest.objects.get()
    assert request.status == Status.TRIAGED  # no corpora registered: nothing located, ready to decide

    officer = factories.user("officer", username="officer.e2e")
    page.goto(f"{live_server.url}/portal/login/")
    page.fill("#id_username", officer.username)
    page.fill("#id_password", "correct horse battery staple 1")
    page.click("button[type=submit]")
    page.wait_for_url("**/portal/")
    page.click(f"text={request.reference}")
    page.check("#approve-confirm")
    page.click("#approve-button")
    page.wait_for_selector("text=approved")
    request.refresh_from_db()
    assert request.status in {Status.APPROVED, Status.UNLEARNING}
    assert "Approved" in page.inner_text("#status-badge") or "Unlearning" in page.inner_text("#status-badge")
