"""How the worker turns located records and corpus texts into engine items (compliance.jobs.inputs,
pii.records, unlearning_worker.data.text_retain_items)."""

from __future__ import annotations

from compliance.jobs.inputs import EvalSet, SubjectData, retain_items
from pii.records import split_record, split_spans
from unlearning_worker.data import text_retain_items


def test_a_record_is_split_before_its_first_value_and_spans_move_into_the_completion() -> None:
    text = "Question: What is Ada Roe's phone number?\nAnswer: +44 20 7946 0018\n"
    name_at, phone_at = text.index("Ada Roe"), text.index("+44")
    entities = [
        {"type": "PERSON", "start": name_at, "end": name_at + 7},
        {"type": "PHONE_NUMBER", "start": phone_at, "end": phone_at + 16},
    ]

    prompt, completion, spans = split_record(text, entities)

    assert prompt == "Question: What is Ada Roe's phone number?\nAnswer:"
    assert completion == " +44 20 7946 0018\n"
    assert spans == [(1, 17, "phone")] and completion[1:17] == "+44 20 7946 0018"


def test_a_record_with_only_a_name_keeps_the_name_in_the_prompt() -> None:
    text = "Ada Roe wrote to the forum."
    prompt, completion, spans = split_record(text, [{"type": "PERSON", "start": 0, "end": 7}])
    assert (prompt, completion, spans) == ("Ada Roe", " wrote to the forum.", [])


def test_out_of_range_entities_are_ignored() -> None:
    prompt, completion, spans = split_record("short", [{"type": "PHONE_NUMBER", "start": 3, "end": 99}])
    assert (prompt, completion, spans) == ("", "short", [])


def test_retain_items_mark_the_retain_people_values() -> None:
    person = SubjectData("P1", "Bo Lee", {"phone": "555 0100"}, ["Bo Lee's phone is 555 0100.\n", "no value here"])
    items = retain_items(EvalSet([person], [], ["The day after Monday is Tuesday.\n"]))

    first = items[0]
    assert first.prompt == "Bo Lee's phone is" and first.values() == {"phone": "555 0100"}
    assert len(items) == 2 and items[1].pii_spans == []  # the text without a value is left out; general text kept


def test_corpus_texts_with_marked_values_are_split_before_the_first_value() -> None:
    text = "Kim Oda lives at 4 Elm Row and her phone is 020 7946 0018, she said."
    spans = {text: [(text.index("4 Elm"), text.index("4 Elm") + 9, "address"),
                    (text.index("020"), text.index("020") + 13, "phone")]}
    items = text_retain_items([text, "A text with no values in it at all.", "short text"], lambda t: spans.get(t, []))

    marked, plain = items  # a text of fewer than 4 words is left out
    assert marked.prompt == "Kim Oda lives at" and marked.prompt + marked.completion == text
    assert marked.values() == {"address": "4 Elm Row", "phone": "020 7946 0018"}
    assert plain.pii_spans == [] and plain.prompt == "A text with no"  # no value: cut in half by words
    # without a marker every text is cut in half, as before
    assert [i.pii_spans for i in text_retain_items([text])] == [[]]


def test_a_marked_value_at_the_start_or_a_name_alone_falls_back_to_halves() -> None:
    text = "020 7946 0018 is the number to call for Kim Oda."
    at_start = text_retain_items([text], lambda _t: [(0, 13, "phone")])
    named = text_retain_items([text], lambda _t: [(40, 47, "name")])
    assert at_start[0].pii_spans == [] and at_start[0].prompt == "020 7946 0018 is the"  # no prompt before the value
    assert named[0].pii_spans == []  # a name is not a value the focus reads


def test_split_spans_orders_the_spans_it_is_given() -> None:
    text = "Ann: e-mail a@b.io, phone 555 0100."
    prompt, completion, spans = split_spans(text, [(26, 34, "phone"), (12, 18, "email")])
    assert prompt == "Ann: e-mail" and [completion[s:e] for s, e, _a in spans] == ["a@b.io", "555 0100"]
