"""PII Risk Index: the UnPII reference values, the combination rule, custom and invalid policies."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest

from pii.pri import DIMENSIONS, PriPolicy, score_record, score_request

REFERENCE = [
    (("gender",), 0.173),
    (("region",), 0.175),
    (("zip_code",), 0.179),
    (("date_of_birth",), 0.179),
    (("name",), 0.183),
    (("address",), 0.224),
    (("name", "region"), 0.349),
    (("name", "address"), 0.392),
    (("phone",), 0.404),
    (("driver_licence",), 0.456),
    (("region", "gender", "date_of_birth"), 0.488),
    (("gender", "zip_code", "date_of_birth"), 0.491),
    (("ssn",), 0.513),
    (("passport",), 0.513),
    (("name", "medical_record"), 0.544),
    (("name", "credit_card"), 0.567),
    (("name", "bank_account"), 0.665),
]


@pytest.fixture(scope="module")
def policy() -> PriPolicy:
    return PriPolicy.load()


@pytest.fixture()
def raw() -> dict:
    return json.loads(Path(__file__).resolve().parents[2].joinpath("pii/policies/default_pri.json").read_text())


@pytest.mark.parametrize(("attributes", "expected"), REFERENCE, ids=["+".join(a) for a, _ in REFERENCE])
def test_default_policy_reproduces_unpii_reference(policy: PriPolicy, attributes: tuple[str, ...], expected: float) -> None:
    assert abs(score_record(attributes, policy).value - expected) <= 0.01


def test_presidio_entity_types_map_to_attributes(policy: PriPolicy) -> None:
    by_entities = score_record(["PERSON", "IBAN_CODE", "DATE_TIME", "URL"], policy)
    by_attributes = score_record(["name", "bank_account"], policy)
    assert by_entities.value == by_attributes.value
    assert by_entities.explanation["unscored_entity_types"] == ["DATE_TIME", "URL"]
    assert by_entities.explanation["entity_to_attribute"]["IBAN_CODE"] == "bank_account"


def test_email_is_scored_next_to_phone(policy: PriPolicy) -> None:
    email, phone = score_record(["EMAIL_ADDRESS"], policy).value, score_record(["PHONE_NUMBER"], policy).value
    assert abs(email - phone) <= 0.03


def test_single_score_is_the_weighted_mean_of_dimensions(policy: PriPolicy) -> None:
    dims = policy.attributes["phone"]
    expected = sum(policy.weights[d] * dims[d] for d in DIMENSIONS) / sum(policy.weights.values())
    assert score_record(["phone"], policy).value == pytest.approx(expected, abs=1e-6)


def test_combination_is_boosted_noisy_or(policy: PriPolicy) -> None:
    s = [policy.single_scores[a] for a in ("gender", "zip_code", "date_of_birth")]
    union = 1 - math.prod(1 - x for x in s)
    expected = union * (1 + policy.linkage_boost * math.log(3))
    result = score_record(["gender", "zip_code", "date_of_birth"], policy)
    assert result.value == pytest.approx(expected, abs=1e-6)
    # Quasi-identifiers together are worth more than each alone and more than independent disclosure.
    assert result.value > union > max(s)
    assert result.explanation["combination"]["k"] == 3


def test_duplicates_do_not_inflate_the_score(policy: PriPolicy) -> None:
    assert score_record(["PHONE_NUMBER", "PHONE_NUMBER", "phone"], policy).value == score_record(["phone"], policy).value


def test_tiers_follow_policy_thresholds(policy: PriPolicy) -> None:
    assert score_record(["gender"], policy).tier == "low"
    assert score_record(["name", "region"], policy).tier == "medium"
    assert score_record(["ssn"], policy).tier == "high"
    assert score_record(["name", "bank_account"], policy).tier == "critical"
    assert score_record([], policy).tier == "low" and score_record([], policy).value == 0.0


def test_request_score_joins_records_and_explains(policy: PriPolicy) -> None:
    records = [["PERSON", "GENDER"], ["ZIP_CODE"], ["DATE_OF_BIRTH", "PERSON"]]
    request = score_request(records, policy)
    joined = score_record(["name", "gender", "zip_code", "date_of_birth"], policy)
    assert request.value == joined.value
    assert request.value > max(score_record(r, policy).value for r in records)
    explanation = request.explanation
    assert explanation["records"] == 3
    assert explanation["records_per_attribute"] == {"date_of_birth": 1, "gender": 1, "name": 2, "zip_code": 1}
    assert set(explanation["attributes"]) == {"name", "gender", "zip_code", "date_of_birth"}
    json.dumps(request.to_dict())  # JSON-able


def test_custom_policy_changes_the_result(tmp_path: Path, raw: dict, policy: PriPolicy) -> None:
    custom = copy.deepcopy(raw)
    custom["name"] = "health-first"
    custom["attributes"]["medical_record"]["sensitivity"] = 1.0
    custom["combination"]["linkage_boost"] = 0.3
    custom["explicit_combinations"] = [{"attributes": ["name", "ssn"], "score": 0.9, "reason": "identity theft kit"}]
    path = tmp_path / "health.json"
    path.write_text(json.dumps(custom))
    loaded = PriPolicy.load(path)
    assert score_record(["medical_record"], loaded).value > score_record(["medical_record"], policy).value
    assert score_record(["name", "region"], loaded).value > score_record(["name", "region"], policy).value
    explicit = score_record(["name", "ssn"], loaded)
    assert explicit.value == pytest.approx(0.9, abs=1e-6)  # exactly the fixed set: its fixed score
    assert explicit.explanation["combination"]["factors"][0]["source"] == "explicit"
    wider = score_record(["name", "ssn", "gender"], loaded)
    gender = loaded.single_scores["gender"]
    assert wider.value == pytest.approx(min(1.0, (1 - 0.1 * (1 - gender)) * (1 + 0.3 * math.log(2))), abs=1e-6)
    assert explicit.explanation["policy"] == "health-first"


def _mutate(raw: dict, path: str, value: object) -> dict:
    data = copy.deepcopy(raw)
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[key]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("weights.sensitivity", KeyError, "weights.sensitivity: missing"),
        ("weights.sensitivity", "high", "weights.sensitivity: must be a number"),
        ("attributes.phone.linkability", 1.5, r"attributes.phone.linkability: must be within \[0.0, 1.0\]"),
        ("attributes.phone.exposability", KeyError, "attributes.phone.exposability: missing"),
        ("entity_map.PHONE_NUMBER", "telephone", "entity_map.PHONE_NUMBER: names attribute 'telephone'"),
        ("combination.rule", "max", "combination.rule"),
        ("tiers.high", 0.1, "tiers: thresholds must increase"),
        ("format", "pri-policy/0", "format"),
    ],
)
def test_invalid_policy_is_rejected_naming_the_field(
    tmp_path: Path, raw: dict, path: str, value: object, message: str
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_mutate(raw, path, value)))
    with pytest.raises(ValueError, match=message):
        PriPolicy.load(bad)


def test_policy_that_is_not_json_is_rejected(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{ weights: ")
    with pytest.raises(ValueError, match="is not JSON"):
        PriPolicy.load(bad)
