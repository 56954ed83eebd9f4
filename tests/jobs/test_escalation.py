"""Requests whose job failed for good: needs_decision, the failing checks in plain words, and each option."""

from __future__ import annotations

from typing import Any

import pytest
from django.core import mail
from django.urls import reverse

from compliance.audit.models import AuditLeaf
from compliance.audit.services import leaf_document
from compliance.erasure.models import Decision, ErasureRequest, Status
from compliance.jobs import escalation, services
from compliance.jobs.models import JobStatus, UnlearningJob
from compliance.registry.models import ModelVersion
from tests import factories
from tests.jobs.test_lifecycle import claim, unlearned

pytestmark = pytest.mark.django_db

FAILING_REPORT = {
    "verdict": {
        "passed": False,
        "checks": [
            {"attack": "relearning", "metric": "subject_rank1_excess", "threshold": "max 0.05", "value": 0.33,
             "status": "fail", "decides_failure": True},
            {"attack": "direct_probe", "metric": "leak_rate", "threshold": "max 0", "value": 0.0,
             "status": "pass", "decides_failure": False},
            {"attack": "a_future_attack", "metric": "score", "threshold": "max 1", "value": 2.0,
             "status": "fail", "decides_failure": True},
        ],
    },
    "attacks": {},
}


def _fail(job: UnlearningJob) -> None:
    services.job_verification_record(
        claim=unlearned(job), passed=False, report=FAILING_REPORT, report_sha256="b" * 64, policy={"name": "default"},
        decided_by=["relearning.subject_rank1_excess = 0.33 (rule: max 0.05) [fail]"], plots_dir="", wall_s=1.0,
    )


@pytest.fixture
def escalated(queued_job: UnlearningJob, settings: Any) -> UnlearningJob:
    """The queued job failed its verdict with no stronger retry left: its requests need a decision."""
    settings.JOB_STRENGTHEN_ROUNDS = 0
    _fail(queued_job)
    queued_job.refresh_from_db()
    assert queued_job.escalated
    return queued_job


def _request(job: UnlearningJob) -> ErasureRequest:
    return job.requests.order_by("reference").first()


def test_a_job_that_fails_for_good_puts_its_requests_in_needs_decision(escalated: UnlearningJob) -> None:
    request = _request(escalated)
    assert request.status == Status.NEEDS_DECISION and request.is_open
    esc = escalation.escalation_for(request)
    assert esc is not None and [f.job.pk for f in esc.failures] == [escalated.pk]
    checks = esc.failures[0].checks
    # Only the checks that decided the failure, in plain words; an unknown attack still gets a sentence.
    assert [c.attack for c in checks] == ["relearning", "a_future_attack"]
    assert "fine-tunes the model on other people's data" in checks[0].plain and checks[0].value == pytest.approx(0.33)
    assert checks[1].plain == "The check a_future_attack failed its rule."
    assert esc.days_left == request.days_left() and esc.failures[0].method == escalated.spec["method"]
    assert escalation.escalation_for(factories.request_in(Status.APPROVED)) is None


def test_a_worker_that_gives_up_also_escalates_with_its_error(queued_job: UnlearningJob) -> None:
    services.job_fail(job_id=queued_job.id, error="RuntimeError", claim_token=claim(queued_job).token)
    esc = escalation.escalation_for(_request(queued_job))
    assert esc is not None and esc.failures[0].error == "RuntimeError" and esc.failures[0].checks == []


def test_retry_with_the_same_method_runs_stronger_settings(escalated: UnlearningJob, officer: Any) -> None:
    request = _request(escalated)
    leaves = AuditLeaf.objects.count()
    [job] = escalation.escalation_retry(request=request, officer=officer, method=escalated.spec["method"])

    assert job.retry_of_id == escalated.pk and job.status == JobStatus.QUEUED and job.created_by == officer
    assert job.spec["max_steps"] > escalated.spec["max_steps"]  # the settings that failed would fail again
    assert {r.status for r in job.requests.all()} == {Status.UNLEARNING}
    decided = leaf_document(AuditLeaf.objects.filter(event_type="request.escalation_decided", request_id=request.id).get())
    assert decided["details"] == {"option": "retry", "method": escalated.spec["method"], "jobs": 1}
    assert AuditLeaf.objects.count() > leaves
    # The retry then passes: the request moves on to sign-off as usual.
    services.job_verification_record(
        claim=unlearned(job), passed=True, report={"verdict": {"passed": True, "checks": []}, "attacks": {}},
        report_sha256="c" * 64, policy={"name": "default"}, decided_by=[], plots_dir="", wall_s=1.0,
    )
    request.refresh_from_db()
    assert request.status == Status.VERIFYING


def test_retry_with_another_method_uses_its_defaults(escalated: UnlearningJob, officer: Any) -> None:
    [job] = escalation.escalation_retry(request=_request(escalated), officer=officer, method="npo")
    assert job.method == "npo" and job.spec["method"] == "npo"


def test_a_second_decision_changes_nothing(escalated: UnlearningJob, officer: Any) -> None:
    request = _request(escalated)
    escalation.escalation_retry(request=request, officer=officer, method="npo")
    jobs, leaves = UnlearningJob.objects.count(), AuditLeaf.objects.count()
    with pytest.raises(escalation.EscalationError, match="does not need a decision"):
        escalation.escalation_retry(request=request, officer=officer, method="npo")
    with pytest.raises(escalation.EscalationError):
        escalation.escalation_guard_only(request=request, officer=officer, justification="x")
    assert (UnlearningJob.objects.count(), AuditLeaf.objects.count()) == (jobs, leaves)


def test_unknown_method_and_reviewer_are_refused_without_a_trace(escalated: UnlearningJob) -> None:
    request = _request(escalated)
    leaves = AuditLeaf.objects.count()
    with pytest.raises(escalation.EscalationError, match="Unknown unlearning method"):
        escalation.escalation_retry(request=request, officer=factories.user("officer", "o2"), method="delete-all")
    with pytest.raises(Exception, match="officer"):
        escalation.escalation_retry(request=request, officer=factories.user("reviewer"), method="npo")
    request.refresh_from_db()
    assert request.status == Status.NEEDS_DECISION and AuditLeaf.objects.count() == leaves


def test_guard_only_closes_without_a_certificate_and_tells_the_subject(
    escalated: UnlearningJob, officer: Any, django_capture_on_commit_callbacks: Any
) -> None:
    request = _request(escalated)
    mail.outbox.clear()
    with pytest.raises(Exception, match="justification"):
        escalation.escalation_guard_only(request=request, officer=officer, justification="  ")
    assert ErasureRequest.objects.get(pk=request.pk).status == Status.NEEDS_DECISION

    with django_capture_on_commit_callbacks(execute=True):
        escalation.escalation_guard_only(request=request, officer=officer, justification="No method passes on this model yet.")
    request.refresh_from_db()
    assert request.status == Status.SUPPRESSED and request.decision == Decision.GUARD_ONLY and not request.is_open
    assert getattr(request, "certificate", None) is None
    [notice] = mail.outbox
    assert "without a certificate of erasure" in notice.body and "No method passes on this model yet." in notice.body
    event = leaf_document(AuditLeaf.objects.filter(event_type="request.suppressed", request_id=request.id).get())
    assert "reason_sha256" in event["artefacts"]  # the justification is recorded by digest, never in the log
    assert b"No method passes" not in b"".join(bytes(leaf.leaf_bytes) for leaf in AuditLeaf.objects.all())
    decided = leaf_document(AuditLeaf.objects.filter(event_type="request.escalation_decided", request_id=request.id).get())
    assert decided["details"] == {"option": "guard_only"}


def test_refuse_from_needs_decision_needs_a_legal_code(escalated: UnlearningJob, officer: Any) -> None:
    request = _request(escalated)
    with pytest.raises(Exception, match="legal code"):
        escalation.escalation_refuse(request=request, officer=officer, legal_code="", reason="x")
    escalation.escalation_refuse(request=request, officer=officer, legal_code="17(3)(b)", reason="Legal obligation.")
    request.refresh_from_db()
    assert request.status == Status.REFUSED and request.legal_code == "17(3)(b)"


def test_suppressed_requests_are_purged_after_retention(escalated: UnlearningJob, officer: Any, settings: Any) -> None:
    from compliance.erasure.services import purge_due_requests

    request = _request(escalated)
    escalation.escalation_guard_only(request=request, officer=officer, justification="Not verifiable.")
    settings.RETENTION_DAYS_AFTER_COMPLETION = -1
    assert purge_due_requests() >= 1
    request.refresh_from_db()
    assert request.status == Status.PURGED


# --- the portal --------------------------------------------------------------------------------------


def test_the_request_page_shows_the_failure_and_the_options(escalated: UnlearningJob, client: Any, officer: Any) -> None:
    client.force_login(officer)
    page = client.get(reverse("portal:detail", args=[_request(escalated).reference]))
    assert page.status_code == 200
    for needle in (b"Needs a decision", b"escalation-retry-button", b"escalation-guard-only-button", b"escalation-refuse-button",
                   b"fine-tunes the model on other people", b"day(s) left until the deadline"):
        assert needle in page.content, needle


def test_the_portal_refuses_guard_only_without_confirmation(escalated: UnlearningJob, client: Any, officer: Any) -> None:
    client.force_login(officer)
    request = _request(escalated)
    url = reverse("portal:escalation_guard_only", args=[request.reference])
    page = client.post(url, {"justification": "Cannot verify."}, follow=True)
    assert b"Tick the confirmation box" in page.content
    assert ErasureRequest.objects.get(pk=request.pk).status == Status.NEEDS_DECISION
    client.post(url, {"justification": "Cannot verify.", "confirm": "on"})
    assert ErasureRequest.objects.get(pk=request.pk).status == Status.SUPPRESSED


def test_the_portal_retry_and_a_bad_method(escalated: UnlearningJob, client: Any, officer: Any, model_version: ModelVersion) -> None:
    client.force_login(officer)
    request = _request(escalated)
    url = reverse("portal:escalation_retry", args=[request.reference])
    bad = client.post(url, {"method": "rm -rf"}, follow=True)
    assert bad.status_code == 200 and b"Select a valid choice" in bad.content
    assert ErasureRequest.objects.get(pk=request.pk).status == Status.NEEDS_DECISION
    client.post(url, {"method": "npo"})
    assert ErasureRequest.objects.get(pk=request.pk).status == Status.UNLEARNING


def test_a_retry_is_for_the_one_request_decided_on(escalated: UnlearningJob, officer: Any) -> None:
    """The batch's other requests keep waiting for their own decision (and their own audit event)."""
    first, second = escalated.requests.order_by("reference")
    [job] = escalation.escalation_retry(request=first, officer=officer, method="npo")
    assert list(job.requests.all()) == [first]
    second.refresh_from_db()
    assert second.status == Status.NEEDS_DECISION
    esc = escalation.escalation_for(second)
    assert esc is not None and [f.job.pk for f in esc.failures] == [escalated.pk]  # still open for the second
    # One active job per model: the second person's retry waits until the first has finished.
    with pytest.raises(escalation.EscalationError, match="Another job for this model is active"):
        escalation.escalation_retry(request=second, officer=officer, method="npo")
    second.refresh_from_db()
    assert second.status == Status.NEEDS_DECISION
