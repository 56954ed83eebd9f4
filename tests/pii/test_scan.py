"""Corpus scanning: recall and precision on a labelled corpus, integrity counters, offsets, progress."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pii.engine import PiiAnalyzer
from pii.scan import CorpusSpec, read_record, scan_corpus
from pii.subjects import SubjectIdentifiers
from pii.synth import Person
from tests.pii.corpusgen import CorpusGenConfig, build_population, write_corpus


def identifiers_of(person: Person) -> SubjectIdentifiers:
    return SubjectIdentifiers(
        full_name=person.name, emails=(person.email,), phones=(person.phone,), other_identifiers=(person.ssn,)
    )


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Person], dict[str, set[str]]]:
    config = CorpusGenConfig(seed=7, n_people=300, n_subjects=3, subject_fraction=0.06)
    population = build_population(config)
    path = tmp_path_factory.mktemp("corpus") / "labelled.jsonl"
    write_corpus(path, config, n_records=3000, population=population)
    truth: dict[str, set[str]] = {p.person_id: set() for p in population.subjects}
    with path.open() as handle:
        for line in handle:
            record = json.loads(line)
            for label in record["labels"]:
                if label in truth:
                    truth[label].add(record["id"])
    return path, population.subjects, truth


def test_finds_every_subject_record_and_nothing_else(labelled, analyzer: PiiAnalyzer) -> None:
    path, subjects, truth = labelled
    result = scan_corpus(CorpusSpec(paths=(path,)), [identifiers_of(p) for p in subjects], analyzer=analyzer)
    for index, person in enumerate(subjects):
        found = {r.record_id for r in result.for_subject(index)}
        expected = truth[person.person_id]
        assert len(expected) > 30  # the corpus really exercises the subject
        assert expected <= found, f"missed {len(expected - found)} of {len(expected)}"
        assert len(found & expected) / len(found) >= 0.95
    assert result.report.records_read == 3000
    assert result.report.candidate_records >= result.report.confirmed_records > 0


def test_small_blocks_give_the_same_records_as_large_ones(labelled, analyzer: PiiAnalyzer) -> None:
    path, subjects, _ = labelled
    subject = identifiers_of(subjects[0])
    large = scan_corpus(CorpusSpec(paths=(path,)), subject, analyzer=analyzer)
    small = scan_corpus(CorpusSpec(paths=(path,), block_bytes=4096, max_line_bytes=4096), subject, analyzer=analyzer)
    key = [(r.record_id, r.line_number, r.byte_offset, r.byte_length) for r in large.for_subject(0)]
    assert key == [(r.record_id, r.line_number, r.byte_offset, r.byte_length) for r in small.for_subject(0)]
    assert small.report.records_read == large.report.records_read == 3000


def test_batched_subjects_equal_separate_scans_also_with_automaton(labelled, analyzer: PiiAnalyzer) -> None:
    path, subjects, _ = labelled
    spec = CorpusSpec(paths=(path,))
    # 3 subjects + 40 strangers: more key regexes than the direct limit, so the projected search runs.
    strangers = [identifiers_of(p) for p in build_population(CorpusGenConfig(seed=99, n_people=40, n_subjects=1)).people]
    from pii.prefilter import Prefilter
    from pii.subjects import build_subject_anchors

    everyone = [identifiers_of(p) for p in subjects] + strangers
    assert Prefilter([build_subject_anchors(s) for s in everyone]).projected  # the batch path is the one tested
    assert not Prefilter([build_subject_anchors(identifiers_of(subjects[0]))]).projected
    batch = scan_corpus(spec, everyone, analyzer=analyzer)
    for index, person in enumerate(subjects):
        alone = scan_corpus(spec, identifiers_of(person), analyzer=analyzer)
        assert [r.record_id for r in batch.for_subject(index)] == [r.record_id for r in alone.for_subject(0)]


def test_located_records_carry_offsets_kinds_and_entities(labelled, analyzer: PiiAnalyzer) -> None:
    path, subjects, _ = labelled
    spec = CorpusSpec(paths=(path,))
    result = scan_corpus(spec, identifiers_of(subjects[0]), analyzer=analyzer)
    lines = path.read_bytes().split(b"\n")
    for record in result.for_subject(0)[:25]:
        assert json.loads(lines[record.line_number - 1])["id"] == record.record_id
        text = read_record(record, spec)
        for kind, start, end in record.identifier_spans:
            assert kind in record.matched_kinds and 0 <= start < end <= len(text)
        if "name" in record.matched_kinds:
            assert "PERSON" in record.entity_types
        assert "text" not in record.to_dict()  # positions only, never the personal data


@pytest.fixture()
def messy(tmp_path: Path) -> Path:
    ada_line = json.dumps({"id": "ok-1", "text": "Ada Quartermaine called 415-555-0143."})
    rows = [
        ada_line.encode(),
        b'{"id": "bad", "text": "Ada Quartermaine never closed this',  # malformed JSON, a candidate
        b'{"id": "bad-2", nothing here',  # malformed, not a candidate
        json.dumps({"id": "cp1252", "text": "Ada Quartermaine, caf\u00e9"}, ensure_ascii=False).encode("cp1252"),
        b"",
        json.dumps({"id": "huge", "text": "Ada Quartermaine " + "x" * 600}).encode(),
        json.dumps({"id": "notext", "body": "Ada Quartermaine"}).encode(),
        json.dumps({"id": "last", "text": "mail ADA.QUARTERMAINE12@example.com"}).encode(),  # no final newline
    ]
    path = tmp_path / "messy.jsonl"
    path.write_bytes(b"\n".join(rows))
    return path


def test_anomalies_are_counted_never_fatal(messy: Path, ada: SubjectIdentifiers, analyzer: PiiAnalyzer) -> None:
    result = scan_corpus(CorpusSpec(paths=(messy,), max_line_bytes=256), ada, analyzer=analyzer)
    report = result.report
    assert report.oversize_lines == 1
    assert report.malformed_json_lines == 2
    assert report.non_utf8_lines == 1
    assert report.missing_text_field == 1
    assert report.blank_lines == 1
    assert report.records_read == 6  # 8 lines - 1 blank - 1 oversize
    located = result.for_subject(0)
    assert [r.record_id for r in located] == ["ok-1", "messy.jsonl:2", "cp1252", "last"]
    assert [r.line_number for r in located] == [1, 2, 4, 8]
    assert [r.parse_error for r in located] == [False, True, False, False]


def test_tiny_blocks_handle_oversize_lines_across_chunks(messy: Path, ada: SubjectIdentifiers, analyzer: PiiAnalyzer) -> None:
    result = scan_corpus(CorpusSpec(paths=(messy,), max_line_bytes=256, block_bytes=4096), ada, analyzer=analyzer)
    assert result.report.oversize_lines == 1
    big = messy.read_bytes().replace(b"x" * 600, b"x" * 20000)
    messy.write_bytes(big)
    result = scan_corpus(CorpusSpec(paths=(messy,), max_line_bytes=256, block_bytes=4096), ada, analyzer=analyzer)
    assert result.report.oversize_lines == 1
    assert [r.line_number for r in result.for_subject(0)] == [1, 2, 4, 8]


def test_full_validation_counts_malformed_lines_that_look_like_objects(
    tmp_path: Path, ada: SubjectIdentifiers, analyzer: PiiAnalyzer
) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"id": 1, "text": "hello"}\n{not json}\n[1, 2]\n')
    structural = scan_corpus(CorpusSpec(paths=(path,)), ada, analyzer=analyzer).report
    full = scan_corpus(CorpusSpec(paths=(path,), validate_json="all"), ada, analyzer=analyzer).report
    assert structural.malformed_json_lines == 1  # "[1, 2]" fails the structural check
    assert full.malformed_json_lines == 2


def test_progress_reports_bytes_until_done(labelled, analyzer: PiiAnalyzer) -> None:
    path, subjects, _ = labelled
    calls: list[tuple[int, int]] = []
    scan_corpus(
        CorpusSpec(paths=(path,), block_bytes=64 * 1024),
        identifiers_of(subjects[0]),
        analyzer=analyzer,
        progress=lambda done, total: calls.append((done, total)),
    )
    size = path.stat().st_size
    assert len(calls) >= size // (64 * 1024)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert calls[-1] == (size, size)


def test_text_corpus_records_are_lines(tmp_path: Path, ada: SubjectIdentifiers, analyzer: PiiAnalyzer) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("nothing here\nQuartermaine, Ada phoned\nAda phoned\r\ncall (415) 555 0143\r\n")
    spec = CorpusSpec(paths=(path,), format="text")
    result = scan_corpus(spec, ada, analyzer=analyzer)
    assert [r.record_id for r in result.for_subject(0)] == ["notes.txt:2", "notes.txt:4"]
    assert read_record(result.for_subject(0)[1], spec) == "call (415) 555 0143"
    assert result.report.records_read == 4


def test_spec_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="format"):
        CorpusSpec(paths=(tmp_path / "x",), format="csv")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sequence of paths"):
        CorpusSpec(paths=tmp_path / "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_line_bytes"):
        CorpusSpec(paths=(tmp_path / "x",), max_line_bytes=1)


def test_missing_file_fails_before_scanning(tmp_path: Path, ada: SubjectIdentifiers, analyzer: PiiAnalyzer) -> None:
    with pytest.raises(FileNotFoundError):
        scan_corpus(CorpusSpec(paths=(tmp_path / "absent.jsonl",)), ada, analyzer=analyzer)
