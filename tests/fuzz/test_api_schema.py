"""Schemathesis against our own OpenAPI schema, in-process over WSGI: no operation answers 5xx,
whatever it is sent, authenticated as an officer (the widest role) or not at all."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from compliance.wsgi import application

schema = schemathesis.openapi.from_wsgi("/api/schema/", application)
CALLS = {"cases": 0, "5xx": 0}


@pytest.fixture
def officer_token(django_db_setup: Any, django_db_blocker: Any) -> str:
    from rest_framework.authtoken.models import Token

    from tests import factories

    with django_db_blocker.unblock():
        user = factories.user("officer")
        return Token.objects.create(user=user).key


@pytest.mark.django_db(transaction=True)
@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_operation_answers_5xx(case: Any, officer_token: str) -> None:
    from django.core.cache import cache

    cache.clear()
    for headers in ({"Authorization": f"Token {officer_token}"}, {}):
        response = case.call(headers=headers)
        CALLS["cases"] += 1
        assert response.status_code < 500, f"{case.method} {case.formatted_path} -> {response.status_code}"


def test_zz_report_schema_fuzz_counts() -> None:
    """Prints how many calls the schema fuzzer made (run with -s for the figures)."""
    print(f"schema fuzz: {CALLS}")
    assert CALLS["5xx"] == 0
