"""The unlearning engine: one run of one method over a merged forget set, stopped on evidence.

    run_unlearning(model_dir=..., out_dir=..., forget=[...], retain=[...], spec=UnlearningSpec(...))

1. Load the causal LM and tokenizer from a local Hugging Face directory (never a hub), optionally wrap
   it with LoRA (peft) and gradient checkpointing; tokenise forget and retain items into masked examples.
2. Let the method cache what it needs from the base model (reference log-probs, refusal or replacement
   targets, frozen retain activations): computed once, no second model copy.
3. Measure the evidence before the first step: forget-set extraction (greedy, and sampled when asked;
   partial leaks count through leakage.judge_leak), retain exact-answer rate (the verdict's utility
   question about a seeded set of retain people where the spec and the items allow, else retain records
   replayed) and retain perplexity.
4. Train; every `eval_every` steps measure again. Stop when the forget target is met with retain facts
   back at `utility_target`, or roll back to the last eval point that respected the utility floor as
   soon as one does not. Record why it stopped.
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
import math
import random
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from unlearning_worker import fsdp
from unlearning_worker.checkpoints import (
    atomic_torch_save,
    data_fingerprint,
    file_sha256,
    load_checkpoint,
    save_output,
)
from unlearning_worker.data import Example, ForgetItem, RetainItem, encode, step_indices, text_examples
from unlearning_worker.evaluation import (
    EvalPoint,
    Evaluator,
    PhaseClock,
    RankCheck,
    RankReading,
    probes,
    question_probes,
    retain_question_probes,
    utility_ok,
)
from unlearning_worker.methods import (
    MethodContext,
    UnlearningMethod,
    build_method,
)
from unlearning_worker.modeling import (
    add_noise,
    apply_masks,
    freeze_unreached,
    load_model,
    resolve_device,
    restore_snapshot,
    saliency_masks,
    snapshot,
    trainable_parameters,
)
from unlearning_worker.routed import is_routed
from unlearning_worker.spec import UnlearningSpec

__all__ = [
    "EvalPoint", "ForgetItem", "ProgressEvent", "RetainItem", "UnlearningCancelled", "UnlearningResult",
    "run_unlearning",
]

CHECKPOINT_FILE = "checkpoint.pt"


class UnlearningCancelled(Exception):
    """Raised when should_cancel() answered True between two steps; no output was written."""


@dataclass(frozen=True)
class ProgressEvent:
    phase: str  # "prepare", "before", "step", "eval", "backoff", "repair", "saving", "done"
    step: int
    max_steps: int
    losses: dict[str, float] = field(default_factory=dict)
    forget_extraction: float | None = None  # the latest measured value ("live extraction rate")
    retain_exact: float | None = None
    retain_ppl: float | None = None
    # on "saving": wall seconds by phase so far (evaluation.PhaseClock), for the job's log
    phase_seconds: dict[str, float] = field(default_factory=dict)
    # on "backoff": the step the run rolled back to and the learning rate it goes on at
    rolled_back_to: int | None = None
    lr: float | None = None


@dataclass(frozen=True)
class Backoff:
    """One rollback of the run on a utility dip (spec.backoff_patience): at `step` the run went back to
    the check at `rolled_back_to` and went on at `lr`."""

    step: int
    rolled_back_to: int
    lr: float


@dataclass(frozen=True)
class UnlearningResult:
    stop_reason: str  # forget_target_met | utility_floor | overshoot | max_steps
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
    # wall seconds by phase (evaluation.PhaseClock): steps, the in-loop attacker, each evidence check.
    # Not in the model's manifest: the saved tree stays the same for the same inputs and spec
    phase_seconds: dict[str, float] = field(default_factory=dict)
    start_lr: float = 0.0  # the learning rate the run started at (engine.start_lr)
    backoffs: list[Backoff] = field(default_factory=list)
    # the retain facts the model line's first version gives on this run's retain questions (run_unlearning's
    # `reference_dir`; None: no reference)
    reference_retain_exact: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["out_dir"] = str(self.out_dir)
        return data


# -- set-up ---------------------------------------------------------------------------------------


# -- evidence -------------------------------------------------------------------------------------


# -- checkpoints and output -----------------------------------------------------------------------


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
    relearning: Sequence[str] = (),
    reference_dir: Path | None = None,
) -> UnlearningResult:
    """Unlearn `forget` from the model in `model_dir` and write the new model to `out_dir` (see module doc).

    `relearning`: texts the in-loop relearning attacker (RelearningAdversary) fine-tunes on besides the
    retain records, none of them a subject's (the worker gives it the verifier's sample of the training
    corpora: compliance.jobs.inputs.corpus_texts). Nothing is trained on them but the attacker's copy:
    the model's retain term and utility checks read the retain records alone.

    `reference_dir`: the model line's first version, the one trained on the data before any job erased
    from it (the worker's `ModelVersion` chain). Each run may lose up to 1 - utility_target of its base's
    retain facts before it stops, so nothing else bounds what a line of jobs loses in all (stop 49's
    first sequence, each job within 0.957x of its own base, ended at 92.5%; its inputs replayed the people
    earlier jobs erased, and with the worker's inputs the line held 97.5%). With a reference the stop
    rule's utility target reads the better of the base and the reference on the run's own retain
    questions: a run stops on its forget target only with utility_target x that back, and otherwise
    goes on (and at its ceiling saves the last check its target held, as for a base of its own). The
    floor a saved point may not fall below still reads the base: a line that has lost facts must still
    be able to erase. The reference is read once before the first step, loaded beside the base."""
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
    if reference_dir is not None and not (Path(reference_dir) / "config.json").is_file():
        raise ValueError("reference_dir is not a Hugging Face model directory (no config.json)")
    if reference_dir is not None and is_routed(Path(reference_dir)):
        raise ValueError("reference_dir is a routed sharded model: its weights are not a line's model")
    if not forget:
        raise ValueError("the forget set is empty")
    if spec.checkpoint_every and checkpoint_dir is None:
        raise ValueError("checkpoint_every is set but no checkpoint_dir was given")
    if fsdp.active() is not None:
        fsdp.check_spec(spec)
    forget = _targeted(forget, spec)
    with _threads(spec.num_threads):
        return _run(model_dir, out_dir, forget, retain, spec, progress, should_cancel, checkpoint_dir, list(relearning),
                    Path(reference_dir) if reference_dir is not None else None)


# the in-loop attacker reads at most this many tokens of a corpus text (a document of a real corpus
# can run to thousands; the verifier's attacker reads up to the model's context), and its fine-tuning
# batch goes in passes of at most ATTACKER_PASS_TOKENS padded tokens (the logits of a pass are its
# tokens x the vocabulary)
ATTACKER_TOKENS = 512
ATTACKER_PASS_TOKENS = 4096


def _token_budget(idx: list[int], examples: Sequence[Example], budget: int) -> list[list[int]]:
    """`idx` in consecutive parts whose rows, padded to the part's longest, hold at most `budget`
    tokens (a longer row goes alone)."""
    parts: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in idx:
        n = len(examples[i].input_ids)
        if current and max(longest, n) * (len(current) + 1) > budget:
            parts.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, n)
    if current:
        parts.append(current)
    return parts


def attacker_texts(tokenizer: Any, retain: list[Example], texts: Sequence[str], model: Any) -> list[Example]:
    """What the in-loop attacker fine-tunes on: the retain records, then each of `texts` whole (data.text_examples:
    at most ATTACKER_TOKENS and the model's context; too short a text is left out)."""
    config = getattr(model, "config", None)
    context = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or ATTACKER_TOKENS
    limit = min(int(context), ATTACKER_TOKENS)
    return [*retain, *text_examples(tokenizer, texts, max_tokens=limit)]


def _whole_record(spec: UnlearningSpec) -> bool:
    """Whether the run takes every span and value of the forget records (no attributes named, or the
    counterfactual with never-seen caps, which brings the whole record to the never-seen level)."""
    return not spec.attributes or (spec.method == "counterfactual" and spec.never_seen_cap)


def _targeted(forget: list[ForgetItem], spec: UnlearningSpec) -> list[ForgetItem]:
    """The forget items restricted to the spec's attributes (spans and probe values); items left with
    nothing to forget are dropped (span-only losses would otherwise fall back to their whole answer)."""
    if _whole_record(spec):
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
    relearning: list[str],
    reference_dir: Path | None,
) -> UnlearningResult:
    started = time.perf_counter()
    emit = progress or (lambda _event: None)
    asked = should_cancel or (lambda: False)

    def cancelled() -> bool:  # in a sharded run, every process stops at the same step
        return fsdp.agreed(asked())

    spec_hash = spec.spec_hash()
    torch.manual_seed(spec.seed)
    device = resolve_device(spec)

    # 1. model, tokenizer, examples
    emit(ProgressEvent("prepare", 0, spec.max_steps))
    clock = PhaseClock()
    model, tokenizer = load_model(model_dir, spec, device)
    if fsdp.active() is not None:
        fsdp.shard(model, device)
    model.train()
    forget_examples = [encode(tokenizer, f.prompt, f.completion, f.pii_spans) for f in forget]
    retain_examples = [encode(tokenizer, r.prompt, r.completion, r.pii_spans) for r in retain]
    # the attacker's texts, where the run has an attacker (none in a sharded run: fsdp.check_spec)
    attacked = bool(relearning) and bool(spec.adversary_every) and fsdp.active() is None
    ctx = MethodContext(model, tokenizer, spec, list(forget), forget_examples, retain_examples, device,
                        passes_by_length=fsdp.active() is None,
                        relearning=attacker_texts(tokenizer, retain_examples, relearning, model) if attacked else None)
    adversary_texts = len(ctx.attacker_examples) - len(retain_examples)  # the texts long enough to train on
    method = build_method(ctx)
    pad_id = ctx.pad_id

    # retain items holding values of the attributes being forgotten: where collateral damage lands
    wanted = {a for f in forget for _s, _e, a in f.pii_spans} if _whole_record(spec) else set(spec.attributes)
    focus = [i for i, r in enumerate(retain) if any(a in wanted for _s, _e, a in r.pii_spans)]

    # a fixed, seeded subset of the retain set for the in-run utility checks
    eval_idx = utility_indices(retain, spec)
    history: list[EvalPoint] = []
    # the rank check (a sharded run refuses it, fsdp.check_spec: its scoring passes are not sharded)
    rank_check = RankCheck(tokenizer, forget, retain, retain_examples, spec) if spec.rank_candidates else None
    attacker: list[RelearningAdversary] = []  # the in-loop attacker, once built
    copy_readings: dict[str, RankReading] = {}  # each attacker copy's latest reading, by its mode

    def rank() -> tuple[RankReading | None, RankReading | None]:
        assert rank_check is not None
        with clock("check:rank"):
            reading = rank_check(model, device)
        copies = attacker[0].attacked if attacker else []
        if copies:  # one copy per check, in turn (by the checks so far, which a resumed run knows)
            chosen = copies[len(history) % len(copies)]
            with clock("check:rank_attacker"):
                copied = rank_check(chosen.shadow, device)
            if copied is not None:
                copy_readings[chosen.mode] = copied
        relearned = worst_reading(list(copy_readings.values()))
        # the forget effort on the records whose values an attacker's copy (else the model) still
        # ranks above the never-seen control, until the next check
        ctx.emphasis = rank_check.focus(relearned if relearned is not None else reading, spec.rank_focus)
        return reading, relearned

    # the verdict's utility question about a seeded set of retain people, else retain records replayed
    retain_probes = retain_question_probes(tokenizer, retain, spec) or probes(
        tokenizer, (retain[i].prompt for i in eval_idx), (retain[i].completion for i in eval_idx),
        (retain[i].values() for i in eval_idx),
    )
    evaluator = Evaluator(
        model=model,
        tokenizer=tokenizer,
        spec=spec,
        # the records' own prompts, and the verifier's questions about their subjects
        forget_probes=probes(tokenizer, (f.prompt for f in forget), (f.completion for f in forget), (f.values for f in forget))
        + question_probes(tokenizer, forget, spec),
        retain_probes=retain_probes,
        retain_examples=[retain_examples[i] for i in eval_idx],
        pad_id=pad_id,
        device=device,
        gap=method.forget_gap,
        close=lambda gap, rank, relearned: _close(gap, [p.forget_gap for p in history if p.phase != "before"], spec,
                                                  _rank_fields(rank, relearned)),
        rank=rank if rank_check is not None and rank_check.measurable else None,
        clock=clock,
    )

    # 2-3. resume, or cache references and measure the starting point
    fingerprint = data_fingerprint(model_dir, forget, retain, relearning if attacked else (),
                                   read=[eval_idx, [[p.prompt, p.values] for p in retain_probes]])
    del relearning  # the encoded examples are what the run keeps
    checkpoint_path = Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir is not None else None
    state = load_checkpoint(checkpoint_path, spec_hash, fingerprint)
    trainable_names = [n for n, _ in trainable_parameters(model)]
    if state is None:
        method.prepare()
        masks = (saliency_masks(model, method, forget_examples, retain_examples, spec, pad_id, device)
                 if spec.saliency < 1.0 else {})
        if spec.noise_scale > 0:
            add_noise(model, masks, spec)
        if spec.method == "rmu":
            freeze_unreached(
                model, method, step_indices(len(forget), spec.batch_size, 0, seed=spec.seed, salt="forget"),
                step_indices(len(retain), spec.retain_batch_size, 0, seed=spec.seed, salt="retain") if retain else [],
            )
        clock.add("prepare", time.perf_counter() - started)
        before = evaluator(0, {}, "before")
        history.append(before)
        reference = _reference_retain(reference_dir, model_dir, spec, device, evaluator)
        start_step = 0
        resumed_from: int | None = None
        last_good = (0, snapshot(model), before)
    else:
        method.load_state(state["method"])
        ctx.emphasis = dict(state.get("emphasis") or {})
        copy_readings.update({mode: RankReading(**r) for mode, r in (state.get("copy_readings") or {}).items()})
        masks = state.get("masks", {})
        for name in trainable_names:
            if name not in state["trainable"]:
                dict(model.named_parameters())[name].requires_grad_(False)
        restore_snapshot(model, state["trainable"])
        history.extend(EvalPoint(**p) for p in state["history"])
        before = history[0]
        reference = state.get("reference_retain_exact")
        start_step = resumed_from = int(state["step"])
        good_step, good_point = int(state["last_good_step"]), EvalPoint(**state["last_good_point"])
        last_good = (good_step, state["last_good"], good_point)
        clock.add("prepare", time.perf_counter() - started)
    # what a stop on the forget target waits for: utility_target x the better of the base and the line's first
    # version (the floor, utility_ok, reads `before` alone)
    target_base = before if reference is None else replace(before, retain_exact=max(before.retain_exact, reference))
    emit(ProgressEvent("before", start_step, spec.max_steps, forget_extraction=history[-1].forget_extraction,
                       retain_exact=history[-1].retain_exact, retain_ppl=history[-1].retain_ppl))

    params = [p for _, p in trainable_parameters(model)]
    if not params:
        raise ValueError("the model has no trainable parameters for this spec")
    lr0 = start_lr(model, spec)
    backoffs: list[Backoff] = [Backoff(**b) for b in (state.get("backoffs") or [])] if state is not None else []
    # the checks since the last backoff: a dip, a streak and the stop rule are read over them
    segment = int(state.get("segment") or 0) if state is not None else 0
    optimiser = torch.optim.AdamW(params, lr=backoffs[-1].lr if backoffs else lr0, weight_decay=spec.weight_decay)
    if state is not None:
        optimiser.load_state_dict(state["optimiser"])

    def save_checkpoint(path: Path, step: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_torch_save({
            "spec_hash": spec_hash, "spec": spec.to_dict(), "seed": spec.seed, "step": step,
            "fingerprint": fingerprint, "trainable": snapshot(model), "optimiser": optimiser.state_dict(),
            "method": method.state(), "masks": masks, "history": [asdict(p) for p in history],
            "last_good_step": last_good[0], "last_good": last_good[1], "last_good_point": asdict(last_good[2]),
            "adversary": adversary.state() if adversary is not None else None,
            "best_step": best[0] if best else None, "best": best[1] if best else None,
            "best_point": asdict(best[2]) if best else None, "emphasis": ctx.emphasis,
            "held_step": held[0] if held else None, "held": held[1] if held else None,
            "held_point": asdict(held[2]) if held else None,
            "copy_readings": {mode: asdict(r) for mode, r in copy_readings.items()},
            "backoffs": [asdict(b) for b in backoffs], "segment": segment, "reference_retain_exact": reference,
        }, path)

    # 4. unlearn, stopping on evidence
    adversary = RelearningAdversary(model, spec) if spec.adversary_every and ctx.attacker_examples else None
    if adversary is not None and state is not None and state.get("adversary"):
        adversary.load_state(state["adversary"])
    if adversary is not None:
        attacker.append(adversary)
    # with the rank check: the checked point nearest the never-seen control (kept on an overshoot or at max_steps)
    best: tuple[int, dict[str, torch.Tensor], EvalPoint] | None = None
    if state is not None and state.get("best_point") is not None:
        best = (int(state["best_step"]), state["best"], EvalPoint(**state["best_point"]))
    # the last check whose forget target held while retain facts were under utility_target
    held: tuple[int, dict[str, torch.Tensor], EvalPoint] | None = None
    if state is not None and state.get("held_point") is not None:
        held = (int(state["held_step"]), state["held"], EvalPoint(**state["held_point"]))
    # the forget micro-batch, sized once the model, its attacker's copy and the run's state are on the
    # device (Adam's two moments, allocated at the first step, are held back from the free memory), the
    # same on every process of a sharded run
    config = getattr(model, "config", None)
    trainable = sum(p.numel() for p in params)
    micro = fsdp.least(forget_micro_batch(
        spec, device, vocab_size=getattr(config, "vocab_size", None),
        # a record is read in up to two framings (the counterfactual method's): twice its longest encoding
        tokens=2 * max((len(e.input_ids) for e in forget_examples), default=32),
        layers=getattr(config, "num_hidden_layers", None), hidden=getattr(config, "hidden_size", None),
        reserved=8 * trainable,
    ))
    stop_reason = "max_steps"
    step = start_step
    step_losses: dict[str, float] = {}
    if _target_met(history[-1], spec, start_step) and start_step == 0 and spec.min_steps == 0:
        stop_reason = "forget_target_met"  # nothing to forget: do not touch the weights
    else:
        while step < spec.max_steps:
            if cancelled():
                raise UnlearningCancelled("unlearning run cancelled")
            chunks = forget_chunks(len(forget), spec, step, micro)
            retain_idx = _retain_batch(retain, focus, spec, step, retain_batch_size(spec, sum(map(len, chunks)), len(retain)))
            # sliced on the whole batch, then each slice shared out: every process of a sharded run
            # computes as many retain passes as the others
            retain_parts = retain_shares(retain_idx, len(chunks), spec.retain_batch_size)
            weight = sum(method.ctx.forget_weights([i for c in chunks for i in c]))
            step_losses = {}
            with clock("steps"):
                for chunk, retain_part in zip(chunks, retain_parts, strict=True):  # micro-batches: gradients
                    # accumulate, one optimiser step
                    share = sum(method.ctx.forget_weights(chunk)) / weight  # of the step's weighted mean
                    retained = len(retain_part) / max(len(retain_idx), 1)  # of the step's retain mean
                    loss, parts = method.loss(fsdp.split(chunk), fsdp.split(retain_part), step, forget_scale=share,
                                              retain_scale=retained)
                    if not torch.isfinite(loss):
                        raise FloatingPointError("unlearning loss is not finite")
                    loss.backward()
                    for key, value in parts.items():
                        step_losses[key] = step_losses.get(key, 0.0) + (
                            value if key == "total" else value * (retained if key == "retain" else share))
            if adversary is not None and step % spec.adversary_every == 0:
                with clock("adversary"):
                    step_losses["adversary"] = adversary.gradient(method, params, [fsdp.split(c) for c in chunks], step)
            with clock("steps"):
                apply_masks(model, masks)
                torch.nn.utils.clip_grad_norm_(params, spec.max_grad_norm)
                optimiser.step()
                optimiser.zero_grad(set_to_none=True)
            step += 1
            emit(ProgressEvent("step", step, spec.max_steps, losses=step_losses,
                               forget_extraction=history[-1].forget_extraction))
            if step % spec.eval_every == 0 or step == spec.max_steps:
                method.on_check()
                point = evaluator(step, step_losses, "unlearn")
                history.append(point)
                emit(ProgressEvent("eval", step, spec.max_steps, losses=step_losses,
                                   forget_extraction=point.forget_extraction, retain_exact=point.retain_exact,
                                   retain_ppl=point.retain_ppl))
                if not utility_ok(point, before, spec):
                    # Forgetting first dents the retain set and the retain term then repairs it. A dip
                    # `backoff_patience` checks long rolls back and halves the rate (a rate too high for
                    # the model); after the backoffs, the run stops on the floor only after
                    # `utility_patience` checks in a row below it without recovering.
                    if len(backoffs) < spec.lr_backoffs:
                        if _backoff_due(history[segment:], before, spec):
                            restore_snapshot(model, last_good[1])
                            lr = optimiser.param_groups[0]["lr"] / 2
                            # fresh moments: the old ones carry the dip's direction at the old scale
                            optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=spec.weight_decay)
                            backoffs.append(Backoff(step=step, rolled_back_to=last_good[0], lr=lr))
                            segment = len(history)
                            emit(ProgressEvent("backoff", step, spec.max_steps, rolled_back_to=last_good[0], lr=lr,
                                               forget_extraction=last_good[2].forget_extraction,
                                               retain_exact=last_good[2].retain_exact, retain_ppl=last_good[2].retain_ppl))
                    elif _below_floor_streak(history[segment:], before, spec) > spec.utility_patience:
                        restore_snapshot(model, last_good[1])
                        stop_reason = "utility_floor"
                        break
                else:
                    last_good = (step, snapshot(model), point)
                    distance = _rank_distance(point, spec)
                    if distance is not None and (best is None or distance < (_rank_distance(best[2], spec) or 0.0)):
                        best = last_good
                    if _target_held(history[segment:], spec, step):
                        # saved at the ceiling where the rank check read nothing nearer (best)
                        held = last_good
                        if _utility_back(point, target_base, spec):
                            stop_reason = "forget_target_met"
                            break
                    if best is not None and _overshot(point):
                        stop_reason = "overshoot"  # further steps take the values further below: keep the nearest
                        break
            if checkpoint_path is not None and spec.checkpoint_every and step % spec.checkpoint_every == 0:
                save_checkpoint(checkpoint_path, step)
    steps_run = step
    if stop_reason in ("max_steps", "overshoot") and best is not None:
        last_good = best  # the target not met: the checked point nearest the never-seen control
    elif stop_reason == "max_steps" and held is not None:
        last_good = held  # no rank reading: the last check whose forget target held (utility under its target)
    if stop_reason in ("max_steps", "overshoot") and last_good[0] != step:
        restore_snapshot(model, last_good[1])  # the saved model is always one that met the utility floor
    if stop_reason in ("max_steps", "overshoot"):
        # a point kept without the stop rule met may not have been sampled (the check was decided): the
        # manifest's evidence for the saved weights gets its sampled reading now
        last_good = (last_good[0], last_good[1], evaluator.with_sampled(last_good[2]))

    # 5. repair on retain data while the forget target holds (only after a met target)
    final_step, _snap, final_point = last_good
    if stop_reason == "forget_target_met" and spec.repair_steps and retain:
        final_step, final_point = _repair(model, method, evaluator, spec, before, last_good, optimiser, params,
                                          retain, cancelled, emit, history)
        steps_run += spec.repair_steps

    # 6. atomic output
    if cancelled():
        raise UnlearningCancelled("unlearning run cancelled")
    emit(ProgressEvent("saving", final_step, spec.max_steps, forget_extraction=final_point.forget_extraction,
                       phase_seconds=clock.rounded(time.perf_counter() - started)))
    manifest = {
        "spec": spec.to_dict(), "spec_hash": spec_hash, "stop_reason": stop_reason, "steps": final_step,
        "base_model_config_sha256": file_sha256(model_dir / "config.json"),
        "history": [asdict(p) for p in history], "resumed_from_step": resumed_from,
        "start_lr": lr0, "backoffs": [asdict(b) for b in backoffs], "forget_micro_batch": micro,
        # what the in-loop attacker fine-tuned on: the retain records and this many other texts (a count)
        "adversary_texts": adversary_texts if adversary is not None else 0,
        # the line's first version's retain facts on this run's questions (None: no reference was given)
        "reference_retain_exact": reference,
    }
    with clock("save"):
        if fsdp.active() is None:
            hashes = save_output(model, tokenizer, out_dir, manifest)
        else:  # gathered on process 0, which alone writes
            full = fsdp.full_state_dict(model)
            hashes = save_output(model, tokenizer, out_dir, manifest, state_dict=full) if full is not None else {}
    if checkpoint_path is not None and load_checkpoint(checkpoint_path, spec_hash, fingerprint) is not None:
        checkpoint_path.unlink()  # ours and complete: a later run must not resume from it (others' stay)
    emit(ProgressEvent("done", final_step, spec.max_steps, forget_extraction=final_point.forget_extraction,
                       retain_exact=final_point.retain_exact, retain_ppl=final_point.retain_ppl))
    wall_s = time.perf_counter() - started
    return UnlearningResult(
        stop_reason=stop_reason, steps=final_step, steps_run=steps_run, wall_s=wall_s,
        before=before, final=final_point, history=history, out_dir=out_dir, spec_hash=spec_hash,
        resumed_from_step=resumed_from, weights_sha256=hashes, phase_seconds=clock.rounded(wall_s),
        start_lr=lr0, backoffs=backoffs, reference_retain_exact=reference,
    )


class _AttackerCopy:
    """One form of the in-loop attacker: a copy of the model fine-tuned on full weights ("full"), or
    through a LoRA adapter on a frozen copy of the model's weights ("lora", adapters.relearning_lora:
    the verifier's relearning attack fine-tunes both ways). What the copy has learned beyond the
    model (its drift) persists between its rounds: a weight difference for "full", the adapter
    itself for "lora"."""

    def __init__(self, model: Any, spec: UnlearningSpec, mode: str, names: list[str]) -> None:
        from unlearning_worker.adapters import relearning_lora

        self.spec, self.mode, self.rounds = spec, mode, 0
        self.drift: list[torch.Tensor] | None = None
        if mode == "full":
            self.shadow = copy.deepcopy(model)
            self.params = [p for _n, p in trainable_parameters(self.shadow)]
            self.base = self.params  # the weights the model's gradient is read from
        else:
            self.shadow = relearning_lora(copy.deepcopy(model))
            own = {n.removeprefix("base_model.model.").replace(".base_layer.", "."): p
                   for n, p in self.shadow.named_parameters() if "lora_" not in n}
            self.base = [own[n] for n in names]
            self.params = [p for n, p in self.shadow.named_parameters() if "lora_" in n]
            for p in self.base:
                p.requires_grad_(False)
            self.fresh = [p.detach().clone() for p in self.params]  # the adapter as initialised (B = 0)
        self.optimiser = torch.optim.Adam(self.params, lr=spec.adversary_lr)

    def restart(self) -> None:
        """The attacker back at the model: no drift, fresh optimiser moments."""
        if self.mode == "full":
            self.drift = [torch.zeros_like(p) for p in self.params]
        else:
            with torch.no_grad():
                for p, init in zip(self.params, self.fresh, strict=True):
                    p.copy_(init)
            self.drift = [p.detach().clone() for p in self.params]
        self.optimiser = torch.optim.Adam(self.params, lr=self.spec.adversary_lr)

    @torch.no_grad()
    def follow(self, params: list[torch.nn.Parameter]) -> None:
        """The copy at the model's weights plus its drift."""
        assert self.drift is not None
        if self.mode == "full":
            for theirs, mine, drift in zip(self.params, params, self.drift, strict=True):
                theirs.copy_(mine.detach().to(theirs.device, theirs.dtype) + drift)
            return
        for theirs, mine in zip(self.base, params, strict=True):
            theirs.copy_(mine.detach().to(theirs.device, theirs.dtype))
        for p, drift in zip(self.params, self.drift, strict=True):
            p.copy_(drift)

    @torch.no_grad()
    def keep(self, params: list[torch.nn.Parameter]) -> None:
        """Record what the round's fine-tune reached, for the next round."""
        if self.mode == "full":
            self.drift = [theirs.detach() - mine.detach().to(theirs.device, theirs.dtype)
                          for theirs, mine in zip(self.params, params, strict=True)]
        else:
            self.drift = [p.detach().clone() for p in self.params]

    def state(self) -> dict[str, Any]:
        return {"mode": self.mode, "drift": self.drift, "optimiser": self.optimiser.state_dict(), "rounds": self.rounds}

    def load_state(self, state: dict[str, Any]) -> None:
        self.drift = state["drift"]
        self.optimiser.load_state_dict(state["optimiser"])
        self.rounds = int(state["rounds"])


class RelearningAdversary:
    """The relearning attacker inside the loop (a first-order form of tamper-resistant training,
    Tamirisa et al. 2024): a copy of the model fine-tuned as an attacker would (every token of records
    that hold no subject, in both framings: methods.UnlearningMethod.relearning_loss), whose forget
    loss is taken and its gradient added to the model's (the copy's gradient stands in for the
    gradient through the fine-tune), so the run learns weights whose forgetting survives a fine-tune.

    The attacker persists between rounds: each round starts it at the model's weights plus the drift
    its fine-tune had reached (its optimiser state kept), and the drift is cleared every
    `adversary_horizon` rounds. So a round costs `adversary_steps` fine-tuning steps but the attacker
    stands `adversary_horizon` x `adversary_steps` steps away, as a real one does after a few hundred
    steps: a fresh 8-step attacker moved the weights too little to find what 100-300 steps at
    ordinary rates bring back (docs/DESIGN-NOTES.md).

    The rounds take turns over `spec.adversary_modes` (_AttackerCopy: full weights, LoRA), each form
    with its own copy, drift and horizon: the verifier fine-tunes both ways, and a LoRA fine-tune moves
    the weights along other directions than a full one. Full weights alone by default: the LoRA form,
    measured on one subject, cut a value's z after the verifier's LoRA relearning (2.64 -> 1.63) but
    ran 10% longer to its step ceiling (docs/DESIGN-NOTES.md). A LoRA-trained model (spec.lora) is
    attacked on its own trainable weights only."""

    def __init__(self, model: Any, spec: UnlearningSpec) -> None:
        self.spec = spec
        names = [n for n, _p in trainable_parameters(model)]
        modes = ("full",) if spec.lora else spec.adversary_modes
        self.copies = [_AttackerCopy(model, spec, mode, names) for mode in modes]
        self.rounds = 0

    @property
    def attacked(self) -> list[_AttackerCopy]:
        """The copies that have been fine-tuned at least once."""
        return [c for c in self.copies if c.rounds]

    def state(self) -> dict[str, Any]:
        """What a resumed run needs to attack as the interrupted one would have (each copy's drift,
        its optimiser's moments and rounds; the copy itself is the model plus the drift)."""
        return {"copies": [c.state() for c in self.copies], "rounds": self.rounds}

    def load_state(self, state: dict[str, Any]) -> None:
        saved = state["copies"]
        if [s["mode"] for s in saved] != [c.mode for c in self.copies]:
            raise ValueError("the checkpoint's in-loop attacker does not match this spec's adversary_modes")
        for c, s in zip(self.copies, saved, strict=True):
            c.load_state(s)
        self.rounds = int(state["rounds"])

    def gradient(self, method: UnlearningMethod, params: list[torch.nn.Parameter], chunks: list[list[int]],
                 step: int) -> float:
        """Move this round's attacker on, add its forget gradient on the step's forget items (`chunks`,
        its micro-batches; x adversary_weight) to `params`' and return its forget loss."""
        spec = self.spec
        attacker = self.copies[self.rounds % len(self.copies)]
        self.rounds += 1
        if attacker.drift is None or attacker.rounds % max(spec.adversary_horizon, 1) == 0:
            attacker.restart()
        attacker.rounds += 1
        attacker.follow(params)
        shadow = attacker.shadow
        original = method.ctx.model
        was_training = original.training
        method.ctx.model = shadow
        shadow.train(was_training)
        try:
            for k in range(spec.adversary_steps):
                draw = step * spec.adversary_steps + k
                idx = step_indices(len(method.ctx.attacker_examples), spec.retain_batch_size, draw, seed=spec.seed,
                                   salt="adversary")
                # in passes of at most ATTACKER_PASS_TOKENS padded tokens (corpus texts run to 512 tokens,
                # 32 of them a batch): each pass's mean weighted by its rows, the batch's gradient
                for part in _token_budget(idx, method.ctx.attacker_examples, ATTACKER_PASS_TOKENS):
                    (method.relearning_loss(part, draw) * (len(part) / len(idx))).backward()
                torch.nn.utils.clip_grad_norm_(attacker.params, spec.max_grad_norm)
                attacker.optimiser.step()
                attacker.optimiser.zero_grad(set_to_none=True)
            attacker.keep(params)
            # the whole step's forget items, micro-batch by micro-batch (shares by forget weight): every
            # record is attacked as often whatever the job's size (with one micro-batch of 16 of 70
            # records, ten subjects in one job failed relearning where one subject passed)
            if attacker.base is not attacker.params:
                for p in attacker.base:
                    p.requires_grad_(True)
            total = 0.0
            weight = sum(method.ctx.forget_weights([i for c in chunks for i in c]))
            for chunk in chunks:
                share = sum(method.ctx.forget_weights(chunk)) / weight
                loss, _parts = method.relearned_forget_loss(chunk, step)
                (loss * share).backward()
                total += float(loss.detach()) * share
        finally:
            method.ctx.model = original
            if attacker.base is not attacker.params:
                for p in attacker.base:
                    p.requires_grad_(False)
                for p in attacker.params:
                    p.grad = None  # the forget loss's gradient on the adapter is not the attacker's to follow
        for mine, theirs in zip(params, attacker.base, strict=True):
            if theirs.grad is not None:
                grad = theirs.grad.to(mine.device, mine.dtype) * spec.adversary_weight
                mine.grad = grad if mine.grad is None else mine.grad + grad
                theirs.grad = None
        return total


# (gap, band, relearned gap, relearned band, outliers, relearned outliers): EvalPoint's rank fields
RankFields = tuple[float | None, float | None, float | None, float | None, int | None, int | None]


def worst_reading(readings: Sequence[RankReading]) -> RankReading | None:
    """The attacker copies' readings as one the stop rule and the focus can take: the gap and band of
    the reading farthest from the control (in bands, plus its outliers), the most outliers any copy
    shows, and each value's excess the highest any copy gives it."""
    if not readings:
        return None
    worst = max(readings, key=lambda r: abs(r.gap) / r.band + r.outliers)
    excess = worst.excess
    if all(len(r.excess) == len(excess) for r in readings):
        excess = tuple(max(values) for values in zip(*(r.excess for r in readings), strict=True))
    return replace(worst, outliers=max(r.outliers for r in readings), excess=excess)


def _rank_fields(rank: RankReading | None, relearned: RankReading | None) -> RankFields:
    return (None if rank is None else rank.gap, None if rank is None else rank.band,
            None if relearned is None else relearned.gap, None if relearned is None else relearned.band,
            None if rank is None else rank.outliers, None if relearned is None else relearned.outliers)


def _point_rank(point: EvalPoint) -> RankFields:
    return (point.rank_gap, point.rank_band, point.rank_gap_relearned, point.rank_band_relearned,
            point.rank_outliers, point.rank_outliers_relearned)


def _rank_close(fields: RankFields, spec: UnlearningSpec) -> bool:
    """The subjects no more familiar than the never-seen control (by at most rank_tolerance x the
    chance band) and no less (by at most the band: below it the values mark the person), on the model
    and, where measured, on the in-loop attacker's fine-tuned copy; and no single value standing out
    on either (RankReading.outliers: the mean of a job's values can sit at the control while one of
    them ranks first, which the verifier's per-cell rule fails)."""
    gap, band, relearned, relearned_band, outliers, relearned_outliers = fields
    assert gap is not None and band is not None
    if (outliers or 0) > 0 or (relearned_outliers or 0) > 0:
        return False
    if not -band <= gap <= spec.rank_tolerance * band:
        return False
    return relearned is None or relearned_band is None or (
        -relearned_band <= relearned <= spec.rank_tolerance * relearned_band)


def _overshot(point: EvalPoint) -> bool:
    """The subjects' values below the never-seen control by more than the chance band (model or copy)."""
    gap, band, relearned, relearned_band, _outliers, _relearned_outliers = _point_rank(point)
    return (gap is not None and band is not None and gap < -band) or (
        relearned is not None and relearned_band is not None and relearned < -relearned_band)


def _rank_distance(point: EvalPoint, spec: UnlearningSpec) -> float | None:
    """How far a checked point that meets the extraction target lies from the never-seen control, in
    chance bands (the larger of the model's and the copy's), plus one band for each value that stands
    out on its own (model and copy); None where the rank was not read."""
    gap, band, relearned, relearned_band, outliers, relearned_outliers = _point_rank(point)
    if gap is None or band is None or point.forget_extraction > spec.forget_target:
        return None
    out = abs(gap) / band
    if relearned is not None and relearned_band is not None:
        out = max(out, abs(relearned) / relearned_band)
    return out + (outliers or 0) + (relearned_outliers or 0)


def _close(gap: float | None, earlier: Sequence[float | None], spec: UnlearningSpec,
           rank: RankFields = (None, None, None, None, None, None)) -> bool:
    """Whether the run is as near the never-seen behaviour as the stop rule asks. Where the rank check
    was read (`rank`: RankFields, the gaps, bands and outlier counts), it decides (_rank_close). Otherwise,
    for a method with a never-seen target distribution (counterfactual): within `gap_target`, or
    settled (the gap fell by less than `gap_plateau` of itself per check over the last `plateau_checks`
    checks, `earlier` being the unlearning checks before this one). A method without a target and no
    rank reading is always close (extraction alone decides)."""
    if rank[0] is not None:
        return _rank_close(rank, spec)
    if gap is None or gap <= spec.gap_target:
        return True
    gaps = [g for g in earlier if g is not None][-spec.plateau_checks :]
    if spec.gap_plateau <= 0 or len(gaps) < spec.plateau_checks:
        return False
    return gaps[0] - gap < spec.gap_plateau * spec.plateau_checks * gaps[0]


def _target_met(point: EvalPoint, spec: UnlearningSpec, step: int, earlier: Sequence[float | None] = ()) -> bool:
    """No extraction beyond the target and, for a method that has a never-seen target distribution
    (counterfactual), as near it as it gets (`_close`): zero extraction alone is reached while the
    values are still more likely than a never-seen value (measured: z = 1.4 after 60 steps)."""
    close = _close(point.forget_gap, earlier, spec, _point_rank(point))
    return point.forget_extraction <= spec.forget_target and close and step >= spec.min_steps


def forget_micro_batch(spec: UnlearningSpec, device: torch.device | str, *, vocab_size: int | None = None,
                       tokens: int = 64, layers: int | None = None, hidden: int | None = None,
                       free_bytes: int | None = None, reserved: int = 0) -> int:
    """Forget records a forward pass of the step holds (spec.forget_micro_batch where it names one).
    On a CPU `batch_size`: a pass costs its arithmetic, whatever its size. On a GPU up to 8x that, where
    a pass of 16 short records is bound by kernel launches, while the pass's float32 logits (rows x
    `tokens` x the vocabulary) stay within 1 GiB and its activations for the backward pass (about 34
    bytes per token, layer and hidden unit, the usual estimate for a transformer block) within a quarter
    of the GPU's free memory (`free_bytes`, read from the device where not given) less `reserved` (what
    the run will still allocate: Adam's moments); the rest is margin for the retain rows and the
    gathered targets."""
    if spec.forget_micro_batch:
        return spec.forget_micro_batch
    base = spec.batch_size
    if torch.device(device).type != "cuda":
        return base
    rows = 8 * base
    if vocab_size:
        rows = min(rows, 2**30 // (4 * tokens * vocab_size))
    if layers and hidden:
        if free_bytes is None:
            free_bytes, _total = torch.cuda.mem_get_info(torch.device(device))
        rows = min(rows, max(0, free_bytes - reserved) // 4 // (34 * tokens * layers * hidden))
    return max(base, rows)


def forget_chunks(n: int, spec: UnlearningSpec, step: int, micro_batch: int | None = None) -> list[list[int]]:
    """One step's forget items, in micro-batches of at most `micro_batch` (else `batch_size`; the engine
    passes forget_micro_batch's size): `forget_coverage` of the forget
    set (at least `batch_size` items, all of them when they fit). With coverage 1 every record is
    updated at every step whatever the job's size, as in a one-subject job: with 16 of 70 records a
    step, ten subjects in one job ended 200 steps at a never-seen gap of 2.7 nats where one subject
    reached 0.8, and failed relearning (docs/DESIGN-NOTES.md). The step's items are shuffled by
    (seed, step) when they fill several micro-batches, so the first one (the in-loop attacker's)
    changes from step to step; a pure function of its arguments, as a resumed run needs."""
    per_step = max(spec.batch_size, math.ceil(spec.forget_coverage * n))
    items = step_indices(n, per_step, step, seed=spec.seed, salt="forget")
    size = micro_batch or spec.batch_size
    if len(items) <= size:
        return [items]
    random.Random(f"forget-chunks:{spec.seed}:{step}").shuffle(items)
    return [items[i : i + size] for i in range(0, len(items), size)]


def retain_batch_size(spec: UnlearningSpec, forget_records: int, available: int | None = None) -> int:
    """Retain examples in a step that updates `forget_records` forget records: retain_batch_size, or
    retain_per_forget per forget record where that is more, but never more than the `available` retain
    items (a larger batch would draw items twice)."""
    scaled = math.ceil(spec.retain_per_forget * forget_records)
    return max(spec.retain_batch_size, scaled if available is None else min(scaled, available))


def utility_indices(retain: Sequence[RetainItem], spec: UnlearningSpec) -> list[int]:
    """The retain items the in-run utility checks read: a fixed, seeded set of at most
    spec.eval_retain_items among the records of known retain people (those with a subject_key: the eval
    set's people, whom the verdict's utility check reads), or among all items where none is keyed. The
    texts of unknown people (general text, the worker's corpus sample) are trained on but not read: a
    value the PII analyzer marked in one is no fact the verdict asks about, and their perplexity is not
    the verdict's retain perplexity (stop 46)."""
    keyed = [i for i, r in enumerate(retain) if r.subject_key]
    pool = keyed or list(range(len(retain)))
    if not pool:
        return []
    chosen = step_indices(len(pool), min(spec.eval_retain_items, len(pool)), 0, seed=spec.seed, salt="eval")
    return [pool[j] for j in chosen]


def _retain_batch(retain: list[RetainItem], focus: list[int], spec: UnlearningSpec, step: int,
                  size: int | None = None) -> list[int]:
    """One step's `size` (else retain_batch_size) retain items: `retain_focus` of them from the items
    that hold values of the attributes being forgotten (the values the forget term's updates spill
    onto), the rest from the whole set. The focus draws evenly over its items, the eval set's people
    and the worker's corpus sample (values marked by the PII analyzer) alike: giving the eval set's
    people half of the share whatever their number measured worse against relearning (stop 46)."""
    if not retain:
        return []
    size = size or spec.retain_batch_size
    n_focus = min(len(focus), int(round(spec.retain_focus * size))) if focus else 0
    chosen = [focus[i] for i in step_indices(len(focus), n_focus, step, seed=spec.seed, salt="focus")] if n_focus else []
    rest = step_indices(len(retain), size - n_focus, step, seed=spec.seed, salt="retain")
    return chosen + rest if size - n_focus > 0 else chosen


def retain_shares(retain_idx: list[int], parts: int, most: int) -> list[list[int]]:
    """The step's retain batch over its `parts` forget micro-batches: all of it with the first where it
    holds at most `most` examples (retain_batch_size), else in near-equal slices, one a micro-batch
    (each weighed by its share of the batch: the retain term is a mean over examples)."""
    if parts <= 1 or len(retain_idx) <= most:
        return [retain_idx] + [[] for _ in range(parts - 1)]
    cut = [len(retain_idx) * k // parts for k in range(parts + 1)]
    return [retain_idx[cut[k] : cut[k + 1]] for k in range(parts)]


def start_lr(model: Any, spec: UnlearningSpec) -> float:
    """The rate the run starts at: spec.lr scaled down from the width it was measured at
    (spec.lr_width) to a wider model's hidden size. Never above spec.lr: a narrower model than the one
    the rate was measured on keeps it (a rate is not made more aggressive where nothing measured it).
    spec.lr where the width is unknown or lr_width is 0, and in a LoRA run (an adapter's update is its
    own low-rank product, not a move of every weight of the layer; nothing here measured a rule for it)."""
    width = getattr(getattr(model, "config", None), "hidden_size", None)
    if spec.lora or not spec.lr_width or not isinstance(width, int) or width <= spec.lr_width:
        return spec.lr
    return spec.lr * spec.lr_width / width


def _dip(history: list[EvalPoint], before: EvalPoint, spec: UnlearningSpec) -> int:
    """Checks in a row, up to the latest, below the utility floor or above the perplexity ceiling."""
    n = 0
    for point in reversed(history):
        if point.phase == "before" or utility_ok(point, before, spec):
            break
        n += 1
    return n


def _backoff_due(history: list[EvalPoint], before: EvalPoint, spec: UnlearningSpec) -> bool:
    """A dip `backoff_patience` checks long that is not closing (`_closing`), or one three times that long
    whatever its trend. A dip the retain term is visibly repairing is left to it: rolling it back
    throws away the forgetting done and restarts at half the rate (measured, ten subjects on the demo
    model: retain perplexity x1.42 -> x1.14 over steps 10-80, falling at every check, was rolled back
    to step 0 twice and the run ended its 200 steps unerased)."""
    n = _dip(history, before, spec)
    if n < spec.backoff_patience:
        return False
    return n > 3 * spec.backoff_patience or not _closing(history[len(history) - n:], before, spec)


def _closing(dip: list[EvalPoint], before: EvalPoint, spec: UnlearningSpec) -> bool:
    """Whether each bound the dip's latest check breaks (the retain floor, the perplexity ceiling) is
    being approached fast enough: a least-squares line through the shortfall at the dip's last
    max(2, backoff_patience // 2) checks reaches zero within another backoff_patience checks. The
    perplexity shortfall is read in logs (a ratio), the retain one in answers."""
    recent = dip[-max(2, spec.backoff_patience // 2):]
    if len(recent) < 2:
        return False
    floor = spec.utility_floor * before.retain_exact
    shortfalls = [[floor - p.retain_exact for p in recent]]
    if math.isfinite(before.retain_ppl) and before.retain_ppl > 0:
        ceiling = spec.ppl_ceiling * before.retain_ppl
        shortfalls.append([math.log(p.retain_ppl / ceiling) if p.retain_ppl > 0 else 0.0 for p in recent])
    last = len(recent) - 1
    for values in shortfalls:
        if values[-1] <= 0:
            continue  # this bound is met at the latest check
        slope, intercept = statistics.linear_regression(range(len(values)), values)
        if slope >= 0 or intercept + slope * (last + spec.backoff_patience) > 0:
            return False
    return True


def _below_floor_streak(history: list[EvalPoint], before: EvalPoint, spec: UnlearningSpec) -> int:
    """Checks in a row, since the floor was crossed, at which utility did not recover on the check before
    (retain exact-answer rate up by at least one in 200, or retain perplexity down by at least 0.1%).
    Patience runs out on a dip that keeps falling or stalls, not on a slow recovery (measured: a subject
    whose forget target held from step 28 crossed back over the floor only around step 52, recovering at
    nearly every check). A dip longer than 3 x utility_patience checks runs out whatever its trend."""
    dip = history[len(history) - _dip(history, before, spec):]
    if len(dip) > 3 * spec.utility_patience:
        return len(dip)
    stalled = 0
    for previous, point in zip([None, *dip], dip, strict=False):
        recovering = previous is not None and (
            point.retain_exact >= previous.retain_exact + 0.005 or point.retain_ppl <= previous.retain_ppl * 0.999
        )
        stalled = 0 if recovering else stalled + 1
    return stalled


def _reference_retain(reference_dir: Path | None, model_dir: Path, spec: UnlearningSpec, device: torch.device,
                      evaluator: Evaluator) -> float | None:
    """The retain facts the line's first version (run_unlearning's `reference_dir`) gives on the run's
    retain questions, read as every check reads the model's; None without a reference, where it is the
    base itself, or in a sharded run (each process holds a shard of the model: a second whole one may not fit)."""
    if reference_dir is None or reference_dir.resolve() == model_dir.resolve() or fsdp.active() is not None:
        return None
    reference: Any = None
    try:
        reference, _tokenizer = load_model(reference_dir, spec.replace(lora=False, gradient_checkpointing=False), device)
        return evaluator.retain_exact(reference)
    except torch.OutOfMemoryError:  # a second model beside the base does not fit: the base's own bound
        return None
    finally:
        del reference
        if device.type == "cuda":
            torch.cuda.empty_cache()


def _utility_back(point: EvalPoint, before: EvalPoint, spec: UnlearningSpec) -> bool:
    """Whether a check's retain exact answers are back at `utility_target` x their value before: the run
    stops on its forget target only then (the floor, utility_ok, is what a saved point may not fall below).
    A spec whose floor is 0 leaves utility unjudged and does not wait for it either (a job stored before
    utility_target existed and run with utility_floor 0 reads the field's default)."""
    if spec.utility_floor <= 0.0:
        return True
    return point.retain_exact >= spec.utility_target * before.retain_exact


def _target_held(history: list[EvalPoint], spec: UnlearningSpec, step: int) -> bool:
    """The forget target met at this check and the `target_checks - 1` before it."""
    points = [p for p in history if p.phase != "before"]
    if len(points) < spec.target_checks:
        return False
    first = len(points) - spec.target_checks
    return all(_target_met(points[k], spec, step, [p.forget_gap for p in points[:k]])
               for k in range(first, len(points)))


def _repair(
    model: Any, method: UnlearningMethod, evaluator: Evaluator, spec: UnlearningSpec, before: EvalPoint,
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
        retain_idx = fsdp.split(step_indices(len(retain), spec.retain_batch_size, 10_000 + i, seed=spec.seed,
                                                    salt="repair"))
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
                good_step, good_snapshot, good_point = step, snapshot(model), point
    restore_snapshot(model, good_snapshot)
    return good_step, good_point


