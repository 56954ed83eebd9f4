"""The model a run changes: loading it on a device and dtype, LoRA adapters, gradient checkpointing,
which weights may move (the method's reach, saliency masks), weight noise, and in-memory snapshots."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from unlearning_worker.adapters import name_the_loss, wrap_lora
from unlearning_worker.data import Example, collate, step_indices
from unlearning_worker.methods import (
    UnlearningMethod,
    _decoder_layers,
    losses,
    rmu_layer_index,
)
from unlearning_worker.spec import UnlearningSpec


def resolve_device(spec: UnlearningSpec) -> torch.device:
    if spec.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("spec asks for CUDA but no CUDA device is available")
    return device


# Training state of full-weight fp32 training, bytes a parameter: weights, gradients, Adam's two moments.
FP32_TRAINING_BYTES = 16


def parameter_count(model_dir: Path) -> int | None:
    """Parameters in the model's safetensors files, read from their headers (no tensor is loaded);
    None where the model has none."""
    from safetensors import safe_open

    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for file in files:
        with safe_open(str(file), framework="pt") as fh:
            for key in fh.keys():  # noqa: SIM118  # safe_open has keys(), not iteration
                total += math.prod(int(dim) for dim in fh.get_slice(key).get_shape())
    return total


def resolve_dtype(spec: UnlearningSpec, device: torch.device, model_dir: Path | None = None) -> torch.dtype:
    """The dtype the model's weights are held in for the run.

    "auto" on CUDA: fp32 weights (matrix products in TF32) where their full training state fits in half
    the free GPU memory, since bf16 weights drop every Adam update under about 1/256 of the weight and
    an unlearning run's width-scaled rate makes most of them that small (the run then changes nothing
    and stops on its step ceiling); bf16 where fp32 does not fit, and for LoRA, whose adapters peft keeps
    in fp32 over a frozen base. On the CPU always fp32."""
    if spec.dtype == "float32" or device.type != "cuda" and spec.dtype == "auto":
        return torch.float32
    if spec.dtype == "bfloat16":
        return torch.bfloat16
    if not torch.cuda.is_bf16_supported():
        return torch.float32
    if spec.lora:
        return torch.bfloat16
    params = parameter_count(model_dir) if model_dir is not None else None
    free, _total = torch.cuda.mem_get_info(device)
    if params is not None and params * FP32_TRAINING_BYTES <= free // 2:
        return torch.float32
    return torch.bfloat16


def load_model(model_dir: Path, spec: UnlearningSpec, device: torch.device) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = resolve_dtype(spec, device, model_dir)
    if device.type == "cuda" and dtype == torch.float32:
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 weights, TF32 products
        torch.backends.cudnn.allow_tf32 = True
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, local_files_only=True, dtype=dtype
    ).to(device)  # type: ignore[arg-type]  # transformers stubs
    name_the_loss(model)
    model.config.use_cache = False  # training; generation passes use_cache explicitly
    for module in model.modules():  # unlearning wants deterministic gradients: no dropout
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    if spec.lora:
        model = lora_for_spec(model, spec)
    if spec.gradient_checkpointing:
        set_checkpointing(model, on=True)
    return model, tokenizer


def set_checkpointing(model: Any, *, on: bool) -> None:
    """Activation checkpointing on or off, by the API the installed transformers has (5.x renamed
    gradient_checkpointing_* to activation_checkpointing_* and warns on the old names)."""
    if hasattr(model, "activation_checkpointing_enable"):
        if on:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.activation_checkpointing_disable()
    elif on:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_disable()


def is_checkpointing(model: Any) -> bool:
    if hasattr(type(model), "is_activation_checkpointing"):
        return bool(model.is_activation_checkpointing)
    return bool(getattr(model, "is_gradient_checkpointing", False))


def lora_for_spec(model: Any, spec: UnlearningSpec) -> Any:
    from peft import LoraConfig

    target = list(spec.lora_target_modules) or linear_module_names(model)
    layers = None
    if spec.method == "rmu":  # blocks above the steering layer get no gradient: give them no adapters
        layers = list(range(rmu_layer_index(model, spec) + 1))
    config = LoraConfig(
        r=spec.lora_rank, lora_alpha=spec.lora_alpha, lora_dropout=spec.lora_dropout, target_modules=target,
        layers_to_transform=layers, bias="none", task_type="CAUSAL_LM",
        fan_in_fan_out=getattr(model.config, "model_type", "") == "gpt2",  # GPT-2 uses Conv1D (in, out)
    )
    return wrap_lora(model, config)


def linear_module_names(model: Any) -> list[str]:
    """Names (last component) of every linear layer inside the transformer blocks: the LoRA targets.

    Like peft's "all-linear" (which cannot be combined with layers_to_transform), found structurally so
    that GPT-2's Conv1D and Llama's Linear layers are both covered; the output head is left out.
    """
    from transformers.pytorch_utils import Conv1D

    blocks = _decoder_layers(model)
    names = {
        name.rsplit(".", 1)[-1]
        for name, module in blocks.named_modules()
        if isinstance(module, torch.nn.Linear | Conv1D)
    }
    if not names:
        raise ValueError("no linear layers found in the transformer blocks for LoRA")
    return sorted(names)


def trainable_parameters(model: Any) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def freeze_unreached(model: Any, method: UnlearningMethod, forget_idx: list[int], retain_idx: list[int]) -> None:
    """Freeze parameters that the method's loss cannot reach (RMU: blocks above its layer), so that
    'trainable' means 'moved by this run' and the optimiser holds no state for dead weights."""
    loss, _ = method.loss(forget_idx, retain_idx, 0)
    loss.backward()
    for _name, param in trainable_parameters(model):
        if param.grad is None:
            param.requires_grad_(False)
    model.zero_grad(set_to_none=True)


def saliency_masks(
    model: Any, method: UnlearningMethod, forget: list[Example], retain: list[Example], spec: UnlearningSpec,
    pad_id: int, device: torch.device,
) -> dict[str, torch.Tensor]:
    """Which weights a run may move: the `saliency` share of trainable entries whose importance for the
    forget values is largest relative to their importance for the retain set.

    Importance is the diagonal Fisher (mean squared per-batch gradient of the NLL), as in selective
    synaptic dampening (Foster et al. 2024); the ratio, rather than the forget gradient alone (SalUn,
    Fan et al. 2024), keeps the weights that other people's values also rely on out of the update.
    Forget importance is measured on the true values' tokens (span-only), where the memory sits.
    """
    named = trainable_parameters(model)

    def fisher(examples: list[Example], masks: list[list[bool]], chunk: int) -> dict[str, torch.Tensor]:
        acc = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in named}
        batches = 0
        for start in range(0, len(examples), chunk):
            part = examples[start : start + chunk]
            batch = collate(part, masks[start : start + chunk], [1.0] * len(part), pad_id=pad_id, device=device)
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
            loss = losses.nll(losses.token_logprobs(logits, batch.input_ids), batch.target_mask, batch.weights)
            model.zero_grad(set_to_none=True)
            loss.backward()
            for n, p in named:
                if p.grad is not None:
                    acc[n] += p.grad.detach().float() ** 2
            batches += 1
        model.zero_grad(set_to_none=True)
        return {n: a / max(batches, 1) for n, a in acc.items()}

    f_masks = [e.target_mask(span_only=True) for e in forget]
    forget_fisher = fisher(forget, f_masks, 8)
    r_idx = step_indices(len(retain), min(len(retain), 4 * spec.retain_batch_size), 0, seed=spec.seed, salt="saliency")
    retain_sample = [retain[i] for i in r_idx]
    retain_fisher = fisher(retain_sample, [method.ctx.retain_mask(e) for e in retain_sample], spec.retain_batch_size)
    floor = max(float(torch.cat([r.flatten() for r in retain_fisher.values()]).mean()), 1e-30) * 1e-3
    ratios = {n: forget_fisher[n] / (retain_fisher[n] + floor) for n in forget_fisher}
    flat = torch.cat([r.flatten() for r in ratios.values()])
    k = max(1, int(round(spec.saliency * flat.numel())))
    threshold = torch.topk(flat, k).values.min()
    return {n: (r >= threshold) for n, r in ratios.items()}


def snapshot(model: Any) -> dict[str, torch.Tensor]:
    return {n: p.detach().to("cpu", copy=True) for n, p in trainable_parameters(model)}


def restore_snapshot(model: Any, snapshot: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in snapshot.items():
            params[name].copy_(value.to(params[name].device, params[name].dtype))


@torch.no_grad()
def add_noise(model: Any, masks: dict[str, torch.Tensor], spec: UnlearningSpec) -> None:
    """Gaussian noise of `noise_scale` standard deviations of each weight tensor, on the entries inside
    the saliency mask (all trainable entries without one), seeded: what the forget set's values rely
    on most is scrambled rather than steered, and the method's targets and the retain term re-fit it."""
    generator = torch.Generator().manual_seed(spec.seed + 7)
    for name, param in trainable_parameters(model):
        if param.dim() < 2:
            continue  # biases and norms carry no memory worth scrambling and break easily
        noise = torch.randn(param.shape, generator=generator).to(param.device, param.dtype)
        mask = masks.get(name)
        if mask is not None:
            noise = noise * mask.to(param.device, param.dtype)
        param.add_(noise * param.detach().float().std().to(param.dtype) * spec.noise_scale)


def apply_masks(model: Any, masks: dict[str, torch.Tensor]) -> None:
    """Zero the gradient of every weight outside the saliency mask (Adam then never moves it: its
    moments stay zero)."""
    if not masks:
        return
    for name, param in trainable_parameters(model):
        mask = masks.get(name)
        if mask is not None and param.grad is not None:
            param.grad.mul_(mask.to(param.grad.device, param.grad.dtype))


