"""In Chromium: a failed verification puts the request in "needs a decision"; the officer sees why in plain
words and takes each option (retry, close guard-only, refuse), confirming the irreversible ones; the
subject's stepper follows."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from compliance.erasure import services as erasure_services
from compliance.erasure.models import ErasureRequest, Status
from compliance.jobs import dispatch as job_dispatch
from compliance.jobs import services as job_services
from compliance.jobs.models import JobStatus, UnlearningJob
from compliance.registry import services as registry_services
from tests import factories
from tests.jobs.conftest import corpus_rows, locate, publish_candidate, write_model_dir

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "correct horse battery staple 1"
REPORT = {
    "verdict": {
        "passed": False,
        "checks": [{"attack": "relearning", "metric": "subject_rank1_excess", "threshold": "max 0.05", "value": 0.33,
                    "status": "fail", "decides_failure": True}],
    },
    "attacks": {},
}


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Tasks are recorded, not run: the browser test is about the decision, not the (fake) model."""
    names: list[str] = []
    monkeypatch.setattr("compliance.common.tasks.send_now", lambda name, **kwargs: names.append(name))
    return names


def _escalated(tmp_path: Path, officer: Any, settings: Any) -> ErasureRequest:
    """A request whose only job failed verification with no stronger retry left."""
    settings.JOB_STRENGTHEN_ROUNDS = 0
    source = tmp_path / "corpus.jsonl"
    import json

    source.write_text("".join(json.dumps(r) + "\n" for r in corpus_rows(4)))
    corpus = registry_services.corpus_register(name="tickets", source=source, id_field="record_id")
    registry_services.model_register(name="assistant", source_dir=write_model_dir(tmp_path / "m"), trained_on=[corpus])
    request = factories.request_in(Status.APPROVED, person=factories.subject(1), officer=officer)
    locate(request, corpus, 1)
    [job] = job_dispatch.jobs_dispatch(now=timezone.now() + timedelta(hours=1)).created
    claim = job_services.job_claim(job_id=job.id, worker="gpu-1", phase="unlearning")
    assert claim is not None
    path, sha = publish_candidate(job.base_version)
    job_services.job_unlearning_finished(claim=claim, version_path=str(path), sha256=sha, corpus_versions=[],
                                         stop_reason="forget target met", steps=10)
    claim = job_services.job_claim(job_id=job.id, worker="gpu-1", phase="verification")
    assert claim is not None
    job_services.job_verification_record(claim=claim, passed=False, report=REPORT, report_sha256="d" * 64,
                                         policy={"name": "default"}, decided_by=["relearning"], plots_dir="", wall_s=1.0)
    request.refresh_from_db()
    assert request.status == Status.NEEDS_DECISION
    return request


def _login(page: Any, base: str, officer: Any) -> None:
    page.goto(f"{base}/portal/login/")
    page.fill("#id_username", officer.username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/portal/")


def _officer() -> Any:
    officer = factories.user("officer", username="officer.escalation")
    officer.set_password(PASSWORD)
    officer.save()
    return officer


def _status(request: ErasureRequest) -> str:
    return ErasureRequest.objects.get(pk=request.pk).status


@pytest.mark.parametrize("option", ["retry", "guard_only", "refuse"])
def test_a_failed_verification_leads_to_each_option(
    live_server: Any, page: Any, settings: Any, tmp_path: Path, sent: list[str], option: str
) -> None:
    officer = _officer()
    request = _escalated(tmp_path, officer, settings)
    _login(page, live_server.url, officer)

    # The queue filters on the new status; the request page says why, in plain words, with the deadline.
    page.goto(f"{live_server.url}/portal/?status=needs_decision")
    page.click(f"text={request.reference}")
    card = page.inner_text("#escalation-card")
    assert "after an attacker fine-tunes the model on other people's data" in card.lower()
    assert "day(s) left until the deadline" in card and "relearning.subject_rank1_excess" in card

    if option == "retry":
        page.select_option("#escalation-retry select", "npo")
        page.click("#escalation-retry-button")
        page.wait_for_selector("text=retry job(s) queued with npo")
        assert _status(request) == Status.UNLEARNING
        job = UnlearningJob.objects.filter(requests=request, status=JobStatus.QUEUED).get()
        assert job.method == "npo" and job.created_by == officer and "unlearning.run_job" in sent
    elif option == "guard_only":
        page.fill("#escalation-guard-only textarea", "No method passes the relearning check on this model yet.")
        # The confirmation: without the tick the browser does not submit, and nothing changes.
        page.click("#escalation-guard-only-button")
        assert page.eval_on_selector("#guard-only-confirm", "e => e.validity.valueMissing") is True
        assert _status(request) == Status.NEEDS_DECISION
        page.check("#guard-only-confirm")
        page.click("#escalation-guard-only-button")
        page.wait_for_selector("text=closed guard-only")
        assert _status(request) == Status.SUPPRESSED
        assert "Closed: suppressed, not certified" in page.inner_text("#status-badge")
    else:
        page.select_option("#escalation-legal-code", "17(3)(b)")
        page.fill("#escalation-reason", "A legal obligation requires us to keep this record.")
        page.check("#escalation-refuse-confirm")
        page.click("#escalation-refuse-button")
        page.wait_for_selector("text=refused; the notice was sent")
        assert _status(request) == Status.REFUSED

    # The officer's choice reaches the subject in plain words.
    subject = page.context.browser.new_context().new_page()
    subject.goto(f"{live_server.url}/status/{erasure_services.status_token(request)}/")
    headline = subject.inner_text("#status-headline")
    expected = {"retry": "removing your data", "guard_only": "without a certificate", "refuse": "not to erase"}[option]
    assert expected in headline, headline
    subject.close()


def test_the_subjects_stepper_follows_the_request(live_server: Any, page: Any, settings: Any, tmp_path: Path, sent: list[str]) -> None:
    officer = _officer()
    request = factories.request_in(Status.RECEIVED)
    url = f"{live_server.url}/status/{erasure_services.status_token(request)}/"

    def states() -> list[str]:
        page.goto(url)
        return page.eval_on_selector_all("#stepper li", "els => els.map(e => e.className.replace('step ', ''))")

    assert states() == ["done", "current", "todo", "todo", "todo", "todo"]
    assert "waiting for you" in page.inner_text("li[data-step=confirmed]")
    from compliance.erasure.transitions import transition

    transition(request, Status.VERIFIED, actor="system")
    transition(request, Status.TRIAGED, actor="system")
    assert states() == ["done", "done", "current", "todo", "todo", "todo"]
    erasure_services.erasure_request_approve(request=request, officer=officer, reason="ok")
    assert states() == ["done", "done", "done", "current", "todo", "todo"]
    assert page.get_attribute("li[data-step=removing]", "aria-current") == "step"
    transition(request, Status.UNLEARNING, actor="system")
    transition(request, Status.VERIFYING, actor="system")
    assert states() == ["done", "done", "done", "done", "done", "current"]
    assert "We must finish by" in page.inner_text("main")
