"""peft's get_peft_model, without the deprecation warning it triggers in transformers 5.

peft still reads `is_gradient_checkpointing`, which transformers 5 renamed: the FutureWarning is about
peft's code, not ours, and would otherwise reach the demo's output and every log. One place wraps it.
"""

from __future__ import annotations

import warnings
from typing import Any


def wrap_lora(model: Any, config: Any) -> Any:
    from peft import get_peft_model

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, config)


def relearning_lora(model: Any, rank: int = 8, alpha: int = 16) -> Any:
    """`model` wrapped for the LoRA a relearning attacker fine-tunes: rank 8 (alpha 16, no dropout) on
    every linear layer but the output head. One definition for the verifier's relearning attack
    (verify/attacks/adaptive.py) and the in-loop attacker that trains against it (engine)."""
    import torch
    from peft import LoraConfig
    from transformers.pytorch_utils import Conv1D

    names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                    if isinstance(m, torch.nn.Linear | Conv1D) and "lm_head" not in n})
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=names, bias="none",
                        task_type="CAUSAL_LM", fan_in_fan_out=getattr(model.config, "model_type", "") == "gpt2")
    return wrap_lora(model, config)


def name_the_loss(model: Any) -> Any:
    """transformers 5 picks a model's loss by its class name and does not recognise GPT2LMHeadModel, so it
    warns once per process (`loss_type=None ... unrecognized`) and then uses the causal-LM loss anyway.
    Name that loss explicitly: same numbers, no warning in the demo's output or the workers' logs."""
    if getattr(model, "loss_type", "") is None:
        model.loss_type = "ForCausalLM"
    return model
