"""Scheduling tasks on the default queue (beat and after approvals): ids in, counts out."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings


@shared_task(name="jobs.dispatch", soft_time_limit=120, time_limit=180)
def dispatch(**kwargs: object) -> dict[str, object]:
    """Batch approved requests into jobs. When a batch window is still open and a broker is
    configured, check again when it closes (beat also calls this every JOB_BATCH_WAIT_S)."""
    from compliance.jobs.dispatch import jobs_dispatch

    result = jobs_dispatch()
    if result.next_due_in_s is not None and not settings.CELERY_TASK_ALWAYS_EAGER:
        dispatch.apply_async(countdown=max(1.0, result.next_due_in_s + 0.5), queue="default")
    return {"created": [str(job.id) for job in result.created], "waiting": result.waiting}


@shared_task(name="jobs.reconcile", soft_time_limit=120, time_limit=180)
def reconcile(**kwargs: object) -> list[str]:
    """Beat: requeue jobs whose worker stopped beating."""
    from compliance.jobs.services import jobs_reconcile

    return [str(job_id) for job_id in jobs_reconcile()]
