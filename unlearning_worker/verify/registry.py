"""The attack registry and the types every attack speaks.

An attack is a function `(AttackContext) -> AttackOutcome` registered under a name with the
parameters it accepts (and their defaults), the metrics it reports (the names a policy threshold
may refer to), and optionally how to make it stronger for a retry and how to compare a run on the
new version with one on the base version. The policy validator reads this registry, so a policy
cannot name a parameter or a metric that no attack has.

Reports never hold generated text or values: a cell says *whether* and *how much* of a value came
out, never what it was (the report is stored and shown to officers).

Pure: no Django, no environment reads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from unlearning_worker.verify.facts import SubjectFacts
    from unlearning_worker.verify.lm import LoadedModel
    from unlearning_worker.verify.scoring import Secret

ParamValue = bool | int | float | str | list[str] | None


@dataclass
class Cell:
    """The result of one attack for one subject and one attribute ("*" = the subject as a whole)."""

    subject_key: str
    attribute: str
    success: bool | None  # None: not evaluated (for example, a value with no secret part)
    score: float  # attack-specific: leak share, exposure bits, rank, Min-K score
    chance: float | None = None  # the score a model that never saw the subject reaches
    detail: dict[str, Any] = field(default_factory=dict)  # JSON-able, never plaintext PII

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject_key": self.subject_key,
            "attribute": self.attribute,
            "success": self.success,
            "score": round(self.score, 6),
            "chance": None if self.chance is None else round(self.chance, 6),
            "detail": self.detail,
        }


@dataclass
class AttackOutcome:
    cells: list[Cell]
    metrics: dict[str, float | None]
    params: dict[str, Any]
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "metrics": {k: (None if v is None else round(float(v), 6)) for k, v in self.metrics.items()},
            "params": self.params,
            "seconds": round(self.seconds, 3),
            "cells": [c.to_dict() for c in self.cells],
        }


@dataclass
class AttackContext:
    """What an attack gets: the model under attack, the people, and the settings in force."""

    lm: LoadedModel
    subjects: Sequence[SubjectFacts]
    retain: Sequence[SubjectFacts]
    holdout_texts: Sequence[str]
    general_texts: Sequence[str]
    params: Mapping[str, Any]  # this attack's parameters after any strengthening
    leak_share: float
    chance_quantile: float  # this attack's: 1 - its share of the verdict's level (policy.attack_quantile)
    attribute_labels: Mapping[str, str]
    attributes: tuple[str, ...] | None  # None: every attribute a subject has
    seed: int
    secrets: Mapping[tuple[str, str], Secret]  # (subject_key, attribute) -> secret part
    population: Mapping[str, Sequence[str]]  # attribute -> values of everybody the caller named
    # people the model never saw, measured like the subjects: the yardstick of the adaptive attacks
    controls: Sequence[SubjectFacts] = ()
    # more text without the subjects that an attacker may hold and fine-tune on (the training corpus
    # the subjects' records were taken out of), beside the retain records and general text
    other_texts: Sequence[str] = ()

    def attributes_of(self, subject: SubjectFacts) -> list[str]:
        """Attributes to attack for this subject, in a stable order, that have a label."""
        names = subject.values.keys() if self.attributes is None else [a for a in self.attributes if a in subject.values]
        return [a for a in names if a in self.attribute_labels]

    def label(self, attribute: str) -> str:
        return self.attribute_labels[attribute]

    @property
    def cell_quantile(self) -> float:
        """The per-cell chance quantile that holds the attack's family-wise false-leak rate at
        1 - chance_quantile (the attack's share of the verdict's level; Bonferroni over its (subject,
        attribute) cells). With a per-cell 0.95, a model retrained without ten subjects "leaked" one of
        30 cells (a 2-digit e-mail suffix) and failed a zero-tolerance rule: 1 - 0.95^30 = 78% of such
        runs would. The chance level (scoring.chance_level) resolves a best-of-n quantile up to about
        1 - n / CHANCE_DRAWS per cell; beyond that a cell's false-leak rate is about n / CHANCE_DRAWS
        (sampling's 40 attempts at the retry: 0.1%), above its share where the share is smaller."""
        n = sum(len(self.attributes_of(s)) for s in self.subjects)
        return 1.0 - (1.0 - self.chance_quantile) / max(1, n)


AttackFn = Callable[[AttackContext], AttackOutcome]
Strengthen = Callable[[dict[str, Any], int], dict[str, Any]]
Compare = Callable[[AttackOutcome, AttackOutcome], dict[str, float | None]]
ValidateParams = Callable[[Mapping[str, Any]], None]


@dataclass(frozen=True)
class AttackSpec:
    name: str
    fn: AttackFn
    description: str
    params: Mapping[str, ParamValue]  # accepted parameters and their defaults
    metrics: Mapping[str, str]  # metric name -> what it measures (relative metrics included)
    default_thresholds: Mapping[str, Mapping[str, float]]  # metric -> {"max": x} or {"min": x}
    mandatory_by_default: bool
    strengthen: Strengthen | None = None
    compare: Compare | None = None
    validate: ValidateParams | None = None
    run_before: bool = True  # also attack the base version for the "before" column
    # judged against what a person the model never saw shows (chance, the control): takes a share of
    # the policy's verdict_level. False: judged against the base version (utility).
    chance_judged: bool = True


ATTACKS: dict[str, AttackSpec] = {}


def register_attack(
    name: str,
    *,
    description: str,
    params: Mapping[str, ParamValue],
    metrics: Mapping[str, str],
    default_thresholds: Mapping[str, Mapping[str, float]],
    mandatory_by_default: bool = True,
    strengthen: Strengthen | None = None,
    compare: Compare | None = None,
    validate: ValidateParams | None = None,
    run_before: bool = True,
    chance_judged: bool = True,
) -> Callable[[AttackFn], AttackFn]:
    """Decorator: put an attack in ATTACKS under `name` (names are unique)."""

    def decorate(fn: AttackFn) -> AttackFn:
        if name in ATTACKS:
            raise ValueError(f"attack {name!r} is already registered")
        for metric in default_thresholds:
            if metric not in metrics:
                raise ValueError(f"attack {name!r}: default threshold on unknown metric {metric!r}")
        ATTACKS[name] = AttackSpec(
            name=name,
            fn=fn,
            description=description,
            params=dict(params),
            metrics=dict(metrics),
            default_thresholds={k: dict(v) for k, v in default_thresholds.items()},
            mandatory_by_default=mandatory_by_default,
            strengthen=strengthen,
            compare=compare,
            validate=validate,
            run_before=run_before,
            chance_judged=chance_judged,
        )
        return fn

    return decorate


def rate(cells: Sequence[Cell]) -> float | None:
    """Share of evaluated cells that succeeded (None when nothing could be evaluated)."""
    evaluated = [c for c in cells if c.success is not None]
    if not evaluated:
        return None
    return sum(1 for c in evaluated if c.success) / len(evaluated)
