"""axe-core (WCAG 2.1 A/AA rules) on every page a subject, an officer or an auditor sees: no serious or
critical violation. The pages are filled with real data: a request at each stage, a job with its
report, a certificate, the error pages."""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any

import pytest

from compliance.erasure import services as erasure_services
from compliance.erasure.models import Status
from tests import factories
from tests.e2e.test_escalation import PASSWORD, _escalated, _login, _officer, sent  # noqa: F401 - fixture

pytestmark = pytest.mark.django_db(transaction=True)

AXE = importlib.resources.files("axe_playwright_python").joinpath("axe.min.js").read_text()
RULES = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}}


def violations(page: Any) -> list[str]:
    page.add_script_tag(content=AXE)
    result = page.evaluate("options => axe.run(document, options)", RULES)
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def test_no_serious_violation_on_any_page(live_server: Any, browser: Any, settings: Any, tmp_path: Path, sent: list[str]) -> None:  # noqa: F811
    # The pages' Content-Security-Policy forbids inline scripts, axe's included: the audit's own
    # browser context bypasses it (test_abuse_controls checks the policy itself).
    page = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True).new_page()
    settings.SITE_URL = live_server.url
    base = live_server.url
    officer = _officer()
    escalated = _escalated(tmp_path, officer, settings)
    job = escalated.jobs.get()
    received = factories.request_in(Status.RECEIVED)
    triaged = factories.request_in(Status.TRIAGED)

    public = [
        "/",
        "/request/",
        "/verify/",
        f"/status/{erasure_services.status_token(received)}/",
        f"/status/{erasure_services.status_token(escalated)}/",
        "/no-such-page/",  # the branded 404
        "/status/forged-token/",
    ]
    portal = [
        "/portal/",
        "/portal/?status=needs_decision",
        f"/portal/requests/{triaged.reference}/",
        f"/portal/requests/{escalated.reference}/",
        "/portal/jobs/",
        f"/portal/jobs/{job.id}/",
        "/portal/audit/",
        "/portal/health/",
    ]
    found: dict[str, list[str]] = {}
    page.goto(f"{base}/portal/login/")
    found["/portal/login/"] = violations(page)
    for path in public:
        page.goto(base + path)
        found[path] = violations(page)
    _login(page, base, officer)
    for path in portal:
        page.goto(base + path)
        found[path] = violations(page)
    bad = {path: v for path, v in found.items() if v}
    assert not bad, bad
    assert PASSWORD  # the officer logged in with it (the portal pages above are not the login page)
    assert page.url.startswith(base + "/portal/health/")
