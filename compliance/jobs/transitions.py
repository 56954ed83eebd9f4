"""The one table of a job's status changes (like the request's, compliance/erasure/transitions.py).

    queued    -> running     a worker claims it (conditional UPDATE in job_claim)
              -> cancelled   an officer cancels it before any worker held it
              -> failed      (reserved: a job that can never be claimed)
    running   -> verifying   unlearning finished: the candidate goes to verification
              -> queued      its worker stopped beating: reconcile requeues it
              -> cancelled   cancelled while running (the worker stops at its next check)
              -> failed      an error, or too many lost workers
    verifying -> succeeded   the verdict passed (the candidate becomes the active version)
              -> failed      the verdict failed, an error, or too many lost workers
              -> cancelled   cancelled while verifying
    succeeded, failed, cancelled: final (a retry is a new job)

Every service that changes a job's status goes through `move` (or, for the claim's conditional
UPDATE, checks `allowed`), so a change the table does not list is refused instead of written.
Each move's audit event is written by the service that makes it (`_job_audit`), next to the move.
"""

from __future__ import annotations

from typing import Any

from compliance.jobs.models import JobStatus, UnlearningJob

S = JobStatus
JOB_TRANSITIONS: dict[str, frozenset[str]] = {
    S.QUEUED: frozenset({S.RUNNING, S.CANCELLED, S.FAILED}),
    S.RUNNING: frozenset({S.VERIFYING, S.QUEUED, S.CANCELLED, S.FAILED}),
    S.VERIFYING: frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
}


class JobTransitionNotAllowed(Exception):
    def __init__(self, job_id: object, current: str, target: str) -> None:
        super().__init__(f"job {job_id} cannot move from {current} to {target}")
        self.current = current
        self.target = target


def allowed(current: str, target: str) -> bool:
    return target in JOB_TRANSITIONS[JobStatus(current)]


def move(job: UnlearningJob, to: str, **fields: Any) -> UnlearningJob:
    """Set the job's status to `to` with `fields` and save those columns; refuse a move the table does
    not list, changing nothing. The caller holds the job's row lock (select_for_update)."""
    target = JobStatus(to)
    if not allowed(job.status, target):
        raise JobTransitionNotAllowed(job.pk, job.status, target)
    job.status = target
    for name, value in fields.items():
        setattr(job, name, value)
    job.save(update_fields=["status", *fields])
    return job
