"""The bridge between job rows and the worker's validated UnlearningSpec (unlearning_worker.spec, pure).

The job row stores the spec as its canonical dict plus its hash; the worker rebuilds the dataclass
with `UnlearningSpec.from_dict`, which validates again, so a hand-edited row cannot smuggle in an
invalid setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings


class SpecError(ValueError):
    """An unknown method or an invalid setting; the message names the field, never data."""


@dataclass(frozen=True)
class BuiltSpec:
    method: str
    spec: dict[str, Any]
    sha256: str


def _spec_class() -> Any:
    from unlearning_worker.spec import UnlearningSpec

    return UnlearningSpec


def known_methods() -> list[str]:
    """Method names the spec accepts (from the pure spec module: the methods registry imports torch,
    which the web process must not load)."""
    from unlearning_worker.spec import METHODS

    return list(METHODS)


def default_method() -> str:
    return str(getattr(settings, "UNLEARNING_DEFAULT_METHOD", "") or _spec_class()().method)


def build_spec(*, method: str | None = None, overrides: dict[str, Any] | None = None) -> BuiltSpec:
    """A validated spec for `method` with `overrides` on top of the defaults (and of settings)."""
    values: dict[str, Any] = {"checkpoint_every": int(getattr(settings, "UNLEARNING_CHECKPOINT_EVERY", 0))}
    values.update(getattr(settings, "UNLEARNING_SPEC_DEFAULTS", {}) or {})
    values.update(overrides or {})
    chosen = method or values.pop("method", None) or default_method()
    values["method"] = chosen
    methods = known_methods()
    if methods and chosen not in methods:
        raise SpecError(f"unknown unlearning method {chosen!r}; known: {', '.join(methods)}")
    cls = _spec_class()
    try:
        spec = cls.from_dict(values) if hasattr(cls, "from_dict") else cls(**values)
    except (TypeError, ValueError, KeyError) as exc:
        raise SpecError(f"invalid unlearning spec: {exc}") from exc
    return BuiltSpec(method=spec.method, spec=spec.to_dict(), sha256=spec.spec_hash())


def strengthen(*, spec: dict[str, Any], round: int) -> BuiltSpec:
    """A stronger setting after a failed verdict (round 1, 2, ...).

    The engine stops on evidence (forget-set extraction target) or at its step budget; a verdict can
    still fail when an attack the live evaluation does not run (sampling, paraphrases) extracts the
    value, or relearning brings it back. So the retry asks for more: twice the step budget per round, a
    stricter forget target, half the distance to the never-seen target, twice the weight on matching
    its hidden states (counterfactual) and half the rank tolerance over the never-seen control (the
    stop rule's rank check), each only where the spec has such a field. The factors are
    configurable through settings.UNLEARNING_STRENGTHEN (field -> multiplier per round).
    """
    factors: dict[str, float] = dict(
        getattr(settings, "UNLEARNING_STRENGTHEN", None)
        or {"max_steps": 2.0, "lr": 1.5, "forget_target": 0.5, "target_extraction": 0.5, "gap_target": 0.5,
            "hidden_weight": 2.0, "rank_tolerance": 0.5}
    )
    values = dict(spec)
    changed = False
    for name, factor in factors.items():
        if name in values and isinstance(values[name], int | float) and not isinstance(values[name], bool):
            scaled = values[name] * (factor**round)
            values[name] = int(round_half(scaled)) if isinstance(values[name], int) else float(scaled)
            changed = True
    if not changed:
        raise SpecError("the spec has no field the strengthening settings know how to raise")
    return build_spec(method=str(values.pop("method")), overrides=values)


def round_half(value: float) -> int:
    return int(value + 0.5)
