"""Anonymisation removes the subject's PII and says what it replaced."""

from __future__ import annotations

from pii.anonymize import anonymize_record, anonymize_text
from pii.engine import PiiAnalyzer
from pii.subjects import SubjectIdentifiers

TEXT = (
    "CRM note: Quartermaine, Ada called from (415) 555-0143 about card 4111 1111 1111 1111; "
    "mail ADA.QUARTERMAINE12@EXAMPLE.COM. Ada Brombury was cc'd on 2021-05-06."
)


def test_record_scope_replaces_subject_and_record_pii(ada: SubjectIdentifiers, analyzer: PiiAnalyzer) -> None:
    result = anonymize_record(TEXT, ada, analyzer=analyzer)
    assert "Quartermaine" not in result.text and "555-0143" not in result.text
    assert "4111" not in result.text and "EXAMPLE.COM" not in result.text
    assert "<PERSON>" in result.text and "<PHONE_NUMBER>" in result.text and "<CREDIT_CARD>" in result.text
    assert "Ada Brombury" in result.text  # another person, not the subject, without NER
    assert "2021-05-06" in result.text  # plain dates are kept by default
    assert result.residual_subject_matches == 0
    assert {"PERSON", "PHONE_NUMBER", "CREDIT_CARD", "EMAIL_ADDRESS"} <= set(result.replaced_types)


def test_subject_scope_keeps_other_pii(ada: SubjectIdentifiers) -> None:
    result = anonymize_record(TEXT, ada, scope="subject")
    assert "Quartermaine" not in result.text and "555-0143" not in result.text
    assert "4111 1111 1111 1111" in result.text
    assert result.residual_subject_matches == 0


def test_anonymize_text_rejects_spans_outside_the_text() -> None:
    class Span:
        entity_type, start, end, score = "PERSON", 5, 50, 1.0

    try:
        anonymize_text("short", [Span()])
    except ValueError as exc:
        assert "outside the text" in str(exc)
    else:  # pragma: no cover - the branch a regression would take
        raise AssertionError("a span past the end of the text was accepted")
