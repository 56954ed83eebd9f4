"""Batching approved requests into jobs, and retrying a failed job as a new one.

    jobs_dispatch(now)                       per model, the approved requests whose batch window has
                                             closed become one job from the active version (beat, and
                                             after each approval)
    job_retry(job, officer, method, only)    a failed or cancelled job's requests as a new job

The job's life after creation is in compliance.jobs.services.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from compliance.erasure.models import ErasureRequest, Status
from compliance.jobs import specs
from compliance.jobs.models import ACTIVE_JOB_STATUSES, JobStatus, UnlearningJob
from compliance.jobs.services import JobConflict, job_create, officer_actor, require_officer
from compliance.registry import selectors as registry_selectors
from compliance.registry.models import AIModel, ForgetItem, ModelVersion


def _relevant_requests(model: AIModel, version: ModelVersion) -> list[ErasureRequest]:
    """Approved requests in this model's scope with located records in a corpus the active version was
    trained on, never batched for this model before; oldest decision first."""
    corpus_ids = registry_selectors.corpora_of(version=version)
    items = ForgetItem.objects.all()
    if corpus_ids:
        items = items.filter(corpus_version__corpus_id__in=corpus_ids)
    return list(
        ErasureRequest.objects.filter(status=Status.APPROVED)
        .filter(Q(scope_all_models=True) | Q(scope_models=model))
        .filter(id__in=items.values("request_id"))
        .exclude(jobs__model=model)
        .distinct()
        .order_by("decided_at", "received_at")
    )


@dataclass(frozen=True)
class DispatchResult:
    created: list[UnlearningJob]
    waiting: int  # requests held back for the batch window
    next_due_in_s: float | None  # when the oldest waiting request's window closes


def jobs_dispatch(*, now: datetime | None = None, method: str | None = None) -> DispatchResult:
    """Batch approved requests into one job per model (see module doc), at most
    JOB_BATCH_MAX_REQUESTS per job. A batch starts once it is full or its oldest request has waited
    JOB_BATCH_WAIT_S (requests approved together land in one job). Safe to call concurrently: the
    model row is locked while its job is created."""
    now = now or timezone.now()
    wait = timedelta(seconds=settings.JOB_BATCH_WAIT_S)
    created: list[UnlearningJob] = []
    waiting = 0
    next_due: float | None = None
    for model in registry_selectors.models_with_active_version():
        with transaction.atomic():
            model = AIModel.objects.select_for_update().get(pk=model.pk)
            if UnlearningJob.objects.filter(model=model, status__in=ACTIVE_JOB_STATUSES).exists():
                continue  # the next batch starts from this job's result
            base = registry_selectors.active_version(model=model)
            if base is None:
                continue
            pending = _relevant_requests(model, base)
            if not pending:
                continue
            oldest = pending[0].decided_at or pending[0].received_at
            if len(pending) < settings.JOB_BATCH_MAX_REQUESTS and now - oldest < wait:
                waiting += len(pending)
                due = (oldest + wait - now).total_seconds()
                next_due = due if next_due is None else min(next_due, due)
                continue
            batch = pending[: settings.JOB_BATCH_MAX_REQUESTS]
            built = _with_path(specs.build_spec(method=method), base, batch)
            job = job_create(model=model, base=base, requests=batch, built=built, actor="system")
            created.append(job)
    return DispatchResult(created=created, waiting=waiting, next_due_in_s=next_due)


def _with_path(built: specs.BuiltSpec, base: ModelVersion, batch: list[ErasureRequest]) -> specs.BuiltSpec:
    """The job's method by where the batch's records sit: exact shard retraining for a sharded fine-tune,
    the approximate method otherwise, both when records sit in both (registry_selectors.erasure_path).
    The spec stays the approximate one: it covers the rest, and a strengthened retry uses it."""
    items = registry_selectors.forget_items_for(
        request_ids=[r.id for r in batch], corpus_ids=registry_selectors.corpora_of(version=base) or None
    )
    path = registry_selectors.erasure_path(version=base, items=items)
    return specs.BuiltSpec(method=path.method(built.method), spec=built.spec, sha256=built.sha256)


def job_retry(
    *, job: UnlearningJob, officer: User, method: str | None = None, overrides: dict[str, Any] | None = None,
    only: ErasureRequest | None = None,
) -> UnlearningJob:
    """Start again after a failure or a cancellation, optionally with another method. The new job
    starts from the model's current active version, for the requests of `job` still waiting for
    unlearning (approved after a cancellation, needs_decision after an escalation).

    The same approximate method again runs at the next stronger settings (specs.strengthen): the
    settings that failed would fail again. The records still take the path they allow (exact shard
    retraining where they sit in a sharded fine-tune), as at dispatch.

    `only`: retry for that one request of the batch (an officer's escalation decision is about one
    person); the job's other requests keep waiting for their own decision. It may already be unlearning
    on another model (a request with failures on two models gets one retry per model)."""
    require_officer(officer)
    failed_method = str(job.spec.get("method") or job.method)
    chosen = method or failed_method
    if overrides is None and chosen == failed_method and job.status == JobStatus.FAILED:
        built = specs.strengthen(spec=job.spec, round=1)  # SpecError before any write
    else:
        built = specs.build_spec(method=chosen, overrides=overrides)
    with transaction.atomic():
        AIModel.objects.select_for_update().get(pk=job.model_id)
        locked = UnlearningJob.objects.select_for_update().get(pk=job.pk)
        if locked.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
            raise JobConflict("Only a failed or cancelled job can be retried.")
        if UnlearningJob.objects.filter(model_id=locked.model_id, status__in=ACTIVE_JOB_STATUSES).exists():
            raise JobConflict("Another job for this model is active; retry when it has finished.")
        retried = locked.retries.filter(created_by__isnull=False)
        if (retried.filter(requests=only) if only is not None else retried).exists():
            raise JobConflict("This job was already retried.")
        base = registry_selectors.active_version(model=locked.model)
        if base is None:
            raise JobConflict("The model has no active version to start from.")
        if only is not None:
            requests = list(locked.requests.filter(pk=only.pk, status__in=[Status.APPROVED, Status.NEEDS_DECISION, Status.UNLEARNING]))
        else:
            requests = list(locked.requests.filter(status__in=[Status.APPROVED, Status.NEEDS_DECISION]))
        if not requests:
            raise JobConflict("None of this job's requests is still waiting for unlearning.")
        new = job_create(
            model=locked.model, base=base, requests=requests, built=_with_path(built, base, requests), actor=officer_actor(officer),
            created_by=officer, retry_of=locked,
        )
    return new


