"""No leaf of the audit log may hold the subject's identifiers, in any case or digit form."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from compliance.audit.models import AuditCheckpoint, AuditLeaf
from compliance.audit.services import checkpoint_create
from compliance.erasure import services
from compliance.erasure.models import Status
from compliance.erasure.scan import erasure_request_scan
from compliance.erasure.transitions import transition
from compliance.registry.models import Corpus, CorpusVersion
from tests import factories

pytestmark = pytest.mark.django_db


def identifier_forms(subject: services.SubjectInput) -> list[bytes]:
    """Every form in which an identifier could have leaked: as given, lower-case, name parts, phone digits."""
    forms = {subject.full_name, subject.email, subject.phone, *subject.other_identifiers, subject.details}
    forms |= set(subject.full_name.split())
    forms.add(re.sub(r"\D", "", subject.phone))
    forms.add(subject.email.split("@")[0])
    out = set()
    for form in forms:
        if len(form) >= 4:
            out |= {form.encode(), form.lower().encode()}
    return sorted(out)


def assert_no_identifier_in_leaves(subject: services.SubjectInput) -> int:
    forms = identifier_forms(subject)
    blobs = [bytes(b) for b in AuditLeaf.objects.values_list("leaf_bytes", flat=True)]
    blobs += [c.encode() for c in AuditCheckpoint.objects.values_list("note", flat=True)]
    for blob in blobs:
        lowered = blob.lower()
        for form in forms:
            assert form.lower() not in lowered, "an identifier reached the audit log"
    return len(blobs)


def test_full_request_lifecycle_leaves_no_identifier_in_the_log(tmp_path: Path, django_capture_on_commit_callbacks) -> None:
    ada = factories.ADA
    corpus_file = tmp_path / "c.jsonl"
    corpus_file.write_text(json.dumps({"id": "r1", "text": f"{ada.full_name} ({ada.email}, {ada.phone}) wrote this."}) + "\n")
    corpus = Corpus.objects.create(name="c", format="jsonl")
    CorpusVersion.objects.create(corpus=corpus, number=1, path=str(corpus_file), sha256="0" * 64)

    officer = factories.user("officer")
    # 1. filed twice (duplicate), confirmed, scanned, extended, approved
    first = factories.submit(ada)
    factories.submit(ada)
    transition(first, Status.VERIFIED, actor="subject")
    erasure_request_scan(request_id=str(first.id))
    services.erasure_request_extend(request=first, officer=officer, reason=f"Search for {ada.full_name} takes time")
    services.erasure_request_assign(request=first, officer=officer, assignee=officer)
    services.erasure_request_approve(request=first, officer=officer, reason=f"{ada.full_name} asked, phone {ada.phone}")
    # 2. a second request by the same person: refused, then purged
    second = factories.request_in(Status.TRIAGED, services.SubjectInput(full_name=ada.full_name, email="ada.other@example.com"))
    services.erasure_request_refuse(request=second, officer=officer, legal_code="17(3)(e)", reason=f"{ada.full_name} is in litigation")
    services.erasure_request_purge(request=second)
    # 3. a third one withdrawn
    third = factories.request_in(Status.VERIFIED, services.SubjectInput(full_name=ada.full_name, email="ada.third@example.com"))
    services.erasure_request_withdraw(request=third)
    checkpoint_create()
    checked = assert_no_identifier_in_leaves(ada)
    assert checked >= 15
    assert AuditLeaf.objects.filter(event_type="request.approved").exists()


def test_the_check_itself_finds_a_planted_identifier() -> None:
    """The assertion above can fail: plant a lower-cased name in a leaf and it must be found."""
    from compliance.audit.services import audit_append

    audit_append(event_type="test.planted", actor="system", outcome="quartermaine")
    with pytest.raises(AssertionError):
        assert_no_identifier_in_leaves(factories.ADA)
