"""Screenshots of the main pages, from a live server with real data (a request at several stages, a
job that failed verification, the audit log). `./scripts/screenshots` writes them to docs/screenshots/;
as a test they go to a temporary directory and must be real, non-blank PNG images."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

import pytest

from compliance.erasure import services as erasure_services
from compliance.erasure.models import Status
from tests import factories
from tests.e2e.test_escalation import _escalated, _login, _officer, sent  # noqa: F401 - fixture

pytestmark = pytest.mark.django_db(transaction=True)

PAGES = (
    ("public-home", "public", "/"),
    ("public-request-form", "public", "/request/"),
    ("public-status-stepper", "public", "{status}"),
    ("public-verify", "public", "/verify/"),
    ("portal-queue", "portal", "/portal/"),
    ("portal-request-needs-decision", "portal", "/portal/requests/{reference}/"),
    ("portal-request-triaged", "portal", "/portal/requests/{triaged}/"),
    ("portal-job", "portal", "/portal/jobs/{job}/"),
    ("portal-audit", "portal", "/portal/audit/"),
)


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", head[16:24])


def test_screenshots_of_the_main_pages(live_server: Any, page: Any, settings: Any, tmp_path: Path, sent: list[str]) -> None:  # noqa: F811
    out = Path(os.environ.get("SCREENSHOTS_DIR") or tmp_path / "screenshots")
    out.mkdir(parents=True, exist_ok=True)
    settings.SITE_URL = live_server.url
    officer = _officer()
    escalated = _escalated(tmp_path, officer, settings)
    triaged = factories.request_in(Status.TRIAGED, person=factories.ADA)
    values = {
        "status": f"/status/{erasure_services.status_token(escalated)}/",
        "reference": escalated.reference,
        "triaged": triaged.reference,
        "job": str(escalated.jobs.get().id),
    }
    page.set_viewport_size({"width": 1280, "height": 900})
    for name, side, path in PAGES:
        if side == "portal" and "/portal/login/" not in page.url and not page.url.startswith(live_server.url + "/portal/"):
            _login(page, live_server.url, officer)
        page.goto(live_server.url + path.format(**values))
        target = out / f"{name}.png"
        page.screenshot(path=str(target), full_page=True)
        width, height = _png_size(target)
        assert width == 1280 and height >= 300, (name, width, height)
    assert sorted(p.stem for p in out.glob("*.png")) >= sorted(name for name, _side, _path in PAGES)
