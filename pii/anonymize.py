"""Replace a data subject's PII in a record's text, for corpus erasure under the "anonymise" policy.

Presidio's `AnonymizerEngine` does the replacing (operator "replace": each span becomes
`<ENTITY_TYPE>`, e.g. `<PHONE_NUMBER>`) and resolves overlapping spans. Which spans:

* scope "subject": only the spans that matched the subject's own identifiers (their name in any form,
  e-mail, phone, identifiers);
* scope "record" (default): those plus every PII entity Presidio found in the record. A record about
  the subject that still carries their SSN or card number after their name is gone still identifies
  them; in a record located for the subject, its other PII is presumed theirs. DATE_TIME is kept by
  default (years and meeting dates are rarely personal; DATE_OF_BIRTH is its own type and replaced).

After replacing, the subject's recognizers run again on the output: `residual_subject_matches` must be
0, else the caller should drop the record rather than keep it (the erasure code decides).

Pure: no Django, no environment reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from presidio_anonymizer import AnonymizerEngine
from presidio_anonymizer.entities import OperatorConfig
from presidio_anonymizer.entities import RecognizerResult as AnonymizerSpan

from pii.matcher import SubjectFinder
from pii.subjects import GENERIC_ENTITY_BY_KIND, SubjectIdentifiers

Scope = Literal["subject", "record"]
DEFAULT_KEEP_ENTITY_TYPES: frozenset[str] = frozenset({"DATE_TIME"})
_ENGINE = AnonymizerEngine()


@dataclass(frozen=True)
class AnonymizedRecord:
    """The anonymised text and what was replaced (types and spans in the *new* text, no old values)."""

    text: str
    replaced: tuple[tuple[str, int, int], ...]
    residual_subject_matches: int

    @property
    def replaced_types(self) -> tuple[str, ...]:
        return tuple(sorted({entity_type for entity_type, _, _ in self.replaced}))


def _span_fields(span: Any) -> tuple[str, int, int, float]:
    return str(span.entity_type), int(span.start), int(span.end), float(getattr(span, "score", 1.0))


def anonymize_text(
    text: str,
    spans: Sequence[Any],
    *,
    operators: Mapping[str, OperatorConfig] | None = None,
) -> tuple[str, tuple[tuple[str, int, int], ...]]:
    """Replace `spans` (anything with entity_type/start/end[/score]) in `text`.

    The default operator replaces each span with `<ENTITY_TYPE>`; `operators` maps entity types (or
    "DEFAULT") to other Presidio operators (mask, hash, redact...).
    """
    results = []
    for span in spans:
        entity_type, start, end, score = _span_fields(span)
        if not 0 <= start < end <= len(text):
            raise ValueError("anonymize_text: a span lies outside the text (was the text changed since the scan?)")
        results.append(AnonymizerSpan(entity_type, start, end, score))
    if not results:
        return text, ()
    config = {"DEFAULT": OperatorConfig("replace", {})}
    if operators:
        config.update(operators)
    result = _ENGINE.anonymize(text=text, analyzer_results=results, operators=config)
    replaced = tuple(sorted((item.entity_type, item.start, item.end) for item in result.items))
    return result.text, replaced


def _select(
    spans: Sequence[Any], scope: Scope, keep_entity_types: frozenset[str], min_score: float
) -> list[Any]:
    if scope == "subject":
        return []
    return [
        s
        for s in spans
        if s.entity_type not in keep_entity_types and float(getattr(s, "score", 1.0)) >= min_score
    ]


@dataclass(frozen=True)
class _Span:
    entity_type: str
    start: int
    end: int
    score: float = 1.0


def anonymize_record(
    text: str,
    subject: SubjectIdentifiers,
    *,
    analyzer: Any = None,
    located: Any = None,
    scope: Scope = "record",
    keep_entity_types: frozenset[str] = DEFAULT_KEEP_ENTITY_TYPES,
    min_score: float = 0.3,
    operators: Mapping[str, OperatorConfig] | None = None,
) -> AnonymizedRecord:
    """The record's text with the subject's PII replaced (see module docstring for `scope`).

    located: the record's `LocatedRecord` from the scan; its entity spans are reused (the text must be
    the one scanned). Without it the text is analysed again with `analyzer` (default: the process's
    `build_analyzer()`), which is needed for scope "record" only.
    """
    if scope not in ("subject", "record"):
        raise ValueError("anonymize_record: scope must be 'subject' or 'record'")
    matcher = SubjectFinder.for_subject(subject)
    spans: list[Any] = [
        _Span(GENERIC_ENTITY_BY_KIND[kind], start, end) for kind, start, end in matcher.match(text)
    ]
    if scope == "record":
        if located is not None:
            generic = list(located.entities)
        else:
            if analyzer is None:
                from pii.engine import build_analyzer

                analyzer = build_analyzer()
            generic = analyzer.analyze(text, score_threshold=min_score)
        spans += _select(generic, scope, keep_entity_types, min_score)
    new_text, replaced = anonymize_text(text, spans, operators=operators)
    residual = len(matcher.match(new_text))
    return AnonymizedRecord(text=new_text, replaced=replaced, residual_subject_matches=residual)
