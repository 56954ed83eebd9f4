"""The offline analyzer: what it detects, what it says it detects, and that it is built once."""

from __future__ import annotations

import pytest

from pii.engine import EngineConfig, PiiAnalyzer, build_analyzer

RECORD = (
    "Born on 1987-03-04, gender: female. Lives at 12 Linden Road, postcode NM12 3AB. Passport number "
    "K12345678, driving licence QUART123456A9, patient record MRN-1234567. Card 4111 1111 1111 1111, "
    "IBAN GB29 NWBK 6016 1331 9268 19, mail ada.q12@example.com, server 10.0.0.1."
)


def found(analyzer: PiiAnalyzer, text: str) -> dict[str, str]:
    return {r.entity_type: text[r.start : r.end] for r in analyzer.analyze(text, score_threshold=0.3)}


def test_synthetic_formats_are_detected(analyzer: PiiAnalyzer) -> None:
    entities = found(analyzer, RECORD)
    assert entities["DATE_OF_BIRTH"] == "1987-03-04"
    assert entities["GENDER"] == "female"
    assert entities["STREET_ADDRESS"] == "12 Linden Road"
    assert entities["ZIP_CODE"] == "NM12 3AB"
    assert entities["PASSPORT"] == "K12345678"
    assert entities["DRIVER_LICENSE"] == "QUART123456A9"
    assert entities["MEDICAL_RECORD_NUMBER"] == "MRN-1234567"
    assert entities["CREDIT_CARD"] == "4111 1111 1111 1111"
    assert entities["IBAN_CODE"] == "GB29 NWBK 6016 1331 9268 19"
    assert entities["EMAIL_ADDRESS"] == "ada.q12@example.com"
    assert entities["IP_ADDRESS"] == "10.0.0.1"


@pytest.mark.parametrize("text, phone", [
    ("Call Ada on 372-830-1942 after six.", "372-830-1942"),  # an area code no one holds
    ("Reached at (958) 421-0032.", "(958) 421-0032"),
    ("Mobile: +1 299.555.0142", "+1 299.555.0142"),
    ("Her line is 1-311-200-4821.", "1-311-200-4821"),
])
def test_grouped_phone_numbers_are_found_whatever_their_area_code(analyzer: PiiAnalyzer, text: str, phone: str) -> None:
    """Presidio's phone recognizer keeps only numbers the phonenumbers library holds valid: a
    fictitious corpus's 372-830-1942 would go unseen (it found 222 of the demo corpus's 400 phones)."""
    assert found(analyzer, text).get("PHONE_NUMBER") == phone


@pytest.mark.parametrize("text", ["SSN 477-87-8644.", "Shipped 2021-06-17.", "Build 3.372.830.1942 ships.",
                                  "Ref 372-830-19421.", "Code 172-830-1942."])
def test_other_digit_groups_are_not_phone_numbers(analyzer: PiiAnalyzer, text: str) -> None:
    assert "PHONE_NUMBER" not in found(analyzer, text)


def test_plain_dates_are_not_dates_of_birth(analyzer: PiiAnalyzer) -> None:
    entities = found(analyzer, "The release shipped on 2021-05-06 after review.")
    assert "DATE_OF_BIRTH" not in entities


def test_description_names_pipeline_and_recognizers(analyzer: PiiAnalyzer) -> None:
    description = analyzer.description
    assert description["nlp_pipeline"] == "spacy.blank('en')"
    assert description["ner"] is False
    names = {r["name"] for r in description["recognizers"]}
    assert {"OfflineEmailRecognizer", "PhoneRecognizer", "CreditCardRecognizer", "IbanRecognizer"} <= names
    origins = {r["name"]: r["origin"] for r in description["recognizers"]}
    assert origins["MedicalRecordNumberRecognizer"].startswith("pii.engine")
    assert "SpacyRecognizer" not in names  # no NER on a blank pipeline, so not claimed
    assert "LOCATION" in description["not_detected_without_ner"]


def test_builder_is_cached_per_config(analyzer: PiiAnalyzer) -> None:
    assert build_analyzer() is analyzer
    assert build_analyzer(EngineConfig()) is analyzer


def test_disabled_recognizer_is_left_out() -> None:
    reduced = build_analyzer(EngineConfig(disabled_recognizers=frozenset({"GenderRecognizer"})))
    assert "GENDER" not in found(reduced, "gender: female")
    assert all(r["name"] != "GenderRecognizer" for r in reduced.description["recognizers"])


def test_required_model_that_is_missing_raises_instead_of_downloading() -> None:
    with pytest.raises(ValueError, match="not installed"):
        build_analyzer(EngineConfig(spacy_model="xx_no_such_model_sm", require_model=True))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"language": "fr"}, "language"),
        ({"spacy_model": "  "}, "spacy_model"),
        ({"phone_regions": ()}, "phone_regions"),
        ({"require_model": True}, "require_model"),
    ],
)
def test_invalid_config_is_rejected(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        EngineConfig(**kwargs)
