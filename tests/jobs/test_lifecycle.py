"""Claiming, progress, the end of unlearning, the verdict, failure and reconciliation."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from compliance.audit.models import AuditLeaf
from compliance.erasure.models import Status
from compliance.jobs import services
from compliance.jobs.models import JobStatus, UnlearningJob, VerificationReport
from compliance.registry.models import ModelVersion
from tests.jobs.conftest import publish_candidate

pytestmark = pytest.mark.django_db


def claim(job: UnlearningJob, phase: str = "unlearning") -> services.Claim:
    got = services.job_claim(job_id=job.id, worker="gpu-1", phase=phase)
    assert got is not None
    return got


def unlearned(job: UnlearningJob) -> services.Claim:
    """Run the job's unlearning phase through the services, as the worker does."""
    c = claim(job)
    path, sha = publish_candidate(job.base_version)
    assert services.job_unlearning_finished(claim=c, version_path=str(path), sha256=sha, corpus_versions=[],
                                            stop_reason="forget target met", steps=12) is not None
    return claim(job, "verification")


def verdict(c: services.Claim, passed: bool) -> UnlearningJob | None:
    return services.job_verification_record(
        claim=c, passed=passed, report={"verdict": {"passed": passed, "checks": []}, "attacks": {}}, report_sha256="a" * 64,
        policy={"name": "default"}, decided_by=[] if passed else ["direct_probe.leak_rate = 0.5 (rule: leak_rate <= 0.0) [fail]"],
        plots_dir="", wall_s=1.0,
    )


def test_a_job_is_claimed_exactly_once(queued_job: UnlearningJob) -> None:
    first = services.job_claim(job_id=queued_job.id, worker="gpu-1", phase="unlearning")
    second = services.job_claim(job_id=queued_job.id, worker="gpu-2", phase="unlearning")

    assert first is not None and second is None  # a redelivered message claims nothing
    queued_job.refresh_from_db()
    assert queued_job.status == JobStatus.RUNNING and queued_job.worker == "gpu-1" and queued_job.attempts == 1


def test_progress_is_recorded_for_the_claim_holder_only(queued_job: UnlearningJob) -> None:
    c = claim(queued_job)
    signal = services.job_progress_record(claim=c, phase="unlearning", step=5, total_steps=50, losses={"forget": 1.5},
                                          forget_extraction=0.5, history_point={"step": 5, "forget_extraction": 0.5},
                                          log_line="step 5")
    stranger = services.Claim(job_id=c.job_id, token="0" * 32, attempt=1)
    lost = services.job_progress_record(claim=stranger, phase="unlearning", step=40)

    queued_job.refresh_from_db()
    assert signal.held and not signal.cancel
    assert not lost.held
    assert (queued_job.step, queued_job.total_steps, queued_job.progress_percent) == (5, 50, 10)
    assert queued_job.forget_extraction == 0.5 and queued_job.history == [{"step": 5, "forget_extraction": 0.5}]
    assert "step 5" in queued_job.log_tail


def test_the_worker_log_says_where_the_runs_time_went(queued_job: UnlearningJob) -> None:
    from unlearning_worker.engine import ProgressEvent
    from unlearning_worker.runtime import ProgressSink

    sink = ProgressSink(claim(queued_job), heartbeat=None, device="cpu")  # type: ignore[arg-type]  # not used by a write
    sink(ProgressEvent("saving", 12, 50, forget_extraction=0.0, phase_seconds={"adversary": 3.5, "steps": 2.0}))
    queued_job.refresh_from_db()
    assert "saving · seconds by phase: adversary 3.5, steps 2.0" in queued_job.log_tail


def test_the_worker_log_says_when_a_run_backed_off_its_rate(queued_job: UnlearningJob) -> None:
    from unlearning_worker.engine import ProgressEvent
    from unlearning_worker.runtime import ProgressSink

    sink = ProgressSink(claim(queued_job), heartbeat=None, device="cpu")  # type: ignore[arg-type]  # not used by a write
    sink(ProgressEvent("backoff", 30, 200, forget_extraction=0.5, retain_exact=0.9, rolled_back_to=10, lr=2.5e-4))
    queued_job.refresh_from_db()
    assert "backoff at step 30: utility below the floor; rolled back to step 10, learning rate now 0.00025" in queued_job.log_tail
    assert queued_job.history == []  # the rolled-back-to point is not a new measurement


def test_passing_verdict_activates_new_version_quarantines_old_and_requests_await_sign_off(
    queued_job: UnlearningJob, model_version: ModelVersion
) -> None:
    c = unlearned(queued_job)
    queued_job.refresh_from_db()
    assert queued_job.status == JobStatus.VERIFYING and queued_job.result_version.status == ModelVersion.Status.CANDIDATE

    verdict(c, passed=True)

    queued_job.refresh_from_db()
    model_version.refresh_from_db()
    assert queued_job.status == JobStatus.SUCCEEDED and queued_job.verdict == "pass"
    assert queued_job.result_version.status == ModelVersion.Status.ACTIVE
    assert queued_job.result_version.parent == model_version
    assert model_version.status == ModelVersion.Status.QUARANTINED and model_version.quarantine_until is not None
    assert {r.status for r in queued_job.requests.all()} == {Status.VERIFYING}
    assert VerificationReport.objects.get(job=queued_job).verdict == "pass"


def test_failing_verdict_retries_once_stronger_then_escalates(queued_job: UnlearningJob, model_version: ModelVersion) -> None:
    verdict(unlearned(queued_job), passed=False)

    queued_job.refresh_from_db()
    retry = UnlearningJob.objects.get(retry_of=queued_job)
    assert queued_job.status == JobStatus.FAILED and not queued_job.escalated
    assert queued_job.result_version.status == ModelVersion.Status.REJECTED
    assert retry.status == JobStatus.QUEUED and retry.strengthen_round == 1
    assert retry.spec["max_steps"] == 2 * queued_job.spec["max_steps"]
    assert retry.base_version == model_version  # the rejected candidate is never a base
    assert {r.status for r in retry.requests.all()} == {Status.UNLEARNING}

    verdict(unlearned(retry), passed=False)

    retry.refresh_from_db()
    assert retry.status == JobStatus.FAILED and retry.escalated
    assert not UnlearningJob.objects.filter(retry_of=retry).exists()
    assert {r.status for r in retry.requests.all()} == {Status.NEEDS_DECISION}
    assert AuditLeaf.objects.filter(request_id=retry.requests.first().id).exists()
    model_version.refresh_from_db()
    assert model_version.status == ModelVersion.Status.ACTIVE


def test_job_fail_records_the_error_and_releases_the_requests(queued_job: UnlearningJob) -> None:
    c = claim(queued_job)

    assert services.job_fail(job_id=queued_job.id, error="RuntimeError", claim_token=c.token) is not None

    queued_job.refresh_from_db()
    assert queued_job.status == JobStatus.FAILED and queued_job.error == "RuntimeError" and queued_job.escalated
    assert {r.status for r in queued_job.requests.all()} == {Status.NEEDS_DECISION}
    assert services.job_fail(job_id=queued_job.id, error="again") is None  # finished jobs stay as they are


def test_reconcile_requeues_a_job_whose_worker_stopped_beating_and_the_old_worker_loses_its_claim(
    queued_job: UnlearningJob,
) -> None:
    old = claim(queued_job)
    UnlearningJob.objects.filter(pk=queued_job.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))

    assert services.jobs_reconcile() == [queued_job.id]

    queued_job.refresh_from_db()
    assert queued_job.status == JobStatus.QUEUED and queued_job.claim_token == ""
    new = claim(queued_job)
    assert new.attempt == 2
    assert not services.job_heartbeat(claim=old).held
    assert services.job_heartbeat(claim=new).held
    assert services.jobs_reconcile() == []  # a live heartbeat is left alone


def test_reconcile_fails_a_job_out_of_attempts(queued_job: UnlearningJob, settings: Any) -> None:
    settings.JOB_MAX_ATTEMPTS = 1
    claim(queued_job)
    UnlearningJob.objects.filter(pk=queued_job.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))

    services.jobs_reconcile()

    queued_job.refresh_from_db()
    assert queued_job.status == JobStatus.FAILED and queued_job.escalated


def test_verification_progress_never_overwrites_the_unlearning_steps(queued_job: UnlearningJob) -> None:
    """The certificate states job.step as the steps the method ran; the attack suite's progress used to
    land in the same field (0-100) and the job page showed 'step 100 of 100' after 12 steps."""
    c = unlearned(queued_job)  # 12 steps
    services.job_progress_record(claim=c, phase="verifying", verification_percent=40, log_line="verification probes done")
    queued_job.refresh_from_db()
    assert (queued_job.step, queued_job.verification_percent, queued_job.progress_percent) == (12, 40, 100)
    assert queued_job.eta_seconds() is None
    assert services.job_progress_record(claim=c, phase="verifying", verification_percent=250).held
    queued_job.refresh_from_db()
    assert queued_job.verification_percent == 100 and queued_job.step == 12


def test_eta_is_the_step_budget_at_the_rate_so_far(queued_job: UnlearningJob) -> None:
    c = claim(queued_job)
    services.job_progress_record(claim=c, phase="unlearning", step=25, total_steps=100)
    queued_job.refresh_from_db()
    now = queued_job.started_at + timedelta(seconds=50)
    assert queued_job.eta_seconds(now) == pytest.approx(150.0)  # 2 s a step, 75 steps left
    assert queued_job.progress_percent == 25


def test_attempts_add_up_across_a_kill_and_the_hand_over_to_verification(queued_job: UnlearningJob) -> None:
    claim(queued_job)
    UnlearningJob.objects.filter(pk=queued_job.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    services.jobs_reconcile()  # the worker was killed: requeued
    c = unlearned(queued_job)  # claimed again, then handed to verification and claimed there
    queued_job.refresh_from_db()
    assert (queued_job.attempts_total, queued_job.attempts) == (3, 1)
    from compliance.jobs.selectors import progress_document

    assert progress_document(queued_job)["attempts"] == 3 and progress_document(queued_job)["phase_attempts"] == 1
    assert c.attempt == 1
