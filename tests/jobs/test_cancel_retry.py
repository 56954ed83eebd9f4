"""Cancelling and retrying jobs, and every bad input: a clear error and no change."""

from __future__ import annotations

from typing import Any

import pytest

from compliance.erasure.models import Status
from compliance.jobs import dispatch, services, specs
from compliance.jobs.models import JobStatus, UnlearningJob
from tests import factories

pytestmark = pytest.mark.django_db


def snapshot(job: UnlearningJob) -> tuple[Any, ...]:
    job.refresh_from_db()
    return (job.status, job.cancel_requested, job.claim_token, UnlearningJob.objects.count(),
            tuple(sorted(job.requests.values_list("status", flat=True))))


def test_cancelling_a_queued_job_cancels_it_and_returns_requests_to_approved(queued_job: UnlearningJob, officer: Any) -> None:
    services.job_cancel(job=queued_job, officer=officer)

    queued_job.refresh_from_db()
    assert queued_job.status == JobStatus.CANCELLED
    assert {r.status for r in queued_job.requests.all()} == {Status.APPROVED}
    assert services.job_claim(job_id=queued_job.id, worker="w", phase="unlearning") is None


def test_cancelling_a_running_job_asks_the_worker_to_stop(queued_job: UnlearningJob, officer: Any) -> None:
    claim = services.job_claim(job_id=queued_job.id, worker="w", phase="unlearning")
    assert claim is not None

    services.job_cancel(job=queued_job, officer=officer)

    assert services.job_heartbeat(claim=claim).cancel
    assert queued_job.status == JobStatus.RUNNING
    services.job_cancelled(claim=claim)
    queued_job.refresh_from_db()
    assert queued_job.status == JobStatus.CANCELLED


def test_cancelling_a_finished_job_is_refused_and_changes_nothing(queued_job: UnlearningJob, officer: Any) -> None:
    services.job_cancel(job=queued_job, officer=officer)
    before = snapshot(queued_job)

    with pytest.raises(services.JobConflict, match="only a queued or running job"):
        services.job_cancel(job=queued_job, officer=officer)

    assert snapshot(queued_job) == before


def test_only_officers_cancel_or_retry(queued_job: UnlearningJob) -> None:
    reviewer = factories.user("reviewer")
    before = snapshot(queued_job)

    with pytest.raises(services.JobPermissionDenied):
        services.job_cancel(job=queued_job, officer=reviewer)
    with pytest.raises(services.JobPermissionDenied):
        dispatch.job_retry(job=queued_job, officer=reviewer, method="npo")

    assert snapshot(queued_job) == before


def test_retry_with_another_method_starts_a_new_job_for_the_approved_requests(queued_job: UnlearningJob, officer: Any) -> None:
    services.job_cancel(job=queued_job, officer=officer)

    new = dispatch.job_retry(job=queued_job, officer=officer, method="npo")

    assert new.method == "npo" and new.retry_of == queued_job and new.status == JobStatus.QUEUED
    assert set(new.requests.all()) == set(queued_job.requests.all())
    assert {r.status for r in new.requests.all()} == {Status.UNLEARNING}
    with pytest.raises(services.JobConflict):
        dispatch.job_retry(job=queued_job, officer=officer)  # one retry per job


def test_retry_with_an_unknown_method_is_refused_and_changes_nothing(queued_job: UnlearningJob, officer: Any) -> None:
    services.job_cancel(job=queued_job, officer=officer)
    before = snapshot(queued_job)

    with pytest.raises(specs.SpecError, match="unknown unlearning method"):
        dispatch.job_retry(job=queued_job, officer=officer, method="delete-everything")

    assert snapshot(queued_job) == before


def test_retrying_an_active_job_is_refused_and_changes_nothing(queued_job: UnlearningJob, officer: Any) -> None:
    before = snapshot(queued_job)

    with pytest.raises(services.JobConflict, match="failed or cancelled"):
        dispatch.job_retry(job=queued_job, officer=officer, method="npo")

    assert snapshot(queued_job) == before


@pytest.mark.parametrize("job_id", ["6f1c1a3e-0000-4000-8000-000000000000", "not-a-uuid", ""])
def test_an_unknown_job_id_is_not_found(job_id: str) -> None:
    with pytest.raises(services.JobNotFound):
        services.job_get(job_id=job_id)
