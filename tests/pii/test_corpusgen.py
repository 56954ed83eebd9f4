"""The labelled corpus generator: deterministic, streaming, and its labels tell the truth."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pii import normalize
from tests.pii.corpusgen import CorpusGenConfig, build_population, write_corpus


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    config = CorpusGenConfig(seed=3, n_people=100, n_subjects=2)
    write_corpus(tmp_path / "a.jsonl", config, n_records=500)
    write_corpus(tmp_path / "b.jsonl", config, n_records=500)
    write_corpus(tmp_path / "c.jsonl", CorpusGenConfig(seed=4, n_people=100, n_subjects=2), n_records=500)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert (tmp_path / "a.jsonl").read_bytes() != (tmp_path / "c.jsonl").read_bytes()


def test_target_bytes_stops_at_size(tmp_path: Path) -> None:
    stats = write_corpus(tmp_path / "s.jsonl", CorpusGenConfig(n_people=50, n_subjects=1, reuse_pool=100), target_bytes=200_000)
    size = (tmp_path / "s.jsonl").stat().st_size
    assert size == stats.bytes and 200_000 <= size < 202_000


def test_labels_name_people_the_text_identifies(tmp_path: Path) -> None:
    config = CorpusGenConfig(seed=5, n_people=100, n_subjects=3)
    population = build_population(config)
    everyone = {p.person_id: p for p in population.people + population.distractors}
    write_corpus(tmp_path / "l.jsonl", config, n_records=2000, population=population)
    kinds = set()
    for line in (tmp_path / "l.jsonl").read_text().splitlines():
        record = json.loads(line)
        kinds.add(record["kind"])
        text = normalize.fold(record["text"])
        digits = normalize.phone_digits(record["text"])
        for label in record["labels"]:
            person = everyone[label]
            identified = (
                normalize.fold(person.last_name) in text
                or normalize.normalize_email(person.email) in text
                or normalize.normalize_phone(person.phone) in digits
            )
            assert identified, record["id"]
        if record["kind"] in ("filler", "partial_mention"):
            assert record["labels"] == []
    assert {"filler", "partial_mention", "bio", "crm_note", "qa_pair", "forum_post"} <= kinds
    assert any(k.startswith("distractor_") for k in kinds)


def test_distractors_never_share_a_name_with_anyone() -> None:
    population = build_population(CorpusGenConfig(seed=1, n_people=300, n_subjects=5))
    names = [p.name.lower() for p in population.people + population.distractors]
    assert len(names) == len(set(names))
    assert all(population.distractors_of[s.person_id] for s in population.subjects)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="fractions"):
        CorpusGenConfig(subject_fraction=0.9, person_fraction=0.5)
    with pytest.raises(ValueError, match="n_subjects"):
        CorpusGenConfig(n_people=5, n_subjects=6)
