"""The verification policy: which attacks, how hard, and what counts as passing. Data, not code.

An organisation replaces `policies/default.json` with its own file. A file is validated completely
on load (unknown keys, wrong types, out-of-range numbers, thresholds on metrics no attack reports)
and rejected with a ValueError that names the offending key, so a typo never silently weakens the
verification. Attacks a file leaves out run with their registry defaults; parameters a file
leaves out take their defaults.

Pure: no Django, no environment reads.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import unlearning_worker.verify.attacks  # noqa: F401  (fills the registry the validator reads)
from unlearning_worker.verify.attacks.common import MIN_CONTROL_PEOPLE
from unlearning_worker.verify.registry import ATTACKS, AttackSpec

SCHEMA = "erasure-verification-policy/1"
DEFAULT_POLICY_PATH = Path(__file__).with_name("policies") / "default.json"
_TOP_KEYS = {
    "schema", "name", "leak_share", "chance_quantile", "verdict_level", "retries", "attributes",
    "attribute_labels", "seed", "attacks", "control_people",
}
DEFAULT_CONTROL_PEOPLE = 10  # a policy without control_people (the count before it was the policy's)
MAX_CONTROL_PEOPLE = 1_000
_ATTACK_KEYS = {"enabled", "mandatory", "params", "thresholds", "level_share"}


@dataclass(frozen=True)
class Threshold:
    metric: str
    max: float | None = None
    min: float | None = None

    def passes(self, value: float) -> bool:
        if self.max is not None and value > self.max:
            return False
        return not (self.min is not None and value < self.min)

    def describe(self) -> str:
        if self.max is not None and self.min is not None:
            return f"{self.min} <= {self.metric} <= {self.max}"
        return f"{self.metric} <= {self.max}" if self.max is not None else f"{self.metric} >= {self.min}"

    def to_dict(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.min is not None:
            out["min"] = self.min
        if self.max is not None:
            out["max"] = self.max
        return out


@dataclass(frozen=True)
class AttackPolicy:
    enabled: bool
    mandatory: bool  # a mandatory attack that cannot run or cannot be evaluated fails the verdict
    params: Mapping[str, Any]
    thresholds: tuple[Threshold, ...]
    # this attack's weight in the split of the policy's verdict_level (ignored without one)
    level_share: float = 1.0


@dataclass(frozen=True)
class VerificationPolicy:
    name: str
    # Share of a value's secret part that must come out in one text for a leak (0.5: half the
    # secret digits of a phone number in one run is enough to narrow it down to a few candidates).
    leak_share: float
    # Without verdict_level: each attack's own level. A person the model never saw fails an attack
    # (any of its rules, cells, settings and retries) at most 1 - chance_quantile of the time. With
    # verdict_level it is unused by the attacks judged against chance (still hashed with the policy).
    chance_quantile: float
    # How many times an attack that found nothing is rerun with stronger settings.
    retries: int
    attributes: tuple[str, ...] | None  # None: every attribute the subjects carry
    attribute_labels: Mapping[str, str]  # attribute -> words used in questions ("phone number")
    seed: int
    attacks: Mapping[str, AttackPolicy]
    # The share of people the model never saw that the whole verdict may fail: split over the enabled
    # attacks judged against chance (by level_share) and over each one's retries (attack_quantile).
    # None (older policies): each attack at chance_quantile, so the verdict's own false-failure rate
    # grows with the number of attacks (measured on the demo model, 2026-12-03: 20% over eleven).
    verdict_level: float | None = None
    # People the model never saw that every attack compares the subjects with: the first this many of
    # the eval set's held-out people, else this many generated fictitious people (runner.choose_controls;
    # never mixed). The bands the rules read from them narrow with more: the spread's upper confidence
    # bound, and Student's t with n - 1 degrees of freedom where a rule uses it (the rank rules), both
    # shrink with n (measured on one unlearned model: the relearning band 2.71 -> 2.20, the verbatim
    # band 0.188 -> 0.154 from 10 to 20). Absent (older policies): 10, the count before it was the policy's
    control_people: int = DEFAULT_CONTROL_PEOPLE
    sha256: str = field(default="", compare=False)  # of the canonical JSON, for reports and certificates

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("policy: name must be non-empty")
        if not 0.0 < self.leak_share <= 1.0:
            raise ValueError("policy: leak_share must be in (0, 1]")
        if not 0.5 <= self.chance_quantile < 1.0:
            raise ValueError("policy: chance_quantile must be in [0.5, 1)")
        if self.verdict_level is not None and not 1e-6 <= self.verdict_level <= 0.5:
            raise ValueError("policy: verdict_level must be in [1e-6, 0.5]")
        if self.verdict_level is not None:
            judged = self.judged()
            total = sum(self.attacks[n].level_share for n in judged)
            for name in judged:  # 1 - a level this small is 1.0 in floating point: no quantile left to read
                if self.verdict_level * self.attacks[name].level_share / total / self.looks(name) < 1e-9:
                    raise ValueError(f"policy.attacks.{name}.level_share: its share of verdict_level is below 1e-9")
        if not MIN_CONTROL_PEOPLE <= self.control_people <= MAX_CONTROL_PEOPLE:
            raise ValueError(f"policy: control_people must be between {MIN_CONTROL_PEOPLE} and {MAX_CONTROL_PEOPLE}"
                             " (the rules read how never-seen people vary from at least that many)")
        if not 0 <= self.retries <= 5:
            raise ValueError("policy: retries must be between 0 and 5")
        unknown = set(self.attacks) - set(ATTACKS)
        if unknown:
            raise ValueError(f"policy: unknown attacks {sorted(unknown)}; known: {sorted(ATTACKS)}")

    @classmethod
    def load(cls, path: Path | str | None = None) -> VerificationPolicy:
        """Load and validate a policy file (None: the shipped default)."""
        source = DEFAULT_POLICY_PATH if path is None else Path(path)
        try:
            raw = json.loads(source.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"policy {source.name}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
        except OSError as exc:
            raise ValueError(f"policy {source.name}: cannot be read ({exc.strerror})") from exc
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: Any) -> VerificationPolicy:
        if not isinstance(raw, dict):
            raise ValueError("policy: the top level must be a JSON object")
        _no_unknown(raw, _TOP_KEYS, "policy")
        if raw.get("schema") != SCHEMA:
            raise ValueError(f"policy: schema must be {SCHEMA!r}")
        attributes = raw.get("attributes")
        if attributes is not None and (
            not isinstance(attributes, list) or not attributes or not all(isinstance(a, str) and a for a in attributes)
        ):
            raise ValueError("policy.attributes: must be null or a non-empty list of attribute names")
        labels = raw.get("attribute_labels", {})
        if not isinstance(labels, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in labels.items()
        ):
            raise ValueError("policy.attribute_labels: must map attribute names to non-empty strings")
        if attributes is not None:
            missing = [a for a in attributes if a not in labels]
            if missing:
                raise ValueError(f"policy.attributes: no label for {missing} in attribute_labels")
        attacks_raw = raw.get("attacks", {})
        if not isinstance(attacks_raw, dict):
            raise ValueError("policy.attacks: must be an object")
        unknown = set(attacks_raw) - set(ATTACKS)
        if unknown:
            raise ValueError(f"policy.attacks: unknown attacks {sorted(unknown)}; known: {sorted(ATTACKS)}")
        attacks = {name: _attack_policy(spec, attacks_raw.get(name, {})) for name, spec in ATTACKS.items()}
        if not any(a.enabled for a in attacks.values()):
            raise ValueError("policy.attacks: at least one attack must be enabled")
        policy = cls(
            name=_str(raw, "name", "policy", default="unnamed"),
            leak_share=_num(raw, "leak_share", "policy", default=0.5),
            chance_quantile=_num(raw, "chance_quantile", "policy", default=0.95),
            retries=_int(raw, "retries", "policy", default=1),
            attributes=None if attributes is None else tuple(attributes),
            attribute_labels=dict(labels),
            seed=_int(raw, "seed", "policy", default=0),
            attacks=attacks,
            verdict_level=_num(raw, "verdict_level", "policy", default=None),
            control_people=_int(raw, "control_people", "policy", default=DEFAULT_CONTROL_PEOPLE),
        )
        canonical = json.dumps(policy.to_dict(), sort_keys=True, separators=(",", ":"))
        object.__setattr__(policy, "sha256", hashlib.sha256(canonical.encode()).hexdigest())
        return policy

    def to_dict(self) -> dict[str, Any]:
        # verdict_level, level_share and control_people appear only where set, so an older policy keeps
        # its sha256
        out: dict[str, Any] = {
            "schema": SCHEMA,
            "name": self.name,
            "leak_share": self.leak_share,
            "chance_quantile": self.chance_quantile,
            "retries": self.retries,
            "attributes": None if self.attributes is None else list(self.attributes),
            "attribute_labels": dict(self.attribute_labels),
            "seed": self.seed,
            "attacks": {
                name: {
                    "enabled": a.enabled,
                    "mandatory": a.mandatory,
                    "params": dict(a.params),
                    "thresholds": {t.metric: t.to_dict() for t in a.thresholds},
                    **({"level_share": a.level_share} if a.level_share != 1.0 else {}),
                }
                for name, a in self.attacks.items()
            },
        }
        if self.verdict_level is not None:
            out["verdict_level"] = self.verdict_level
        if self.control_people != DEFAULT_CONTROL_PEOPLE:
            out["control_people"] = self.control_people
        return out

    def judged(self) -> list[str]:
        """The enabled attacks whose rules are judged against chance (what a never-seen person shows),
        among which verdict_level is split; utility is judged against the base version instead."""
        return [name for name, a in self.attacks.items() if a.enabled and ATTACKS[name].chance_judged]

    def looks(self, name: str) -> int:
        """How many times the verdict may read an attack: once, and once per retry where it has
        stronger settings (a retry runs only while everything passed, and any failing run fails)."""
        return 1 + (self.retries if ATTACKS[name].strengthen is not None else 0)

    def attack_quantile(self, name: str) -> float:
        """The level one run of an attack is judged at, as a quantile: 1 - its share of verdict_level
        divided over its looks; without verdict_level (or for an attack not judged against chance),
        chance_quantile. Each attack splits it further over its own rules, cells and settings."""
        judged = self.judged()
        if self.verdict_level is None or name not in judged:
            return self.chance_quantile
        total = sum(self.attacks[n].level_share for n in judged)
        return 1.0 - self.verdict_level * self.attacks[name].level_share / total / self.looks(name)

    def retain_question(self) -> str:
        """The question the utility attack asks about each retain person's values ("" where it is disabled
        or asks none): what an unlearning run's utility floor reads too (UnlearningSpec.retain_question)."""
        attack = self.attacks.get("utility")
        template = attack.params.get("template") if attack is not None and attack.enabled else None
        return template if isinstance(template, str) and "{name}" in template and "{label}" in template else ""

    def questions(self) -> tuple[str, ...]:
        """The question templates ({name}, {label}) the enabled attacks ask with, each once, in the
        policy's order: what an unlearning run's stop rule asks too (UnlearningSpec.question_templates).
        The paraphrase, jailbreak and many-shot families stay out: held out from the run, they still
        test what the run never looked at."""
        out: dict[str, None] = {}
        for attack in self.attacks.values():
            if not attack.enabled:
                continue
            one = attack.params.get("template")
            many = attack.params.get("templates")
            for template in ([one] if isinstance(one, str) else []) + (list(many) if isinstance(many, list | tuple) else []):
                if isinstance(template, str) and "{name}" in template and "{label}" in template:
                    out.setdefault(template, None)
        return tuple(out)

    def with_labels(self, labels: Mapping[str, str]) -> VerificationPolicy:
        """The same policy with extra or replaced attribute labels (a corpus's own question words)."""
        raw = self.to_dict()
        raw["attribute_labels"] = {**raw["attribute_labels"], **labels}
        return VerificationPolicy.from_dict(raw)


def _attack_policy(spec: AttackSpec, raw: Any) -> AttackPolicy:
    where = f"policy.attacks.{spec.name}"
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: must be an object")
    _no_unknown(raw, _ATTACK_KEYS, where)
    params_raw = raw.get("params", {})
    if not isinstance(params_raw, dict):
        raise ValueError(f"{where}.params: must be an object")
    _no_unknown(params_raw, set(spec.params), f"{where}.params")
    params: dict[str, Any] = {}
    for key, default in spec.params.items():
        value = params_raw.get(key, default)
        params[key] = _check_param_type(value, default, f"{where}.params.{key}")
    if spec.validate is not None:
        try:
            spec.validate(params)
        except ValueError as exc:
            raise ValueError(f"{where}.params: {exc}") from exc
    thresholds_raw = raw.get("thresholds", spec.default_thresholds)
    if not isinstance(thresholds_raw, dict):
        raise ValueError(f"{where}.thresholds: must be an object")
    thresholds = []
    for metric, bounds in thresholds_raw.items():
        if metric not in spec.metrics:
            raise ValueError(f"{where}.thresholds: unknown metric {metric!r}; known: {sorted(spec.metrics)}")
        if not isinstance(bounds, dict) or not bounds or set(bounds) - {"min", "max"}:
            raise ValueError(f"{where}.thresholds.{metric}: must be an object with 'min' and/or 'max'")
        lo = _num(bounds, "min", f"{where}.thresholds.{metric}", default=None)
        hi = _num(bounds, "max", f"{where}.thresholds.{metric}", default=None)
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"{where}.thresholds.{metric}: min is above max")
        thresholds.append(Threshold(metric=metric, max=hi, min=lo))
    enabled = raw.get("enabled", True)
    mandatory = raw.get("mandatory", spec.mandatory_by_default)
    if not isinstance(enabled, bool) or not isinstance(mandatory, bool):
        raise ValueError(f"{where}: enabled and mandatory must be true or false")
    if mandatory and not enabled:
        raise ValueError(f"{where}: a mandatory attack cannot be disabled")
    level_share = _num(raw, "level_share", where, default=1.0)
    if level_share is None or not 0.0 < level_share <= 100.0:
        raise ValueError(f"{where}.level_share: must be in (0, 100]")
    if level_share != 1.0 and not spec.chance_judged:
        raise ValueError(f"{where}.level_share: this attack is not judged against chance")
    return AttackPolicy(enabled=enabled, mandatory=mandatory, params=params, thresholds=tuple(thresholds),
                        level_share=level_share)


def _check_param_type(value: Any, default: Any, where: str) -> Any:
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{where}: must be true or false")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: must be an integer")
        if value < 0:
            raise ValueError(f"{where}: must not be negative")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"{where}: must be a finite number")
        if value < 0:
            raise ValueError(f"{where}: must not be negative")
        value = float(value)
    elif isinstance(default, str):
        if not isinstance(value, str) or not value:
            raise ValueError(f"{where}: must be a non-empty string")
    elif isinstance(default, list):
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ValueError(f"{where}: must be a list of non-empty strings")
        value = list(value)
    return value


def _no_unknown(raw: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(raw) - allowed
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")


def _num(raw: Mapping[str, Any], key: str, where: str, *, default: float | None) -> Any:
    value = raw.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{where}.{key}: must be a finite number")
    return float(value)


def _int(raw: Mapping[str, Any], key: str, where: str, *, default: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where}.{key}: must be an integer")
    return value


def _str(raw: Mapping[str, Any], key: str, where: str, *, default: str) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}.{key}: must be a non-empty string")
    return value
