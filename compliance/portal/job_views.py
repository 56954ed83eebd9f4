"""Officer portal pages for unlearning jobs. Server-rendered and usable without JavaScript: a running
job's page refreshes itself (<meta refresh>); a tiny inline script, where allowed, updates the
progress bar in place from the progress endpoint instead. Views parse, call one service, render."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from compliance.certificates.evidence import threat_model_lines
from compliance.erasure.permissions import can_decide, can_view
from compliance.jobs import dispatch, selectors, services, specs
from compliance.jobs.models import ACTIVE_JOB_STATUSES, JobStatus, UnlearningJob


def _denied(request: HttpRequest, message: str = "Your account has no portal role.") -> HttpResponse:
    return render(request, "public/error.html", {"title": "Not allowed", "message": message}, status=403)


def _job_or_404(job_id: UUID) -> UnlearningJob:
    try:
        return services.job_get(job_id=job_id)
    except services.JobNotFound as exc:
        raise Http404("No such job.") from exc


@login_required
def job_list(request: HttpRequest) -> HttpResponse:
    if not can_view(request.user):
        return _denied(request)
    status = request.GET.get("status", "")
    if status not in JobStatus.values:
        status = ""
    page = Paginator(selectors.job_list(status=status), 25).get_page(request.GET.get("page"))
    return render(request, "portal/jobs.html", {"page": page, "status": status, "statuses": JobStatus.choices})


@login_required
def job_detail(request: HttpRequest, job_id: UUID) -> HttpResponse:
    if not can_view(request.user):
        return _denied(request)
    job = _job_or_404(job_id)
    report = selectors.latest_report(job=job)
    context = {
        "job": job,
        "active": job.status in ACTIVE_JOB_STATUSES,
        "requests": job.requests.order_by("received_at"),
        "report": report,
        "rows": selectors.before_after(report) if report else [],
        "checks": selectors.report_checks(report) if report else [],
        "threat": threat_model_lines(report.report) if report and isinstance(report.report, dict) else [],
        "plots": selectors.plot_names(report),
        "history": list(job.history or [])[-20:],
        "can_decide": can_decide(request.user),
        "methods": specs.known_methods(),
        "retries": job.retries.order_by("created_at"),
        "can_cancel": job.status in ACTIVE_JOB_STATUSES and not job.cancel_requested,
        "can_retry": job.status in (JobStatus.FAILED, JobStatus.CANCELLED),
        "eta_s": job.eta_seconds(),
    }
    return render(request, "portal/job_detail.html", context)


@login_required
def job_progress(request: HttpRequest, job_id: UUID) -> HttpResponse:
    if not can_view(request.user):
        return JsonResponse({"detail": "not allowed"}, status=403)
    return JsonResponse(selectors.progress_document(_job_or_404(job_id)))


@login_required
@require_POST
def job_cancel(request: HttpRequest, job_id: UUID) -> HttpResponse:
    job = _job_or_404(job_id)
    if not can_decide(request.user):
        return _denied(request, "Only privacy officers can cancel jobs.")
    try:
        services.job_cancel(job=job, officer=request.user)  # type: ignore[arg-type]
        messages.success(request, "Cancellation requested; the worker stops at its next evaluation.")
    except services.JobError as exc:
        messages.error(request, str(exc))
    return redirect("portal:job", job_id=job.id)


@login_required
@require_POST
def job_retry(request: HttpRequest, job_id: UUID) -> HttpResponse:
    job = _job_or_404(job_id)
    if not can_decide(request.user):
        return _denied(request, "Only privacy officers can retry jobs.")
    method = (request.POST.get("method") or "").strip()[:32] or None
    try:
        new = dispatch.job_retry(job=job, officer=request.user, method=method)  # type: ignore[arg-type]
    except (services.JobError, specs.SpecError) as exc:
        messages.error(request, str(exc))
        return redirect("portal:job", job_id=job.id)
    messages.success(request, f"Retry queued with method {new.method}.")
    return redirect("portal:job", job_id=new.id)


@login_required
def job_plot(request: HttpRequest, job_id: UUID, name: str) -> HttpResponse | FileResponse:
    if not can_view(request.user):
        return _denied(request)
    job = _job_or_404(job_id)
    report = selectors.latest_report(job=job)
    # Only names the listing returns are served: no path from the URL reaches the file system.
    if report is None or name not in selectors.plot_names(report):
        raise Http404("No such plot.")
    return FileResponse((Path(report.plots_dir) / name).open("rb"), content_type="image/png")
