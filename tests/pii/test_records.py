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
