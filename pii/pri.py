"""PII Risk Index (PRI): how risky the exposure of a set of personal attributes is, with its reasons.

Formula (all parameters live in the policy file, `pii/policies/default_pri.json` by default):

1. Each detected entity type (Presidio's names: PERSON, PHONE_NUMBER, US_SSN...) maps to a PRI
   attribute through `entity_map` (name, phone, ssn...); types mapped to null (DATE_TIME, URL) are
   listed in the explanation as unscored.
2. Single attribute score: the weighted mean of its seven dimension values (each in [0, 1]),
       s(a) = sum_d w_d * v(a, d) / sum_d w_d,
   d in {identifiability, sensitivity, usability, linkability, permanency, exposability, compliancy}.
3. Combination of the distinct attributes A = {a_1..a_k} exposed together (a record; or all records
   of a request, since they concern the same person and can be joined):
       union(A) = 1 - prod_i (1 - s(a_i))          (noisy-OR: the chance that at least one attribute
                                                     discloses, if they acted independently)
       PRI(A)   = min(1, union(A) * (1 + beta * ln k))
   The linkage boost (beta, `combination.linkage_boost`) models quasi-identifiers: gender, zip code
   and date of birth are individually weak but jointly single out most people (Sweeney 2000), so
   combined exposure is worth more than independent disclosure. ln k grows with each added
   attribute but with diminishing increments; k = 1 gives s(a) exactly.
4. `explicit_combinations` (optional) let an organisation fix the score of a specific attribute set;
   when a record contains that set, the set counts as one factor with the fixed score (its internal
   linkage is priced in), so k counts factors: exactly that set scores the fixed value.
5. Tier: the highest of `tiers` (medium, high, critical) whose threshold the score reaches, else low.

Calibration of the default policy: beta = 0.1 fits the four UnPII quasi-identifier combinations
(name+region 0.349, name+detailed address 0.392, region+gender+dob 0.488, gender+zip+dob 0.491)
within 0.001; the singles of medical record (0.399), credit card (0.425) and bank account (0.537)
follow from name+medical 0.544, name+card 0.567 and name+bank 0.665 through the same rule; e-mail is
set at 0.412, just above phone (0.404): equally direct a contact handle, more linkable as a login
across services. The dimension values are a qualitative profile per attribute shifted uniformly to its
score (see the policy's description); `tests/pii/test_pri.py` checks all seventeen reference values.

Pure: no Django, no environment reads.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

DIMENSIONS: tuple[str, ...] = (
    "identifiability",
    "sensitivity",
    "usability",
    "linkability",
    "permanency",
    "exposability",
    "compliancy",
)
TIERS: tuple[str, ...] = ("medium", "high", "critical")  # "low" is everything under "medium"
POLICY_FORMAT = "pri-policy/1"
COMBINATION_RULES = ("linkage_noisy_or",)


def _fail(field_path: str, problem: str) -> ValueError:
    return ValueError(f"invalid PRI policy: {field_path}: {problem}")


def _number(value: Any, field_path: str, *, low: float = 0.0, high: float = 1.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(field_path, f"must be a number, got {type(value).__name__}")
    if not low <= value <= high:
        raise _fail(field_path, f"must be within [{low}, {high}], got {value}")
    return float(value)


def _mapping(value: Any, field_path: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _fail(field_path, f"must be an object, got {type(value).__name__}")
    return value


@dataclass(frozen=True)
class ExplicitCombination:
    attributes: frozenset[str]
    score: float
    reason: str


@dataclass(frozen=True)
class PriPolicy:
    """A validated PRI policy. Build with `PriPolicy.load(path)` or `PriPolicy.from_dict(data)`."""

    name: str
    weights: Mapping[str, float]
    attributes: Mapping[str, Mapping[str, float]]
    entity_map: Mapping[str, str | None]
    linkage_boost: float
    tiers: Mapping[str, float]
    explicit_combinations: tuple[ExplicitCombination, ...] = ()
    source: str = "<dict>"
    single_scores: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path | None = None) -> PriPolicy:
        """The policy in `path`, or the shipped default when None."""
        if path is None:
            text = resources.files("pii").joinpath("policies/default_pri.json").read_text(encoding="utf-8")
            source = "pii/policies/default_pri.json"
        else:
            text = Path(path).read_text(encoding="utf-8")
            source = str(path)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"invalid PRI policy: {source} is not JSON ({exc.msg} at line {exc.lineno})") from exc
        return cls.from_dict(data, source=source)

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<dict>") -> PriPolicy:
        root = _mapping(data, "<root>")
        if root.get("format") != POLICY_FORMAT:
            raise _fail("format", f"must be {POLICY_FORMAT!r}, got {root.get('format')!r}")
        name = root.get("name")
        if not isinstance(name, str) or not name:
            raise _fail("name", "must be a non-empty string")

        raw_weights = _mapping(root.get("weights"), "weights")
        unknown = set(raw_weights) - set(DIMENSIONS)
        if unknown:
            raise _fail(f"weights.{sorted(unknown)[0]}", f"unknown dimension; expected {', '.join(DIMENSIONS)}")
        weights = {}
        for dim in DIMENSIONS:
            if dim not in raw_weights:
                raise _fail(f"weights.{dim}", "missing")
            weights[dim] = _number(raw_weights[dim], f"weights.{dim}", high=math.inf)
        if sum(weights.values()) <= 0:
            raise _fail("weights", "must not all be zero")

        raw_attributes = _mapping(root.get("attributes"), "attributes")
        if not raw_attributes:
            raise _fail("attributes", "must define at least one attribute")
        attributes: dict[str, dict[str, float]] = {}
        for attr, raw in raw_attributes.items():
            values = _mapping(raw, f"attributes.{attr}")
            attributes[attr] = {}
            for dim in DIMENSIONS:
                if dim not in values:
                    raise _fail(f"attributes.{attr}.{dim}", "missing")
                attributes[attr][dim] = _number(values[dim], f"attributes.{attr}.{dim}")
            extra = set(values) - set(DIMENSIONS) - {"description"}
            if extra:
                raise _fail(f"attributes.{attr}.{sorted(extra)[0]}", "unknown field")

        raw_map = _mapping(root.get("entity_map"), "entity_map")
        entity_map: dict[str, str | None] = {}
        for entity, attr in raw_map.items():
            if attr is not None and attr not in attributes:
                raise _fail(f"entity_map.{entity}", f"names attribute {attr!r}, which is not in attributes")
            entity_map[entity] = attr

        combination = _mapping(root.get("combination"), "combination")
        if combination.get("rule") not in COMBINATION_RULES:
            raise _fail("combination.rule", f"must be one of {COMBINATION_RULES}, got {combination.get('rule')!r}")
        linkage_boost = _number(combination.get("linkage_boost"), "combination.linkage_boost", high=2.0)

        explicit: list[ExplicitCombination] = []
        raw_explicit = root.get("explicit_combinations", [])
        if not isinstance(raw_explicit, list):
            raise _fail("explicit_combinations", "must be a list")
        for i, entry in enumerate(raw_explicit):
            entry = _mapping(entry, f"explicit_combinations[{i}]")
            members = entry.get("attributes")
            if not isinstance(members, list) or len(set(members)) < 2:
                raise _fail(f"explicit_combinations[{i}].attributes", "must list at least two attributes")
            for member in members:
                if member not in attributes:
                    raise _fail(f"explicit_combinations[{i}].attributes", f"unknown attribute {member!r}")
            explicit.append(
                ExplicitCombination(
                    attributes=frozenset(members),
                    score=_number(entry.get("score"), f"explicit_combinations[{i}].score"),
                    reason=str(entry.get("reason", "")),
                )
            )

        raw_tiers = _mapping(root.get("tiers"), "tiers")
        tiers = {}
        for tier in TIERS:
            if tier not in raw_tiers:
                raise _fail(f"tiers.{tier}", "missing")
            tiers[tier] = _number(raw_tiers[tier], f"tiers.{tier}")
        if not tiers["medium"] < tiers["high"] < tiers["critical"]:
            raise _fail("tiers", "thresholds must increase: medium < high < critical")

        total = sum(weights.values())
        singles = {
            attr: sum(weights[d] * values[d] for d in DIMENSIONS) / total for attr, values in attributes.items()
        }
        return cls(
            name=name,
            weights=weights,
            attributes=attributes,
            entity_map=entity_map,
            linkage_boost=linkage_boost,
            tiers=tiers,
            explicit_combinations=tuple(sorted(explicit, key=lambda e: -len(e.attributes))),
            source=source,
            single_scores=singles,
        )

    def attribute_of(self, entity_type: str) -> str | None:
        """The PRI attribute of a Presidio entity type; attribute names are accepted as themselves."""
        if entity_type in self.attributes:
            return entity_type
        return self.entity_map.get(entity_type)

    def tier_of(self, value: float) -> str:
        tier = "low"
        for name in TIERS:
            if value >= self.tiers[name]:
                tier = name
        return tier

    def combine(self, attributes: Iterable[str]) -> tuple[float, dict[str, Any]]:
        """PRI of a set of attributes, with the steps that produced it."""
        remaining = set(attributes)
        if not remaining:
            return 0.0, {"rule": "none", "attributes": []}
        factors: list[dict[str, Any]] = []
        for combo in self.explicit_combinations:
            if combo.attributes <= remaining:
                remaining -= combo.attributes
                factors.append(
                    {"attributes": sorted(combo.attributes), "score": combo.score, "source": "explicit", "reason": combo.reason}
                )
        for attr in sorted(remaining):
            factors.append({"attributes": [attr], "score": round(self.single_scores[attr], 6), "source": "dimensions"})
        k = len(factors)
        union = 1.0 - math.prod(1.0 - f["score"] for f in factors)
        boost = 1.0 + self.linkage_boost * math.log(k)
        value = min(1.0, union * boost)
        return value, {
            "rule": "linkage_noisy_or",
            "formula": "min(1, (1 - prod(1 - s_i)) * (1 + beta * ln k))",
            "factors": factors,
            "k": k,
            "union": round(union, 6),
            "beta": self.linkage_boost,
            "linkage_factor": round(boost, 6),
        }


@dataclass(frozen=True)
class PriScore:
    """A PRI value in [0, 1], its tier and a JSON-able explanation of how it was reached."""

    value: float
    tier: str
    explanation: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "tier": self.tier, "explanation": self.explanation}


def _entity_types_of(record: Any) -> list[str]:
    if isinstance(record, str):
        raise ValueError("a record must be a collection of entity types, not a single string")
    types = getattr(record, "entity_types", record)
    return [str(t) for t in types]


def _attribute_explanation(policy: PriPolicy, attributes: Iterable[str]) -> dict[str, Any]:
    return {
        attr: {
            "score": round(policy.single_scores[attr], 6),
            "dimensions": dict(policy.attributes[attr]),
        }
        for attr in sorted(set(attributes))
    }


def score_record(entity_types: Iterable[str], policy: PriPolicy) -> PriScore:
    """PRI of one record from the entity types found in it (Presidio names or attribute names)."""
    types = sorted(set(_entity_types_of(entity_types)))
    mapping = {t: policy.attribute_of(t) for t in types}
    attributes = sorted({a for a in mapping.values() if a is not None})
    value, combination = policy.combine(attributes)
    rounded = round(value, 6)
    return PriScore(
        value=rounded,
        tier=policy.tier_of(rounded),
        explanation={
            "policy": policy.name,
            "policy_source": policy.source,
            "entity_types": types,
            "entity_to_attribute": mapping,
            "unscored_entity_types": sorted(t for t, a in mapping.items() if a is None),
            "attributes": _attribute_explanation(policy, attributes),
            "weights": dict(policy.weights),
            "combination": combination,
            "tiers": dict(policy.tiers),
        },
    )


def score_request(records: Iterable[Any], policy: PriPolicy) -> PriScore:
    """PRI of a whole request: the attributes exposed across all its records, joined.

    The records all concern one person, so an attacker holding the corpus can join them: the
    request's exposure is the union of their attributes, scored with the same combination rule.
    That union is never below the worst single record (the rule is monotone in the attribute set).
    `records` holds entity-type collections or objects with `.entity_types` (a `LocatedRecord`).
    """
    per_record: list[PriScore] = []
    attribute_records: Counter[str] = Counter()
    for record in records:
        score = score_record(_entity_types_of(record), policy)
        per_record.append(score)
        attribute_records.update(score.explanation["attributes"].keys())
    attributes = sorted(attribute_records)
    value, combination = policy.combine(attributes)
    rounded = round(value, 6)
    worst = max(per_record, key=lambda s: s.value, default=None)
    return PriScore(
        value=rounded,
        tier=policy.tier_of(rounded),
        explanation={
            "policy": policy.name,
            "policy_source": policy.source,
            "records": len(per_record),
            "records_per_attribute": dict(sorted(attribute_records.items())),
            "attributes": _attribute_explanation(policy, attributes),
            "weights": dict(policy.weights),
            "combination": combination,
            "max_record_score": worst.value if worst else 0.0,
            "max_record_attributes": sorted(worst.explanation["attributes"]) if worst else [],
            "tier_counts": dict(Counter(s.tier for s in per_record)),
            "tiers": dict(policy.tiers),
        },
    )
