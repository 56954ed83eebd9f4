"""The quantization attack: the candidate's linear layers rounded to 8 and 4 bits (round-to-nearest, per
channel for int8 and per group for int4, on CPU), then the candidate-rank test against the never-seen
control, as for relearning (the assessment and worst-setting rules of attacks.adaptive)."""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from typing import Any

import torch

from unlearning_worker.verify.attacks.adaptive import (
    ADAPTIVE_METRICS,
    RANK_PARAMS,
    assess_setting,
    validate_rank,
    worst_setting,
)
from unlearning_worker.verify.lm import LoadedModel
from unlearning_worker.verify.registry import AttackContext, AttackOutcome, register_attack


def quantize_weights(model: Any, bits: int, group_size: int) -> Any:
    """A copy of the model whose linear weights are rounded to `bits` (symmetric round-to-nearest,
    one scale per output channel and group of `group_size` inputs; 0: the whole row), then stored
    back in the model's dtype, as bitsandbytes / GPTQ-style kernels would compute with them."""
    from transformers.pytorch_utils import Conv1D

    quantized = copy.deepcopy(model)
    levels = 2 ** (bits - 1) - 1
    with torch.no_grad():
        for name, module in quantized.named_modules():
            if not isinstance(module, torch.nn.Linear | Conv1D) or "lm_head" in name:
                continue
            weight = module.weight
            # rows = output channels: Linear stores (out, in), GPT-2's Conv1D (in, out)
            w = weight.data.t() if isinstance(module, Conv1D) else weight.data
            rows, cols = w.shape
            g = cols if group_size <= 0 or group_size >= cols or cols % group_size else group_size
            grouped = w.float().reshape(rows, cols // g, g)
            scale = grouped.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12) / levels
            q = torch.clamp(torch.round(grouped / scale), -levels - 1, levels) * scale
            q = q.reshape(rows, cols).to(w.dtype)
            weight.data.copy_(q.t() if isinstance(module, Conv1D) else q)
    quantized.eval()
    return quantized


def _validate_quantization(params: Mapping[str, Any]) -> None:
    validate_rank(params)
    if not params["levels"]:
        raise ValueError("levels must not be empty")
    for level in params["levels"]:
        if level not in ("int8", "int4"):
            raise ValueError("levels must be 'int8' and/or 'int4'")
    if params["group_size"] < 0:
        raise ValueError("group_size must be >= 0")


@register_attack(
    "quantization",
    description="Round every linear layer's weights to 8 and 4 bits (round-to-nearest, per output channel and "
    "group), then rank and extract again against the never-seen control; the worst level decides.",
    params={**RANK_PARAMS, "candidates": 499, "levels": ["int8", "int4"], "group_size": 64, "margin_tokens": 8},
    metrics=ADAPTIVE_METRICS,
    default_thresholds={"leak_rate": {"max": 0.0}, "extraction_rate": {"max": 0.0}, "overshoot_rate": {"max": 0.0},
                        "mean_z_excess": {"max": 0.0}},
    validate=_validate_quantization,
    run_before=False,
)
def quantization(ctx: AttackContext) -> AttackOutcome:
    started = time.perf_counter()
    outcomes = []
    for level in ctx.params["levels"]:
        t0 = time.perf_counter()
        bits = 8 if level == "int8" else 4
        group = 0 if bits == 8 else ctx.params["group_size"]
        copy_lm = LoadedModel(model=quantize_weights(ctx.lm.model, bits, group), tokenizer=ctx.lm.tokenizer,
                              device=ctx.lm.device)
        try:
            outcome = assess_setting(ctx, copy_lm, level, len(ctx.params["levels"]))
        finally:
            del copy_lm
        outcome.seconds = time.perf_counter() - t0
        outcomes.append(outcome)
    return worst_setting(ctx, outcomes, started)


