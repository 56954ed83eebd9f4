"""Hypothesis sends hostile bodies to every parser the service exposes: JSON nested far past any limit,
integers of thousands of digits, huge strings, invalid UTF-8, and wrong or missing content types, to
every API endpoint that reads a body (authenticated as an officer, the widest role), to the public
form and the public /verify/ upload, and hostile query values to the public audit-log proofs.
No answer may be a 5xx, and a refusal changes nothing (no request row is created by a refused body)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from compliance.erasure.models import ErasureRequest, Status
from tests import factories

pytestmark = pytest.mark.django_db
COUNTS = {"calls": 0}


def _nested(depth: int, kind: str) -> str:
    if kind == "array":
        return "[" * depth + "1" + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


hostile_json = st.one_of(
    st.builds(_nested, st.integers(0, 20_000), st.sampled_from(["array", "object"])),
    st.integers(1, 20_000).map(lambda n: '{"texts": [' + "9" * n + "]}"),
    st.integers(1, 20_000).map(lambda n: '{"legal_code": "' + "x" * n + '", "reason": ' + "1" * min(n, 5000) + "}"),
    st.text(max_size=300).map(lambda t: json.dumps({"texts": [t], "full_name": t, "email": t, "payload": t})),
    st.sampled_from(['{"payloadType": NaN}', '{"a": Infinity}', "\x00", "", "{", "[1,]", '"\\ud800"', "null", "true"]),
)
bodies = st.one_of(hostile_json.map(lambda s: s.encode("utf-8", "surrogatepass")),
                   st.binary(max_size=2_000), st.just(b"\xff\xfe\xfa not utf-8"))
content_types = st.sampled_from([
    "application/json", "application/json; charset=latin-1", "text/plain", "application/xml",
    "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "multipart/form-data", "", "application/json; charset=nope",
])


@pytest.fixture
def officer_api(db: Any) -> APIClient:
    user = factories.user("officer", username="fuzz.officer")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


def _endpoints() -> list[str]:
    request = factories.request_in(Status.TRIAGED)
    ref = request.reference
    job = "00000000-0000-0000-0000-000000000000"
    return [
        "/api/v1/requests/", f"/api/v1/requests/{ref}/approve/", f"/api/v1/requests/{ref}/refuse/",
        f"/api/v1/requests/{ref}/extend/", f"/api/v1/jobs/{job}/cancel/", f"/api/v1/jobs/{job}/retry/",
        "/api/v1/guard", "/api/v1/guard/stream", "/api/v1/certificates/verify",
    ]


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=bodies, content_type=content_types)
def test_no_api_endpoint_answers_5xx_to_a_hostile_body(officer_api: APIClient, body: bytes, content_type: str) -> None:
    from django.core.cache import cache

    cache.clear()
    before = ErasureRequest.objects.count()
    for url in _endpoints():
        response = officer_api.generic("POST", url, body, content_type=content_type)
        COUNTS["calls"] += 1
        assert response.status_code < 500, (url, content_type, body[:80], response.status_code)
        assert response.status_code != 201 or url == "/api/v1/requests/", url
    assert ErasureRequest.objects.count() <= before + len(_endpoints())  # only the fixtures' own requests


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=bodies, content_type=content_types)
def test_public_pages_never_answer_5xx_to_a_hostile_body(client: Any, body: bytes, content_type: str) -> None:
    from django.core.cache import cache

    cache.clear()
    for url in ("/request/", "/verify/", "/portal/login/"):
        response = client.generic("POST", url, body, content_type=content_type)
        COUNTS["calls"] += 1
        assert response.status_code < 500, (url, content_type, body[:80], response.status_code)


huge_numbers = st.one_of(st.integers(-10**30, 10**30).map(str), st.integers(1, 6000).map(lambda n: "9" * n),
                         st.text(max_size=50))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(first=huge_numbers, second=huge_numbers)
def test_audit_proofs_never_answer_5xx_to_hostile_query_values(client: Any, first: str, second: str) -> None:
    from django.core.cache import cache

    cache.clear()
    for url, params in (
        ("/api/v1/audit/proof/inclusion", {"index": first, "size": second}),
        ("/api/v1/audit/proof/consistency", {"first": first, "second": second}),
        ("/api/v1/audit/checkpoint", {"size": first}),
    ):
        response = client.get(url, params)
        COUNTS["calls"] += 1
        assert response.status_code < 500, (url, params, response.status_code)


def test_zz_report_hostile_body_counts() -> None:
    print(f"hostile bodies: {COUNTS}")
