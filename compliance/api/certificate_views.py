"""REST face of certificates.

    GET  /api/v1/requests/<reference>/certificate.json   officers and reviewers: the signed JSON, byte for byte
    GET  /api/v1/requests/<reference>/certificate.pdf    officers and reviewers: the PDF
    POST /api/v1/certificates/verify                      public: body = the certificate JSON (DSSE envelope)

Verification uses the log's published key ring (the same one /audit/keys/ serves) as trust anchor.
A body that is not a certificate envelope is a 400 problem; a certificate that fails a check is a
200 answer with `ok: false` and the failing check, since that is the information asked for.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import permissions, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from compliance.api.problems import problem
from compliance.audit import signing
from compliance.certificates import services
from compliance.common.downloads import private_download
from compliance.erasure.models import ErasureRequest
from compliance.erasure.permissions import can_view
from proofs.dsse import EnvelopeError, parse_envelope
from proofs.offline import verify_certificate


class CanView(permissions.BasePermission):
    message = "Only privacy officers and reviewers can read certificates through the API."

    def has_permission(self, request: Any, view: Any) -> bool:
        return can_view(request.user)


class _CertificateDownload(APIView):
    permission_classes = [CanView]

    def certificate(self, reference: str) -> Any:
        erasure_request = ErasureRequest.objects.filter(reference=reference).first()
        if erasure_request is None:
            return problem(404, "No request with this reference.")
        certificate = services.certificate_for(erasure_request)
        if certificate is None:
            return problem(404, f"{reference} has no certificate yet.")
        return certificate


class CertificateJson(_CertificateDownload):
    @extend_schema(responses={(200, "application/json"): OpenApiResponse(description="The DSSE envelope")})
    def get(self, request: Request, reference: str) -> Any:
        found = self.certificate(reference)
        if isinstance(found, Response):
            return found
        return private_download(bytes(found.envelope), "application/json", f"{found.download_stem}.json")


class CertificatePdf(_CertificateDownload):
    @extend_schema(responses={(200, "application/pdf"): OpenApiResponse(description="The certificate PDF")})
    def get(self, request: Request, reference: str) -> Any:
        found = self.certificate(reference)
        if isinstance(found, Response):
            return found
        try:
            data = services.certificate_pdf_bytes(found)
        except services.CertificateFileDamaged:
            return problem(500, "The certificate PDF could not be read intact; the JSON certificate is still available.")
        response = HttpResponse(data, content_type="application/pdf")
        response["Content-Disposition"] = f'attachment; filename="{found.download_stem}.pdf"'
        response["Cache-Control"] = "private, no-store"
        return response


class CheckSerializer(serializers.Serializer):
    name = serializers.CharField()
    ok = serializers.BooleanField()
    detail = serializers.CharField()


class VerifyResponseSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    summary = serializers.CharField()
    checks = CheckSerializer(many=True)
    certificate = serializers.DictField(allow_null=True)


class CertificateVerify(APIView):
    """Public: anyone holding a certificate may check it. No session, hence no CSRF to satisfy."""

    authentication_classes: list[Any] = []
    permission_classes = [permissions.AllowAny]

    @extend_schema(request=dict, responses={200: VerifyResponseSerializer})
    def post(self, request: Request) -> Response:
        declared = request.META.get("CONTENT_LENGTH") or "0"
        if declared.isdigit() and int(declared) > settings.CERTIFICATE_UPLOAD_MAX_BYTES:
            return problem(413, "The body is larger than a certificate can be.")
        body = request.data
        if not isinstance(body, dict):
            return problem(400, "The body must be the certificate JSON: a DSSE envelope object.")
        try:
            parse_envelope(body)
        except EnvelopeError as exc:
            return problem(400, f"The body is not a certificate envelope: {exc}")
        result = verify_certificate(body, signing.keyring())
        certificate = None
        if result.ok and result.payload is not None:
            payload = result.payload
            certificate = {
                "certificate_id": payload["certificate_id"],
                "issued_at": payload["issued_at"],
                "reference": payload["request"]["reference"],
                "verdict": payload["verification"]["verdict"],
            }
        data = {
            "ok": result.ok,
            "summary": result.summary,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in result.checks],
            "certificate": certificate,
        }
        return Response(VerifyResponseSerializer(data).data)
