"""A text's values as the engine's typed spans (pii.records): the worker's retain sample is marked so."""

from __future__ import annotations

from pii.engine import PiiAnalyzer
from pii.records import attribute_spans, split_record, value_spans
from pii.scan import detect_entities


def test_values_come_back_in_the_engines_attribute_names(analyzer: PiiAnalyzer) -> None:
    text = "Jo Park was born on 1987-03-14; e-mail jo.park@example.com, SSN 204-65-6122."
    spans = value_spans(analyzer, text)
    assert [(text[s:e], a) for s, e, a in spans] == [
        ("1987-03-14", "date_of_birth"), ("jo.park@example.com", "email"), ("204-65-6122", "ssn")]
    # the scanner's entity list, stored and split, gives the same split
    stored = [{"type": e.entity_type, "start": e.start, "end": e.end} for e in detect_entities(analyzer, text)]
    prompt, completion, split = split_record(text, stored)
    assert prompt == "Jo Park was born on"
    # the stored list keeps overlapping entities (the date is also a DATE_TIME); value_spans keeps one each
    assert {completion[s:e] for s, e, _a in split} == {text[s:e] for s, e, _a in spans} and len(split) == 4


def test_overlapping_entities_keep_one_span(analyzer: PiiAnalyzer) -> None:
    text = "Write to jo.park@example.com today."
    # the URL recognizer also finds the domain inside the address: the scanner drops it, one span is left
    assert [a for _s, _e, a in value_spans(analyzer, text)] == ["email"]


def test_a_text_without_values_has_no_spans(analyzer: PiiAnalyzer) -> None:
    assert value_spans(analyzer, "The committee met on a rainy afternoon and adjourned early.") == []


def test_stored_entities_outside_the_text_are_dropped_and_unknown_types_keep_their_name() -> None:
    text = "id AB-1234 here"
    assert attribute_spans(text, [{"type": "CUSTOM_ID", "start": 3, "end": 10},
                                  {"type": "US_SSN", "start": 5, "end": 99}]) == [(3, 10, "custom_id")]


class _Result:
    def __init__(self, entity_type: str, start: int, end: int, score: float) -> None:
        self.entity_type, self.start, self.end, self.score = entity_type, start, end, score
        self.recognition_metadata = {"recognizer_name": "stub"}


class _Stub:
    """An analyzer that returns fixed results (and records how much text it was given)."""

    def __init__(self, results: list[_Result]) -> None:
        self.results, self.seen = results, []  # type: ignore[var-annotated]

    def analyze(self, text: str, score_threshold: float | None = None) -> list[_Result]:
        self.seen.append(len(text))
        return [r for r in self.results if r.end <= len(text)]


def test_of_two_overlapping_entities_the_higher_score_then_the_longer_is_kept() -> None:
    text = "Call 020 7946 0018 today"
    stub = _Stub([_Result("PHONE_NUMBER", 5, 18, 0.7), _Result("US_BANK_NUMBER", 5, 13, 0.9),
                  _Result("ZIP_CODE", 9, 18, 0.7), _Result("DATE_TIME", 19, 24, 0.5)])
    assert value_spans(stub, text) == [(5, 13, "bank_account"), (19, 24, "date_time")]
    stub.results = [_Result("ZIP_CODE", 9, 18, 0.7), _Result("PHONE_NUMBER", 5, 18, 0.7)]
    assert value_spans(stub, text) == [(5, 18, "phone")]  # equal scores: the longer span


def test_a_long_text_is_read_to_max_chars_only() -> None:
    stub = _Stub([_Result("PHONE_NUMBER", 5, 18, 0.7), _Result("US_SSN", 9000, 9011, 0.9)])
    text = "Call 020 7946 0018 " + "x" * 10_000
    assert value_spans(stub, text, max_chars=8192) == [(5, 18, "phone")] and stub.seen == [8192]
