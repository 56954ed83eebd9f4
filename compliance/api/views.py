"""REST API for requests. Same services as the portal; no logic here."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import permissions, status
from rest_framework.generics import ListAPIView, RetrieveAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from compliance.api.problems import problem
from compliance.api.serializers import (
    ApproveSerializer,
    ErasureRequestCreateSerializer,
    ErasureRequestSerializer,
    ExtendSerializer,
    RefuseSerializer,
    SubmitResponseSerializer,
)
from compliance.common.net import client_ip
from compliance.common.ratelimit import RateLimited
from compliance.erasure import selectors, services
from compliance.erasure.models import ErasureRequest
from compliance.erasure.permissions import can_decide, can_view
from compliance.erasure.services import SubjectInput
from compliance.erasure.transitions import TransitionNotAllowed


class CanView(permissions.BasePermission):
    def has_permission(self, request: Any, view: Any) -> bool:
        return can_view(request.user)


class CanFile(permissions.BasePermission):
    """Clients that file requests on a subject's behalf (support desk, CRM integration)."""

    def has_permission(self, request: Any, view: Any) -> bool:
        return bool(request.user and request.user.is_authenticated and request.user.has_perm("erasure.add_erasurerequest"))


class RequestListCreate(ListAPIView):
    serializer_class = ErasureRequestSerializer

    def get_permissions(self) -> list[Any]:
        return [CanFile()] if self.request.method == "POST" else [CanView()]

    def get_queryset(self) -> Any:
        params = self.request.query_params
        return selectors.queue(status=params.get("status", "")[:16], reference=params.get("reference", "")[:20])

    @extend_schema(request=ErasureRequestCreateSerializer, responses={201: SubmitResponseSerializer, 200: SubmitResponseSerializer})
    def post(self, request: Request) -> Response:
        serializer = ErasureRequestCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        ground = data.pop("ground")
        try:
            result = services.erasure_request_submit(
                subject=SubjectInput(**data), ground=ground, channel="api", client_ip=client_ip(request), actor=f"api:{request.user.pk}"
            )
        except RateLimited as exc:
            response = problem(429, str(exc))
            response["Retry-After"] = str(exc.retry_after_s)
            return response
        body = {"id": result.request.id, "reference": result.request.reference, "status": result.request.status, "created": result.created}
        return Response(SubmitResponseSerializer(body).data, status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK)


class RequestDetail(RetrieveAPIView):
    serializer_class = ErasureRequestSerializer
    permission_classes = [CanView]
    lookup_field = "reference"
    queryset = ErasureRequest.objects.select_related("assignee")


def _approve(erasure_request: ErasureRequest, user: Any, data: dict[str, Any]) -> None:
    services.erasure_request_approve(request=erasure_request, officer=user, reason=data["reason"])


def _refuse(erasure_request: ErasureRequest, user: Any, data: dict[str, Any]) -> None:
    services.erasure_request_refuse(request=erasure_request, officer=user, legal_code=data["legal_code"], reason=data["reason"])


def _extend(erasure_request: ErasureRequest, user: Any, data: dict[str, Any]) -> None:
    services.erasure_request_extend(request=erasure_request, officer=user, reason=data["reason"])


class Decision(APIView):
    """POST an officer decision; `serializer_class` validates the body, `decide` calls the service."""

    permission_classes = [CanView]
    serializer_class: Any = ApproveSerializer
    decide: Any = staticmethod(_approve)

    @extend_schema(responses={200: ErasureRequestSerializer})
    def post(self, request: Request, reference: str) -> Response:
        erasure_request = ErasureRequest.objects.filter(reference=reference).first()
        if erasure_request is None:
            return problem(404, "No request with this reference.")
        if not can_decide(request.user):
            return problem(403, "Only privacy officers can decide on erasure requests.")
        serializer = self.serializer_class(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            self.decide(erasure_request, request.user, dict(serializer.validated_data))
        except TransitionNotAllowed as exc:
            return problem(409, str(exc))
        except services.ErasureError as exc:
            return problem(400, str(exc))
        erasure_request.refresh_from_db()
        return Response(ErasureRequestSerializer(erasure_request).data)


class Approve(Decision):
    serializer_class = ApproveSerializer
    decide = staticmethod(_approve)


class Refuse(Decision):
    serializer_class = RefuseSerializer
    decide = staticmethod(_refuse)


class Extend(Decision):
    serializer_class = ExtendSerializer
    decide = staticmethod(_extend)
