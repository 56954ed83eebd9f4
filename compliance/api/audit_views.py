"""Public, read-only REST face of the audit log: anyone may check what the log signed.

    GET /api/v1/audit/checkpoint                                  newest signed checkpoint (C2SP signed note, text/plain)
    GET /api/v1/audit/proof/inclusion?index=<i>&size=<n>          leaf hash and RFC 9162 inclusion proof
    GET /api/v1/audit/proof/consistency?first=<m>&second=<n>      RFC 9162 consistency proof

Hashes are standard base64, as in the checkpoint's root line and the certificates' proofs. Leaf
bytes are never served: an inclusion proof carries the leaf's hash only (whoever holds the leaf,
e.g. in a certificate, hashes it themselves). Sizes go up to the newest signed checkpoint. The
public keys that sign checkpoints are at /audit/keys/. No login, no session (so no CSRF), a
per-address rate limit like the other public endpoints; bad input is a 400 problem+json.
"""

from __future__ import annotations

import json
import re
from typing import Any

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import permissions, serializers
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from compliance.api.problems import problem
from compliance.audit import selectors, witnessing
from compliance.audit.services import b64
from compliance.common.net import client_ip
from compliance.common.ratelimit import RateLimited, hit

# 18 digits: every value fits a signed 64-bit integer (the column type); a log never gets near it.
_MAX_DIGITS = 18
_DIGITS = re.compile(r"[0-9]+")  # ASCII only: int() would also take "٣", "+1", " 1" and "1_000"


class BadParameter(ValueError):
    """A query parameter that is missing, repeated or not a non-negative integer (a 400)."""


def _natural(request: Request, name: str) -> int:
    """The non-negative integer query parameter `name`; BadParameter says what is wrong with it."""
    values = request.query_params.getlist(name)
    if not values or values == [""]:
        raise BadParameter(f"{name} is required: a non-negative integer")
    if len(values) > 1:
        raise BadParameter(f"{name} is given more than once")
    raw = values[0]
    if raw.startswith("-") and _DIGITS.fullmatch(raw[1:]):
        raise BadParameter(f"{name} must not be negative")
    if not _DIGITS.fullmatch(raw):
        raise BadParameter(f"{name} must be a non-negative integer in decimal digits")
    if len(raw.lstrip("0")) > _MAX_DIGITS:
        raise BadParameter(f"{name} is too large")
    return int(raw)


def _rate_limited(request: Request) -> Response | None:
    try:
        hit("audit-read", client_ip(request), limit=settings.RATE_LIMIT_AUDIT_READ_PER_IP, window_s=60)
    except RateLimited as exc:
        response = problem(429, str(exc))
        response["Retry-After"] = str(exc.retry_after_s)
        return response
    return None


class SignedNoteRenderer(BaseRenderer):
    """text/plain, so that a client asking for the note by its type is not refused with a 406.

    The note itself is sent as a plain HttpResponse; this renders only problem details (a dict),
    which keep their application/problem+json content type.
    """

    media_type = "text/plain"
    format = "txt"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        if isinstance(data, str):
            return data.encode("utf-8")
        return json.dumps(data).encode("utf-8")


class _PublicAuditView(APIView):
    authentication_classes: list[Any] = []
    permission_classes = [permissions.AllowAny]


_PROBLEM_400 = OpenApiResponse(description="problem+json: a parameter is missing, not a non-negative integer, or out of range")
_PROBLEM_429 = OpenApiResponse(description="problem+json: too many requests from this address; see Retry-After")


class AuditCheckpoint(_PublicAuditView):
    renderer_classes = [JSONRenderer, SignedNoteRenderer]

    @extend_schema(
        summary="Newest signed checkpoint of the audit log",
        tags=["audit"],
        # The note is text whatever the format: the renderers only matter for problem details.
        parameters=[OpenApiParameter("format", exclude=True)],
        description=(
            "The C2SP tlog-checkpoint signed note: origin line, tree size, base64 root hash, a "
            "`previous <size> <base64 root>` extension line linking it to the checkpoint signed before it, "
            "a blank line and one Ed25519 signature line per signing key (`— <key name> <base64(key id || "
            "signature)>`), followed by the cosignatures of the witnesses that checked it (C2SP tlog-cosignature: "
            "`— <witness name> <base64(key id || timestamp || signature)>`). Verify it with the keys published at "
            "/audit/keys/ and the witness keys you trust."
        ),
        responses={
            (200, "text/plain"): OpenApiResponse(response=OpenApiTypes.STR, description="The signed note"),
            404: OpenApiResponse(description="problem+json: no checkpoint has been signed yet"),
            429: _PROBLEM_429,
        },
    )
    def get(self, request: Request) -> Any:
        limited = _rate_limited(request)
        if limited is not None:
            return limited
        checkpoint = selectors.checkpoint_latest()
        if checkpoint is None:
            return problem(404, "No checkpoint has been signed yet.")
        response = HttpResponse(witnessing.cosigned_note(checkpoint), content_type="text/plain; charset=utf-8")
        response["Cache-Control"] = "no-cache"  # the newest one changes; clients revalidate
        return response


class InclusionProofSerializer(serializers.Serializer):
    index = serializers.IntegerField(help_text="0-based leaf index")
    size = serializers.IntegerField(help_text="Tree size the proof is for")
    leaf_hash = serializers.CharField(help_text="base64 SHA-256(0x00 || leaf bytes)")
    proof = serializers.ListField(child=serializers.CharField(), help_text="base64 hashes, leaf-side sibling first")


class ConsistencyProofSerializer(serializers.Serializer):
    first = serializers.IntegerField()
    second = serializers.IntegerField()
    proof = serializers.ListField(child=serializers.CharField(), help_text="base64 hashes, RFC 9162 order")


def _size_parameter(name: str, description: str) -> OpenApiParameter:
    return OpenApiParameter(name, OpenApiTypes.INT, OpenApiParameter.QUERY, required=True, description=description)


def _proof_response(data: dict[str, Any]) -> Response:
    response = Response(data)
    # A proof between two fixed sizes never changes (the log is append-only).
    response["Cache-Control"] = "public, max-age=86400"
    return response


class AuditInclusionProof(_PublicAuditView):
    @extend_schema(
        summary="Inclusion proof of one leaf",
        tags=["audit"],
        description=(
            "RFC 9162 section 2.1.3 inclusion proof of leaf `index` in the tree of `size` leaves, with the "
            "leaf's hash (never its bytes). `size` may be at most the newest checkpoint's size; verify the "
            "proof against the root of a signed checkpoint of that size."
        ),
        parameters=[
            _size_parameter("index", "0-based leaf index, less than size"),
            _size_parameter("size", "tree size, at most the newest signed checkpoint's size"),
        ],
        responses={200: InclusionProofSerializer, 400: _PROBLEM_400, 429: _PROBLEM_429},
    )
    def get(self, request: Request) -> Response:
        limited = _rate_limited(request)
        if limited is not None:
            return limited
        try:
            found = selectors.inclusion_proof_public(index=_natural(request, "index"), size=_natural(request, "size"))
        except (BadParameter, selectors.ProofRequestInvalid) as exc:
            return problem(400, f"{exc}.")
        body = {"index": found.index, "size": found.size, "leaf_hash": b64(found.leaf_hash), "proof": [b64(h) for h in found.proof]}
        return _proof_response(InclusionProofSerializer(body).data)


class AuditConsistencyProof(_PublicAuditView):
    @extend_schema(
        summary="Consistency proof between two tree sizes",
        tags=["audit"],
        description=(
            "RFC 9162 section 2.1.4 proof that the tree of `second` leaves extends the tree of `first` leaves "
            "(empty when they are equal). 1 <= first <= second <= the newest checkpoint's size."
        ),
        parameters=[
            _size_parameter("first", "the earlier tree size, at least 1"),
            _size_parameter("second", "the later tree size, at most the newest signed checkpoint's size"),
        ],
        responses={200: ConsistencyProofSerializer, 400: _PROBLEM_400, 429: _PROBLEM_429},
    )
    def get(self, request: Request) -> Response:
        limited = _rate_limited(request)
        if limited is not None:
            return limited
        try:
            found = selectors.consistency_proof_public(first=_natural(request, "first"), second=_natural(request, "second"))
        except (BadParameter, selectors.ProofRequestInvalid) as exc:
            return problem(400, f"{exc}.")
        body = {"first": found.first, "second": found.second, "proof": [b64(h) for h in found.proof]}
        return _proof_response(ConsistencyProofSerializer(body).data)
