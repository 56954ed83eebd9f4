"""POST /api/v1/guard and GET /api/v1/guard/health over real HTTP requests with token auth."""

# Fixtures are imported from tests.certificates.test_issue_helpers and named as test arguments.
# ruff: noqa: F811

from __future__ import annotations

from typing import Any

import pytest
from django.db import OperationalError, connection
from django.urls import reverse
from rest_framework.test import APIClient

from compliance.guard import runtime
from tests.certificates.test_issue_helpers import (  # noqa: F401 - fixtures
    ADA,
    approve,
    isolated_files,
    make_user,
    officer,
    outsider,
    reviewer,
)
from tests.factories import api_client  # noqa: E402

pytestmark = pytest.mark.django_db
GUARD = "/api/v1/guard"
STREAM = "/api/v1/guard/stream"
HEALTH = "/api/v1/guard/health"


def _client(user: Any | None) -> APIClient:
    return api_client(user)


@pytest.fixture
def serving(db: Any) -> APIClient:
    return _client(make_user("serving-stack", "api-client"))


def test_urls_are_the_documented_ones() -> None:
    assert reverse("api:guard") == GUARD and reverse("api:guard_health") == HEALTH
    assert reverse("api:guard_stream") == STREAM


def test_redacts_a_protected_phone_written_in_another_format(officer: Any, serving: APIClient) -> None:
    approve(ADA, officer)  # given as "+44 20 7946 0018"
    texts = [
        "Her number is 020-7946-0018, call after six.",
        "Try (020) 7946 0018 or 0044 20 7946 0018.",
        "Reception: 020 7946 0999.",  # same exchange, another number
    ]
    response = serving.post(GUARD, {"texts": texts}, format="json")
    assert response.status_code == 200, response.content
    results = response.json()["results"]
    assert results[0]["text"] == "Her number is [removed], call after six."
    assert results[0]["kinds"] == ["phone"] and results[0]["matched"] is True
    assert results[0]["matches"] == [{"start": 14, "end": 27, "kind": "phone"}]
    assert "7946" not in results[1]["text"] and len(results[1]["matches"]) == 2
    assert results[2] == {"text": texts[2], "blocked": False, "matched": False, "kinds": [], "matches": []}
    assert response.json()["status"] == "ok"
    assert ADA.full_name not in response.content.decode()  # no subject data or refs echoed beyond the input


def test_block_mode_withholds_the_whole_output(officer: Any, serving: APIClient) -> None:
    approve(ADA, officer)
    response = serving.post(GUARD, {"texts": ["Mail ada.quartermaine@EXAMPLE.org"], "mode": "block"}, format="json")
    result = response.json()["results"][0]
    assert result["blocked"] is True and "example" not in result["text"].lower()
    assert result["kinds"] == ["email"]


def test_officer_token_may_call_the_guard(officer: Any) -> None:
    assert _client(officer).post(GUARD, {"texts": ["hello"]}, format="json").status_code == 200


def _is_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    return body


def test_rejects_unauthenticated_and_unprivileged_calls(reviewer: Any, outsider: Any) -> None:
    _is_problem(APIClient().post(GUARD, {"texts": ["x"]}, format="json"), 401)
    _is_problem(APIClient().get(HEALTH), 401)
    bad_token = APIClient()
    bad_token.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
    _is_problem(bad_token.post(GUARD, {"texts": ["x"]}, format="json"), 401)
    for user in (reviewer, outsider):  # reviewers read requests; they are not a serving stack
        body = _is_problem(_client(user).post(GUARD, {"texts": ["x"]}, format="json"), 403)
        assert "api-client" in body["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "texts"),
        ({"texts": []}, "texts"),
        ({"texts": "one string"}, "texts"),
        ({"texts": [1, {"a": 2}]}, "texts"),
        ({"texts": ["x"] * 257}, "texts"),
        ({"texts": ["x"], "mode": "shout"}, "mode"),
        ({"texts": ["x"], "colour": "red"}, "colour"),
        ({"texts": ["x"], "names": "sometimes"}, "names"),
        ({"texts": ["x"], "transforms": ["rot13"]}, "transforms"),
        ([1, 2], "non_field_errors"),
    ],
)
def test_rejects_bad_bodies_with_problem_json(serving: APIClient, body: Any, field: str) -> None:
    problem = _is_problem(serving.post(GUARD, body, format="json"), 400)
    assert field in problem["errors"]


def test_rejects_oversized_bodies_before_parsing(serving: APIClient, settings: Any) -> None:
    settings.GUARD_MAX_BODY_BYTES = 1000
    problem = _is_problem(serving.post(GUARD, {"texts": ["x" * 2000]}, format="json"), 413)
    assert "too large" in problem["detail"]


def test_rejects_non_json_bodies(serving: APIClient) -> None:
    _is_problem(serving.post(GUARD, "texts=hello", content_type="text/plain"), 415)
    _is_problem(serving.post(GUARD, "{not json", content_type="application/json"), 400)


def test_health_reports_stale_after_an_outage_and_the_endpoint_still_filters(officer: Any, serving: APIClient, settings: Any) -> None:
    settings.GUARD_REFRESH_INTERVAL_S = 0
    runtime.reset_runtime()
    approve(ADA, officer)
    healthy = serving.get(HEALTH).json()
    assert healthy["status"] == "ok" and healthy["rule_count"] > 0 and healthy["last_error"] is None

    def down(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        # Token look-ups still work (they run before the guard); the guard's own reads fail.
        if "guard_" in sql:
            raise OperationalError("server closed the connection unexpectedly (simulated)")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(down):
        stale = serving.get(HEALTH).json()
        assert stale["status"] == "stale" and stale["last_error"] == "OperationalError"
        assert stale["rule_count"] == healthy["rule_count"] and stale["stale_since"] is not None
        response = serving.post(GUARD, {"texts": ["Ada Quartermaine, 020 7946 0018"]}, format="json").json()
        assert response["results"][0]["text"] == "[removed], [removed]" and response["status"] == "stale"
    assert serving.get(HEALTH).json()["status"] == "ok"


def test_obfuscated_identifiers_are_caught_and_transforms_can_be_switched(officer: Any, serving: APIClient) -> None:
    approve(ADA, officer)  # phone "+44 20 7946 0018"
    texts = ["Call 020\u20137946\u00a00018", "call two oh seven nine four six oh oh one eight", "ada quartermaine is here"]
    results = serving.post(GUARD, {"texts": texts}, format="json").json()["results"]
    assert [r["kinds"] for r in results] == [["phone"], ["phone"], ["name"]]
    assert results[0]["text"] == "Call [removed]"
    off = serving.post(GUARD, {"texts": texts, "transforms": ["separators"], "names": "capitalised"}, format="json")
    assert [r["matched"] for r in off.json()["results"]] == [True, False, False]


def test_stream_catches_a_value_split_across_pieces_and_keeps_no_state(officer: Any, serving: APIClient) -> None:
    approve(ADA, officer)
    pieces = ["Her number is +44 20 79", "46 0018, and her name is Ada Quarter", "maine. " + "All for today. " * 10]
    shown, state = [], None
    for i, piece in enumerate(pieces + [""]):
        body = {"piece": piece, "state": state, "final": i == len(pieces)}
        response = serving.post(STREAM, body, format="json")
        assert response.status_code == 200, response.content
        data = response.json()
        shown.append(data["text"])
        state = data["state"]
    text = "".join(shown)
    assert text.startswith("Her number is [removed], and her name is [removed]. All for today.")
    assert "7946" not in text and "Quarter" not in text and "79" not in shown[0]


def test_stream_block_mode_and_bad_state(officer: Any, serving: APIClient) -> None:
    approve(ADA, officer)
    data = serving.post(STREAM, {"piece": "mail ada.quartermaine@example.org", "final": True, "mode": "block"}, format="json").json()
    assert data["blocked"] is True and data["kinds"] == ["email"] and "example" not in data["text"]
    after = serving.post(STREAM, {"piece": "more", "state": data["state"], "final": True}, format="json").json()
    assert after["text"] == "" and after["blocked"] is True  # a blocked stream stays blocked
    bad = serving.post(STREAM, {"piece": "x", "state": {"pending": "x"}}, format="json")
    assert "state" in _is_problem(bad, 400)["errors"]
    assert "piece" in _is_problem(serving.post(STREAM, {"state": None}, format="json"), 400)["errors"]


def test_accepts_its_documented_maximum_body_and_refuses_one_byte_more(serving: APIClient, settings: Any) -> None:
    """GUARD_MAX_BODY_BYTES (4 MiB by default) is the documented maximum: a body of exactly that size is
    checked; one byte more is refused with 413 before parsing (the REST framework's own 64 KB default
    once broke the endpoint silently)."""
    import json

    limit = settings.GUARD_MAX_BODY_BYTES
    assert limit == 4 * 1024 * 1024
    texts = [("Ordinary model output about the weather. " * 2500)[:100_000]] * 41
    body = json.dumps({"texts": texts}, separators=(",", ":"))
    fill = limit - len(body.encode()) - len(',""')
    assert 0 < fill <= 100_000
    exact = json.dumps({"texts": [*texts, "b" * fill]}, separators=(",", ":")).encode()
    assert len(exact) == limit
    ok = serving.generic("POST", GUARD, exact, content_type="application/json")
    assert ok.status_code == 200, ok.content[:300]
    assert len(ok.json()["results"]) == 42
    over_body = exact[:-3] + b'b"]}'  # one more character in the last text
    over = serving.generic("POST", GUARD, over_body, content_type="application/json")
    assert len(over_body) == limit + 1
    _is_problem(over, 413)
