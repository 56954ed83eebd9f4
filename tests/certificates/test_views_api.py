"""REST: certificate downloads for officers and public verification."""

# Fixtures are imported from tests.certificates.test_issue_helpers and named as test arguments.
# ruff: noqa: F811

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from rest_framework.test import APIClient

from compliance.certificates.models import Certificate
from compliance.certificates.services import certificate_issue
from tests.certificates.test_issue_helpers import (  # noqa: F401 - fixtures
    ADA,
    isolated_files,
    officer,
    outsider,
    reviewer,
    verifying_request,
)
from tests.factories import api_client  # noqa: E402

pytestmark = pytest.mark.django_db
VERIFY = "/api/v1/certificates/verify"


def _client(user: Any | None) -> APIClient:
    return api_client(user)


@pytest.fixture
def issued(officer: Any) -> Certificate:
    return certificate_issue(request=verifying_request(ADA, officer), officer=officer)


def _problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/problem+json")
    return response.json()


def test_officer_and_reviewer_download_json_and_pdf(issued: Certificate, officer: Any, reviewer: Any) -> None:
    reference = issued.request.reference
    for user in (officer, reviewer):
        client = _client(user)
        signed = client.get(f"/api/v1/requests/{reference}/certificate.json")
        assert signed.status_code == 200 and signed["Content-Type"] == "application/json"
        assert signed.content == bytes(issued.envelope)
        pdf = client.get(f"/api/v1/requests/{reference}/certificate.pdf")
        assert pdf.status_code == 200 and pdf.content == issued.pdf_file.read_bytes()


def test_downloads_refuse_others_and_unknown_references(issued: Certificate, outsider: Any, officer: Any) -> None:
    url = f"/api/v1/requests/{issued.request.reference}/certificate.json"
    _problem(APIClient().get(url), 401)
    _problem(_client(outsider).get(url), 403)
    assert _problem(_client(officer).get("/api/v1/requests/ER-1999-000001/certificate.pdf"), 404)["detail"]


def test_download_before_issue_is_404(officer: Any) -> None:
    request = verifying_request(ADA, officer)
    body = _problem(_client(officer).get(f"/api/v1/requests/{request.reference}/certificate.json"), 404)
    assert "no certificate yet" in body["detail"]


def test_public_verify_returns_every_check(issued: Certificate) -> None:
    response = APIClient().post(VERIFY, data=bytes(issued.envelope), content_type="application/json")
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is True and all(check["ok"] for check in body["checks"])
    assert {"envelope", "payload", "checkpoint", "timeline"} <= {check["name"] for check in body["checks"]}
    assert body["certificate"]["reference"] == issued.request.reference
    assert body["certificate"]["certificate_id"] == str(issued.certificate_id)


def test_public_verify_reports_a_tampered_certificate(issued: Certificate) -> None:
    envelope = json.loads(bytes(issued.envelope))
    payload = json.loads(base64.b64decode(envelope["payload"]))
    payload["request"]["reference"] = "ER-2020-999999"
    envelope["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    body = APIClient().post(VERIFY, envelope, format="json").json()
    assert body["ok"] is False and body["certificate"] is None
    assert [c["ok"] for c in body["checks"]] == [False]
    assert "NOT verified" in body["summary"]


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        ("not json at all", "application/json", 400),
        ("[1, 2]", "application/json", 400),
        ('{"payload": "x"}', "application/json", 400),
        ("payload=x", "application/x-www-form-urlencoded", 415),
    ],
)
def test_public_verify_rejects_bad_bodies(body: str, content_type: str, status: int) -> None:
    assert _problem(APIClient().post(VERIFY, data=body, content_type=content_type), status)["detail"]


def test_public_verify_rejects_oversized_bodies(settings: Any) -> None:
    settings.CERTIFICATE_UPLOAD_MAX_BYTES = 2048
    body = json.dumps({"payloadType": "x", "payload": "A" * 4000, "signatures": []})
    _problem(APIClient().post(VERIFY, data=body, content_type="application/json"), 413)


def test_public_verify_reads_a_body_over_64_kb_up_to_its_own_limit() -> None:
    """The REST framework's 64 KB default used to refuse any certificate over 64 KB with a 413; the
    limit is CERTIFICATE_UPLOAD_MAX_BYTES (2 MiB). A large envelope is read and judged, not refused."""
    body = json.dumps({"payloadType": "application/vnd.erasure-certificate+json", "payload": "A" * 200_000, "signatures": []})
    response = APIClient().post(VERIFY, data=body, content_type="application/json")
    assert response.status_code != 413
    assert response.status_code in (200, 400) and "too large" not in response.content.decode().lower()
