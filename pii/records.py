"""A record's text as the unlearning engine trains on it: a prompt up to the record's first PII value
(not a name), and a completion holding the values, each a typed span in the engine's attribute names.

    split_record(text, entities)  -> (prompt, completion, spans) of a record and its entity list
    value_spans(analyzer, text)   -> the typed spans the analyzer finds in a text, in attribute names

The worker splits a located record this way for the forget term (compliance.jobs.inputs), and a sample
of the training corpora for the retain term (unlearning_worker.data.text_retain_items): the same split
and the same names, so the engine's retain focus (the retain items holding values of the attributes
being forgotten) reaches other people's values in the corpora as well as the eval set's.

Pure: no Django, no environment reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# Presidio entity types (and the scanner's subject kinds) -> the attribute names the engine and the
# verifier use for values ("phone", "ssn", ...). Unknown types keep their own lower-cased name.
ENTITY_ATTRIBUTE = {
    "PERSON": "name",
    "EMAIL_ADDRESS": "email",
    "PHONE_NUMBER": "phone",
    "US_SSN": "ssn",
    "DATE_OF_BIRTH": "date_of_birth",
    "ZIP_CODE": "zip_code",
    "STREET_ADDRESS": "address",
    "PASSPORT": "passport",
    "US_PASSPORT": "passport",
    "DRIVER_LICENSE": "driver_licence",
    "US_DRIVER_LICENSE": "driver_licence",
    "MEDICAL_RECORD_NUMBER": "medical_record",
    "CREDIT_CARD": "credit_card",
    "IBAN_CODE": "bank_account",
    "US_BANK_NUMBER": "bank_account",
    "GENDER": "gender",
    "SUBJECT_IDENTIFIER": "identifier",
    "LOCATION": "region",
}

Span = tuple[int, int, str]

# how much of each sampled retain text the worker's marks read (unlearning_worker.execution._corpus_inputs): a
# long document is not analysed whole (2,000 of them at the start of a job); values further on stay unmarked
MARK_CHARS = 8192


def attribute_of(entity_type: str) -> str:
    """The engine's attribute name of a Presidio entity type (an unknown type keeps its lower-cased name)."""
    return ENTITY_ATTRIBUTE.get(entity_type, entity_type.lower())


def attribute_spans(text: str, entities: Iterable[Mapping[str, Any]]) -> list[Span]:
    """The entities ({"type", "start", "end"}, as the scanner stores them) as (start, end, attribute)
    spans, sorted; an entity outside the text is dropped."""
    return sorted(
        (int(e["start"]), int(e["end"]), attribute_of(str(e["type"])))
        for e in entities
        if 0 <= int(e["start"]) < int(e["end"]) <= len(text)
    )


def split_spans(text: str, spans: Sequence[Span]) -> tuple[str, str, list[Span]]:
    """(prompt, completion, spans in completion): the prompt is the context up to the first value that
    is not a name (so "Jane Roe's phone is" -> " 555..."), the spans are the values after it; with no
    such value the cut falls after the first span (a name), and with no span at all the whole text is
    the completion."""
    spans = sorted(spans)
    values = [s for s in spans if s[2] != "name"]
    if values:
        cut = values[0][0]
    elif spans:
        cut = spans[0][1]
    else:
        cut = 0
    if cut > 0 and text[cut - 1] == " ":
        cut -= 1  # the space belongs to the value's first token, as in training
    return text[:cut], text[cut:], [(s - cut, e - cut, a) for s, e, a in spans if s >= cut]


def split_record(text: str, entities: Iterable[Mapping[str, Any]]) -> tuple[str, str, list[Span]]:
    """split_spans of a located record and its stored entity list."""
    return split_spans(text, attribute_spans(text, entities))


def value_spans(analyzer: Any, text: str, *, min_score: float = 0.3, max_chars: int | None = None) -> list[Span]:
    """The PII values (not names: without NER the analyzer finds none) the analyzer (a `PiiAnalyzer`)
    finds in `text` at `min_score` (the scanner's default) or more, as (start, end, attribute) spans that
    do not overlap (of two overlapping entities the higher-scoring, then the longer, is kept). With
    `max_chars`, only the text's first max_chars characters are read (a long document is not analysed
    whole; spaCy refuses a text over its max_length), so no span lies beyond them."""
    from pii.scan import detect_entities

    head = text if max_chars is None else text[:max_chars]
    found = sorted(detect_entities(analyzer, head, min_score=min_score), key=lambda e: (-e.score, e.start - e.end))
    kept: list[Span] = []
    for e in found:
        attribute = attribute_of(e.entity_type)
        if attribute == "name" or any(s < e.end and e.start < t for s, t, _a in kept):
            continue
        kept.append((e.start, e.end, attribute))
    return sorted(kept)
