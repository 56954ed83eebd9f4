"""REST API for unlearning jobs (token auth; errors as RFC 9457 problem+json). No logic here."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import permissions, serializers
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from compliance.api.problems import problem
from compliance.api.serializers import StrictSerializer
from compliance.erasure.permissions import can_decide, can_view
from compliance.jobs import dispatch, selectors, services, specs
from compliance.jobs.models import JobStatus, UnlearningJob


class CanView(permissions.BasePermission):
    def has_permission(self, request: Any, view: Any) -> bool:
        return can_view(request.user)


class JobSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="model.name")
    base_version = serializers.IntegerField(source="base_version.number")
    base_sha256 = serializers.CharField(source="base_version.sha256")
    result_version = serializers.IntegerField(source="result_version.number", allow_null=True, default=None)
    result_sha256 = serializers.CharField(source="result_version.sha256", allow_null=True, default=None)
    requests = serializers.SlugRelatedField(many=True, read_only=True, slug_field="reference")
    percent = serializers.IntegerField(source="progress_percent")
    # Claims over the job's whole life (a kill and a resume, then the hand-over to verification, add up);
    # phase_attempts is the current phase's count against JOB_MAX_ATTEMPTS.
    attempts = serializers.IntegerField(source="attempts_total", read_only=True)
    phase_attempts = serializers.IntegerField(source="attempts", read_only=True)

    class Meta:
        model = UnlearningJob
        fields = [
            "id", "model", "base_version", "base_sha256", "result_version", "result_sha256", "requests", "method",
            "spec", "spec_sha256", "status", "phase", "step", "total_steps", "percent", "losses", "forget_extraction",
            "retain_extraction", "device", "attempts", "phase_attempts", "strengthen_round", "retry_of", "cancel_requested", "verdict",
            "escalated", "error", "stop_reason", "created_at", "started_at", "finished_at",
        ]


class JobDetailSerializer(JobSerializer):
    report = serializers.SerializerMethodField()

    class Meta(JobSerializer.Meta):
        fields = [*JobSerializer.Meta.fields, "history", "report"]

    def get_report(self, job: UnlearningJob) -> dict[str, Any] | None:
        report = selectors.latest_report(job=job)
        if report is None:
            return None
        return {
            "verdict": report.verdict,
            "decided_by": report.decided_by,
            "report_sha256": report.report_sha256,
            "policy": report.policy,
            "wall_s": report.wall_s,
            "before_after": [row.__dict__ for row in selectors.before_after(report)],
        }


class RetrySerializer(StrictSerializer):
    method = serializers.CharField(required=False, max_length=32, allow_blank=True)


class JobList(ListAPIView):
    serializer_class = JobSerializer
    permission_classes = [CanView]

    def get_queryset(self) -> Any:
        status = self.request.query_params.get("status", "")
        return selectors.job_list(status=status if status in JobStatus.values else "").prefetch_related("requests")


class _JobView(APIView):
    permission_classes = [CanView]

    def job(self, job_id: str) -> UnlearningJob:
        return services.job_get(job_id=job_id)


class JobDetail(_JobView):
    @extend_schema(responses={200: JobDetailSerializer})
    def get(self, request: Request, job_id: str) -> Response:
        try:
            job = self.job(job_id)
        except services.JobNotFound as exc:
            return problem(404, str(exc))
        return Response(JobDetailSerializer(job).data)


class JobCancel(_JobView):
    @extend_schema(request=None, responses={202: JobSerializer})
    def post(self, request: Request, job_id: str) -> Response:
        try:
            job = self.job(job_id)
            if not can_decide(request.user):
                return problem(403, "Only privacy officers can cancel unlearning jobs.")
            job = services.job_cancel(job=job, officer=request.user)
        except services.JobError as exc:
            return problem(exc.http_status, str(exc), error=exc.code)
        return Response(JobSerializer(job).data, status=202)


class JobRetry(_JobView):
    @extend_schema(request=RetrySerializer, responses={201: JobSerializer})
    def post(self, request: Request, job_id: str) -> Response:
        serializer = RetrySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            job = self.job(job_id)
            if not can_decide(request.user):
                return problem(403, "Only privacy officers can retry unlearning jobs.")
            new = dispatch.job_retry(job=job, officer=request.user, method=serializer.validated_data.get("method") or None)
        except services.JobError as exc:
            return problem(exc.http_status, str(exc), error=exc.code)
        except specs.SpecError as exc:
            return problem(400, str(exc), error="invalid_method")
        return Response(JobSerializer(new).data, status=201)
