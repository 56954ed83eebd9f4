"""The validated specification of one unlearning run.

A spec is plain data: it is stored on the job row, hashed into checkpoints (a checkpoint is only
resumed by a run with the same spec hash) and into the certificate. Every default is chosen for the
default method ("relabel") on small and mid-sized causal LMs; the comment next to each says why.

Pure: no Django, no environment reads.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

METHODS = ("ga", "grad_diff", "npo", "simnpo", "idk_dpo", "rmu", "relabel")
DEVICES = ("cpu", "cuda", "auto")
DTYPES = ("float32", "bfloat16", "auto")


@dataclass(frozen=True)
class UnlearningSpec:
    method: str = "relabel"  # span-only relabelling + unlikelihood + retain anchor: beats GA/NPO at equal utility
    # measured on the demo model: 1e-3 halves the retain exact-answer rate within 5 steps; 2e-4 forgets
    # in ~8 steps at the utility floor
    lr: float = 2e-4
    max_steps: int = 200  # a ceiling only: runs stop on evidence (forget target met or utility floor)
    batch_size: int = 16  # forget examples per step (sampled from all subjects' items, PRI-weighted loss)
    retain_batch_size: int = 32  # retain examples per step; more than forget: utility is the scarce good
    eval_every: int = 2  # steps between evidence checks; fine-grained so the stop lands near the target
    min_steps: int = 0  # do not stop on the forget target before this many steps
    forget_target: float = 0.0  # stop once the forget-set extraction rate is at or below this share
    utility_floor: float = 0.95  # retain exact-answer rate must stay >= floor x its value before
    ppl_ceiling: float = 1.10  # retain perplexity must stay <= ceiling x its value before
    leak_threshold: float = 0.5  # leakage.judge_leak threshold: half a value in one run is a leak
    eval_samples: int = 0  # extra sampled probes per forget prompt at each check (0: greedy only)
    eval_temperature: float = 1.0
    eval_retain_items: int = 96  # retain items used for the in-run utility check (fixed random subset)
    pri_weighting: bool = True  # weight each forget example by (1 + PRI)
    span_only: bool = True  # forget losses on the PII token spans only (keep the sentence around them)
    retain_weight: float = 2.0  # weight of the retain term (2 beat 1 and 5 on the demo model)
    retain_on_spans: bool = True  # the retain term covers retain records' PII spans (they are what breaks)
    npo_beta: float = 0.1  # NPO / SimNPO / DPO temperature (Zhang et al. 2024 use 0.1)
    simnpo_gamma: float = 0.0  # SimNPO reward margin (Fan et al. 2024)
    idk_text: str = "I don't know."  # IdK-DPO preferred answer
    rmu_layer: int = -1  # RMU steering layer; -1: the middle layer
    rmu_steering_coeff: float = 20.0  # RMU forget-activation norm target c (Li et al. 2024 use 6.5-300)
    relabel_variants: int = 4  # random same-format replacement values drawn per forget value
    unlikelihood_weight: float = 1.0  # relabel: weight of -log(1 - p(true token)) on the true value's tokens
    repair_steps: int = 0  # retain-only steps after forgetting (SANI-style repair), evidence-checked
    lora: bool = False
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_target_modules: tuple[str, ...] = ()  # () : every linear / Conv1D layer of the blocks
    gradient_checkpointing: bool = False
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    device: str = "auto"
    dtype: str = "auto"  # auto: bf16 on CUDA when supported, fp32 on CPU
    seed: int = 0
    # torch intra-op threads during the run (0: leave as is). Small models on a shared CPU run several
    # times faster on 1 thread; a GPU worker leaves it alone.
    num_threads: int = 0
    checkpoint_every: int = 0  # 0: no checkpoints; else every N steps into checkpoint_dir
    extra: dict[str, Any] = field(default_factory=dict)  # recorded and hashed, not interpreted

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}")
        if not (math.isfinite(self.lr) and 0.0 < self.lr < 1.0):
            raise ValueError("lr must be in (0, 1)")
        for name in ("max_steps", "batch_size", "retain_batch_size", "eval_every", "eval_retain_items",
                     "relabel_variants", "lora_rank", "lora_alpha"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        for name in ("min_steps", "eval_samples", "repair_steps", "checkpoint_every", "num_threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.min_steps > self.max_steps:
            raise ValueError("min_steps must be <= max_steps")
        if not 0.0 <= self.forget_target < 1.0:
            raise ValueError("forget_target must be in [0, 1)")
        if not 0.0 <= self.utility_floor <= 1.0:
            raise ValueError("utility_floor must be in [0, 1]")
        if self.ppl_ceiling < 1.0:
            raise ValueError("ppl_ceiling must be >= 1")
        if not 0.0 < self.leak_threshold <= 1.0:
            raise ValueError("leak_threshold must be in (0, 1]")
        if self.eval_temperature <= 0.0:
            raise ValueError("eval_temperature must be > 0")
        for name in ("retain_weight", "unlikelihood_weight", "weight_decay", "simnpo_gamma", "lora_dropout"):
            if getattr(self, name) < 0.0:
                raise ValueError(f"{name} must be >= 0")
        if self.npo_beta <= 0.0 or self.rmu_steering_coeff <= 0.0 or self.max_grad_norm <= 0.0:
            raise ValueError("npo_beta, rmu_steering_coeff and max_grad_norm must be > 0")
        if self.lora_dropout >= 1.0:
            raise ValueError("lora_dropout must be < 1")
        if self.rmu_layer < -1:
            raise ValueError("rmu_layer must be -1 (middle) or a layer index")
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise ValueError("device must be cpu, cuda, cuda:N or auto")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}")
        if not isinstance(self.lora_target_modules, tuple) or not all(
            isinstance(m, str) and m for m in self.lora_target_modules
        ):
            raise ValueError("lora_target_modules must be a tuple of module names")
        if not self.idk_text.strip():
            raise ValueError("idk_text must not be empty")
        try:
            json.dumps(self.extra, sort_keys=True)
        except TypeError as exc:
            raise ValueError("extra must be JSON-serialisable") from exc

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["lora_target_modules"] = list(self.lora_target_modules)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UnlearningSpec:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown spec field(s): {', '.join(unknown)}")
        values = dict(data)
        if "lora_target_modules" in values:
            values["lora_target_modules"] = tuple(values["lora_target_modules"])
        _check_types(values)
        return cls(**values)

    def spec_hash(self) -> str:
        """sha256 of the canonical JSON (sorted keys, no whitespace): what checkpoints and certificates cite."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(canonical.encode("ascii")).hexdigest()

    def replace(self, **changes: Any) -> UnlearningSpec:
        return UnlearningSpec.from_dict(self.to_dict() | changes)


def _check_types(values: dict[str, Any]) -> None:
    """JSON gives ints for floats and could give strings for anything: reject what would misbehave."""
    defaults = UnlearningSpec()
    for name, value in values.items():
        expected = type(getattr(defaults, name))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            values[name] = float(value)
        elif expected is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{name} must be an integer")
        elif expected is bool and not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false")
        elif expected in (str, float, dict, tuple) and not isinstance(values[name], expected):
            raise ValueError(f"{name} must be of type {expected.__name__}")
