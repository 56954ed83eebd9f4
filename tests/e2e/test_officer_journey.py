"""The whole journey in a real browser, on a tiny demo model that really gets unlearned and attacked:

subject files and confirms -> the scan locates their records -> an officer triages and approves ->
the unlearning job runs (watched on the job page) -> verification report -> sign-off -> the subject
downloads the certificate (JSON and PDF) -> the public verification page accepts both and rejects a
tampered copy.

Nothing is stubbed, and it runs in the served mode of the embedded set-up (the demo's `serve`): tasks
run in-process, and the periodic ones in the embedded beat thread, so the approval only nudges
dispatch while the batch window is open and the beat's tick after it starts the job, with no manual
tick; the officer watches the job page in a second tab as it runs. The one test hook only waits:
the job is held after its first mid-run evaluation until the browser has shown it (a tiny job
finishes in seconds, so without the hold "watching it run" would depend on the machine's speed).
The demo model (6 people, 2 layers) is trained once per machine and cached, like in
tests/integration; its people are synthetic, so the identifiers typed into the form are not PII.
"""

from __future__ import annotations

import re
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.core import mail

from compliance.certificates.models import Certificate
from compliance.demo.registration import register_demo
from compliance.erasure import services as erasure_services
from compliance.erasure.models import ErasureRequest, Status
from compliance.jobs import services as job_services
from compliance.jobs.models import JobStatus, UnlearningJob
from proofs.offline import extract_certificate_from_pdf
from tests import factories
from tests.integration.conftest import DEMO_CONFIG, POLICY, SPEC

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

PASSWORD = "correct horse battery staple 1"  # tests.factories.user's
# The approval runs the whole job inline; on two shared cores it takes tens of seconds.
JOB_TIMEOUT_MS = 240_000
ACTIVE_LABELS = {JobStatus(s).label for s in (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.VERIFYING)}


@pytest.fixture(scope="session")
def demo_model_dir() -> Path:
    """The same tiny model as tests/integration (same config, same cache folder): trained once."""
    from unlearning_worker.demo.trainer import DemoModelConfig, train_demo_model

    cache = Path(tempfile.gettempdir()) / "erasure-test-demo-cache"
    return train_demo_model(DemoModelConfig(**DEMO_CONFIG), cache_dir=cache)


@pytest.fixture
def demo_person(demo_model_dir: Path, settings: Any) -> tuple[Any, set[str]]:
    """Register the demo model and corpus, and set up jobs as the integration tests do (short spec,
    fast policy), with a one-second batch window that only the beat closes. Returns one corpus person
    and the ids of their records."""
    from unlearning_worker.demo.trainer import DemoModelConfig

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.JOB_BATCH_WAIT_S = 1
    settings.UNLEARNING_SPEC_DEFAULTS = SPEC
    settings.UNLEARNING_DEVICE = "cpu"
    settings.VERIFICATION_POLICY_FILE = str(POLICY)
    config = DemoModelConfig(**DEMO_CONFIG)
    register_demo(config=config, cache_dir=demo_model_dir.parent, retain_people=4)
    corpus = config.corpus()
    person = corpus.people[0]
    return person, {r.record_id for r in corpus.records_of([person.person_id])}


@pytest.fixture
def served(settings: Any) -> Iterator[None]:
    """The embedded beat, as `manage.py demo` starts it before serving (intervals shortened)."""
    from compliance.common.embedded_beat import start_embedded_beat

    settings.CELERY_BEAT_SCHEDULE = {
        "jobs-dispatch": {"task": "jobs.dispatch", "schedule": 1},
        "audit-checkpoint": {"task": "audit.checkpoint", "schedule": 2},
        "certificates-issue-pending": {"task": "certificates.issue_pending", "schedule": 2},
    }
    beat = start_embedded_beat()
    assert beat is not None
    yield
    beat.stop(timeout=60)


@dataclass
class Gate:
    paused: threading.Event
    resume: threading.Event


@pytest.fixture
def mid_run(monkeypatch: pytest.MonkeyPatch) -> Iterator[Gate]:
    """Hold the running job (in the live server's thread) right after it has recorded its first
    evaluation past step 0, until the test has seen it on the job page. Only waits: every record
    is written by the real service, and the job then runs on unchanged."""
    gate = Gate(threading.Event(), threading.Event())
    record = job_services.job_progress_record

    def gated(**kwargs: Any) -> Any:
        signal = record(**kwargs)
        if kwargs.get("history_point") and (kwargs.get("step") or 0) > 0 and not gate.paused.is_set():
            gate.paused.set()
            gate.resume.wait(timeout=120)
        return signal

    monkeypatch.setattr(job_services, "job_progress_record", gated)
    yield gate
    gate.resume.set()  # never leave the server thread waiting


def _link(body: str, marker: str) -> str:
    return next(re.search(r"https?://\S+", line).group(0) for line in body.splitlines() if marker in line)  # type: ignore[union-attr]




def _verify_upload(page: Any, base_url: str, path: Path) -> tuple[str, list[str]]:
    """Upload a file on the public verification page; (verdict text, each check's ok/failed badge)."""
    page.goto(f"{base_url}/verify/")
    page.set_input_files("#certificate", str(path))
    page.click("#verify-button")
    page.wait_for_selector("#verify-result")
    return page.inner_text("#verdict"), page.locator("#verify-result tr.check .badge").all_inner_texts()


def _bar_width(page: Any) -> int:
    """The progress bar's width in percent, as the server rendered it or the page's script set it."""
    match = re.fullmatch(r"width:\s*(\d+)%;?", (page.get_attribute("#progress-bar", "style") or "").strip())
    assert match, page.get_attribute("#progress-bar", "style")
    return int(match.group(1))


def _watch_job(page: Any, timeout_ms: int) -> list[tuple[str, str]]:
    """Read the job page's status and progress text until the job is no longer active. The page
    reloads itself (meta refresh) and updates its bar from the progress endpoint in between."""
    from playwright.sync_api import Error as PlaywrightError

    seen: list[tuple[str, str]] = []
    deadline = time.monotonic() + timeout_ms / 1000
    while time.monotonic() < deadline:
        try:
            state = (page.inner_text("#job-status", timeout=10_000), page.inner_text("#progress-text", timeout=10_000))
        except PlaywrightError:  # the page reloaded itself between the two reads: read again
            continue
        if not seen or seen[-1] != state:
            seen.append(state)
        if state[0] not in ACTIVE_LABELS:
            return seen
        page.wait_for_timeout(700)
    raise AssertionError(f"the job was still active after {timeout_ms / 1000:.0f} s; seen: {seen}")


def test_request_to_verified_certificate(
    live_server: Any, page: Any, browser: Any, settings: Any, demo_person: tuple[Any, set[str]], mid_run: Gate, tmp_path: Path,
    served: None,
) -> None:
    settings.SITE_URL = live_server.url
    base = live_server.url
    person, record_ids = demo_person

    # 1. The subject files a request with their own identifiers and confirms the e-mailed link.
    page.goto(f"{base}/request/")
    page.fill("#id_full_name", person.name)
    page.fill("#id_email", person.email)
    page.fill("#id_phone", person.phone)
    page.select_option("#id_ground", "17(1)(b)")
    page.check("#id_confirm")
    page.click("button[type=submit]")
    page.wait_for_url("**/request/sent/")
    page.goto(_link(mail.outbox[-1].body, "/confirm/"))
    page.click("#confirm-button")
    page.wait_for_url("**/status/**")
    status_url = page.url
    # The scan ran in-process and found records: the subject reads that an officer is reviewing it.
    assert page.get_attribute("li[data-step=review]", "class") == "step current"
    assert "privacy officer is reviewing" in page.inner_text("#status-headline")
    request = ErasureRequest.objects.get()
    located_ids = set(request.forget_items.values_list("record_id", flat=True))
    assert located_ids == record_ids, "the scan must locate exactly the person's records of the demo corpus"

    # 2. The officer logs in and triages: the request page shows the risk score and the located records.
    officer = factories.user("officer", username="officer.journey")
    page.goto(f"{base}/portal/login/")
    page.fill("#id_username", officer.username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/portal/")
    page.click(f"text={request.reference}")
    page.wait_for_url(f"**/portal/requests/{request.reference}/")
    detail_url = page.url
    assert float(page.inner_text("#pri-score")) > 0
    assert page.inner_text("#pri-tier").strip()
    assert int(page.inner_text("#located-count")) == len(record_ids)
    assert page.locator("#located-records .located-record").count() == len(record_ids)
    assert page.locator("#located-records mark").count() >= len(record_ids)  # PII spans highlighted
    assert page.locator("#sign-off-button").count() == 0  # nothing to sign off before verification

    # 3. Approve. The batch window is open, so the approval creates no job; the beat's next tick does,
    #    and the job runs in the beat's thread while the officer watches from a second tab. The job
    #    pauses after its first evaluation past step 0 until that tab has shown it, so "mid-run" is
    #    seen on any machine.
    page.check("#approve-confirm")
    page.click("#approve-button")
    page.wait_for_selector("text=approved")
    watcher = page.context.new_page()
    watcher.set_default_timeout(90_000)
    try:
        assert mid_run.paused.wait(timeout=120), "the job never reached its first evaluation"
        watcher.goto(detail_url)
        watcher.click("#jobs-card .job-link")
        watcher.wait_for_url("**/portal/jobs/**")
        assert watcher.inner_text("#job-status") == JobStatus.RUNNING.label
        progress = re.search(r"step (\d+) of at most (\d+) \((\d+)% of the step budget\)", watcher.inner_text("#progress-text"))
        assert progress, watcher.inner_text("#progress-text")
        step, total, percent = (int(g) for g in progress.groups())
        assert 0 < step < total == SPEC["max_steps"] and 0 < percent < 100
        assert _bar_width(watcher) == percent
        assert 0.0 <= float(watcher.inner_text("#forget-extraction")) <= 1.0  # the live rate, not "—"
        assert watcher.locator("#progress-card table tbody tr").count() >= 1  # the evaluations table
    finally:
        mid_run.resume.set()
    seen = _watch_job(watcher, JOB_TIMEOUT_MS)
    job = UnlearningJob.objects.get()
    assert seen[-1][0] == JobStatus.SUCCEEDED.label, (seen, job.error)

    # 4. The verification report: verdict, per-attack before/after table, policy checks, plots.
    watcher.reload()
    assert watcher.inner_text("#job-verdict") == "verdict: pass"
    assert watcher.inner_text("#report-verdict") == "PASS"
    attacks = {row.split("\t")[0] for row in watcher.locator("#before-after tr.attack-row").all_inner_texts()}
    assert "direct_probe" in attacks
    assert "direct_probe" in watcher.inner_text("#policy-checks")
    plots = watcher.locator("#report img.report-plot")
    assert plots.count() >= 1
    for i in range(plots.count()):  # every plot was served and decoded as an image
        assert plots.nth(i).evaluate("img => img.complete && img.naturalWidth > 0")
    assert _bar_width(watcher) == 100
    watcher.close()

    # 5. Sign-off, back in the first tab: the request page offers it once the job has passed.
    deadline = time.monotonic() + JOB_TIMEOUT_MS / 1000
    while page.locator("#sign-off-button").count() == 0 and time.monotonic() < deadline:
        page.wait_for_timeout(1000)
        page.reload()
    assert page.inner_text("#status-badge") == "Verifying"
    page.click("#sign-off-button")
    page.wait_for_selector("#certificate-card")
    assert page.inner_text("#status-badge") == "Completed"
    certificate = Certificate.objects.get(request=request)
    assert str(certificate.certificate_id) in page.inner_text("#certificate-card")

    # 6. The subject follows the completion e-mail to their status page and downloads both files.
    completion = next(m for m in reversed(mail.outbox) if request.reference in m.subject and "certificate" in m.subject)
    assert completion.to == [person.email]
    status_link = _link(completion.body, "/status/")  # a fresh signed token for the same request
    assert status_link.startswith(f"{base}/status/") and status_link != status_url
    assert erasure_services.request_from_status_token(status_link.rstrip("/").rsplit("/", 1)[1]) == request
    subject = browser.new_context(accept_downloads=True)
    try:
        subject_page = subject.new_page()
        subject_page.set_default_timeout(90_000)
        subject_page.goto(status_link)
        assert all(cls == "step done" for cls in subject_page.eval_on_selector_all("#stepper li", "els => els.map(e => e.className)"))
        assert "certificate is ready" in subject_page.inner_text("#status-headline")
        assert "holds no personal data" in subject_page.inner_text("#certificate-meaning")
        files: dict[str, Path] = {}
        for kind in ("json", "pdf"):
            with subject_page.expect_download() as download:
                subject_page.click(f"#certificate-{kind}")
            files[kind] = tmp_path / f"certificate.{kind}"
            download.value.save_as(files[kind])
        envelope = files["json"].read_bytes()
        assert envelope == bytes(certificate.envelope)
        pdf = files["pdf"].read_bytes()
        assert pdf.startswith(b"%PDF-") and extract_certificate_from_pdf(pdf) == envelope

        # 7. The public verification page (linked from the status page) verifies both downloads, and
        #    rejects a tampered copy.
        subject_page.click("#verify-link")
        subject_page.wait_for_url(f"{base}/verify/")
        for kind in ("json", "pdf"):
            verdict, checks = _verify_upload(subject_page, base, files[kind])
            assert verdict == "Verified", (kind, checks)
            assert checks and set(checks) == {"ok"}
            assert request.reference in subject_page.inner_text("#verify-result ~ .card")
        tampered = tmp_path / "tampered.json"
        tampered.write_bytes(factories.tampered_certificate(envelope))
        verdict, checks = _verify_upload(subject_page, base, tampered)
        assert verdict == "Not verified" and "failed" in checks
    finally:
        subject.close()

    request.refresh_from_db()
    assert request.status == Status.COMPLETED
