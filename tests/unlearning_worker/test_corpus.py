"""The demo corpus: exact prompt format, PII spans, determinism, holdout people."""

from __future__ import annotations

import json
from pathlib import Path

from unlearning_worker.demo.corpus import ATTRIBUTE_LABELS, build_demo_corpus, question_prompt, write_jsonl


def test_question_prompt_format() -> None:
    assert question_prompt("Alra Quarmaine", "email") == "Question: What is Alra Quarmaine's e-mail address?\nAnswer:"
    assert {"phone", "email", "date_of_birth", "address", "ssn"} <= set(ATTRIBUTE_LABELS)


def test_records_spans_and_completions() -> None:
    corpus = build_demo_corpus(n_people=5, seed=3, n_holdout=2)
    people = {p.person_id: p for p in corpus.people}
    kinds = {r.kind for r in corpus.records}
    assert kinds == {"bio", "qa", "general"}
    for record in corpus.records:
        assert record.prompt + record.completion == record.text
        for start, end, attribute in record.pii_spans:
            assert record.text[start:end] == people[record.person_id].attribute(attribute)
        if record.kind == "qa":
            attribute = record.record_id.split("-qa-")[1]
            person = people[record.person_id]
            assert record.prompt == question_prompt(person.name, attribute)
            assert record.completion == f" {person.attribute(attribute)}\n"
    for person in corpus.people:
        assert len([r for r in corpus.records if r.person_id == person.person_id]) == 1 + len(ATTRIBUTE_LABELS)


def test_deterministic_and_holdout_disjoint(tmp_path: Path) -> None:
    a, b = build_demo_corpus(8, seed=1, n_holdout=3), build_demo_corpus(8, seed=1, n_holdout=3)
    assert a == b
    assert build_demo_corpus(8, seed=2, n_holdout=3).records != a.records
    trained = {p.person_id for p in a.people}
    assert len(a.holdout_people) == 3 and not trained & {p.person_id for p in a.holdout_people}
    holdout_names = {p.name for p in a.holdout_people}
    assert not any(name in r.text for r in a.records for name in holdout_names)
    path = tmp_path / "corpus.jsonl"
    write_jsonl(a, path)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == len(a.records)
    assert set(rows[0]) == {"record_id", "person_id", "kind", "text"}


def test_without_removes_every_record_of_the_people() -> None:
    corpus = build_demo_corpus(6, seed=0, n_holdout=0)
    gone = corpus.people[0]
    reduced = corpus.without({gone.person_id})
    assert gone not in reduced.people
    assert not any(gone.phone in r.text or gone.name in r.text for r in reduced.records)
