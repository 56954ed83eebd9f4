"""Evidence during a run: extraction probes on the forget and retain sets, retain perplexity, and the
EvalPoint each evaluation records (the engine stops, repairs and rolls back on these)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

from unlearning_worker.data import Example, collate
from unlearning_worker.generation import generate_batch
from unlearning_worker.leakage import chance_share, judge_leak
from unlearning_worker.methods import (
    losses,
)
from unlearning_worker.spec import UnlearningSpec


@dataclass
class Probe:
    prompt: str
    values: list[tuple[str, str, float]]  # (attribute, value, chance level)
    max_new_tokens: int
    stop_at_newline: bool


def probes(
    tokenizer: Any, prompts: Iterable[str], completions: Iterable[str], values: Iterable[dict[str, str]]
) -> list[Probe]:
    out: list[Probe] = []
    for prompt, completion, secret in zip(prompts, completions, values, strict=True):
        if not secret:
            continue
        n_tokens = len(tokenizer(completion, add_special_tokens=False)["input_ids"])
        out.append(Probe(
            prompt=prompt,
            values=[(a, v, chance_share(v, a)) for a, v in sorted(secret.items())],
            max_new_tokens=min(n_tokens + 4, 256),
            # one-line answers stop at their newline; multi-line completions are generated in full
            stop_at_newline="\n" not in completion.rstrip("\n"),
        ))
    return out


def identifier_probes(all_probes: list[Probe], attributes: Iterable[str]) -> list[Probe]:
    """The probes' values of the identifying attributes only (all of them when `attributes` is empty),
    for the sampled check. A value many people share (a region among eight, a street) comes up by chance
    in one of 20 samples from a model that never saw the person (measured on the demo model: the
    region, 1 hit in 20 at a 12% chance share, held the stop rule's sampled check above 0 for 300 steps
    after the verifier's sampling attack, on identifiers, found nothing); greedy probes keep every value."""
    wanted = set(attributes)
    if not wanted:
        return list(all_probes)
    out = []
    for probe in all_probes:
        values = [v for v in probe.values if v[0] in wanted]
        if values:
            out.append(Probe(probe.prompt, values, probe.max_new_tokens, probe.stop_at_newline))
    return out


def run_probes(
    model: Any, tokenizer: Any, probes: list[Probe], *, threshold: float, samples: int = 0,
    temperature: float = 1.0, seed: int = 0,
) -> tuple[int, int, int]:
    """(pairs leaked under the judge, pairs produced verbatim, pairs). Sampled: a pair leaks if any sample leaks."""
    leaked = exact = total = 0
    groups: dict[tuple[int, bool], list[Probe]] = {}
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
def perplexity(model: Any, examples: list[Example], pad_id: int, device: torch.device) -> float:
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
class Evaluator:
    model: Any
    tokenizer: Any
    spec: UnlearningSpec
    forget_probes: list[Probe]
    retain_probes: list[Probe]
    retain_examples: list[Example]
    pad_id: int
    device: torch.device
    gap: Callable[[], float | None] = lambda: None  # the method's distance to its target, if it has one
    # whether a gap lets this check meet the stop rule (engine: within gap_target, or settled); None:
    # within gap_target
    close: Callable[[float | None], bool] | None = None

    def __call__(self, step: int, step_losses: dict[str, float], phase: str) -> EvalPoint:
        spec = self.spec
        leaked, _exact, total = run_probes(self.model, self.tokenizer, self.forget_probes, threshold=spec.leak_threshold)
        greedy = leaked / total if total else 0.0
        sampled: float | None = None
        gap = self.gap()
        # Sampling can only add leaks: while greedy decoding alone misses the target, or the method is
        # still far from its never-seen target (not within gap_target, not settled), the check cannot
        # meet the stop rule and the sampled probes (20x the generation) are skipped, except for the
        # "before" point (the baseline every report compares with) and the last step (the evidence of a
        # run that ends at max_steps). Such points record forget_extraction_sampled = None.
        close = self.close(gap) if self.close is not None else gap is None or gap <= spec.gap_target
        decided = greedy > spec.forget_target or not close
        sampled_probes = identifier_probes(self.forget_probes, spec.attributes)
        if spec.eval_samples and sampled_probes and (not decided or phase == "before" or step == spec.max_steps):
            s_leaked, _, s_total = run_probes(
                self.model, self.tokenizer, sampled_probes, threshold=spec.leak_threshold,
                samples=spec.eval_samples, temperature=spec.eval_temperature, seed=spec.seed + step,
            )
            sampled = s_leaked / s_total
        r_leaked, r_exact, r_total = run_probes(
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
            retain_ppl=perplexity(self.model, self.retain_examples, self.pad_id, self.device),
            phase=phase,
            forget_gap=gap,
        )


def utility_ok(point: EvalPoint, before: EvalPoint, spec: UnlearningSpec) -> bool:
    if point.retain_exact < spec.utility_floor * before.retain_exact:
        return False
    return not (math.isfinite(before.retain_ppl) and point.retain_ppl > spec.ppl_ceiling * before.retain_ppl)


@dataclass(frozen=True)
class EvalPoint:
    step: int
    losses: dict[str, float]
    forget_extraction: float  # share of (forget prompt, secret value) pairs leaked, greedy or sampled
    forget_extraction_greedy: float
    # share of identifier values (spec.attributes) leaked in any of eval_samples samples; None when not
    # sampled (eval_samples == 0, or the check could not meet the stop rule anyway)
    forget_extraction_sampled: float | None
    retain_extraction: float  # share of retain (prompt, value) pairs leaked (same judge as forget)
    retain_exact: float  # share of retain values produced verbatim by greedy decoding
    retain_ppl: float  # perplexity of the retain completions (teacher-forced)
    phase: str = "unlearn"  # "before", "unlearn" or "repair"
    # nats per value token between the model and the method's never-seen target (None: the method has none)
    forget_gap: float | None = None


