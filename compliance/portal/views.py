"""Officer portal: server-rendered, usable without JavaScript. Views parse, call one service, render."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from compliance.audit import services as audit_services
from compliance.audit import witnessing
from compliance.audit.models import AuditLeaf
from compliance.certificates.selectors import certificate_log_coverage
from compliance.common.net import client_ip
from compliance.common.ratelimit import RateLimited, hit
from compliance.erasure import selectors, services
from compliance.erasure.models import ErasureRequest
from compliance.erasure.permissions import can_decide, can_view
from compliance.erasure.transitions import TransitionNotAllowed
from compliance.jobs import escalation as escalation_services
from compliance.jobs import specs
from compliance.portal import forms
from compliance.registry import selectors as registry_selectors


class LoginView(auth_views.LoginView):
    template_name = "portal/login.html"
    redirect_authenticated_user = True

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        from django.conf import settings

        try:
            hit("login-ip", client_ip(request), limit=settings.RATE_LIMIT_LOGIN_PER_IP, window_s=900)
        except RateLimited as exc:
            response = render(request, "public/error.html", {"title": "Too many attempts", "message": str(exc)}, status=429)
            response["Retry-After"] = str(exc.retry_after_s)
            return response
        return super().post(request, *args, **kwargs)


def _viewer_required(request: HttpRequest) -> HttpResponse | None:
    if not can_view(request.user):
        return render(request, "public/error.html", {"title": "Not allowed", "message": "Your account has no portal role."}, status=403)
    return None


def _get_request(reference: str) -> ErasureRequest:
    return get_object_or_404(ErasureRequest, reference=reference)


@login_required
def queue(request: HttpRequest) -> HttpResponse:
    if denied := _viewer_required(request):
        return denied
    form = forms.QueueFilterForm(request.GET or None)
    filters: dict[str, Any] = {}
    if form.is_valid():
        data = form.cleaned_data
        filters = {
            "status": data["status"],
            "overdue": data["overdue"],
            "due_soon": data["due_soon"],
            "assignee_id": data["assignee"].pk if data["assignee"] else None,
            "reference": data["reference"],
        }
    page = Paginator(selectors.queue(**filters), 25).get_page(request.GET.get("page"))
    today = timezone.localdate()
    rows = [(r, selectors.deadline_badge(r, today), r.days_left(today), selectors.waiting_for(r)) for r in page.object_list]
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "portal/queue.html", {"form": form, "page": page, "rows": rows, "query": query.urlencode()})


@login_required
def detail(request: HttpRequest, reference: str) -> HttpResponse:
    if denied := _viewer_required(request):
        return denied
    erasure_request = _get_request(reference)
    items = list(erasure_request.forget_items.select_related("corpus_version__corpus").order_by("-pri_score")[:200])
    located = []
    for item in items:
        located.append({"item": item, "segments": _highlight(item)})
    certificate = getattr(erasure_request, "certificate", None)
    escalation = escalation_services.escalation_for(erasure_request)
    context = {
        "req": erasure_request,
        "identifiers": erasure_request.identifiers() if erasure_request.purged_at is None else None,
        "timeline": selectors.timeline(erasure_request),
        "badge": selectors.deadline_badge(erasure_request),
        "can_decide": can_decide(request.user),
        "located": located,
        # Several forms on one page: each gets its own id prefix, so every label names one field.
        "approve_form": forms.ApproveForm(auto_id="approve_%s"),
        "refuse_form": forms.RefuseForm(auto_id="refuse_%s"),
        "extend_form": forms.ExtendForm(auto_id="extend_%s"),
        "assign_form": forms.AssignForm(auto_id="assign_%s", initial={"assignee": erasure_request.assignee}),
        "jobs": erasure_request.jobs.order_by("-created_at")[:10],
        "paths": registry_selectors.erasure_paths(request=erasure_request) if erasure_request.is_open else [],
        "certificate": certificate,
        "certificate_log": certificate_log_coverage(certificate) if certificate is not None else None,
        "escalation": escalation,
    }
    if escalation is not None:
        failed_method = escalation.failures[0].method if escalation.failures else specs.default_method()
        context["retry_form"] = forms.RetryForm(methods=escalation.methods, initial_method=failed_method, auto_id="retry_%s")
        context["guard_form"] = forms.GuardOnlyForm(auto_id="guard_%s")
    return render(request, "portal/detail.html", context)


def _highlight(item: Any) -> list[tuple[str, str]]:
    """Split a located record's text into (text, entity type or '') segments for highlighting."""
    text = item.text() or ""
    spans = sorted(
        ((int(e["start"]), int(e["end"]), str(e["type"])) for e in item.entities if 0 <= int(e["start"]) < int(e["end"]) <= len(text)),
    )
    segments: list[tuple[str, str]] = []
    cursor = 0
    for start, end, kind in spans:
        if start < cursor:
            continue
        if start > cursor:
            segments.append((text[cursor:start], ""))
        segments.append((text[start:end], kind))
        cursor = end
    if cursor < len(text):
        segments.append((text[cursor:], ""))
    return segments


def _act(request: HttpRequest, reference: str, form_class: type, action: Any) -> HttpResponse:
    erasure_request = _get_request(reference)
    if not can_decide(request.user):
        return HttpResponseForbidden(render(request, "public/error.html", {"title": "Not allowed", "message": "Only privacy officers can do this."}).content)
    form = form_class(request.POST)
    if not form.is_valid():
        for field_errors in form.errors.values():
            for error in field_errors:
                messages.error(request, error)
        return redirect("portal:detail", reference=reference)
    try:
        action(erasure_request, form.cleaned_data)
    except (services.ErasureError, TransitionNotAllowed, escalation_services.EscalationError) as exc:
        messages.error(request, str(exc))
        response = redirect("portal:detail", reference=reference)
        return response
    return redirect("portal:detail", reference=reference)


@login_required
@require_POST
def approve(request: HttpRequest, reference: str) -> HttpResponse:
    def action(r: ErasureRequest, data: dict[str, Any]) -> None:
        services.erasure_request_approve(request=r, officer=request.user, reason=data["reason"])  # type: ignore[arg-type]
        messages.success(request, f"{r.reference} approved. The inference guard now suppresses the subject's data.")

    return _act(request, reference, forms.ApproveForm, action)


@login_required
@require_POST
def refuse(request: HttpRequest, reference: str) -> HttpResponse:
    def action(r: ErasureRequest, data: dict[str, Any]) -> None:
        services.erasure_request_refuse(request=r, officer=request.user, legal_code=data["legal_code"], reason=data["reason"])  # type: ignore[arg-type]
        messages.success(request, f"{r.reference} refused; the notice was sent to the subject.")

    return _act(request, reference, forms.RefuseForm, action)


@login_required
@require_POST
def extend(request: HttpRequest, reference: str) -> HttpResponse:
    def action(r: ErasureRequest, data: dict[str, Any]) -> None:
        services.erasure_request_extend(request=r, officer=request.user, reason=data["reason"])  # type: ignore[arg-type]
        messages.success(request, f"Deadline of {r.reference} extended; the subject was notified.")

    return _act(request, reference, forms.ExtendForm, action)


@login_required
@require_POST
def assign(request: HttpRequest, reference: str) -> HttpResponse:
    def action(r: ErasureRequest, data: dict[str, Any]) -> None:
        services.erasure_request_assign(request=r, officer=request.user, assignee=data["assignee"])  # type: ignore[arg-type]
        messages.success(request, "Assignment saved.")

    return _act(request, reference, forms.AssignForm, action)


class _EscalationRetryForm(forms.RetryForm):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, methods=specs.known_methods(), **kwargs)


@login_required
@require_POST
def escalation_retry(request: HttpRequest, reference: str) -> HttpResponse:
    def action(r: ErasureRequest, data: dict[str, Any]) -> None:
        jobs = escalation_services.escalation_retry(request=r, officer=request.user, method=data["method"])
        messages.success(request, f"{r.reference}: {len(jobs)} retry job(s) queued with {data['method']}.")

    return _act(request, reference, _EscalationRetryForm, action)


@login_required
@require_POST
def escalation_refuse(request: HttpRequest, reference: str) -> HttpResponse:
    def action(r: ErasureRequest, data: dict[str, Any]) -> None:
        escalation_services.escalation_refuse(request=r, officer=request.user, legal_code=data["legal_code"], reason=data["reason"])
        messages.success(request, f"{r.reference} refused; the notice was sent to the subject.")

    return _act(request, reference, forms.RefuseForm, action)


@login_required
@require_POST
def escalation_guard_only(request: HttpRequest, reference: str) -> HttpResponse:
    def action(r: ErasureRequest, data: dict[str, Any]) -> None:
        escalation_services.escalation_guard_only(request=r, officer=request.user, justification=data["justification"])
        messages.success(request, f"{r.reference} closed guard-only; the notice was sent to the subject.")

    return _act(request, reference, forms.GuardOnlyForm, action)


@login_required
def audit(request: HttpRequest) -> HttpResponse:
    if denied := _viewer_required(request):
        return denied
    reference = (request.GET.get("reference") or "").strip()[:20]
    erasure_request = ErasureRequest.objects.filter(reference__iexact=reference).first() if reference else None
    size, root = audit_services.tree_root()
    checkpoint = audit_services.latest_checkpoint()
    events = []
    leaves = (
        AuditLeaf.objects.filter(request_id=erasure_request.id) if erasure_request else AuditLeaf.objects.order_by("-seq")[:50]
    )
    proof_size = checkpoint.size if checkpoint else size
    for leaf in sorted(leaves, key=lambda leaf: leaf.seq):
        included = None
        if checkpoint and leaf.seq < checkpoint.size:
            try:
                proof = audit_services.inclusion_proof(leaf.seq, proof_size)
                audit_services.merkle.verify_inclusion(bytes(leaf.leaf_hash), leaf.seq, proof_size, proof, bytes(checkpoint.root))
                included = True
            except audit_services.merkle.ProofError:
                included = False
        events.append({"leaf": leaf, "doc": audit_services.leaf_document(leaf), "included": included})
    return render(
        request,
        "portal/audit.html",
        {
            "events": events, "reference": reference, "req": erasure_request, "size": size, "root": root.hex(),
            "checkpoint": checkpoint, "checkpoint_note": witnessing.cosigned_note(checkpoint) if checkpoint else "",
            "witnesses": witnessing.witness_status(), "witness_alerts": witnessing.open_alerts(),
            "witness_quorum": settings.AUDIT_WITNESS_QUORUM,
        },
    )


@login_required
def health(request: HttpRequest) -> HttpResponse:
    """What runs on its own (beat: dispatch, reconcile, checkpoints, pending certificates, reminders,
    retention) and when each last ran; late ones are flagged."""
    if denied := _viewer_required(request):
        return denied
    from compliance.common.periodic import health as periodic_health

    tasks = periodic_health()
    counts = {
        "needs_decision": ErasureRequest.objects.filter(status="needs_decision").count(),
        "overdue": selectors.queue(overdue=True).count(),
    }
    return render(request, "portal/health.html", {"tasks": tasks, "late": [t for t in tasks if t.late], "counts": counts,
                                                 "key_store": settings.KEYSTORE_BACKEND})
