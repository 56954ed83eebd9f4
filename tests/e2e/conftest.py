"""Headless Chromium (Debian's package) driven by Playwright against pytest-django's live server.
A failing test leaves a full-page screenshot in test-results/."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
RESULTS = Path(__file__).resolve().parents[2] / "test-results"
# The flags our CI machines need: no sandbox as root, no background traffic to the (closed) network.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.xdist_group("e2e"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        page = item.funcargs.get("page") if hasattr(item, "funcargs") else None
        if page is not None:
            RESULTS.mkdir(exist_ok=True)
            try:
                page.screenshot(path=str(RESULTS / f"{item.name}.png"), full_page=True)
            except Exception as exc:  # the page may be gone already; the test's own failure is what matters
                print(f"no screenshot for {item.name}: {exc}")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's sync API runs an event loop
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def warm_analyzer() -> None:
    """Build the Presidio engine once up front: in the embedded set-up the scan runs inside the
    confirmation request, and the first build (spaCy and recognizer imports) takes seconds."""
    from pii import EngineConfig, build_analyzer

    build_analyzer(EngineConfig())


@pytest.fixture
def page(browser: Any, warm_analyzer: None) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(90_000)  # 2 shared cores; the embedded set-up runs tasks inline
    yield page
    context.close()
