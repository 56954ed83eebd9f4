"""Hypothesis against the public pages: any input gets a 2xx/3xx/4xx answer (never a 500), and
rejected input changes nothing."""

from __future__ import annotations

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compliance.audit.models import AuditLeaf
from compliance.erasure.models import ErasureRequest

pytestmark = pytest.mark.django_db

FIELDS = ["full_name", "email", "phone", "other_identifiers", "details", "ground", "confirm"]
text = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=50),
    st.sampled_from(["", " ", "\x00", "a" * 5000, "ada@example.com", "17(1)(a)", "on", "+44 20 7946 0018", "<script>"]),
)
COUNTS = {"tried": 0, "accepted": 0, "rejected": 0}


VALID = {
    "full_name": "Ada Quartermaine", "email": "ada@example.com", "phone": "+44 20 7946 0018", "other_identifiers": "",
    "details": "", "ground": "17(1)(b)", "confirm": "on",
}
# Random dictionaries, and valid forms with one or two fields replaced by random text: the second
# kind reaches the service layer, the first mostly the form validation.
forms = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS + ["unexpected", "csrfmiddlewaretoken"]), text, max_size=9),
    st.dictionaries(st.sampled_from(FIELDS), text, min_size=1, max_size=2).map(lambda changes: {**VALID, **changes}),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=forms)
def test_request_form_never_fails_and_rejections_change_nothing(data: dict[str, str]) -> None:
    from django.core.cache import cache

    cache.clear()  # the fuzzer is one client; rate limits are tested elsewhere
    before_requests, before_leaves = ErasureRequest.objects.count(), AuditLeaf.objects.count()
    response = Client().post("/request/", data)
    COUNTS["tried"] += 1
    assert response.status_code < 500
    if response.status_code == 302:
        COUNTS["accepted"] += 1
        assert ErasureRequest.objects.count() <= before_requests + 1
    else:
        COUNTS["rejected"] += 1
        assert response.status_code in (400, 413, 429)
        assert ErasureRequest.objects.count() == before_requests
        assert AuditLeaf.objects.count() == before_leaves


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(token=st.text(min_size=1, max_size=400).filter(lambda t: "/" not in t and "\x00" not in t))
def test_confirm_and_status_links_never_fail(token: str) -> None:
    client = Client()
    leaves = AuditLeaf.objects.count()
    for method, path in (("post", f"/confirm/{token}/"), ("get", f"/status/{token}/"), ("post", f"/status/{token}/withdraw/")):
        response = getattr(client, method)(path)
        assert response.status_code in (200, 301, 302, 400, 404, 405, 409)
    assert AuditLeaf.objects.count() == leaves


def test_report_fuzz_counts(capsys: pytest.CaptureFixture[str]) -> None:
    """Prints how many cases the form fuzzer tried (collected by the README's fuzzing figures)."""
    if COUNTS["tried"]:
        print(f"form fuzz: {COUNTS}")
    assert COUNTS["tried"] == 0 or COUNTS["accepted"] + COUNTS["rejected"] == COUNTS["tried"]
