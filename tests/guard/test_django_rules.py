"""Suppression rules from approvals, and the process-wide guard cache (Django side of the guard)."""

# Fixtures are imported from tests.certificates.test_issue_helpers and named as test arguments.
# ruff: noqa: F811

from __future__ import annotations

from typing import Any

import pytest
from django.db import OperationalError, connection
from django.test import TestCase

from compliance.audit.models import AuditLeaf
from compliance.audit.services import leaf_document
from compliance.erasure.models import Status
from compliance.erasure.services import erasure_request_approve
from compliance.erasure.transitions import transition
from compliance.guard import runtime
from compliance.guard.models import GuardRulesVersion, SuppressionRule
from compliance.guard.services import suppression_rules_create
from tests.certificates.test_issue_helpers import (  # noqa: F401 - fixtures
    ADA,
    BORIS,
    Subject,
    approve,
    isolated_files,
    officer,
    submit_and_confirm,
)

pytestmark = pytest.mark.django_db


def _forms(subject: Subject) -> list[str]:
    """Every plaintext form that must never be stored: as given, lower-cased, words, phone digits."""
    digits = "".join(ch for ch in subject.phone if ch.isdigit())
    values = [subject.full_name, subject.email, subject.phone, subject.other, *subject.full_name.split()]
    forms = {v for value in values for v in (value, value.lower(), value.upper())}
    forms |= {digits, digits[-9:], digits[-7:], subject.email.lower().split("@")[0], subject.other.lower()}
    forms |= {" ".join(reversed(subject.full_name.lower().split())), subject.full_name.lower().replace(" ", "")}
    return sorted(forms)


def test_approval_stores_only_keyed_hashes(officer: Any) -> None:
    request = approve(ADA, officer)
    rules = list(SuppressionRule.objects.filter(request=request).values())
    assert {rule["kind"] for rule in rules} == {"name_lc", "email", "phone", "identifier"}  # a distinctive name
    assert all(rule["subject_ref"] == request.subject_ref and rule["active"] for rule in rules)
    for rule in rules:
        stored = " ".join(str(value) for value in rule.values()).lower()
        assert len(rule["digest"]) == 64 and int(rule["digest"], 16) >= 0
        for form in _forms(ADA):
            if len(form) < 8 and all(c in "0123456789abcdef" for c in form.lower()):
                continue  # "ada" turns up in a random hex digest by chance (seen: "...8cada3dd")
            assert form.lower() not in stored, "a plaintext form of an identifier was stored"
    # the same columns through raw SQL: nothing hidden from the ORM
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM guard_suppressionrule")
        raw = " ".join(str(cell) for row in cursor.fetchall() for cell in row).lower()
    digits = "".join(ch for ch in ADA.phone if ch.isdigit())
    assert raw and digits[-9:] not in raw and "quartermaine" not in raw and "example.org" not in raw


def test_approval_bumps_version_and_logs_counts_without_values(officer: Any) -> None:
    before = GuardRulesVersion.objects.filter(id=1).values_list("version", flat=True).first() or 0
    request = approve(ADA, officer)
    assert GuardRulesVersion.objects.get(id=1).version == before + 1
    leaf = AuditLeaf.objects.get(request_id=request.id, event_type="guard.rules_created")
    document = leaf_document(leaf)
    count = SuppressionRule.objects.filter(request=request).count()
    assert document["details"]["count"] == count and document["details"]["new"] == count
    assert document["details"]["kind_phone"] == 1 and document["details"]["kind_email"] == 1
    raw = bytes(leaf.leaf_bytes).decode().lower()
    assert "quartermaine" not in raw and "7946" not in raw and "example.org" not in raw


def test_unusable_identifier_is_skipped_and_counted_not_fatal(officer: Any) -> None:
    short = Subject("Cleo Marchetti", "cleo@example.com", "+39 06 4991 2345", "AB12")  # too short to suppress safely
    request = approve(short, officer)
    assert request.status == Status.APPROVED
    assert set(SuppressionRule.objects.filter(request=request).values_list("kind", flat=True)) == {"name_lc", "email", "phone"}
    document = leaf_document(AuditLeaf.objects.get(request_id=request.id, event_type="guard.rules_created"))
    assert document["details"]["refused_identifiers"] == 1


def test_stored_values_the_intake_would_refuse_are_counted_and_the_approval_goes_through(officer: Any) -> None:
    """An older or imported row may hold an e-mail without "@" or a phone of four digits: the approval
    still commits with rules for what is usable, and the audit event counts the rest as refused."""
    request = submit_and_confirm(ADA)
    stored = request.identifiers() | {"email": "ada at example.org", "phone": "12-34"}
    request.seal_identifiers(stored)
    request.save(update_fields=["identifiers_sealed"])
    transition(request, Status.TRIAGED, actor="system", details={"records": 1})
    erasure_request_approve(request=request, officer=officer, reason="Art. 17(1)(a) applies")
    request.refresh_from_db()
    assert request.status == Status.APPROVED
    assert set(SuppressionRule.objects.filter(request=request).values_list("kind", flat=True)) == {"name_lc", "identifier"}
    document = leaf_document(AuditLeaf.objects.get(request_id=request.id, event_type="guard.rules_created"))
    assert document["details"]["refused_identifiers"] == 2
    assert request.subject().emails == () and request.subject().phones == ()
    assert request.subject_and_dropped()[1] == 2


def test_rules_roll_back_with_a_failed_approval(officer: Any, monkeypatch: Any) -> None:
    request = submit_and_confirm(ADA)
    transition(request, Status.TRIAGED, actor="system")
    from compliance.erasure import services

    def failing_enqueue(name: str, **kwargs: Any) -> None:
        raise RuntimeError("broker down")

    monkeypatch.setattr(services, "enqueue", failing_enqueue)
    with pytest.raises(RuntimeError):
        erasure_request_approve(request=request, officer=officer, reason="ok")
    request.refresh_from_db()
    assert request.status == Status.TRIAGED
    assert not SuppressionRule.objects.exists()
    assert not AuditLeaf.objects.filter(event_type="guard.rules_created").exists()


def test_creating_rules_twice_adds_nothing_new(officer: Any) -> None:
    request = approve(ADA, officer)
    count = SuppressionRule.objects.count()
    assert suppression_rules_create(request=request, subject=request.subject(), actor="system") == 0
    assert SuppressionRule.objects.count() == count


def test_guard_protects_the_subject_as_soon_as_the_approval_commits(officer: Any, settings: Any, monkeypatch: Any) -> None:
    from compliance.erasure import services

    settings.GUARD_REFRESH_INTERVAL_S = 3600  # only the approval's after-commit hook can trigger a reload
    runtime.reset_runtime()
    text = "You can reach Ada Quartermaine on 020 7946 0018 or ADA.QUARTERMAINE@EXAMPLE.ORG."
    assert runtime.guard_texts([text])[0].text == text  # nothing protected yet; the cache is now warm
    # The unlearning dispatch that approval enqueues belongs to the jobs module: record it, do not run it.
    dispatched: list[str] = []
    monkeypatch.setattr(services, "enqueue", lambda name, **kwargs: dispatched.append(name))
    with TestCase.captureOnCommitCallbacks(execute=True):
        approve(ADA, officer)
    assert "jobs.dispatch" in dispatched
    result = runtime.guard_texts([text])[0]
    assert result.text == "You can reach [removed] on [removed] or [removed]."
    assert {m.kind for m in result.matches} == {"name", "phone", "email"}
    assert runtime.guard_texts(["Boris Valentinov called from +44 161 496 0733."])[0].matches == []


class _DatabaseDown:
    """connection.execute_wrapper hook: every query fails as if the server were unreachable."""

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        raise OperationalError("could not connect to server (simulated outage)")


def test_health_reports_stale_during_an_outage_and_filtering_goes_on(officer: Any, settings: Any) -> None:
    settings.GUARD_REFRESH_INTERVAL_S = 0  # look at the database on every call
    runtime.reset_runtime()
    approve(ADA, officer)
    assert runtime.guard_health().status == "ok"
    loaded = runtime.guard_health()
    assert loaded.rule_count == SuppressionRule.objects.count() and loaded.subject_count == 1

    approve(BORIS, officer, ip="192.0.2.11")  # new rules the guard cannot fetch during the outage
    with connection.execute_wrapper(_DatabaseDown()):
        health = runtime.guard_health()
        assert health.status == "stale"
        assert health.last_error == "OperationalError"
        assert health.version == loaded.version and health.stale_since is not None
        result = runtime.guard_texts(["Ada Quartermaine: +44 (0)20 7946 0018"])[0]
        assert result.text == "[removed]: [removed]"  # the last good rules still apply
        assert runtime.guard_texts(["Boris Valentinov"])[0].matches == []  # not loaded yet
    healed = runtime.guard_health()
    assert healed.status == "ok" and healed.stale_since is None and healed.subject_count == 2
    assert runtime.guard_texts(["Boris Valentinov"])[0].text == "[removed]"


def test_refresh_is_rate_limited_by_the_interval(officer: Any, settings: Any, django_assert_num_queries: Any) -> None:
    settings.GUARD_REFRESH_INTERVAL_S = 3600
    runtime.reset_runtime()
    runtime.guard_texts(["warm up"])
    with django_assert_num_queries(0):
        for _ in range(5):
            runtime.guard_texts(["Ada Quartermaine"])
    runtime.invalidate()
    with django_assert_num_queries(4):  # savepoint, version, rules, release
        runtime.guard_texts(["Ada Quartermaine"])


def test_guard_before_any_rules_reports_ok_with_an_empty_index(db: Any) -> None:
    health = runtime.guard_health()
    assert (health.status, health.rule_count, health.version) == ("ok", 0, "0")


def test_rules_derived_before_an_upgrade_are_derived_again(officer: Any, settings: Any) -> None:
    # A request approved before distinctive names existed: its name rules are of kind "name" only.
    from django.core.management import call_command

    from compliance.guard.services import guard_key
    from pii.matcher import keyed_digest, name_keys

    request = approve(ADA, officer)
    rules = SuppressionRule.objects.filter(request=request)
    rules.filter(kind="name_lc").delete()
    old = [SuppressionRule(request=request, subject_ref=request.subject_ref, kind="name",
                           digest=keyed_digest("name", key, guard_key())) for key in sorted(name_keys(ADA.full_name))]
    SuppressionRule.objects.bulk_create(old)
    settings.GUARD_REFRESH_INTERVAL_S = 0  # every call looks at the rules version
    assert runtime.guard_texts(["i saw ada quartermaine"])[0].matched is False  # lower case: not yet

    out = _call(call_command, "guard_rules_rederive", "--dry-run")
    assert "would add" in out and SuppressionRule.objects.filter(request=request, kind="name_lc").count() == 0
    out = _call(call_command, "guard_rules_rederive")
    assert f"added {len(old)} rule(s), retired {len(old)}" in out
    assert SuppressionRule.objects.filter(request=request, kind="name_lc", active=True).count() == len(old)
    assert not SuppressionRule.objects.filter(request=request, kind="name", active=True).exists()
    assert runtime.guard_texts(["i saw ada quartermaine"])[0].text == "i saw [removed]"
    assert runtime.guard_texts(["I saw Ada Quartermaine"])[0].text == "I saw [removed]"  # still caught capitalised
    leaf = AuditLeaf.objects.filter(request_id=request.id, event_type="guard.rules_rederived").get()
    assert leaf_document(leaf)["details"]["retired"] == len(old)
    assert "added 0 rule(s), retired 0" in _call(call_command, "guard_rules_rederive")  # idempotent


def _call(call_command: Any, *args: str) -> str:
    from io import StringIO

    buffer = StringIO()
    call_command(*args, stdout=buffer)
    return buffer.getvalue()
