"""Celery tasks of the GPU workers: the only worker-side module that touches Django and the ORM.

    unlearning.run_job(job_id)    claim -> execution.unlearn -> outcome
    verification.run_job(job_id)  claim -> execution.verify -> outcome

A task claims its job (a conditional UPDATE), runs one phase of unlearning_worker.execution under a
heartbeat (unlearning_worker.runtime), and returns the outcome; when the phase raises, on_failure
records the failure (without PII) on the job it still holds.

Both are routed to the `gpu` queue (settings.CELERY_TASK_ROUTES, by name prefix), take ids only and
return ids and codes only: no personal data ever enters a message or the result backend. Both are
`acks_late`: a message redelivered after a crash reruns the task, which is safe because the claim is a
conditional UPDATE (a job already held, finished or cancelled claims nothing), the engine writes its
output directory atomically and resumes from its checkpoints, and a finished output is registered
rather than recomputed. A worker killed outright is caught by `jobs.reconcile` (stale heartbeat).
A dropped database connection (a restart, a failover, pg_terminate_backend) does not fail the job:
the worker's writes reconnect and retry (`runtime.db_retry`; each is conditional on the claim, so safe to
repeat), progress is best effort, and the heartbeat thread reconnects on its next beat.
torch and transformers are imported inside the task bodies, so the web process never loads them.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from typing import Any

from celery import Task, shared_task
from django.conf import settings
from django.db import close_old_connections

from compliance.jobs import outputs
from compliance.jobs import services as job_services
from unlearning_worker import execution
from unlearning_worker.runtime import Heartbeat, db_retry, heartbeat_interval, safe_error, worker_name

logger = logging.getLogger(__name__)

# job id -> claim token held by this process, so that on_failure fails only a job it still holds.
_held_claims: dict[str, job_services.Claim] = {}


class JobTask(Task):
    """Marks the job failed when the task raises (the error recorded without PII)."""

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        job_id = str((kwargs or {}).get("job_id", ""))
        claim = _held_claims.pop(job_id, None)
        if not job_id or claim is None:
            return
        try:
            # The failure may be the dropped connection itself: reconnect before recording it.
            failed = db_retry(
                lambda: job_services.job_fail(job_id=job_id, error=safe_error(exc), claim_token=claim.token),
                what=f"job {job_id}: recording the failure",
            )
        except Exception:  # noqa: BLE001  (reconcile catches what this misses)
            logger.exception("job %s: could not record the failure", job_id)
            return
        if failed is not None:
            # Failed for good (a retry is a new job with its own checkpoints): free the disk now,
            # which matters most when the failure was a full disk.
            shutil.rmtree(outputs.checkpoint_dir_of(job_id), ignore_errors=True)


def _run_claimed(job_id: str, claim: job_services.Claim, body: Callable[[job_services.Claim, Heartbeat], str]) -> dict[str, Any]:
    """Run `body` under a heartbeat. On an exception the claim stays registered for on_failure,
    which fails the job it still holds."""
    _held_claims[job_id] = claim
    heartbeat = Heartbeat(claim, heartbeat_interval())
    heartbeat.start()
    try:
        outcome = body(claim, heartbeat)
    finally:
        heartbeat.stop()
        close_old_connections()
    _held_claims.pop(job_id, None)
    return {"job_id": job_id, "outcome": outcome}


@shared_task(
    bind=True,
    base=JobTask,
    name="unlearning.run_job",  # queue gpu: CELERY_TASK_ROUTES
    acks_late=True,
    soft_time_limit=settings.JOB_SOFT_TIME_LIMIT_S,
    time_limit=settings.JOB_SOFT_TIME_LIMIT_S + 300,
)
def run_unlearning_job(self: Task, *, job_id: str, **kwargs: Any) -> dict[str, Any]:
    """Unlearn the job's subjects from its base version (see module doc). Returns ids and codes only."""
    claim = job_services.job_claim(job_id=job_id, worker=worker_name(), phase="unlearning", task_id=self.request.id or "")
    if claim is None:
        return {"job_id": job_id, "outcome": "not_claimed"}
    return _run_claimed(job_id, claim, execution.unlearn)


@shared_task(
    bind=True,
    base=JobTask,
    name="verification.run_job",  # queue gpu: CELERY_TASK_ROUTES
    acks_late=True,
    soft_time_limit=settings.JOB_SOFT_TIME_LIMIT_S,
    time_limit=settings.JOB_SOFT_TIME_LIMIT_S + 300,
)
def run_verification_job(self: Task, *, job_id: str, **kwargs: Any) -> dict[str, Any]:
    """Attack the job's candidate version and its base; record the report and act on the verdict."""
    claim = job_services.job_claim(job_id=job_id, worker=worker_name(), phase="verification", task_id=self.request.id or "")
    if claim is None:
        return {"job_id": job_id, "outcome": "not_claimed"}
    return _run_claimed(job_id, claim, execution.verify)
