import json

import pytest
from django.test import Client
from rest_framework.authtoken.models import Token

from compliance.erasure.models import ErasureRequest, Status
from tests import factories

pytestmark = pytest.mark.django_db

BODY = {"full_name": "Ada Quartermaine", "email": "ada@example.com", "phone": "020 7946 0018", "ground": "17(1)(a)"}


def _client(role: str | None) -> Client:
    token = Token.objects.create(user=factories.user(role))
    return Client(HTTP_AUTHORIZATION=f"Token {token.key}")


def _post(client: Client, url: str, body: object, content_type: str = "application/json"):  # type: ignore[no-untyped-def]
    return client.post(url, data=json.dumps(body) if not isinstance(body, str | bytes) else body, content_type=content_type)


def test_schema_is_served() -> None:
    response = Client().get("/api/schema/")
    assert response.status_code == 200 and b"/api/v1/requests/" in response.content


def test_create_request_as_api_client() -> None:
    response = _post(_client("api-client"), "/api/v1/requests/", BODY)
    assert response.status_code == 201, response.content
    data = response.json()
    request = ErasureRequest.objects.get(pk=data["id"])
    assert request.channel == "api" and request.status == Status.RECEIVED and data["created"] is True


def test_create_requires_auth() -> None:
    response = _post(Client(), "/api/v1/requests/", BODY)
    assert response.status_code in (401, 403)
    assert response["Content-Type"] == "application/problem+json"
    assert ErasureRequest.objects.count() == 0


def test_reviewer_cannot_create() -> None:
    assert _post(_client("reviewer"), "/api/v1/requests/", BODY).status_code == 403


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (dict(BODY, nickname="ada"), "nickname"),
        ({k: v for k, v in BODY.items() if k != "email"}, "email"),
        (dict(BODY, email="nope"), "email"),
        (dict(BODY, full_name="x" * 300), "full_name"),
        (dict(BODY, ground="17(9)"), "ground"),
        (dict(BODY, other_identifiers=["a"] * 11), "other_identifiers"),
        (dict(BODY, phone="abc"), "phone"),
    ],
)
def test_bad_bodies_get_problem_json_and_change_nothing(body: dict, field: str) -> None:
    response = _post(_client("api-client"), "/api/v1/requests/", body)
    assert response.status_code == 400
    problem = response.json()
    assert response["Content-Type"] == "application/problem+json"
    assert problem["status"] == 400 and field in problem["errors"]
    assert ErasureRequest.objects.count() == 0


def test_wrong_content_type_is_415() -> None:
    response = _client("api-client").post("/api/v1/requests/", data="full_name=x", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
    assert ErasureRequest.objects.count() == 0


def test_malformed_json_is_400() -> None:
    response = _post(_client("api-client"), "/api/v1/requests/", "{not json")
    assert response.status_code == 400 and response.json()["status"] == 400


def test_non_object_json_is_400() -> None:
    assert _post(_client("api-client"), "/api/v1/requests/", [1, 2]).status_code == 400


def test_oversized_body_is_refused() -> None:
    response = _post(_client("api-client"), "/api/v1/requests/", dict(BODY, details="x" * 100_000))
    assert response.status_code == 413
    assert response.json()["status"] == 413
    assert ErasureRequest.objects.count() == 0


def test_officer_lists_and_reads() -> None:
    request = factories.request_in(Status.TRIAGED)
    client = _client("reviewer")
    listing = client.get("/api/v1/requests/")
    assert listing.status_code == 200 and listing.json()["count"] == 1
    detail = client.get(f"/api/v1/requests/{request.reference}/")
    assert detail.json()["status"] == "triaged"
    assert "email" not in json.dumps(detail.json())


def test_api_approve_and_refuse_rules() -> None:
    request = factories.request_in(Status.TRIAGED)
    reviewer = _client("reviewer")
    assert _post(reviewer, f"/api/v1/requests/{request.reference}/approve/", {}).status_code == 403
    officer = _client("officer")
    bad = _post(officer, f"/api/v1/requests/{request.reference}/refuse/", {"reason": "x"})
    assert bad.status_code == 400
    ok = _post(officer, f"/api/v1/requests/{request.reference}/approve/", {"reason": "fine"})
    assert ok.status_code == 200 and ok.json()["status"] == "approved"
    again = _post(officer, f"/api/v1/requests/{request.reference}/approve/", {})
    assert again.status_code == 409


def test_unknown_reference_is_404_problem() -> None:
    response = _post(_client("officer"), "/api/v1/requests/ER-1900-000001/approve/", {})
    assert response.status_code == 404 and response.json()["status"] == 404


def test_rate_limited_api_gets_429(settings) -> None:
    settings.RATE_LIMIT_SUBMIT_PER_IP = 1
    client = _client("api-client")
    _post(client, "/api/v1/requests/", BODY)
    response = _post(client, "/api/v1/requests/", dict(BODY, email="other@example.com"))
    assert response.status_code == 429 and response["Retry-After"]
