"""Hostile JSON (issue 17, item 3) gets a clear refusal, never a 500 or a traceback: nesting deeper than 64
levels and integers beyond Python's 4,300-digit conversion limit, at every public JSON reader: the public
/verify/ page, the verify API, an authenticated API endpoint, the offline verifier's command line (the
certificate and the pinned key ring), and canonical audit-leaf parsing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from rest_framework.authtoken.models import Token

from proofs import offline
from proofs.canonical import MAX_DEPTH, JSONLimitError, loads_limited, parse_canonical
from tests import factories

DEEP = "[" * 10_000 + "]" * 10_000
NESTED_65 = "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)
BIG_INT = '{"payloadType": ' + "9" * 5_000 + "}"
HOSTILE = {"deep": DEEP, "just too deep": NESTED_65, "huge integer": BIG_INT}


def test_limits_are_exact() -> None:
    assert loads_limited("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    assert loads_limited("9" * 4_300) == int("9" * 4_300)
    with pytest.raises(JSONLimitError, match="deeper than 64"):
        loads_limited(NESTED_65)
    with pytest.raises(JSONLimitError, match="deeper than 64"):
        loads_limited(DEEP)
    with pytest.raises(JSONLimitError, match="too many digits"):
        loads_limited("9" * 4_301)
    with pytest.raises(json.JSONDecodeError):  # malformed stays what json.loads says
        loads_limited("{")


@pytest.mark.parametrize("body", HOSTILE.values(), ids=HOSTILE.keys())
def test_canonical_leaf_parsing_refuses_with_a_value_error(body: str) -> None:
    with pytest.raises(ValueError):
        parse_canonical(body.encode())


@pytest.mark.django_db
@pytest.mark.parametrize("body", HOSTILE.values(), ids=HOSTILE.keys())
def test_public_verify_page_says_what_is_wrong(body: str) -> None:
    upload = SimpleUploadedFile("certificate.json", body.encode(), content_type="application/json")
    response = Client().post("/verify/", {"certificate": upload})
    assert response.status_code == 400
    assert b"not a certificate" in response.content or b"neither a certificate" in response.content


@pytest.mark.django_db
@pytest.mark.parametrize("body", HOSTILE.values(), ids=HOSTILE.keys())
def test_verify_api_answers_400(body: str) -> None:
    response = Client().post("/api/v1/certificates/verify", data=body, content_type="application/json")
    assert response.status_code == 400
    assert response["Content-Type"].startswith("application/problem+json")


@pytest.mark.django_db
@pytest.mark.parametrize("body", [DEEP, NESTED_65, '{"full_name": ' + "9" * 5_000 + "}"], ids=["deep", "65", "int"])
def test_an_authenticated_endpoint_answers_400_and_writes_nothing(body: str) -> None:
    from compliance.erasure.models import ErasureRequest

    token = Token.objects.create(user=factories.user("api-client"))
    client = Client(HTTP_AUTHORIZATION=f"Token {token.key}")
    response = client.post("/api/v1/requests/", data=body, content_type="application/json")
    assert response.status_code == 400
    assert "JSON parse error" in response.json()["detail"]
    assert ErasureRequest.objects.count() == 0


@pytest.mark.parametrize("body", HOSTILE.values(), ids=HOSTILE.keys())
def test_offline_verifier_fails_with_a_reason_not_a_traceback(
    body: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    certificate = tmp_path / "certificate.json"
    certificate.write_text(body)
    code = offline.main([str(certificate), "--key", "example.org+00000000+" + "A" * 44])
    out = capsys.readouterr()
    assert code in (1, 2)
    assert "Traceback" not in out.out + out.err
    assert (out.out + out.err).strip()


def test_offline_verifier_refuses_a_hostile_key_ring(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    certificate = tmp_path / "certificate.json"
    certificate.write_text("{}")
    ring = tmp_path / "ring.json"
    ring.write_text(DEEP)
    code = offline.main([str(certificate), "--keyring", str(ring)])
    err = capsys.readouterr().err
    assert code == 2 and "key ring" in err
