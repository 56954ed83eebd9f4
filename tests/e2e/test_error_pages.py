"""In Chromium: 404, 403, 500 and CSRF failures show the organisation's own page, never Django's default
or a stack trace."""

from __future__ import annotations

from typing import Any

import pytest

from compliance.erasure import services as erasure_services
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)


def _branded(page: Any, settings: Any, title: str) -> None:
    header = page.inner_text("header.top")
    assert settings.ORGANISATION_NAME in header, header
    assert page.inner_text("h1") == title
    assert "Traceback" not in page.content() and "Django" not in page.content()
    assert page.title() == f"{title} · {settings.ORGANISATION_NAME}"


def test_branded_404_403_500_and_csrf_pages(live_server: Any, page: Any, settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    base = live_server.url
    response = page.goto(f"{base}/no-such-page/")
    assert response.status == 404
    _branded(page, settings, "Not found")

    # A logged-in account without a portal role.
    user = factories.user(None, username="no.role")
    user.set_password("correct horse battery staple 1")
    user.save()
    page.goto(f"{base}/portal/login/")
    page.fill("#id_username", "no.role")
    page.fill("#id_password", "correct horse battery staple 1")
    page.click("button[type=submit]")
    response = page.goto(f"{base}/portal/")
    assert response.status == 403
    _branded(page, settings, "Not allowed")

    # A form posted without its CSRF token.
    response = page.request.post(f"{base}/request/", form={"full_name": "x"}, headers={"Referer": f"{base}/request/"})
    assert response.status == 403 and "security token (CSRF)" in response.text() and settings.ORGANISATION_NAME in response.text()

    # A failure inside a view.
    request = factories.submit()

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("simulated failure")

    monkeypatch.setattr("compliance.erasure.selectors.timeline", broken)
    response = page.goto(f"{base}/status/{erasure_services.status_token(request)}/")
    assert response.status == 500
    _branded(page, settings, "Server error")
    assert "simulated failure" not in page.content()
