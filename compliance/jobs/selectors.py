"""Reads of jobs and verification reports for the faces."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.db.models import Count, QuerySet

from compliance.jobs.models import UnlearningJob, VerificationReport


def job_list(*, status: str = "") -> QuerySet[UnlearningJob]:
    qs = UnlearningJob.objects.select_related("model", "base_version", "result_version").annotate(n_requests=Count("requests"))
    if status:
        qs = qs.filter(status=status)
    return qs.order_by("-created_at")


def latest_report(*, job: UnlearningJob) -> VerificationReport | None:
    return job.reports.order_by("-created_at").first()


@dataclass(frozen=True)
class MetricRow:
    attack: str
    metric: str
    before: float | None
    after: float | None


def before_after(report: VerificationReport) -> list[MetricRow]:
    """(attack, metric, before, after) for every metric of the stored report."""
    rows: list[MetricRow] = []
    for name, attack in (report.report.get("attacks") or {}).items():
        after = (attack.get("after") or {}).get("metrics") or {}
        before = (attack.get("before") or {}).get("metrics") or {}
        for metric in sorted(set(after) | set(before)):
            rows.append(MetricRow(name, metric, _num(before.get(metric)), _num(after.get(metric))))
        for metric, value in (attack.get("relative") or {}).items():
            rows.append(MetricRow(name, metric, None, _num(value)))
    return rows


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def report_checks(report: VerificationReport) -> list[dict[str, Any]]:
    return list(((report.report.get("verdict") or {}).get("checks")) or [])


def plot_names(report: VerificationReport | None) -> list[str]:
    """PNG files of the report's plot directory (names only; served through job_plot)."""
    if report is None or not report.plots_dir:
        return []
    folder = Path(report.plots_dir)
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix == ".png")


def progress_document(job: UnlearningJob) -> dict[str, Any]:
    """What the progress endpoint and the API show while a job runs (numbers and codes only)."""
    return {
        "id": str(job.id),
        "status": job.status,
        "phase": job.phase,
        "step": job.step,
        "total_steps": job.total_steps,
        "percent": job.progress_percent,
        "verification_percent": job.verification_percent,
        "eta_s": job.eta_seconds(),
        "losses": job.losses,
        "forget_extraction": job.forget_extraction,
        "retain_extraction": job.retain_extraction,
        "device": job.device,
        "worker": job.worker,
        "attempts": job.attempts_total,
        "phase_attempts": job.attempts,
        "heartbeat_at": job.heartbeat_at.isoformat() if job.heartbeat_at else None,
        "cancel_requested": job.cancel_requested,
        "verdict": job.verdict,
        "error": job.error,
    }
