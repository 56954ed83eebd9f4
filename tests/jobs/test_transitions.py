"""The job transition table (compliance/jobs/transitions.py): every allowed move is made and audited by its
service, every other move is refused and changes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from compliance.jobs import services as job_services
from compliance.jobs.models import JobStatus, UnlearningJob
from compliance.jobs.transitions import JOB_TRANSITIONS, JobTransitionNotAllowed, allowed, move

pytestmark = pytest.mark.django_db

ALL = [s.value for s in JobStatus]
PAIRS = [(a, b) for a in ALL for b in ALL if a != b]


def test_the_table_names_every_status_and_final_ones_have_no_way_out() -> None:
    assert set(JOB_TRANSITIONS) == set(ALL)
    for final in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED):
        assert JOB_TRANSITIONS[final] == frozenset()
    assert allowed(JobStatus.QUEUED, JobStatus.RUNNING) and not allowed(JobStatus.QUEUED, JobStatus.SUCCEEDED)


@pytest.mark.parametrize(("current", "target"), PAIRS)
def test_each_move_is_made_or_refused_as_the_table_says(queued_job: UnlearningJob, current: str, target: str) -> None:
    UnlearningJob.objects.filter(pk=queued_job.pk).update(status=current)
    job = UnlearningJob.objects.get(pk=queued_job.pk)
    if target in JOB_TRANSITIONS[current]:
        move(job, target, phase="moved")
        job.refresh_from_db()
        assert (job.status, job.phase) == (target, "moved")
    else:
        with pytest.raises(JobTransitionNotAllowed, match=f"from {current} to {target}"):
            move(job, target, phase="moved")
        job.refresh_from_db()
        assert job.status == current and job.phase != "moved"


def test_a_finished_job_cannot_be_cancelled_or_failed_by_a_late_worker(queued_job: UnlearningJob, officer: Any) -> None:
    UnlearningJob.objects.filter(pk=queued_job.pk).update(status=JobStatus.SUCCEEDED)
    job = UnlearningJob.objects.get(pk=queued_job.pk)
    with pytest.raises(JobTransitionNotAllowed):
        job_services._finish_cancel(job)
    with pytest.raises(JobTransitionNotAllowed):
        job_services._job_fail_locked(job, error="late", escalate=False)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED and job.error == ""


def test_reconcile_requeues_a_running_job_through_the_table(queued_job: UnlearningJob) -> None:
    claim = job_services.job_claim(job_id=queued_job.id, worker="w1", phase="unlearning")
    assert claim is not None
    assert job_services.jobs_reconcile(timeout_s=0) == [queued_job.id]
    queued_job.refresh_from_db()
    assert (queued_job.status, queued_job.phase, queued_job.claim_token) == (JobStatus.QUEUED, "requeued", "")
