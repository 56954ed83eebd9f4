"""How the worker turns located records into engine items (compliance.jobs.inputs)."""

from __future__ import annotations

from compliance.jobs.inputs import EvalSet, SubjectData, retain_items, split_record


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
