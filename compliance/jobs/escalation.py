"""Requests that need a decision: what failed, in plain words, and the officer's options.

A job that fails for good (its verdict failed after the stronger retries the policy allows, or the
worker gave up) moves its requests to needs_decision (compliance.jobs.services). The request then waits
for the officer, with its deadline running, and the portal shows this module's `Escalation`: the checks
that failed as a privacy officer would say them, the path the records can take out of each model, and
the options:

- retry: a new job per failed model with a named method (the same method at the next stronger
  settings, another method at its defaults), on the path the records allow (exact shard retraining
  where they sit in a sharded fine-tune);
- refuse with a legal code (Art. 17(3) or 12(5)), with a reason the subject reads;
- close guard-only: no certificate; the corpora stay erased and the inference guard keeps suppressing
  the person's data; the justification is sent to the subject.

Each choice is one transaction: the request's transition (and the new jobs) plus one
`request.escalation_decided` audit event naming the option. A second submission of the same decision
(a double click, a stale page) finds the request no longer in needs_decision and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from django.db import transaction

from compliance.audit.services import audit_append
from compliance.erasure import services as erasure_services
from compliance.erasure.models import ErasureRequest, Status
from compliance.erasure.transitions import TransitionNotAllowed
from compliance.jobs import dispatch, services, specs
from compliance.jobs.models import JobStatus, UnlearningJob
from compliance.registry import selectors as registry_selectors

# What each attack family's failure means, for the officer and the subject's notice. An attack a
# policy adds later without an entry here is described by its name and rule.
PLAIN_WORDS: dict[str, str] = {
    "direct_probe": "Asked directly, the model still gives the person's data.",
    "sampling": "Among many sampled answers, some still contain the person's data.",
    "paraphrase_jailbreak": "Reworded questions or jailbreak prompts still get the person's data out.",
    "verbatim": (
        "Given the start of one of the person's records, the model still completes it, closer to the original "
        "than it completes the records of people it never saw (or conspicuously worse, which marks the person too)."
    ),
    "logit_lens": "The model's inner layers still point at the person's data, even where its answer does not.",
    "exposure": "The person's values are still more likely to the model than random values of the same kind.",
    "membership_inference": (
        "The person's records still look more familiar to the model than the same records written about people "
        "it never saw (or conspicuously less familiar, which marks the person too)."
    ),
    "candidate_rank": (
        "Among many values of the same format, the person's true values still stand out: too likely is a leak, "
        "too unlikely marks the person as someone who asked for erasure."
    ),
    "relearning": "After an attacker fine-tunes the model on other people's data, the person's values come back.",
    "quantization": "After the model is compressed (quantized weights), the person's values come back.",
    "utility": "Removing the data damaged the model's answers about other people, or its general text, too much.",
}


class EscalationError(Exception):
    """A decision that cannot be taken (wrong status, missing justification, nothing to retry)."""


@dataclass(frozen=True)
class FailedCheck:
    attack: str
    metric: str
    value: float | None
    rule: str
    plain: str


@dataclass(frozen=True)
class ModelFailure:
    job: UnlearningJob
    checks: list[FailedCheck]
    error: str  # why the job failed when no verdict decided it (the worker gave up), else ""
    path: str  # the path the records can take out of the model's active version, in words
    method: str  # the approximate method that ran


@dataclass(frozen=True)
class Escalation:
    request: ErasureRequest
    failures: list[ModelFailure]
    methods: list[str]
    days_left: int
    due: date

    @property
    def days_overdue(self) -> int:
        return max(0, -self.days_left)


def _checks(job: UnlearningJob) -> list[FailedCheck]:
    report = job.reports.order_by("-created_at").first()
    if report is None:
        return []
    out: list[FailedCheck] = []
    for check in ((report.report.get("verdict") or {}).get("checks")) or []:
        if not check.get("decides_failure"):
            continue
        attack = str(check.get("attack", ""))
        value = check.get("value")
        out.append(
            FailedCheck(
                attack=attack,
                metric=str(check.get("metric", "")),
                value=float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None,
                rule=str(check.get("threshold", "")),
                plain=PLAIN_WORDS.get(attack, f"The check {attack} failed its rule."),
            )
        )
    return out


def open_failures(request: ErasureRequest) -> list[UnlearningJob]:
    """The request's jobs that failed for good and have not been retried for this request."""
    return list(
        UnlearningJob.objects.filter(requests=request, status=JobStatus.FAILED, escalated=True)
        .exclude(retries__requests=request)
        .select_related("model")
        .distinct()
        .order_by("model__name", "-created_at")
    )


def escalation_for(request: ErasureRequest, *, today: date | None = None) -> Escalation | None:
    """What the officer sees for a request in needs_decision; None for any other status."""
    if request.status != Status.NEEDS_DECISION:
        return None
    paths = {model.pk: path for model, path in registry_selectors.erasure_paths(request=request)}
    failures = []
    for job in open_failures(request):
        path = paths.get(job.model_id)
        failures.append(
            ModelFailure(
                job=job,
                checks=_checks(job),
                error="" if job.verdict == "fail" else (job.error or "the worker gave up"),
                path=f"{path.kind}: {path.reason}" if path is not None else "the model has no active version",
                method=str(job.spec.get("method") or job.method),
            )
        )
    return Escalation(
        request=request,
        failures=failures,
        methods=specs.known_methods(),
        days_left=request.days_left(today),
        due=request.effective_due,
    )


def _decided(request: ErasureRequest, *, officer: Any, option: str, **details: str | int) -> None:
    audit_append(
        event_type="request.escalation_decided",
        actor=erasure_services.actor_of(officer),
        outcome="ok",
        request_id=request.id,
        subject_ref=request.subject_ref,
        details={"option": option, **details},
    )


def _require_needs_decision(request: ErasureRequest) -> ErasureRequest:
    locked = ErasureRequest.objects.select_for_update().get(pk=request.pk)
    if locked.status != Status.NEEDS_DECISION:
        raise EscalationError(f"{locked.reference} does not need a decision (it is {locked.get_status_display().lower()}).")
    return locked


def escalation_retry(*, request: ErasureRequest, officer: Any, method: str) -> list[UnlearningJob]:
    """Retry every failed model of the request with `method` (all or nothing)."""
    if method not in specs.known_methods():
        raise EscalationError(f"Unknown unlearning method {method!r}.")
    with transaction.atomic():
        locked = _require_needs_decision(request)
        failed = open_failures(locked)
        if not failed:
            raise EscalationError("No failed job is left to retry; refuse or close the request guard-only.")
        _decided(locked, officer=officer, option="retry", method=method, jobs=len(failed))
        try:
            created = [dispatch.job_retry(job=job, officer=officer, method=method, only=locked) for job in failed]
        except (services.JobError, specs.SpecError) as exc:
            raise EscalationError(str(exc)) from exc
    request.refresh_from_db()
    return created


def escalation_refuse(*, request: ErasureRequest, officer: Any, legal_code: str, reason: str) -> ErasureRequest:
    with transaction.atomic():
        locked = _require_needs_decision(request)
        _decided(locked, officer=officer, option="refuse", legal_code=legal_code)
        try:
            erasure_services.erasure_request_refuse(request=locked, officer=officer, legal_code=legal_code, reason=reason)
        except TransitionNotAllowed as exc:
            raise EscalationError(str(exc)) from exc
    request.refresh_from_db()
    return request


def escalation_guard_only(*, request: ErasureRequest, officer: Any, justification: str) -> ErasureRequest:
    with transaction.atomic():
        locked = _require_needs_decision(request)
        _decided(locked, officer=officer, option="guard_only")
        erasure_services.erasure_request_close_guard_only(request=locked, officer=officer, justification=justification)
    request.refresh_from_db()
    return request
