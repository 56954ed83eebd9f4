"""Unlearning jobs and their verification reports.

A job batches one or more approved requests against one model, starts from the model's active
version and produces a candidate version. Workers claim a job with a conditional UPDATE on its
status (exactly one row must change), beat a heartbeat while they run, and record progress here
for the portal. The job row never holds personal data: subjects are referenced by request id.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from django.conf import settings
from django.db import models
from django.utils import timezone


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Unlearning"
    VERIFYING = "verifying", "Verifying"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


ACTIVE_JOB_STATUSES = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.VERIFYING)


class UnlearningJob(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    model = models.ForeignKey("registry.AIModel", on_delete=models.PROTECT, related_name="jobs")
    base_version = models.ForeignKey("registry.ModelVersion", on_delete=models.PROTECT, related_name="+")
    result_version = models.ForeignKey(
        "registry.ModelVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    requests = models.ManyToManyField("erasure.ErasureRequest", related_name="jobs")
    method = models.CharField(max_length=64)  # a registered method, exact-shard-retrain, or exact-shard-retrain+<method>
    spec = models.JSONField()
    spec_sha256 = models.CharField(max_length=64)
    status = models.CharField(max_length=12, choices=JobStatus.choices, default=JobStatus.QUEUED, db_index=True)
    # Claims in the current phase (the budget JOB_MAX_ATTEMPTS counts; reset when the job is handed to
    # verification) and claims over the job's whole life (what the portal and the API show).
    attempts = models.PositiveSmallIntegerField(default=0)
    attempts_total = models.PositiveSmallIntegerField(default=0)
    strengthen_round = models.PositiveSmallIntegerField(default=0, help_text="Retries with a stronger setting after a failed verdict")
    retry_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retries")

    # progress, for the portal. step / total_steps count unlearning steps only (the certificate states
    # `step` as the steps the method ran); the attack suite's progress has its own field.
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    verification_percent = models.PositiveSmallIntegerField(default=0)
    phase = models.CharField(max_length=32, blank=True)
    losses = models.JSONField(default=dict, blank=True)
    forget_extraction = models.FloatField(null=True, blank=True)
    retain_extraction = models.FloatField(null=True, blank=True)
    history = models.JSONField(default=list, blank=True)
    log_tail = models.TextField(blank=True)
    stop_reason = models.CharField(max_length=64, blank=True)
    # Exact erasure (method exact-shard-retrain): what was retrained and the absence proofs, hashes only
    # (compliance.registry.sharding.exact_erase). {} for approximate unlearning.
    exact_proof = models.JSONField(default=dict, blank=True)

    worker = models.CharField(max_length=200, blank=True)
    device = models.CharField(max_length=64, blank=True)
    celery_task_id = models.CharField(max_length=64, blank=True)
    # Set by each successful claim; every worker-side write is conditional on it, so a worker whose
    # job was reclaimed (stale heartbeat) can no longer change the row and stops at its next check.
    claim_token = models.CharField(max_length=32, blank=True, db_index=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)
    error = models.TextField(blank=True)
    verdict = models.CharField(max_length=8, blank=True)  # pass | fail, once verified
    escalated = models.BooleanField(default=False, help_text="Failed for good: an officer must retry or close")

    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"job {str(self.id)[:8]} ({self.method}, {self.status})"

    @property
    def progress_percent(self) -> int:
        """Of the unlearning step budget. The method stops earlier once its target is met, so this
        is an upper bound on the work left, and a finished unlearning phase shows 100."""
        if self.phase == "verifying" or self.result_version_id is not None or self.status == JobStatus.SUCCEEDED:
            return 100
        if not self.total_steps:
            return 0
        return min(100, int(100 * self.step / self.total_steps))

    def eta_seconds(self, now: datetime | None = None) -> float | None:
        """Seconds until the step budget is spent at the rate so far (an upper bound: the method may
        stop early), while unlearning runs; None before the first step or after the phase."""
        if self.status != JobStatus.RUNNING or self.phase == "verifying" or not self.started_at or not self.step or not self.total_steps:
            return None
        elapsed = ((now or timezone.now()) - self.started_at).total_seconds()
        return max(0.0, elapsed / self.step * max(0, self.total_steps - self.step))


class VerificationReport(models.Model):
    job = models.ForeignKey(UnlearningJob, on_delete=models.CASCADE, related_name="reports")
    model_version = models.ForeignKey("registry.ModelVersion", on_delete=models.PROTECT, related_name="reports")
    base_version = models.ForeignKey(
        "registry.ModelVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    verdict = models.CharField(max_length=8)  # pass | fail
    decided_by = models.TextField(blank=True)
    policy = models.JSONField()
    report = models.JSONField()  # per attack, per subject (by subject_ref), per attribute; no values
    report_sha256 = models.CharField(max_length=64)
    plots_dir = models.CharField(max_length=1000, blank=True)
    wall_s = models.FloatField(default=0.0)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"verification {self.verdict} for {self.model_version}"
