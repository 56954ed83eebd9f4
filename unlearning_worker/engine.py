"""The unlearning engine: one run of one method over a merged forget set, stopped on evidence.

    run_unlearning(model_dir=..., out_dir=..., forget=[...], retain=[...], spec=UnlearningSpec(...))

1. Load the causal LM and tokenizer from a local Hugging Face directory (never a hub), optionally wrap
   it with LoRA (peft) and gradient checkpointing; tokenise forget and retain items into masked examples.
2. Let the method cache what it needs from the base model (reference log-probs, refusal or replacement
   targets, frozen retain activations): computed once, no second model copy.
3. Measure the evidence before the first step: forget-set extraction (greedy, and sampled when asked;
   partial leaks count through leakage.judge_leak), retain exact-answer rate and retain perplexity.
4. Train; every `eval_every` steps measure again. Stop when the forget target is met, or roll back to
   the last eval point that respected the utility floor as soon as one does not. Record why it stopped.
5. Optionally repair on retain data (SANI-style) while the forget target keeps holding.
6. Write the model (LoRA merged) to a temporary sibling of out_dir, fsync, hash, rename: out_dir
   either does not exist or is complete. The base model directory is only ever read.

Between steps the engine checks `should_cancel` (raising UnlearningCancelled, leaving no out_dir) and,
every `checkpoint_every` steps, saves a checkpoint (trainable weights, optimiser, method caches,
history, spec hash, seed, step) from which a run with the same spec and data resumes.

Pure: no Django, no environment reads.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from unlearning_worker.adapters import name_the_loss, wrap_lora
from unlearning_worker.data import Example, ForgetItem, RetainItem, collate, encode, step_indices
from unlearning_worker.files import write_atomic
from unlearning_worker.generation import generate_batch
from unlearning_worker.leakage import chance_share, judge_leak
from unlearning_worker.methods import (
    MethodContext,
    UnlearningMethod,
    _decoder_layers,
    build_method,
    losses,
    rmu_layer_index,
)
from unlearning_worker.routed import is_routed
from unlearning_worker.spec import UnlearningSpec

__all__ = [
    "EvalPoint", "ForgetItem", "ProgressEvent", "RetainItem", "UnlearningCancelled", "UnlearningResult",
    "run_unlearning",
]

CHECKPOINT_FILE = "checkpoint.pt"
MANIFEST_FILE = "unlearning_manifest.json"


class UnlearningCancelled(Exception):
    """Raised when should_cancel() answered True between two steps; no output was written."""


@dataclass(frozen=True)
class EvalPoint:
    step: int
    losses: dict[str, float]
    forget_extraction: float  # share of (forget prompt, secret value) pairs leaked, greedy or sampled
    forget_extraction_greedy: float
    forget_extraction_sampled: float | None  # None when spec.eval_samples == 0 or greedy already missed the target
    retain_extraction: float  # share of retain (prompt, value) pairs leaked (same judge as forget)
    retain_exact: float  # share of retain values produced verbatim by greedy decoding
    retain_ppl: float  # perplexity of the retain completions (teacher-forced)
    phase: str = "unlearn"  # "before", "unlearn" or "repair"
    # nats per value token between the model and the method's never-seen target (None: the method has none)
    forget_gap: float | None = None


@dataclass(frozen=True)
class ProgressEvent:
    phase: str  # "prepare", "before", "step", "eval", "repair", "saving", "done"
    step: int
    max_steps: int
    losses: dict[str, float] = field(default_factory=dict)
    forget_extraction: float | None = None  # the latest measured value ("live extraction rate")
    retain_exact: float | None = None
    retain_ppl: float | None = None


@dataclass(frozen=True)
class UnlearningResult:
    stop_reason: str  # forget_target_met | utility_floor | max_steps
    steps: int  # optimiser steps that the saved model has taken (after any rollback)
    steps_run: int  # optimiser steps executed, rolled-back ones included
    wall_s: float
    before: EvalPoint
    final: EvalPoint  # the evidence for the saved model
    history: list[EvalPoint]
    out_dir: Path
    spec_hash: str
    resumed_from_step: int | None
    weights_sha256: dict[str, str]  # file name -> sha256 of the saved files

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["out_dir"] = str(self.out_dir)
        return data


# -- set-up ---------------------------------------------------------------------------------------


def _resolve_device(spec: UnlearningSpec) -> torch.device:
    if spec.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("spec asks for CUDA but no CUDA device is available")
    return device


def _resolve_dtype(spec: UnlearningSpec, device: torch.device) -> torch.dtype:
    if spec.dtype == "float32" or (spec.dtype == "auto" and device.type != "cuda"):
        return torch.float32
    if spec.dtype == "bfloat16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def _load(model_dir: Path, spec: UnlearningSpec, device: torch.device) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, local_files_only=True, dtype=_resolve_dtype(spec, device)
    ).to(device)  # type: ignore[arg-type]  # transformers stubs
    name_the_loss(model)
    model.config.use_cache = False  # training; generation passes use_cache explicitly
    for module in model.modules():  # unlearning wants deterministic gradients: no dropout
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    if spec.lora:
        model = _wrap_lora(model, spec)
    if spec.gradient_checkpointing:
        _checkpointing(model, on=True)
    return model, tokenizer


def _checkpointing(model: Any, *, on: bool) -> None:
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


def _is_checkpointing(model: Any) -> bool:
    if hasattr(type(model), "is_activation_checkpointing"):
        return bool(model.is_activation_checkpointing)
    return bool(getattr(model, "is_gradient_checkpointing", False))


def _wrap_lora(model: Any, spec: UnlearningSpec) -> Any:
    from peft import LoraConfig

    target = list(spec.lora_target_modules) or _linear_module_names(model)
    layers = None
    if spec.method == "rmu":  # blocks above the steering layer get no gradient: give them no adapters
        layers = list(range(rmu_layer_index(model, spec) + 1))
    config = LoraConfig(
        r=spec.lora_rank, lora_alpha=spec.lora_alpha, lora_dropout=spec.lora_dropout, target_modules=target,
        layers_to_transform=layers, bias="none", task_type="CAUSAL_LM",
        fan_in_fan_out=getattr(model.config, "model_type", "") == "gpt2",  # GPT-2 uses Conv1D (in, out)
    )
    return wrap_lora(model, config)


def _linear_module_names(model: Any) -> list[str]:
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


def _trainable(model: Any) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def _freeze_unreached(model: Any, method: UnlearningMethod, forget_idx: list[int], retain_idx: list[int]) -> None:
    """Freeze parameters that the method's loss cannot reach (RMU: blocks above its layer), so that
    'trainable' means 'moved by this run' and the optimiser holds no state for dead weights."""
    loss, _ = method.loss(forget_idx, retain_idx, 0)
    loss.backward()
    for _name, param in _trainable(model):
        if param.grad is None:
            param.requires_grad_(False)
    model.zero_grad(set_to_none=True)


def _saliency_masks(
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
    named = _trainable(model)

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


# -- evidence -------------------------------------------------------------------------------------


@dataclass
class _Probe:
    prompt: str
    values: list[tuple[str, str, float]]  # (attribute, value, chance level)
    max_new_tokens: int
    stop_at_newline: bool


def _probes(
    tokenizer: Any, prompts: Iterable[str], completions: Iterable[str], values: Iterable[dict[str, str]]
) -> list[_Probe]:
    out: list[_Probe] = []
    for prompt, completion, secret in zip(prompts, completions, values, strict=True):
        if not secret:
            continue
        n_tokens = len(tokenizer(completion, add_special_tokens=False)["input_ids"])
        out.append(_Probe(
            prompt=prompt,
            values=[(a, v, chance_share(v, a)) for a, v in sorted(secret.items())],
            max_new_tokens=min(n_tokens + 4, 256),
            # one-line answers stop at their newline; multi-line completions are generated in full
            stop_at_newline="\n" not in completion.rstrip("\n"),
        ))
    return out


def _run_probes(
    model: Any, tokenizer: Any, probes: list[_Probe], *, threshold: float, samples: int = 0,
    temperature: float = 1.0, seed: int = 0,
) -> tuple[int, int, int]:
    """(pairs leaked under the judge, pairs produced verbatim, pairs). Sampled: a pair leaks if any sample leaks."""
    leaked = exact = total = 0
    groups: dict[tuple[int, bool], list[_Probe]] = {}
    for probe in probes:  # same generation settings -> one batched pass
        groups.setdefault((probe.max_new_tokens, probe.stop_at_newline), []).append(probe)
    for (max_new, stop_nl), group in sorted(groups.items()):
        outputs = generate_batch(
            model, tokenizer, [p.prompt for p in group], max_new_tokens=max_new, stop_at_newline=stop_nl,
            do_sample=samples > 0, temperature=temperature, num_return_sequences=max(1, samples), seed=seed,
        )
        for probe, texts in zip(group, outputs, strict=True):
            for attribute, value, chance in probe.values:
                total += 1
                if any(judge_leak(value, t, attribute, threshold=threshold, chance=chance).leaked for t in texts):
                    leaked += 1
                if any(value in t for t in texts):
                    exact += 1
    return leaked, exact, total


@torch.no_grad()
def _perplexity(model: Any, examples: list[Example], pad_id: int, device: torch.device) -> float:
    if not examples:
        return float("nan")
    was_training = model.training
    model.eval()
    total_nll = 0.0
    total_tokens = 0.0
    for start in range(0, len(examples), 32):
        chunk = examples[start : start + 32]
        batch = collate(chunk, [e.answer_mask for e in chunk], [1.0] * len(chunk), pad_id=pad_id, device=device)
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        seq_lp, count = losses.sequence_logprob(losses.token_logprobs(logits, batch.input_ids), batch.target_mask)
        total_nll -= float(seq_lp.sum())
        total_tokens += float(count.sum())
    model.train(was_training)
    return math.exp(total_nll / max(total_tokens, 1.0))


@dataclass
class _Evaluator:
    model: Any
    tokenizer: Any
    spec: UnlearningSpec
    forget_probes: list[_Probe]
    retain_probes: list[_Probe]
    retain_examples: list[Example]
    pad_id: int
    device: torch.device
    gap: Callable[[], float | None] = lambda: None  # the method's distance to its target, if it has one

    def __call__(self, step: int, step_losses: dict[str, float], phase: str) -> EvalPoint:
        spec = self.spec
        leaked, _exact, total = _run_probes(self.model, self.tokenizer, self.forget_probes, threshold=spec.leak_threshold)
        greedy = leaked / total if total else 0.0
        sampled: float | None = None
        # Sampling can only add leaks: while greedy decoding alone misses the target the check is decided,
        # and the sampled probes (20x the generation) are skipped, except for the "before" point (the
        # baseline every report compares with). This keeps checks of large forget sets cheap; such points
        # record forget_extraction_sampled = None.
        if spec.eval_samples and total and (greedy <= spec.forget_target or phase == "before"):
            s_leaked, _, _ = _run_probes(
                self.model, self.tokenizer, self.forget_probes, threshold=spec.leak_threshold,
                samples=spec.eval_samples, temperature=spec.eval_temperature, seed=spec.seed + step,
            )
            sampled = s_leaked / total
        r_leaked, r_exact, r_total = _run_probes(
            self.model, self.tokenizer, self.retain_probes, threshold=spec.leak_threshold
        )
        return EvalPoint(
            step=step,
            losses=dict(step_losses),
            forget_extraction=max(greedy, sampled or 0.0),
            forget_extraction_greedy=greedy,
            forget_extraction_sampled=sampled,
            retain_extraction=r_leaked / r_total if r_total else 1.0,
            retain_exact=r_exact / r_total if r_total else 1.0,
            retain_ppl=_perplexity(self.model, self.retain_examples, self.pad_id, self.device),
            phase=phase,
            forget_gap=self.gap(),
        )


def _utility_ok(point: EvalPoint, before: EvalPoint, spec: UnlearningSpec) -> bool:
    if point.retain_exact < spec.utility_floor * before.retain_exact:
        return False
    return not (math.isfinite(before.retain_ppl) and point.retain_ppl > spec.ppl_ceiling * before.retain_ppl)


# -- checkpoints and output -----------------------------------------------------------------------


def _data_fingerprint(model_dir: Path, forget: list[ForgetItem], retain: list[RetainItem]) -> str:
    """Identifies the inputs a checkpoint belongs to (hash only: no PII is stored with it)."""
    digest = hashlib.sha256()
    for name in sorted(p.name for p in model_dir.iterdir() if p.is_file()):
        stat = (model_dir / name).stat()
        digest.update(f"{name}:{stat.st_size}".encode())
    digest.update((model_dir / "config.json").read_bytes() if (model_dir / "config.json").exists() else b"")
    for item in forget:
        digest.update(json.dumps([item.subject_key, item.prompt, item.completion, item.pii_spans, item.pri]).encode())
    for r in retain:
        digest.update(json.dumps([r.prompt, r.completion, r.pii_spans]).encode())
    return digest.hexdigest()


def _atomic_torch_save(obj: Any, path: Path) -> None:
    write_atomic(path, lambda fh: torch.save(obj, fh))


def _snapshot(model: Any) -> dict[str, torch.Tensor]:
    return {n: p.detach().to("cpu", copy=True) for n, p in _trainable(model)}


def _restore(model: Any, snapshot: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in snapshot.items():
            params[name].copy_(value.to(params[name].device, params[name].dtype))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _save_output(model: Any, tokenizer: Any, out_dir: Path, manifest: dict[str, Any]) -> dict[str, str]:
    """Write to a temporary sibling, fsync, hash, then rename: out_dir is complete or absent."""
    # ".tmp-" like compliance.registry.artifacts: its sweep removes what a killed writer left behind
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out_dir.name}-", dir=out_dir.parent))
    try:
        to_save = model
        if hasattr(model, "merge_and_unload"):  # LoRA: ship a plain model any consumer can load
            to_save = copy.deepcopy(model).merge_and_unload()
        if _is_checkpointing(to_save):
            _checkpointing(to_save, on=False)
        to_save.config.use_cache = True
        to_save.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        hashes = {p.name: _sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest | {"files_sha256": hashes}, indent=2, sort_keys=True))
        for path in tmp.iterdir():
            with path.open("rb") as fh:
                os.fsync(fh.fileno())
        os.rename(tmp, out_dir)  # fails (and we clean up) if out_dir appeared meanwhile
        with contextlib.suppress(OSError):  # make the rename itself durable
            dir_fd = os.open(out_dir.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        return hashes
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# -- the run --------------------------------------------------------------------------------------


@contextlib.contextmanager
def _threads(count: int) -> Iterator[None]:
    from unlearning_worker.threads import torch_threads

    with torch_threads(count):
        yield


def run_unlearning(
    *,
    model_dir: Path,
    out_dir: Path,
    forget: list[ForgetItem],
    retain: list[RetainItem],
    spec: UnlearningSpec,
    progress: Callable[[ProgressEvent], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    checkpoint_dir: Path | None = None,
) -> UnlearningResult:
    """Unlearn `forget` from the model in `model_dir` and write the new model to `out_dir` (see module doc)."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if not (model_dir / "config.json").is_file():
        raise ValueError("model_dir is not a Hugging Face model directory (no config.json)")
    if is_routed(model_dir):  # its weights are the base only: unlearning them would miss every shard
        raise ValueError("a routed sharded model is erased by retraining its shards, not by approximate unlearning")
    if out_dir.exists():
        raise ValueError("out_dir must not exist: the engine never overwrites a model")
    if out_dir.resolve() == model_dir.resolve() or model_dir.resolve() in out_dir.resolve().parents:
        raise ValueError("out_dir must lie outside model_dir")
    if not out_dir.parent.is_dir():
        raise ValueError("the parent directory of out_dir must exist")
    if not forget:
        raise ValueError("the forget set is empty")
    if spec.checkpoint_every and checkpoint_dir is None:
        raise ValueError("checkpoint_every is set but no checkpoint_dir was given")
    forget = _targeted(forget, spec)
    with _threads(spec.num_threads):
        return _run(model_dir, out_dir, forget, retain, spec, progress, should_cancel, checkpoint_dir)


def _targeted(forget: list[ForgetItem], spec: UnlearningSpec) -> list[ForgetItem]:
    """The forget items restricted to the spec's attributes (spans and probe values); items left with
    nothing to forget are dropped (span-only losses would otherwise fall back to their whole answer)."""
    if not spec.attributes:
        return forget
    wanted = set(spec.attributes)
    out = []
    for item in forget:
        spans = [s for s in item.pii_spans if s[2] in wanted]
        values = {a: v for a, v in item.values.items() if a in wanted}
        if spans or (values and not item.pii_spans):
            out.append(ForgetItem(subject_key=item.subject_key, prompt=item.prompt, completion=item.completion,
                                  pii_spans=spans, values=values, pri=item.pri, subject_name=item.subject_name,
                                  context_spans=[*item.context_spans, *(s for s in item.pii_spans if s not in spans)]))
    if not out:
        raise ValueError("no forget record holds a value of the attributes this run forgets")
    return out


def _run(
    model_dir: Path,
    out_dir: Path,
    forget: list[ForgetItem],
    retain: list[RetainItem],
    spec: UnlearningSpec,
    progress: Callable[[ProgressEvent], None] | None,
    should_cancel: Callable[[], bool] | None,
    checkpoint_dir: Path | None,
) -> UnlearningResult:
    started = time.perf_counter()
    emit = progress or (lambda _event: None)
    cancelled = should_cancel or (lambda: False)
    spec_hash = spec.spec_hash()
    torch.manual_seed(spec.seed)
    device = _resolve_device(spec)

    # 1. model, tokenizer, examples
    emit(ProgressEvent("prepare", 0, spec.max_steps))
    model, tokenizer = _load(model_dir, spec, device)
    model.train()
    forget_examples = [encode(tokenizer, f.prompt, f.completion, f.pii_spans) for f in forget]
    retain_examples = [encode(tokenizer, r.prompt, r.completion, r.pii_spans) for r in retain]
    ctx = MethodContext(model, tokenizer, spec, list(forget), forget_examples, retain_examples, device)
    method = build_method(ctx)
    pad_id = ctx.pad_id

    # retain items holding values of the attributes being forgotten: where collateral damage lands
    wanted = set(spec.attributes) or {a for f in forget for _s, _e, a in f.pii_spans}
    focus = [i for i, r in enumerate(retain) if any(a in wanted for _s, _e, a in r.pii_spans)]

    # a fixed, seeded subset of the retain set for the in-run utility checks
    eval_idx = step_indices(len(retain), min(spec.eval_retain_items, max(1, len(retain))), 0, seed=spec.seed, salt="eval")
    eval_idx = eval_idx if retain else []
    evaluator = _Evaluator(
        model=model,
        tokenizer=tokenizer,
        spec=spec,
        forget_probes=_probes(tokenizer, (f.prompt for f in forget), (f.completion for f in forget), (f.values for f in forget)),
        retain_probes=_probes(
            tokenizer, (retain[i].prompt for i in eval_idx), (retain[i].completion for i in eval_idx),
            (retain[i].values() for i in eval_idx),
        ),
        retain_examples=[retain_examples[i] for i in eval_idx],
        pad_id=pad_id,
        device=device,
        gap=method.forget_gap,
    )

    # 2-3. resume, or cache references and measure the starting point
    fingerprint = _data_fingerprint(model_dir, forget, retain)
    checkpoint_path = Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir is not None else None
    state = _load_checkpoint(checkpoint_path, spec_hash, fingerprint)
    trainable_names = [n for n, _ in _trainable(model)]
    if state is None:
        method.prepare()
        masks = (_saliency_masks(model, method, forget_examples, retain_examples, spec, pad_id, device)
                 if spec.saliency < 1.0 else {})
        if spec.noise_scale > 0:
            _add_noise(model, masks, spec)
        if spec.method == "rmu":
            _freeze_unreached(
                model, method, step_indices(len(forget), spec.batch_size, 0, seed=spec.seed, salt="forget"),
                step_indices(len(retain), spec.retain_batch_size, 0, seed=spec.seed, salt="retain") if retain else [],
            )
        before = evaluator(0, {}, "before")
        history = [before]
        start_step = 0
        resumed_from: int | None = None
        last_good = (0, _snapshot(model), before)
    else:
        method.load_state(state["method"])
        masks = state.get("masks", {})
        for name in trainable_names:
            if name not in state["trainable"]:
                dict(model.named_parameters())[name].requires_grad_(False)
        _restore(model, state["trainable"])
        history = [EvalPoint(**p) for p in state["history"]]
        before = history[0]
        start_step = resumed_from = int(state["step"])
        good_step, good_point = int(state["last_good_step"]), EvalPoint(**state["last_good_point"])
        last_good = (good_step, state["last_good"], good_point)
    emit(ProgressEvent("before", start_step, spec.max_steps, forget_extraction=history[-1].forget_extraction,
                       retain_exact=history[-1].retain_exact, retain_ppl=history[-1].retain_ppl))

    params = [p for _, p in _trainable(model)]
    if not params:
        raise ValueError("the model has no trainable parameters for this spec")
    optimiser = torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
    if state is not None:
        optimiser.load_state_dict(state["optimiser"])

    def save_checkpoint(path: Path, step: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_torch_save({
            "spec_hash": spec_hash, "spec": spec.to_dict(), "seed": spec.seed, "step": step,
            "fingerprint": fingerprint, "trainable": _snapshot(model), "optimiser": optimiser.state_dict(),
            "method": method.state(), "masks": masks, "history": [asdict(p) for p in history],
            "last_good_step": last_good[0], "last_good": last_good[1], "last_good_point": asdict(last_good[2]),
        }, path)

    # 4. unlearn, stopping on evidence
    stop_reason = "max_steps"
    step = start_step
    step_losses: dict[str, float] = {}
    if _target_met(history[-1], spec, start_step) and start_step == 0 and spec.min_steps == 0:
        stop_reason = "forget_target_met"  # nothing to forget: do not touch the weights
    else:
        while step < spec.max_steps:
            if cancelled():
                raise UnlearningCancelled("unlearning run cancelled")
            forget_idx = step_indices(len(forget), spec.batch_size, step, seed=spec.seed, salt="forget")
            retain_idx = _retain_batch(retain, focus, spec, step)
            loss, step_losses = method.loss(forget_idx, retain_idx, step)
            if not torch.isfinite(loss):
                raise FloatingPointError("unlearning loss is not finite")
            loss.backward()
            if spec.adversary_every and retain and step % spec.adversary_every == 0:
                step_losses["adversary"] = _adversarial_gradient(model, method, params, forget_idx, retain, spec, step)
            _apply_masks(model, masks)
            torch.nn.utils.clip_grad_norm_(params, spec.max_grad_norm)
            optimiser.step()
            optimiser.zero_grad(set_to_none=True)
            step += 1
            emit(ProgressEvent("step", step, spec.max_steps, losses=step_losses,
                               forget_extraction=history[-1].forget_extraction))
            if step % spec.eval_every == 0 or step == spec.max_steps:
                point = evaluator(step, step_losses, "unlearn")
                history.append(point)
                emit(ProgressEvent("eval", step, spec.max_steps, losses=step_losses,
                                   forget_extraction=point.forget_extraction, retain_exact=point.retain_exact,
                                   retain_ppl=point.retain_ppl))
                if not _utility_ok(point, before, spec):
                    # Forgetting first dents the retain set and the retain term then repairs it: a run
                    # stops on the floor only after `utility_patience` checks in a row below it.
                    if _below_floor_streak(history, before, spec) > spec.utility_patience:
                        _restore(model, last_good[1])
                        stop_reason = "utility_floor"
                        break
                else:
                    last_good = (step, _snapshot(model), point)
                    if _target_held(history, spec, step):
                        stop_reason = "forget_target_met"
                        break
            if checkpoint_path is not None and spec.checkpoint_every and step % spec.checkpoint_every == 0:
                save_checkpoint(checkpoint_path, step)
    steps_run = step
    if stop_reason == "max_steps" and last_good[0] != step:
        _restore(model, last_good[1])  # the saved model is always one that met the utility floor

    # 5. repair on retain data while the forget target holds (only after a met target)
    final_step, _snap, final_point = last_good
    if stop_reason == "forget_target_met" and spec.repair_steps and retain:
        final_step, final_point = _repair(model, method, evaluator, spec, before, last_good, optimiser, params,
                                          retain, cancelled, emit, history)
        steps_run += spec.repair_steps

    # 6. atomic output
    if cancelled():
        raise UnlearningCancelled("unlearning run cancelled")
    emit(ProgressEvent("saving", final_step, spec.max_steps, forget_extraction=final_point.forget_extraction))
    manifest = {
        "spec": spec.to_dict(), "spec_hash": spec_hash, "stop_reason": stop_reason, "steps": final_step,
        "base_model_config_sha256": _sha256(model_dir / "config.json"),
        "history": [asdict(p) for p in history], "resumed_from_step": resumed_from,
    }
    hashes = _save_output(model, tokenizer, out_dir, manifest)
    if checkpoint_path is not None and _load_checkpoint(checkpoint_path, spec_hash, fingerprint) is not None:
        checkpoint_path.unlink()  # ours and complete: a later run must not resume from it (others' stay)
    emit(ProgressEvent("done", final_step, spec.max_steps, forget_extraction=final_point.forget_extraction,
                       retain_exact=final_point.retain_exact, retain_ppl=final_point.retain_ppl))
    return UnlearningResult(
        stop_reason=stop_reason, steps=final_step, steps_run=steps_run, wall_s=time.perf_counter() - started,
        before=before, final=final_point, history=history, out_dir=out_dir, spec_hash=spec_hash,
        resumed_from_step=resumed_from, weights_sha256=hashes,
    )


def _adversarial_gradient(
    model: Any, method: UnlearningMethod, params: list[torch.nn.Parameter], forget_idx: list[int],
    retain: list[RetainItem], spec: UnlearningSpec, step: int,
) -> float:
    """Fine-tune a copy of the model on retain records as a relearning attacker would, take the forget
    loss there and add its gradient to `params`' (first-order: the copy's gradient stands in for the
    gradient through the fine-tune). Returns the forget loss after the attacker's steps."""
    shadow = copy.deepcopy(model)
    shadow_params = [p for _n, p in _trainable(shadow)]
    attacker = torch.optim.Adam(shadow_params, lr=spec.adversary_lr)
    original = method.ctx.model
    method.ctx.model = shadow
    try:
        for k in range(spec.adversary_steps):
            idx = step_indices(len(retain), spec.retain_batch_size, step * spec.adversary_steps + k,
                               seed=spec.seed, salt="adversary")
            UnlearningMethod.retain_loss(method, idx).backward()
            attacker.step()
            attacker.zero_grad(set_to_none=True)
        loss, _parts = method.forget_loss(forget_idx, step)
        loss.backward()
    finally:
        method.ctx.model = original
    for mine, theirs in zip(params, shadow_params, strict=True):
        if theirs.grad is not None:
            grad = theirs.grad.to(mine.device, mine.dtype) * spec.adversary_weight
            mine.grad = grad if mine.grad is None else mine.grad + grad
    del shadow, attacker
    return float(loss.detach())


@torch.no_grad()
def _add_noise(model: Any, masks: dict[str, torch.Tensor], spec: UnlearningSpec) -> None:
    """Gaussian noise of `noise_scale` standard deviations of each weight tensor, on the entries inside
    the saliency mask (all trainable entries without one), seeded: what the forget set's values rely
    on most is scrambled rather than steered, and the method's targets and the retain term re-fit it."""
    generator = torch.Generator().manual_seed(spec.seed + 7)
    for name, param in _trainable(model):
        if param.dim() < 2:
            continue  # biases and norms carry no memory worth scrambling and break easily
        noise = torch.randn(param.shape, generator=generator).to(param.device, param.dtype)
        mask = masks.get(name)
        if mask is not None:
            noise = noise * mask.to(param.device, param.dtype)
        param.add_(noise * param.detach().float().std().to(param.dtype) * spec.noise_scale)


def _apply_masks(model: Any, masks: dict[str, torch.Tensor]) -> None:
    """Zero the gradient of every weight outside the saliency mask (Adam then never moves it: its
    moments stay zero)."""
    if not masks:
        return
    for name, param in _trainable(model):
        mask = masks.get(name)
        if mask is not None and param.grad is not None:
            param.grad.mul_(mask.to(param.grad.device, param.grad.dtype))


def _target_met(point: EvalPoint, spec: UnlearningSpec, step: int) -> bool:
    """No extraction beyond the target and, for a method that has a never-seen target distribution
    (counterfactual), within `gap_target` of it: zero extraction alone is reached while the values
    are still more likely than a never-seen value (measured: z = 1.4 after 60 steps)."""
    close = point.forget_gap is None or point.forget_gap <= spec.gap_target
    return point.forget_extraction <= spec.forget_target and close and step >= spec.min_steps


def _retain_batch(retain: list[RetainItem], focus: list[int], spec: UnlearningSpec, step: int) -> list[int]:
    """One step's retain items: `retain_focus` of them from the items that hold values of the attributes
    being forgotten (the values the forget term's updates spill onto), the rest from the whole set."""
    if not retain:
        return []
    n_focus = min(len(focus), int(round(spec.retain_focus * spec.retain_batch_size))) if focus else 0
    chosen = [focus[i] for i in step_indices(len(focus), n_focus, step, seed=spec.seed, salt="focus")] if n_focus else []
    rest = step_indices(len(retain), spec.retain_batch_size - n_focus, step, seed=spec.seed, salt="retain")
    return chosen + rest if spec.retain_batch_size - n_focus > 0 else chosen


def _below_floor_streak(history: list[EvalPoint], before: EvalPoint, spec: UnlearningSpec) -> int:
    """Checks in a row, since the floor was crossed, at which utility did not recover on the check before
    (retain exact-answer rate up by at least one in 200, or retain perplexity down by at least 0.1%).
    Patience runs out on a dip that keeps falling or stalls, not on a slow recovery (measured: a subject
    whose forget target held from step 28 crossed back over the floor only around step 52, recovering at
    nearly every check). A dip longer than 3 x utility_patience checks runs out whatever its trend."""
    dip: list[EvalPoint] = []
    for point in reversed(history):
        if point.phase == "before" or _utility_ok(point, before, spec):
            break
        dip.append(point)
    dip.reverse()
    if len(dip) > 3 * spec.utility_patience:
        return len(dip)
    stalled = 0
    for previous, point in zip([None, *dip], dip, strict=False):
        recovering = previous is not None and (
            point.retain_exact >= previous.retain_exact + 0.005 or point.retain_ppl <= previous.retain_ppl * 0.999
        )
        stalled = 0 if recovering else stalled + 1
    return stalled


def _target_held(history: list[EvalPoint], spec: UnlearningSpec, step: int) -> bool:
    """The forget target met at this check and the `target_checks - 1` before it."""
    recent = [p for p in history if p.phase != "before"][-spec.target_checks :]
    return len(recent) == spec.target_checks and all(_target_met(p, spec, step) for p in recent)


def _repair(
    model: Any, method: UnlearningMethod, evaluator: _Evaluator, spec: UnlearningSpec, before: EvalPoint,
    last_good: tuple[int, dict[str, torch.Tensor], EvalPoint], optimiser: torch.optim.Optimizer,
    params: list[torch.nn.Parameter], retain: list[RetainItem], cancelled: Callable[[], bool],
    emit: Callable[[ProgressEvent], None], history: list[EvalPoint],
) -> tuple[int, EvalPoint]:
    """Retain-only steps (SANI-style repair); keep the best eval point whose forget target still holds."""
    good_step, good_snapshot, good_point = last_good
    step = good_step
    for i in range(spec.repair_steps):
        if cancelled():
            raise UnlearningCancelled("unlearning run cancelled")
        retain_idx = step_indices(len(retain), spec.retain_batch_size, 10_000 + i, seed=spec.seed, salt="repair")
        # plain NLL on retain completions (RMU's own retain term is an activation match, not a repair)
        loss = UnlearningMethod.retain_loss(method, retain_idx)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, spec.max_grad_norm)
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        step += 1
        emit(ProgressEvent("repair", step, spec.max_steps, losses={"retain": float(loss.detach())}))
        if (i + 1) % spec.eval_every == 0 or i + 1 == spec.repair_steps:
            point = evaluator(step, {"retain": float(loss.detach())}, "repair")
            history.append(point)
            if point.forget_extraction > spec.forget_target:
                break  # the repair started to bring the secrets back: keep the last good state
            if point.retain_exact >= good_point.retain_exact and point.retain_ppl <= good_point.retain_ppl * 1.001:
                good_step, good_snapshot, good_point = step, _snapshot(model), point
    _restore(model, good_snapshot)
    return good_step, good_point


def _load_checkpoint(path: Path | None, spec_hash: str, fingerprint: str) -> dict[str, Any] | None:
    """The checkpoint to resume from, if it belongs to this spec and these inputs."""
    if path is None or not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)  # our own file, written atomically
    if state.get("spec_hash") != spec_hash or state.get("fingerprint") != fingerprint:
        return None
    return state

