"""REST face of the inference guard, for serving stacks that are not Python.

    POST /api/v1/guard          {"texts": ["...", ...], "mode": "redact" | "block"}
    POST /api/v1/guard/stream   {"piece": "...", "state": {...} | null, "final": false}
    GET  /api/v1/guard/health

The stream endpoint filters a response that the caller streams to its user in pieces: each call
returns the text that is safe to show now and a `state` (the held-back tail of the caller's own
response) that the caller sends back with the next piece, so the server keeps nothing between
calls and an identifier split across pieces is still caught (pii.guard.StreamGuard).

Callers authenticate with a token (or a portal session) and must be in the `api-client` or
`officer` group, or hold `guard.view_suppressionrule`. Responses never echo a subject_ref or a
matched value: a serving stack needs the filtered text, whether it was blocked, and which kinds
of data were found where.
"""

from __future__ import annotations

from typing import Any, cast

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import permissions, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from compliance.api.problems import problem
from compliance.api.serializers import StrictSerializer
from compliance.guard import runtime
from pii.guard import DEFAULT_HOLDBACK_CHARS, GuardPolicy, StreamGuard, StreamState
from pii.matcher import NAME_MODES, NameMode
from pii.textnorm import DEFAULT_TRANSFORMS, TRANSFORMS

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


class GuardPolicySerializer(StrictSerializer):
    """The policy fields every guard call takes."""

    mode = serializers.ChoiceField(choices=["redact", "block"], default="redact")
    lowercase_names = serializers.BooleanField(default=False, help_text="Older switch: true means names=any_case.")
    names = serializers.ChoiceField(
        choices=list(NAME_MODES), required=False,
        help_text="capitalised | distinctive (default: distinctive names in any case) | any_case",
    )
    transforms = serializers.ListField(
        child=serializers.ChoiceField(choices=list(TRANSFORMS)), required=False, max_length=len(TRANSFORMS),
        help_text="Text transforms applied before matching; default all but 'encoded'.",
    )


class GuardRequestSerializer(GuardPolicySerializer):
    texts = serializers.ListField(
        child=serializers.CharField(allow_blank=True, trim_whitespace=False, max_length=MAX_TEXT_CHARS),
        min_length=1,
        max_length=MAX_TEXTS,
    )


def _validated(request: Request, serializer_class: type[GuardPolicySerializer]) -> dict[str, Any] | Response:
    """The validated body, or the 413 problem for a body over GUARD_MAX_BODY_BYTES (400s are raised)."""
    if _body_too_large(request):
        return problem(413, "The body is too large; send at most 256 texts per call (or smaller pieces), in several calls if needed.")
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def _policy(data: dict[str, Any]) -> GuardPolicy:
    # A NameMode either way (typed str where it comes from): the serializer's ChoiceField checked the
    # body's value, settings.py refuses any other GUARD_NAME_MODE at start-up, and GuardPolicy checks again.
    names = cast(NameMode, data.get("names") or str(getattr(settings, "GUARD_NAME_MODE", "distinctive")))
    transforms = frozenset(data["transforms"]) if "transforms" in data else DEFAULT_TRANSFORMS
    return GuardPolicy(mode=data["mode"], lowercase_names=data["lowercase_names"], names=names, transforms=transforms)


class StreamStateSerializer(StrictSerializer):
    pending = serializers.CharField(allow_blank=True, trim_whitespace=False, max_length=4 * DEFAULT_HOLDBACK_CHARS)
    context = serializers.CharField(allow_blank=True, trim_whitespace=False, max_length=4 * DEFAULT_HOLDBACK_CHARS)
    blocked = serializers.BooleanField()


class GuardStreamRequestSerializer(GuardPolicySerializer):
    piece = serializers.CharField(allow_blank=True, trim_whitespace=False, max_length=MAX_TEXT_CHARS)
    state = StreamStateSerializer(required=False, allow_null=True)
    final = serializers.BooleanField(default=False)


class StreamStateOutSerializer(serializers.Serializer):
    pending = serializers.CharField(allow_blank=True)
    context = serializers.CharField(allow_blank=True)
    blocked = serializers.BooleanField()


class GuardStreamResponseSerializer(serializers.Serializer):
    text = serializers.CharField(allow_blank=True)
    blocked = serializers.BooleanField()
    kinds = serializers.ListField(child=serializers.CharField())
    state = StreamStateOutSerializer()
    rules_version = serializers.CharField(allow_null=True)
    status = serializers.CharField()


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
        data = _validated(request, GuardRequestSerializer)
        if isinstance(data, Response):
            return data
        results = runtime.guard_texts(data["texts"], _policy(data))
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


class GuardStream(APIView):
    permission_classes = [CanUseGuard]

    @extend_schema(request=GuardStreamRequestSerializer, responses={200: GuardStreamResponseSerializer})
    def post(self, request: Request) -> Response:
        data = _validated(request, GuardStreamRequestSerializer)
        if isinstance(data, Response):
            return data
        state = StreamState(**data["state"]) if data.get("state") else None
        stream = StreamGuard(runtime.current_index(), _policy(data), state=state)
        text = stream.feed(data["piece"], final=data["final"])
        health = runtime.get_runtime().current_health()
        out = stream.state
        body = {
            "text": text,
            "blocked": stream.blocked,
            "kinds": sorted({m.kind for m in stream.matches}),
            "state": {"pending": out.pending, "context": out.context, "blocked": out.blocked},
            "rules_version": health.version,
            "status": health.status,
        }
        return Response(GuardStreamResponseSerializer(body).data)


class GuardHealthView(APIView):
    permission_classes = [CanUseGuard]

    @extend_schema(responses={200: GuardHealthSerializer})
    def get(self, request: Request) -> Response:
        return Response(GuardHealthSerializer(runtime.guard_health().to_dict()).data)
