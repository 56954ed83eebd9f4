"""What the verifier's relearning attacker may fine-tune on beyond the eval set: the model's training
corpora without the job's subjects (compliance.jobs.inputs.corpus_texts)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from compliance.jobs import inputs
from compliance.registry import services as registry_services
from compliance.registry.artifacts import ArtifactCorrupted
from compliance.registry.models import CorpusVersion
from tests.jobs.conftest import corpus_rows

pytestmark = pytest.mark.django_db


def _texts(job: Any, limit: int = 100) -> list[str]:
    subjects, _forget, _rows = inputs.subjects_and_items(job)
    return inputs.corpus_texts(job, subjects, limit)


def test_the_corpus_comes_without_the_jobs_subjects(queued_job: Any) -> None:
    """Test Person1 and Test Person2 are the job's subjects: their records go, and so do the records
    whose text holds a subject's name (Test Person10 and 11 hold "Test Person1": a name is matched as
    written, never loosely)."""
    rows = corpus_rows(12)
    expected = {rows[i]["text"] for i in (0, 3, 4, 5, 6, 7, 8, 9)}
    texts = _texts(queued_job)
    assert set(texts) == expected and len(texts) == len(expected)


def test_the_sample_is_the_same_for_a_job_and_nested_by_its_cap(queued_job: Any) -> None:
    everything = _texts(queued_job)
    assert _texts(queued_job, 3) == everything[:3] == _texts(queued_job, 3)
    assert _texts(queued_job, 0) == []


def test_a_located_record_is_left_out_by_its_id_whatever_its_text(queued_job: Any, corpus_version: CorpusVersion) -> None:
    """The scanner may have read a record's bytes otherwise (cp1252) or found the person by an identifier
    the text check does not hold: the record id still removes it. Record P005 (Test Person5's) located
    for the job's first request, sealed with another text: only its id can leave it out."""
    from compliance.registry.models import ForgetItem

    line = corpus_rows(12)[5]["text"]
    assert line in _texts(queued_job)
    item = ForgetItem(request=queued_job.requests.first(), corpus_version=corpus_version, record_id="P005-qa-phone",
                      line_number=6, matched=["phone"], entities=[], pri_score=0.1)
    item.seal_text("read otherwise")
    item.save()
    assert line not in _texts(queued_job)


def test_lines_without_a_usable_text_are_skipped_and_plain_text_is_read_as_the_scanner_does(
    tmp_path: Path, queued_job: Any
) -> None:
    source = tmp_path / "c.jsonl"
    source.write_text(json.dumps({"record_id": "1", "body": "no text field"}) + "\nnot json\n"
                      + json.dumps({"record_id": "2", "text": "A record about the weather."}) + "\n"
                      + json.dumps([1, 2]) + "\n" + json.dumps({"record_id": "3", "text": 7}) + "\n")
    mixed = registry_services.corpus_register(name="mixed", source=source, id_field="record_id")
    notes = tmp_path / "notes.txt"
    notes.write_bytes("Caf\u00e9 opens at nine.\n".encode("cp1252") + b"\n" + b"Mail person2@example.com today\n")
    plain = registry_services.corpus_register(name="notes", source=notes, format="text")
    queued_job.base_version.trained_on.add(mixed, plain)
    texts = _texts(queued_job)
    assert "A record about the weather." in texts and "Caf\u00e9 opens at nine." in texts  # cp1252 read as such
    assert not any("person2@example.com" in t for t in texts)  # the request's own e-mail
    assert len(texts) == 8 + 2


def test_a_tampered_corpus_version_is_refused(queued_job: Any, corpus_version: CorpusVersion) -> None:
    path = Path(corpus_version.path)
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    with files[0].open("a") as fh:
        fh.write(json.dumps({"record_id": "X", "text": "slipped in"}) + "\n")
    with pytest.raises(ArtifactCorrupted):
        _texts(queued_job)


def test_the_retain_sample_also_leaves_out_anyone_whose_request_is_open(
    queued_job: Any, corpus_version: CorpusVersion, officer: Any
) -> None:
    """The engine's retain term keeps what it reads in place: nobody whose erasure is still pending may
    be in it. Test Person5 has an open request (not this job's; not even located yet: the name and the
    phone leave the record out) and Test Person6 a refused one (kept)."""
    from tests import factories

    rows = corpus_rows(12)
    factories.request_in("approved", person=factories.subject(5), officer=officer)
    factories.request_in("refused", person=factories.subject(6), officer=officer)
    subjects, _forget, _rows = inputs.subjects_and_items(queued_job)
    retained = inputs.corpus_texts(queued_job, subjects, 100, leave_out_open=True)
    assert set(retained) == {rows[i]["text"] for i in (0, 3, 4, 6, 7, 8, 9)}
    assert rows[5]["text"] in _texts(queued_job)  # the attackers' sample keeps them: nothing is trained on it
    from unlearning_worker.data import text_retain_items

    items = text_retain_items(retained)
    assert [i.prompt + i.completion for i in items] == retained  # each split, nothing lost
    assert all(i.prompt and not i.pii_spans for i in items)


def test_both_samples_come_from_one_read_and_equal_the_samples_drawn_alone(
    queued_job: Any, officer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker draws the attackers' and the retain samples together: each version's files are
    checked (hashed) once, not once a sample, and each sample is what it would be alone."""
    from compliance.registry import artifacts
    from tests import factories

    factories.request_in("approved", person=factories.subject(5), officer=officer)
    subjects, _forget, _rows = inputs.subjects_and_items(queued_job)
    alone = (inputs.corpus_texts(queued_job, subjects, 5), inputs.corpus_texts(queued_job, subjects, 4, leave_out_open=True))
    checks: list[Any] = []
    real = artifacts.verify_tree
    monkeypatch.setattr(artifacts, "verify_tree", lambda *a, **k: checks.append(a) or real(*a, **k))
    both = inputs.corpus_samples(queued_job, subjects, attackers=5, retain=4)
    assert (both.attackers, both.retain) == alone and len(both.attackers) == 5 and len(both.retain) == 4
    assert len(checks) == queued_job.base_version.trained_on.count() == 1
    assert inputs.corpus_samples(queued_job, subjects, attackers=0, retain=0) == inputs.CorpusSamples([], [])
    # whatever the draw: Test Person5 (open request) is in the attackers' sample and not in the retain one
    whole = inputs.corpus_samples(queued_job, subjects, attackers=100, retain=100)
    person5 = corpus_rows(12)[5]["text"]
    assert person5 in whole.attackers and person5 not in whole.retain
    assert set(whole.retain) == set(whole.attackers) - {person5}
