"""REST face of the inference guard, for serving stacks that are not Python.

    POST /api/v1/guard          {"texts": ["...", ...], "mode": "redact" | "block"}
    GET  /api/v1/guard/health

Callers authenticate with a token (or a portal session) and must be in the `api-client` or
`officer` group, or hold `guard.view_suppressionrule`. Responses never echo a subject_ref or a
matched value: a serving stack needs the filtered text, whether it was blocked, and which kinds
of data were found where.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.urls import path
from drf_spectacular.utils import extend_schema
from rest_framework import permissions, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from compliance.api.problems import problem
from compliance.api.serializers import StrictSerializer
from compliance.guard import runtime
from pii.guard import GuardPolicy

GUARD_GROUPS = ("api-client", "officer")
MAX_TEXTS = 256
MAX_TEXT_CHARS = 100_000
# DRF parses the body straight from the stream, bypassing DATA_UPLOAD_MAX_MEMORY_SIZE, so the
# endpoint bounds the body itself (a full batch of long outputs fits well within this).
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024


def _body_too_large(request: Request) -> bool:
    limit = int(getattr(settings, "GUARD_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES))
    declared = str(request.META.get("CONTENT_LENGTH") or "0")
    return not declared.isdigit() or int(declared) > limit


class CanUseGuard(permissions.BasePermission):
    message = "This account may not call the guard (needs the api-client or officer role)."

    def has_permission(self, request: Any, view: Any) -> bool:
        user = request.user
        if not (user and user.is_authenticated and user.is_active):
            return False
        return bool(user.groups.filter(name__in=GUARD_GROUPS).exists() or user.has_perm("guard.view_suppressionrule"))


class GuardRequestSerializer(StrictSerializer):
    texts = serializers.ListField(
        child=serializers.CharField(allow_blank=True, trim_whitespace=False, max_length=MAX_TEXT_CHARS),
        min_length=1,
        max_length=MAX_TEXTS,
    )
    mode = serializers.ChoiceField(choices=["redact", "block"], default="redact")
    lowercase_names = serializers.BooleanField(default=False)


class GuardMatchSerializer(serializers.Serializer):
    start = serializers.IntegerField()
    end = serializers.IntegerField()
    kind = serializers.CharField()


class GuardResultSerializer(serializers.Serializer):
    text = serializers.CharField()
    blocked = serializers.BooleanField()
    matched = serializers.BooleanField()
    kinds = serializers.ListField(child=serializers.CharField())
    matches = GuardMatchSerializer(many=True)


class GuardResponseSerializer(serializers.Serializer):
    results = GuardResultSerializer(many=True)
    rules_version = serializers.CharField(allow_null=True)
    status = serializers.CharField()


class GuardHealthSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["ok", "stale", "unavailable"])
    version = serializers.CharField(allow_null=True)
    rule_count = serializers.IntegerField()
    subject_count = serializers.IntegerField()
    loaded_at = serializers.FloatField(allow_null=True)
    last_check_at = serializers.FloatField(allow_null=True)
    last_ok_at = serializers.FloatField(allow_null=True)
    last_error = serializers.CharField(allow_null=True)
    stale_since = serializers.FloatField(allow_null=True)


class GuardFilter(APIView):
    permission_classes = [CanUseGuard]

    @extend_schema(request=GuardRequestSerializer, responses={200: GuardResponseSerializer})
    def post(self, request: Request) -> Response:
        if _body_too_large(request):
            return problem(413, "The body is too large; send at most 256 texts per call, in several calls if needed.")
        serializer = GuardRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        policy = GuardPolicy(mode=data["mode"], lowercase_names=data["lowercase_names"])
        results = runtime.guard_texts(data["texts"], policy)
        health = runtime.get_runtime().current_health()
        body = {
            "results": [
                {
                    "text": result.text,
                    "blocked": result.blocked,
                    "matched": result.matched,
                    "kinds": sorted({m.kind for m in result.matches}),
                    # One entry per span: several subjects sharing a span stay one entry.
                    "matches": [
                        {"start": start, "end": end, "kind": kind}
                        for start, end, kind in sorted({(m.start, m.end, m.kind) for m in result.matches})
                    ],
                }
                for result in results
            ],
            "rules_version": health.version,
            "status": health.status,
        }
        return Response(GuardResponseSerializer(body).data)


class GuardHealthView(APIView):
    permission_classes = [CanUseGuard]

    @extend_schema(responses={200: GuardHealthSerializer})
    def get(self, request: Request) -> Response:
        return Response(GuardHealthSerializer(runtime.guard_health().to_dict()).data)


urlpatterns = [
    path("guard", GuardFilter.as_view(), name="guard"),
    path("guard/health", GuardHealthView.as_view(), name="guard_health"),
]
