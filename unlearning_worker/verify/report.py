"""The verification report and the verdict: JSON-able, and free of plaintext personal data.

Pure: no Django, no environment reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from unlearning_worker.verify.registry import AttackOutcome


@dataclass
class CheckResult:
    """One threshold of the policy applied to one measured value of the new version."""

    attack: str
    metric: str
    threshold: str  # human-readable rule, e.g. "leak_rate <= 0.0"
    bound: dict[str, float]
    value: float | None
    status: str  # "pass" | "fail" | "not_evaluated" | "error"
    mandatory: bool
    strength: int = 0  # the retry level at which the value was measured

    @property
    def decides_failure(self) -> bool:
        # Not evaluated or crashed counts against a mandatory attack: a missing attack is no evidence.
        return self.status == "fail" or (self.mandatory and self.status in ("not_evaluated", "error"))

    def describe(self) -> str:
        shown = "n/a" if self.value is None else f"{self.value:.4g}"
        return f"{self.attack}.{self.metric} = {shown} (rule: {self.threshold}) [{self.status}]"

    def to_dict(self) -> dict[str, Any]:
        return {
            "attack": self.attack,
            "metric": self.metric,
            "threshold": self.threshold,
            "bound": self.bound,
            "value": self.value,
            "status": self.status,
            "mandatory": self.mandatory,
            "strength": self.strength,
            "decides_failure": self.decides_failure,
        }


@dataclass
class Verdict:
    passed: bool
    checks: list[CheckResult]

    @property
    def failing(self) -> list[CheckResult]:
        return [c for c in self.checks if c.decides_failure]

    @property
    def decided_by(self) -> list[str]:
        """Every check that made it fail (measured value against threshold), or [] when it passed."""
        return [c.describe() for c in self.failing]

    @property
    def summary(self) -> str:
        if self.passed:
            return f"PASS: all {len(self.checks)} checks within the policy's thresholds"
        return "FAIL: " + "; ".join(self.decided_by)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "summary": self.summary,
            "decided_by": self.decided_by,
            "checks": [c.to_dict() for c in self.checks],
        }


@dataclass
class AttackReport:
    name: str
    after: AttackOutcome | None
    before: AttackOutcome | None
    strength: int  # retry level of `after` (0: the policy's own settings)
    attempts: list[dict[str, Any]] = field(default_factory=list)  # each try: strength, metrics, seconds
    relative: dict[str, float | None] = field(default_factory=dict)  # compare(before, after)
    error: str | None = None

    def metric(self, name: str) -> float | None:
        if name in self.relative:
            return self.relative[name]
        if self.after is None:
            return None
        return self.after.metrics.get(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "strength": self.strength,
            "error": self.error,
            "after": None if self.after is None else self.after.to_dict(),
            "before": None if self.before is None else self.before.to_dict(),
            "relative": self.relative,
            "attempts": self.attempts,
        }


@dataclass
class VerificationReport:
    policy_name: str
    policy_sha256: str
    model_sha256: str | None
    base_model_sha256: str | None
    subject_keys: list[str]
    attacks: dict[str, AttackReport]
    verdict: Verdict
    timings: dict[str, float]
    # what "erased" was measured against: attack families, budgets, relearning settings,
    # quantization levels, the never-seen control and how the subjects compared with it
    threat_model: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "threat_model": self.threat_model,
            "policy": {"name": self.policy_name, "sha256": self.policy_sha256},
            "model_sha256": self.model_sha256,
            "base_model_sha256": self.base_model_sha256,
            "subjects": self.subject_keys,
            "verdict": self.verdict.to_dict(),
            "attacks": {name: a.to_dict() for name, a in self.attacks.items()},
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "per_subject": self.per_subject(),
        }

    def per_subject(self) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
        """subject_key -> attack -> attribute -> {"before": success, "after": success, scores}."""
        table: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
        for name, attack in self.attacks.items():
            for side, outcome in (("after", attack.after), ("before", attack.before)):
                if outcome is None:
                    continue
                for cell in outcome.cells:
                    entry = table.setdefault(cell.subject_key, {}).setdefault(name, {}).setdefault(cell.attribute, {})
                    entry[side] = cell.success
                    entry[f"{side}_score"] = round(cell.score, 6)
        return table

    def metric_table(self) -> list[tuple[str, str, float | None, float | None]]:
        """(attack, metric, before, after) for every reported metric."""
        rows = []
        for name, attack in self.attacks.items():
            keys = list(attack.after.metrics if attack.after else attack.before.metrics if attack.before else {})
            for key in keys:
                before = attack.before.metrics.get(key) if attack.before else None
                after = attack.after.metrics.get(key) if attack.after else None
                rows.append((name, key, before, after))
            for key, value in attack.relative.items():
                rows.append((name, key, None, value))
        return rows
