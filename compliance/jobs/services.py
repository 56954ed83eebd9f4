"""Unlearning-job services: creating a job, claiming, progress, cancellation, reconciliation and the
verdict (batching and retries are dispatch.py). With dispatch.py, the only code that changes an
UnlearningJob row.

Life of a job (status):

    queued --claim--> running --unlearning done--> verifying --pass--> succeeded
       |                 |  \\--cancel--> cancelled        \\--fail--> failed (+ a stronger retry, or escalated)
       \\--cancel--> cancelled   \\--error / attempts spent--> failed (escalated)

Invariants:
- At most one job per model is active (queued, running, verifying): a job starts from the model's
  active version, so the next batch must wait for this one's result to start from the new version.
- Worker-side writes are conditional on the job's `claim_token` (a conditional UPDATE that must
  change exactly one row). A reclaimed job's old worker loses every write and stops.
- Requests: approved -> unlearning when batched into a job; -> verifying when every model's job for
  them has passed (awaiting the officer's sign-off, done by the certificates service); back to
  approved when a job fails for good or is cancelled. A request already batched for a model is not
  batched again for it by the dispatcher: after a failure or cancellation an officer retries the job.
- Nothing here stores personal data: rows and audit events hold ids, codes, numbers and hashes.
"""

from __future__ import annotations

import logging
import re
import secrets
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from compliance.audit.services import audit_append
from compliance.common.tasks import enqueue
from compliance.erasure.models import ErasureRequest, Status
from compliance.erasure.permissions import can_decide
from compliance.erasure.transitions import TransitionNotAllowed, transition
from compliance.jobs import specs
from compliance.jobs import transitions as job_transitions
from compliance.jobs.models import ACTIVE_JOB_STATUSES, JobStatus, UnlearningJob, VerificationReport
from compliance.registry import services as registry_services
from compliance.registry.models import AIModel, CorpusVersion, ModelVersion

logger = logging.getLogger(__name__)

LOG_TAIL_CHARS = 8000
HISTORY_MAX_POINTS = 500


class JobError(Exception):
    """A job operation that cannot be carried out as asked; the message is safe to show."""

    code = "invalid"
    http_status = 400


class JobNotFound(JobError):
    code = "not_found"
    http_status = 404


class JobConflict(JobError):
    code = "conflict"
    http_status = 409


class JobPermissionDenied(JobError):
    code = "forbidden"
    http_status = 403


def officer_actor(user: User | None) -> str:
    return f"user:{user.pk}" if user is not None and user.is_authenticated else "system"


def require_officer(user: User) -> None:
    if not can_decide(user):
        raise JobPermissionDenied("Only privacy officers can cancel or retry unlearning jobs.")


def job_get(*, job_id: uuid.UUID | str) -> UnlearningJob:
    try:
        key = uuid.UUID(str(job_id))
    except ValueError as exc:
        raise JobNotFound("No such unlearning job.") from exc
    job = UnlearningJob.objects.select_related("model", "base_version", "result_version").filter(pk=key).first()
    if job is None:
        raise JobNotFound("No such unlearning job.")
    return job


def _job_audit(job: UnlearningJob, event: str, *, actor: str = "system", outcome: str = "ok", **details: str | int) -> None:
    """One event per request of the job (the log is per request), or one job-level event if none."""
    base: dict[str, str | int] = {"job": str(job.id), "model": job.model.name, "method": job.method}
    base.update(details)
    artefacts = {"spec_sha256": job.spec_sha256} if job.spec_sha256 else None
    request_rows: list[tuple[uuid.UUID | None, str | None]] = list(job.requests.values_list("id", "subject_ref"))
    for request_id, subject_ref in request_rows or [(None, None)]:
        audit_append(
            event_type=f"job.{event}",
            actor=actor,
            outcome=outcome,
            request_id=request_id,
            subject_ref=subject_ref,
            artefacts=artefacts,
            details=base,
        )


_DIGIT_RUN = re.compile(r"(?:\d[\s\-.]?){7,}")


def _audit_safe_uuid() -> uuid.UUID:
    """A random job id whose text has no run of seven digits: the audit log refuses such runs (they
    look like phone numbers), and every job event carries the job id. Still 122 random bits, minus
    a negligible share of excluded values."""
    while True:
        candidate = uuid.uuid4()
        if not _DIGIT_RUN.search(str(candidate)):
            return candidate


def _code(text: str) -> str:
    """A free-form reason reduced to an audit-safe code (letters, digits, _ . -)."""
    return re.sub(r"[^A-Za-z0-9_.\-]+", "_", text)[:60]


def job_create(
    *,
    model: AIModel,
    base: ModelVersion,
    requests: list[ErasureRequest],
    built: specs.BuiltSpec,
    actor: str,
    created_by: User | None = None,
    retry_of: UnlearningJob | None = None,
    strengthen_round: int = 0,
) -> UnlearningJob:
    """Create the job, move its requests to unlearning, audit, and send it to a GPU worker after commit.
    Caller holds the model row lock inside a transaction."""
    job = UnlearningJob.objects.create(
        id=_audit_safe_uuid(),
        model=model,
        base_version=base,
        method=built.method,
        spec=built.spec,
        spec_sha256=built.sha256,
        created_by=created_by,
        retry_of=retry_of,
        strengthen_round=strengthen_round,
        phase="queued",
    )
    job.requests.set(requests)
    for request in requests:
        if request.status in (Status.APPROVED, Status.NEEDS_DECISION):
            transition(request, Status.UNLEARNING, actor=actor, details={"job": str(job.id)})
    _job_audit(job, "created", actor=actor, base_version=base.number, requests=len(requests), round=strengthen_round)
    enqueue("unlearning.run_job", job_id=str(job.id))
    return job


# --- claiming and progress (worker side) ---------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    job_id: uuid.UUID
    token: str
    attempt: int


def job_claim(*, job_id: uuid.UUID | str, worker: str, phase: str, task_id: str = "") -> Claim | None:
    """Claim a job for one phase with a conditional UPDATE; None unless exactly one row changed.

    unlearning: queued -> running. verification: a verifying job nobody holds. A redelivered
    message (acks_late) for a job already held, finished or cancelled claims nothing and is dropped.
    """
    job_id = uuid.UUID(str(job_id))
    token = secrets.token_hex(16)
    now = timezone.now()
    common: dict[str, Any] = {
        "claim_token": token,
        "worker": worker[:200],
        "heartbeat_at": now,
        "attempts": F("attempts") + 1,
        "attempts_total": F("attempts_total") + 1,
        "celery_task_id": task_id[:64],
    }
    assert job_transitions.allowed(JobStatus.QUEUED, JobStatus.RUNNING)  # the claim's conditional UPDATE below
    with transaction.atomic():
        if phase == "unlearning":
            changed = UnlearningJob.objects.filter(
                pk=job_id, status=JobStatus.QUEUED, cancel_requested=False, claim_token=""
            ).update(status=JobStatus.RUNNING, phase="loading", started_at=now, error="", **common)
        elif phase == "verification":
            changed = UnlearningJob.objects.filter(
                pk=job_id, status=JobStatus.VERIFYING, cancel_requested=False, claim_token=""
            ).update(phase="verifying", **common)
        else:
            raise ValueError("phase must be unlearning or verification")
        if changed != 1:
            return None
        job = UnlearningJob.objects.select_related("model").get(pk=job_id)
        if job.attempts > settings.JOB_MAX_ATTEMPTS:
            # Crashed too often (each reclaim counts): stop burning GPU time and ask an officer.
            _job_fail_locked(job, error=f"gave up after {job.attempts - 1} attempts", escalate=True)
            return None
        _job_audit(job, "claimed", actor=_worker_actor(worker), phase=phase, attempt=job.attempts)
    return Claim(job_id=job_id, token=token, attempt=job.attempts)


def _worker_actor(worker: str) -> str:
    safe = "".join(c for c in worker if c.isalnum() or c in "_.@-")[:80] or "unknown"
    return f"worker:{safe}"


@dataclass(frozen=True)
class Signal:
    held: bool  # False: the claim was lost (reclaimed, cancelled and finalised, or deleted)
    cancel: bool  # an officer asked to stop


def job_heartbeat(*, claim: Claim) -> Signal:
    """Beat the heartbeat; tells the worker whether it still holds the job and whether to stop."""
    changed = UnlearningJob.objects.filter(pk=claim.job_id, claim_token=claim.token).update(heartbeat_at=timezone.now())
    if changed != 1:
        return Signal(held=False, cancel=True)
    cancel = UnlearningJob.objects.filter(pk=claim.job_id).values_list("cancel_requested", flat=True).first()
    return Signal(held=True, cancel=bool(cancel))


def job_progress_record(
    *,
    claim: Claim,
    phase: str,
    step: int | None = None,
    total_steps: int | None = None,
    losses: Mapping[str, float] | None = None,
    forget_extraction: float | None = None,
    retain_extraction: float | None = None,
    history_point: Mapping[str, Any] | None = None,
    log_line: str = "",
    device: str = "",
    verification_percent: int | None = None,
) -> Signal:
    """Record progress for the portal (numbers and codes only; `log_line` must hold no PII)."""
    with transaction.atomic():
        job = UnlearningJob.objects.select_for_update().filter(pk=claim.job_id, claim_token=claim.token).first()
        if job is None:
            return Signal(held=False, cancel=True)
        fields = ["heartbeat_at", "phase"]
        job.heartbeat_at = timezone.now()
        job.phase = phase[:32]
        if step is not None:
            job.step = max(0, int(step))
            fields.append("step")
        if total_steps is not None:
            job.total_steps = max(0, int(total_steps))
            fields.append("total_steps")
        if verification_percent is not None:
            job.verification_percent = min(100, max(0, int(verification_percent)))
            fields.append("verification_percent")
        if losses is not None:
            job.losses = {str(k): float(v) for k, v in losses.items()}
            fields.append("losses")
        if forget_extraction is not None:
            job.forget_extraction = float(forget_extraction)
            fields.append("forget_extraction")
        if retain_extraction is not None:
            job.retain_extraction = float(retain_extraction)
            fields.append("retain_extraction")
        if history_point is not None:
            job.history = [*list(job.history or []), dict(history_point)][-HISTORY_MAX_POINTS:]
            fields.append("history")
        if log_line:
            stamp = timezone.now().strftime("%H:%M:%S")
            job.log_tail = (job.log_tail + f"{stamp} {log_line.rstrip()}\n")[-LOG_TAIL_CHARS:]
            fields.append("log_tail")
        if device:
            job.device = device[:64]
            fields.append("device")
        job.save(update_fields=fields)
        return Signal(held=True, cancel=job.cancel_requested)


# --- end of the unlearning phase -----------------------------------------------------------------


def job_unlearning_finished(
    *,
    claim: Claim,
    version_path: str,
    sha256: str,
    corpus_versions: Iterable[CorpusVersion],
    stop_reason: str,
    steps: int,
    training: dict[str, object] | None = None,
    exact_proof: dict[str, object] | None = None,
) -> UnlearningJob | None:
    """Register the candidate version and hand the job to verification (released claim, new task).
    `training` marks the candidate as a sharded fine-tune (exact erasure keeps it one) and
    `exact_proof` is the exact path's proof. Returns None, changing nothing, if the claim was lost."""
    with transaction.atomic():
        job = UnlearningJob.objects.select_for_update().filter(pk=claim.job_id, claim_token=claim.token).first()
        if job is None or job.status != JobStatus.RUNNING:
            return None
        corpus_versions = list(corpus_versions)
        trained_on = _trained_on_after(job.base_version, corpus_versions)
        candidate = registry_services.model_version_register_candidate(
            model=job.model,
            parent=job.base_version,
            path=version_path,  # type: ignore[arg-type]
            sha256=sha256,
            created_by_job=job,
            trained_on=trained_on,
            actor=_worker_actor(job.worker),
        )
        if training:
            candidate.training = training
            candidate.save(update_fields=["training"])
        job_transitions.move(
            job, JobStatus.VERIFYING, result_version=candidate, exact_proof=exact_proof or {},
            phase="verification queued", stop_reason=stop_reason[:64], step=steps, claim_token="",
            attempts=0,  # verification has its own attempt budget
        )
        _job_audit(
            job, "unlearned", actor=_worker_actor(job.worker), version=candidate.number, steps=steps, stop=_code(stop_reason)
        )
        enqueue("verification.run_job", job_id=str(job.id))
    return job


def _trained_on_after(base: ModelVersion, erased: list[CorpusVersion]) -> list[CorpusVersion]:
    """The new version's lineage: the base version's corpora, with each erased corpus replaced by its new version."""
    replaced = {cv.corpus_id: cv for cv in erased}
    out = [replaced.pop(cv.corpus_id, cv) for cv in base.trained_on.all()]
    return out + list(replaced.values())


# --- verdict -------------------------------------------------------------------------------------


def job_verification_record(
    *,
    claim: Claim,
    passed: bool,
    report: Mapping[str, Any],
    report_sha256: str,
    policy: Mapping[str, Any],
    decided_by: list[str],
    plots_dir: str,
    wall_s: float,
) -> UnlearningJob | None:
    """Store the report and act on the verdict.

    pass: the candidate becomes the active version, the previous one is quarantined until the
      retention date, the job succeeds and each request whose every model job has passed moves to
      verifying (awaiting the officer's sign-off).
    fail: the candidate is rejected; while strengthen rounds remain (settings.JOB_STRENGTHEN_ROUNDS,
      default 1) a retry job with a stronger spec is queued for the same requests; otherwise the job
      fails for good (escalated) and its requests move to needs_decision.
    """
    with transaction.atomic():
        job = UnlearningJob.objects.select_for_update(of=("self",)).select_related("model", "result_version").filter(
            pk=claim.job_id, claim_token=claim.token
        ).first()
        if job is None or job.status != JobStatus.VERIFYING or job.result_version is None:
            return None
        AIModel.objects.select_for_update().get(pk=job.model_id)
        VerificationReport.objects.create(
            job=job,
            model_version=job.result_version,
            base_version=job.base_version,
            verdict="pass" if passed else "fail",
            decided_by="\n".join(decided_by)[:4000],
            policy=dict(policy),
            report=dict(report),
            report_sha256=report_sha256,
            plots_dir=plots_dir,
            wall_s=wall_s,
        )
        now = timezone.now()
        job.verdict = "pass" if passed else "fail"
        job.finished_at = now
        job.claim_token = ""
        actor = _worker_actor(job.worker)
        if passed:
            registry_services.model_version_activate(version=job.result_version, actor=actor, quarantine_previous=True)
            job_transitions.move(job, JobStatus.SUCCEEDED, verdict=job.verdict, finished_at=now, claim_token="", phase="done")
            _job_audit(job, "verified", actor=actor, outcome="pass", version=job.result_version.number)
            artefacts = {"weights_sha256": job.result_version.sha256, "report_sha256": report_sha256}
            for request in job.requests.all():
                if request.status == Status.UNLEARNING and _all_model_jobs_passed(request):
                    transition(request, Status.VERIFYING, actor=actor, artefacts=artefacts, details={"job": str(job.id)})
        else:
            registry_services.model_version_reject(version=job.result_version, actor=actor)
            if not job_transitions.allowed(job.status, JobStatus.FAILED):
                raise job_transitions.JobTransitionNotAllowed(job.pk, job.status, JobStatus.FAILED)
            job.status = JobStatus.FAILED  # saved below, with or without escalation
            job.phase = "verification failed"
            job.error = ("verification failed: " + "; ".join(decided_by))[:2000]
            rounds = int(getattr(settings, "JOB_STRENGTHEN_ROUNDS", 1))
            _job_audit(job, "verified", actor=actor, outcome="fail", version=job.result_version.number)
            retry_spec = None
            if job.strengthen_round < rounds:
                try:
                    retry_spec = specs.strengthen(spec=job.spec, round=job.strengthen_round + 1)
                except specs.SpecError as exc:
                    logger.warning("job %s: cannot strengthen its spec: %s", job.id, exc)
            if retry_spec is not None:
                job.save(update_fields=["verdict", "finished_at", "claim_token", "status", "phase", "error"])
                requests = [r for r in job.requests.all() if r.status in (Status.UNLEARNING, Status.APPROVED)]
                if requests:
                    job_create(
                        model=job.model,
                        base=job.base_version,
                        requests=requests,
                        built=retry_spec,
                        actor="system",
                        retry_of=job,
                        strengthen_round=job.strengthen_round + 1,
                    )
            else:
                job.escalated = True
                job.save(update_fields=["verdict", "finished_at", "claim_token", "status", "phase", "error", "escalated"])
                _job_audit(job, "escalated", actor=actor, outcome="fail")
                _release_requests(job, actor=actor)
        enqueue("jobs.dispatch")
    return job


def _all_model_jobs_passed(request: ErasureRequest) -> bool:
    """Every model this request was batched for has a succeeded job for it, and none is still active."""
    jobs = UnlearningJob.objects.filter(requests=request)
    if jobs.filter(status__in=ACTIVE_JOB_STATUSES).exists():
        return False
    model_ids = set(jobs.values_list("model_id", flat=True))
    passed = set(jobs.filter(status=JobStatus.SUCCEEDED).values_list("model_id", flat=True))
    return model_ids == passed


def _release_requests(job: UnlearningJob, *, actor: str) -> None:
    """Hand the job's requests back to the officer: to needs_decision when the job failed for good
    (escalated: compliance.jobs.escalation lists the options), to approved when it was cancelled."""
    to = Status.NEEDS_DECISION if job.escalated else Status.APPROVED
    for request in job.requests.all():
        if request.status in (Status.UNLEARNING, Status.VERIFYING):
            try:
                transition(request, to, actor=actor, details={"job": str(job.id), "job_status": job.status})
            except TransitionNotAllowed:  # withdrawn meanwhile: nothing to release
                continue


# --- failure, cancellation, retry ----------------------------------------------------------------


def _job_fail_locked(job: UnlearningJob, *, error: str, escalate: bool) -> None:
    job_transitions.move(job, JobStatus.FAILED, error=error[:2000], escalated=escalate, finished_at=timezone.now(),
                         claim_token="", phase="failed")
    candidate = job.result_version
    if candidate is not None and candidate.status == ModelVersion.Status.CANDIDATE:
        registry_services.model_version_reject(version=candidate)
    _job_audit(job, "failed", outcome="error", attempt=job.attempts)
    _release_requests(job, actor="system")
    enqueue("jobs.dispatch")


def job_fail(*, job_id: uuid.UUID | str, error: str, claim_token: str | None = None) -> UnlearningJob | None:
    """Mark an active job failed for good (task on_failure, exhausted attempts). `error` must hold no
    PII (callers pass an exception class and a code). With `claim_token`, only if still held by it."""
    with transaction.atomic():
        qs = UnlearningJob.objects.select_for_update(of=("self",)).select_related("model", "result_version").filter(pk=job_id)
        if claim_token is not None:
            qs = qs.filter(claim_token=claim_token)
        job = qs.filter(status__in=ACTIVE_JOB_STATUSES).first()
        if job is None:
            return None
        _job_fail_locked(job, error=error, escalate=True)
    return job


def job_cancel(*, job: UnlearningJob, officer: User) -> UnlearningJob:
    """Cancel a job. A queued job is cancelled at once; a running or verifying one is asked to stop and
    its worker stops at the next evaluation (then calls job_cancelled). Finished jobs refuse."""
    require_officer(officer)
    with transaction.atomic():
        locked = UnlearningJob.objects.select_for_update(of=("self",)).select_related("model").get(pk=job.pk)
        if locked.status not in ACTIVE_JOB_STATUSES:
            raise JobConflict(f"This job is {locked.get_status_display().lower()}; only a queued or running job can be cancelled.")
        if locked.cancel_requested:
            raise JobConflict("Cancellation was already requested for this job.")
        locked.cancel_requested = True
        fields = ["cancel_requested"]
        if locked.status == JobStatus.QUEUED or (locked.status == JobStatus.VERIFYING and not locked.claim_token):
            _finish_cancel(locked)
        else:
            locked.save(update_fields=fields)
            _job_audit(locked, "cancel_requested", actor=officer_actor(officer))
    job.refresh_from_db()
    return job


def _finish_cancel(job: UnlearningJob) -> None:
    job_transitions.move(job, JobStatus.CANCELLED, cancel_requested=job.cancel_requested, finished_at=timezone.now(),
                         claim_token="", phase="cancelled")
    candidate = job.result_version
    if candidate is not None and candidate.status == ModelVersion.Status.CANDIDATE:
        registry_services.model_version_reject(version=candidate)
    _job_audit(job, "cancelled")
    _release_requests(job, actor="system")
    enqueue("jobs.dispatch")


def job_cancelled(*, claim: Claim, step: int | None = None) -> UnlearningJob | None:
    """The worker stopped on a cancellation request (at `step`): finalise it."""
    with transaction.atomic():
        job = UnlearningJob.objects.select_for_update(of=("self",)).select_related("model", "result_version").filter(
            pk=claim.job_id, claim_token=claim.token
        ).first()
        if job is None or job.status not in ACTIVE_JOB_STATUSES:
            return None
        if step is not None:
            job.step = step
            job.save(update_fields=["step"])
        _finish_cancel(job)
    return job


# --- reconciliation (beat) -----------------------------------------------------------------------


def jobs_reconcile(*, now: datetime | None = None, timeout_s: float | None = None) -> list[uuid.UUID]:
    """Requeue jobs whose worker stopped beating (killed, lost its node): running -> queued and a new
    unlearning task; verifying -> released and a new verification task. The new claim replaces the
    token, so a worker that was only slow loses its writes and stops. Jobs out of attempts fail.
    Also re-sends queued jobs whose message was lost (queued for longer than the timeout, never claimed)."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.JOB_HEARTBEAT_TIMEOUT_S if timeout_s is None else timeout_s)
    requeued: list[uuid.UUID] = []
    stale = UnlearningJob.objects.filter(
        Q(status__in=[JobStatus.RUNNING, JobStatus.VERIFYING], heartbeat_at__lt=cutoff) & ~Q(claim_token="")
        | Q(status=JobStatus.VERIFYING, claim_token="", result_version__isnull=False, heartbeat_at__lt=cutoff)
        | Q(status=JobStatus.QUEUED, claim_token="", created_at__lt=cutoff, heartbeat_at__isnull=True)
        | Q(status=JobStatus.QUEUED, claim_token="", heartbeat_at__lt=cutoff)
    ).values_list("id", flat=True)
    for job_id in list(stale):
        with transaction.atomic():
            job = UnlearningJob.objects.select_for_update(of=("self",)).select_related("model", "result_version").get(pk=job_id)
            if job.status not in ACTIVE_JOB_STATUSES:
                continue
            if job.cancel_requested:
                _finish_cancel(job)
                continue
            if job.attempts >= settings.JOB_MAX_ATTEMPTS and job.claim_token:
                _job_fail_locked(job, error=f"worker lost {job.attempts} times (no heartbeat)", escalate=True)
                continue
            task = "unlearning.run_job"
            # The resend itself counts as a beat: not requeued again next round.
            if job.status == JobStatus.RUNNING:
                job_transitions.move(job, JobStatus.QUEUED, phase="requeued", claim_token="", heartbeat_at=now)
            else:  # queued and never claimed, or verifying: the status stays, the message is sent again
                if job.status == JobStatus.VERIFYING:
                    task = "verification.run_job"
                    job.phase = "verification requeued"
                job.claim_token = ""
                job.heartbeat_at = now
                job.save(update_fields=["phase", "claim_token", "heartbeat_at"])
            _job_audit(job, "requeued", attempt=job.attempts)
            enqueue(task, job_id=str(job.id))
            requeued.append(job.id)
    return requeued
