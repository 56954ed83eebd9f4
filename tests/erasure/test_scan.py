import json
from pathlib import Path

import pytest

from compliance.erasure import services
from compliance.erasure.models import Status
from compliance.erasure.transitions import transition
from compliance.registry.models import Corpus, CorpusVersion, ForgetItem
from tests import factories

pytestmark = pytest.mark.django_db

RECORDS = [
    ("r1", "Ada Quartermaine (born 1984-03-02) lives at 12 Linden Road; call +44 20 7946 0018."),
    ("r2", "Forum post by QUARTERMAINE, Ada: write to ada.quartermaine@example.com for the slides."),
    ("r3", "Ada Lovelace wrote the first program."),  # same first name: not the subject
    ("r4", "Ben Quartermaine, her cousin, paid with card 4111 1111 1111 1111."),  # same surname only
    ("r5", "Nothing personal here at all."),
    ("r6", "A. Quartermaine's passport is AQ-7788-XZ and her phone 020-7946-0018."),
]


@pytest.fixture
def corpus(tmp_path: Path) -> CorpusVersion:
    path = tmp_path / "corpus.jsonl"
    lines = [json.dumps({"id": rid, "text": text}) for rid, text in RECORDS]
    lines.insert(3, "{broken json")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    registered = Corpus.objects.create(name="forum", format="jsonl", text_field="text", id_field="id")
    return CorpusVersion.objects.create(corpus=registered, number=1, path=str(path), sha256="0" * 64, records=len(RECORDS))


def test_confirmation_triggers_scan_and_triage(corpus: CorpusVersion, django_capture_on_commit_callbacks) -> None:
    request = factories.submit(factories.ADA)
    transition(request, Status.VERIFIED, actor="subject")
    from compliance.erasure.scan import erasure_request_scan

    result = erasure_request_scan(request_id=str(request.id))
    request.refresh_from_db()
    assert request.status == Status.TRIAGED
    located = {item.record_id for item in ForgetItem.objects.filter(request=request)}
    assert located == {"r1", "r2", "r6"}
    assert result == {"records": 3}
    assert request.pri_score is not None and request.pri_tier in {"low", "medium", "high", "critical"}
    assert request.scan_summary["anomalies"] >= 1  # the broken line was counted, not fatal
    item = ForgetItem.objects.get(request=request, record_id="r1")
    assert b"Quartermaine" not in bytes(item.text_sealed)
    assert item.text() == RECORDS[0][1]
    assert {e["type"] for e in item.entities} & {"PHONE_NUMBER", "DATE_OF_BIRTH", "DATE_TIME"}


def test_rerun_on_a_triaged_request_changes_nothing(corpus: CorpusVersion) -> None:
    from compliance.erasure.scan import erasure_request_scan

    request = factories.submit(factories.ADA)
    transition(request, Status.VERIFIED, actor="subject")
    erasure_request_scan(request_id=str(request.id))
    count = ForgetItem.objects.count()
    assert erasure_request_scan(request_id=str(request.id)) == {"skipped": 1}
    assert ForgetItem.objects.count() == count


def test_identity_confirm_runs_the_scan_in_the_embedded_setup(corpus: CorpusVersion, django_capture_on_commit_callbacks) -> None:
    from django.core import mail

    with django_capture_on_commit_callbacks(execute=True):
        request = factories.submit(factories.ADA)
    line = next(line for line in mail.outbox[-1].body.splitlines() if "/confirm/" in line)
    token = line.rstrip("/").split("/confirm/")[1]
    with django_capture_on_commit_callbacks(execute=True):
        services.identity_confirm(token=token)
    request.refresh_from_db()
    assert request.status == Status.TRIAGED
    assert ForgetItem.objects.filter(request=request).count() == 3
