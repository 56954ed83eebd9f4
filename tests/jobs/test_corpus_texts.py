"""What the verifier's relearning attacker (and the engine's in-loop one) may fine-tune on beyond the eval
set: the model's training corpora without the job's subjects (compliance.jobs.inputs.corpus_texts)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from compliance.jobs.inputs import EvalSet, SubjectData, corpus_texts, retain_items
from compliance.registry import services as registry_services
from compliance.registry.artifacts import ArtifactCorrupted
from compliance.registry.models import CorpusVersion, ModelVersion
from tests.jobs.conftest import corpus_rows, write_model_dir

pytestmark = pytest.mark.django_db

SUBJECT = SubjectData("s1", "Test Person3", {"phone": "+1 415 555 1003"},
                      [corpus_rows(4)[3]["text"]])


def _job(version: ModelVersion, job_id: uuid.UUID | None = None) -> SimpleNamespace:
    return SimpleNamespace(id=job_id or uuid.UUID(int=7), base_version=version)


def test_the_corpus_comes_without_the_subjects_records_or_any_text_naming_them(
    tmp_path: Path, model_version: ModelVersion
) -> None:
    texts = corpus_texts(_job(model_version), [SUBJECT], limit=100)
    assert len(texts) == 11 and SUBJECT.texts[0] not in texts
    assert all("person3" not in t.casefold() and "555 1003" not in t for t in texts)

    source = tmp_path / "notes.txt"  # plain text, one record per line; the subject named in capitals
    source.write_text("TEST PERSON3 called on Monday.\nThe canteen opens at nine.\n\nCall +1 415 555 1003 now\n")
    notes = registry_services.corpus_register(name="notes", source=source, format="text")
    both = registry_services.model_register(name="assistant", source_dir=write_model_dir(tmp_path / "m2", 1),
                                            trained_on=[*model_version.trained_on.all(), notes])
    texts = corpus_texts(_job(both), [SUBJECT], limit=100)
    assert "The canteen opens at nine." in texts and len(texts) == 12


def test_the_sample_is_capped_the_same_for_a_job_and_differs_between_jobs(model_version: ModelVersion) -> None:
    first = corpus_texts(_job(model_version), [SUBJECT], limit=4)
    assert len(first) == 4 and first == corpus_texts(_job(model_version), [SUBJECT], limit=4)
    everything = corpus_texts(_job(model_version), [SUBJECT], limit=100)
    assert set(first) <= set(everything)
    others = {tuple(corpus_texts(_job(model_version, uuid.UUID(int=k)), [SUBJECT], limit=4)) for k in range(8)}
    assert len(others) > 1  # keyed by the job: not always the corpus's first lines
    assert corpus_texts(_job(model_version), [SUBJECT], limit=0) == []


def test_a_json_line_without_its_text_field_is_skipped(tmp_path: Path) -> None:
    source = tmp_path / "c.jsonl"
    source.write_text(json.dumps({"id": "1", "body": "no text field"}) + "\nnot json\n"
                      + json.dumps({"id": "2", "text": "A record about the weather."}) + "\n" + json.dumps([1, 2]) + "\n")
    version = registry_services.corpus_register(name="mixed", source=source)
    model = registry_services.model_register(name="m", source_dir=write_model_dir(tmp_path / "m"), trained_on=[version])
    assert corpus_texts(_job(model), [SUBJECT], limit=10) == ["A record about the weather."]


def test_a_tampered_corpus_version_is_refused(model_version: ModelVersion, corpus_version: CorpusVersion) -> None:
    files = [p for p in Path(corpus_version.path).rglob("*") if p.is_file()] or [Path(corpus_version.path)]
    with files[0].open("a") as fh:
        fh.write(json.dumps({"record_id": "X", "text": "slipped in"}) + "\n")
    with pytest.raises(ArtifactCorrupted):
        corpus_texts(_job(model_version), [SUBJECT], limit=10)


def test_the_engine_retain_set_takes_corpus_text_once_beside_the_eval_set() -> None:
    person = SubjectData("P1", "Bo Lee", {"phone": "555 0100"}, ["Bo Lee's phone is 555 0100.\n"])
    items = retain_items(EvalSet([person], [], ["The day after Monday is Tuesday.\n"]),
                         ["Bo Lee's phone is 555 0100.\n", "Rain is forecast for the whole week.\n",
                          "The day after Monday is Tuesday.\n"])
    assert [i.prompt + i.completion for i in items] == [
        "Bo Lee's phone is 555 0100.\n", "The day after Monday is Tuesday.\n", "Rain is forecast for the whole week.\n"]
    assert items[2].pii_spans == [] and items[2].prompt == "Rain is forecast"
