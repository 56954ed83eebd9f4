"""Evidence during a run: extraction probes on the forget and retain sets, retain perplexity, and the
EvalPoint each evaluation records (the engine stops, repairs and rolls back on these)."""

from __future__ import annotations

import contextlib
import math
import random
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from unlearning_worker.data import Example, ForgetItem, RetainItem, collate, prompt_ids
from unlearning_worker.generation import generate_batch
from unlearning_worker.leakage import chance_share, judge_leak
from unlearning_worker.methods import (
    losses,
)
from unlearning_worker.spec import UnlearningSpec
from unlearning_worker.verify.attacks.adaptive import control_spread, mean_gap_band, outlier_bound
from unlearning_worker.verify.attacks.whitebox import sequence_scores_many
from unlearning_worker.verify.lm import LoadedModel
from unlearning_worker.verify.scoring import DecoySampler, secret_of

RANK_CONTROL_SEED = 7_919  # the rank check's never-seen people: not the counterfactual teacher's (104,729)


class PhaseClock:
    """Wall seconds a run spends in each of its phases: where an erasure's cost goes.

    Phases (engine and Evaluator): "prepare" (load, references, the starting point), "steps" (the
    forget and retain terms), "adversary" (the in-loop attacker), "check:extraction" (greedy probes),
    "check:sampled", "check:rank" (the model), "check:rank_attacker" (the attacker's copy),
    "check:retain" (retain probes and perplexity), "save", and "other": the rest of the wall time
    (the method's gap and check hooks, snapshots, checkpoints, repair steps), so that the phases sum
    to the run's wall time. A resumed run counts its own process only.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(phase, time.perf_counter() - started)

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds

    def rounded(self, wall_s: float | None = None) -> dict[str, float]:
        """Seconds by phase, largest first; with `wall_s`, the unattributed rest as "other"."""
        seconds = dict(self.seconds)
        if wall_s is not None:
            seconds["other"] = seconds.get("other", 0.0) + max(0.0, wall_s - sum(seconds.values()))
        return {phase: round(s, 2) for phase, s in sorted(seconds.items(), key=lambda kv: -kv[1])}


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


def question_probes(tokenizer: Any, forget: Sequence[ForgetItem], spec: UnlearningSpec) -> list[Probe]:
    """The verifier's questions about the forget subjects (spec.question_templates, each attribute asked
    by its spec.question_labels words): one probe per (subject, attribute, template), judging every
    value of that attribute the subject's records write. Only the attributes the run targets
    (spec.attributes; all of them where it names none) and only subjects whose records name them."""
    if not spec.question_templates:
        return []
    wanted = set(spec.attributes)
    people: dict[str, tuple[str, dict[str, set[str]]]] = {}
    for item in forget:
        if not item.subject_name.strip():
            continue
        _name, values = people.setdefault(item.subject_key, (item.subject_name, {}))
        for attribute, value in item.values.items():
            if (not wanted or attribute in wanted) and attribute in spec.question_labels:
                values.setdefault(attribute, set()).add(value)
    return _ask(tokenizer, people, spec.question_templates, spec)


def retain_question_probes(tokenizer: Any, retain: Sequence[RetainItem], spec: UnlearningSpec) -> list[Probe]:
    """The verdict's utility question (spec.retain_question) about the retain people, as its utility check
    asks it: one probe per (person, attribute) for every value the person's records write of an attribute
    with a question label, whatever the run targets. The people: a seeded order of the named retain
    people, taken whole until their pairs reach spec.eval_retain_items. Empty where the spec has no
    retain question or no retain item names its person (the caller then replays retain records)."""
    if not spec.retain_question:
        return []
    people: dict[str, tuple[str, dict[str, set[str]]]] = {}
    for item in retain:
        if not item.subject_key or not item.subject_name.strip():
            continue
        _name, values = people.setdefault(item.subject_key, (item.subject_name, {}))
        for attribute, value in item.values().items():
            if attribute in spec.question_labels:
                values.setdefault(attribute, set()).add(value)
    keys = [k for k in sorted(people) if people[k][1]]
    chosen: dict[str, tuple[str, dict[str, set[str]]]] = {}
    pairs = 0
    random.Random(f"eval-people:{spec.seed}").shuffle(keys)
    for key in keys:
        if pairs >= spec.eval_retain_items:
            break
        chosen[key] = people[key]
        pairs += len(people[key][1])
    return _ask(tokenizer, chosen, (spec.retain_question,), spec)


def _ask(tokenizer: Any, people: dict[str, tuple[str, dict[str, set[str]]]], templates: Sequence[str],
         spec: UnlearningSpec) -> list[Probe]:
    """One greedy probe per (person, attribute, template), judging each value of that attribute the
    person's records write, with the verifier's margin (8 tokens past the longest value)."""
    out: list[Probe] = []
    for key in sorted(people):
        name, values = people[key]
        for attribute in sorted(values):
            judged = [(attribute, v, chance_share(v, attribute)) for v in sorted(values[attribute])]
            longest = max(len(tokenizer(" " + v, add_special_tokens=False)["input_ids"]) for v in values[attribute])
            for template in templates:
                prompt = template.format(name=name, label=spec.question_labels[attribute])
                out.append(Probe(prompt, judged, min(longest + 8, 256), True))
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


def check_batch_sizes(spec: UnlearningSpec, device: torch.device | str, vocab_size: int | None = None) -> tuple[int, int]:
    """(rank-check rows, generated sequences) a check's forward pass holds: the spec's where it names
    them, else by device (spec.rank_batch_size): the CPU's 128 and 64, on a GPU up to 8x that while a
    pass's float32 logits (rows x about 16 positions x the vocabulary) stay within 1 GiB, so that a
    150k-token vocabulary keeps the CPU's sizes where the demo's 1k one takes the full 8x."""
    rows, generated = 128, 64
    if torch.device(device).type == "cuda":
        room = 2**24 // vocab_size if vocab_size else 2**24
        rows, generated = (max(base, min(8 * base, room)) for base in (rows, generated))
    return spec.rank_batch_size or rows, spec.eval_batch_size or generated


def run_probes(
    model: Any, tokenizer: Any, probes: list[Probe], *, threshold: float, samples: int = 0,
    temperature: float = 1.0, seed: int = 0, per_probe: bool = False, batch_size: int = 64,
) -> tuple[float, float, float]:
    """(pairs leaked under the judge, pairs produced verbatim, pairs). Sampled: a pair leaks if any sample
    leaks. `per_probe`: each probe counts once whatever its number of values (its pairs weigh 1/n)."""
    leaked = exact = total = 0.0
    groups: dict[bool, list[Probe]] = {}
    for probe in probes:  # one batched pass per stop rule, each probe cut at its own budget, alike budgets together
        groups.setdefault(probe.stop_at_newline, []).append(probe)
    for stop_nl, group in sorted(groups.items()):
        group = sorted(group, key=lambda p: p.max_new_tokens)
        outputs = generate_batch(
            model, tokenizer, [p.prompt for p in group], max_new_tokens=[p.max_new_tokens for p in group],
            stop_at_newline=stop_nl,
            do_sample=samples > 0, temperature=temperature, num_return_sequences=max(1, samples), seed=seed,
            batch_size=batch_size,
        )
        for probe, texts in zip(group, outputs, strict=True):
            weight = 1.0 / len(probe.values) if per_probe and probe.values else 1.0
            for attribute, value, chance in probe.values:
                total += weight
                if any(judge_leak(value, t, attribute, threshold=threshold, chance=chance).leaked for t in texts):
                    leaked += weight
                if any(value in t for t in texts):
                    exact += weight
    return leaked, exact, total


@torch.no_grad()
def perplexity(model: Any, examples: list[Example], pad_id: int, device: torch.device) -> float:
    """exp(mean NLL over every answer token of `examples`), in passes of 32 examples of like length."""
    if not examples:
        return float("nan")
    was_training = model.training
    model.eval()
    total_nll = 0.0
    total_tokens = 0.0
    examples = sorted(examples, key=lambda e: len(e.input_ids))  # a sum: the order is free, the padding not
    for start in range(0, len(examples), 32):
        chunk = examples[start : start + 32]
        batch = collate(chunk, [e.answer_mask for e in chunk], [1.0] * len(chunk), pad_id=pad_id, device=device)
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        seq_lp, count = losses.sequence_logprob(losses.token_logprobs(logits, batch.input_ids), batch.target_mask)
        total_nll -= float(seq_lp.sum())
        total_tokens += float(count.sum())
    model.train(was_training)
    return math.exp(total_nll / max(total_tokens, 1.0))


@dataclass(frozen=True)
class RankGroup:
    """One person's value of one attribute, as the rank check scores it: for each of the person's
    records (at most spec.rank_prompts), the tokens before the value and the tokens of the true value
    (first) and of each decoy written there."""

    contexts: list[list[int]]
    candidates: list[list[list[int]]]
    is_control: bool


@dataclass(frozen=True)
class RankReading:
    mean_z: float  # the subjects' values, mean z-score among their decoys
    control_mean_z: float  # never-seen people asked the same way
    band: float  # the gap two samples of never-seen people show by chance (at spec.rank_alpha)
    # subject values that stand out on their own: further from the control's mean than never-seen
    # values fall by chance (adaptive.outlier_bound, family-wise at spec.rank_alpha), either side
    outliers: int = 0
    # per subject value (RankCheck.subject_items' order): its z over the control's mean, in control
    # spreads (never less than 1)
    excess: tuple[float, ...] = ()

    @property
    def gap(self) -> float:
        return self.mean_z - self.control_mean_z


class RankCheck:
    """The verifier's two-sided candidate rank (verify/attacks/adaptive.py), small enough for every
    evidence check, so that the run stops where the verdict will look: each targeted value of the
    forget records is ranked among `rank_candidates` decoys of its format by the model's likelihood
    after the record's own text, summed over up to `rank_prompts` records; the never-seen control is
    the same records rewritten for fictitious people (name and every value swapped, their own value
    ranked among its decoys). The reading is the subjects' mean z-score against the control's. Its
    bands stay the normal-quantile ones at `rank_alpha` (pooled over attributes), a stricter reading
    than the verifier's since stop 36 (Student's t at an attack's share of the verdict's level, per
    attribute): on the same readings a point within it is within the verdict's wider bands, and the
    runs measured with it stay comparable."""

    def __init__(self, tokenizer: Any, forget: Sequence[ForgetItem], retain: Sequence[RetainItem],
                 retain_examples: Sequence[Example], spec: UnlearningSpec) -> None:
        """`forget` in the engine's order: subject_items holds, per subject value ranked, the indices of
        every forget record that writes it (the records RankReading.excess points the focus at)."""
        from unlearning_worker.methods.counterfactual import never_seen_people, rewrite_record

        self.tokenizer = tokenizer
        self.spec = spec
        wanted = set(spec.attributes)
        # the decoys' characters come from every retain value, the ones the PII analyzer marked in the worker's
        # corpus sample included: a wider population than the verifier's (the subjects and the eval set's people,
        # verify.runner._secrets), and a stricter reading; drawn from the verifier's alone, the ten-subject job
        # of docs/measurements/*verifier-population-rejected-stop46.log failed (the copy +2.03 at the ceiling)
        population: dict[str, list[str]] = {}
        for r in retain:
            for attribute, value in r.values().items():
                population.setdefault(attribute, []).append(value)
        # (subject, attribute, value) -> the records (item, span) that write it
        where: dict[tuple[str, str, str], list[tuple[ForgetItem, tuple[int, int, str]]]] = {}
        writers: dict[tuple[str, str, str], set[int]] = {}
        for index, item in enumerate(forget):
            for span in sorted(item.pii_spans):
                if wanted and span[2] not in wanted:
                    continue
                value = item.completion[span[0] : span[1]]
                where.setdefault((item.subject_key, span[2], value), []).append((item, span))
                writers.setdefault((item.subject_key, span[2], value), set()).add(index)
        people = never_seen_people(tokenizer, forget, retain_examples, seed=RANK_CONTROL_SEED + spec.seed)
        self.groups: list[RankGroup] = []
        self.subject_items: list[list[int]] = []
        subject_groups = []
        for (key, attribute, value), records in sorted(where.items()):
            records = records[: spec.rank_prompts]
            texts = [(item.prompt, item.completion, span) for item, span in records]
            group = self._group(texts, value, attribute, records[0][0].subject_name,
                                population.get(attribute, []), False)
            if group is not None:
                self.groups.append(group)
                self.subject_items.append(sorted(writers[(key, attribute, value)]))
                subject_groups.append((attribute, records))
        # controls: at least rank_controls, at least one per subject value, the records cycled
        rng = random.Random(f"rank-controls:{spec.seed}")
        n_controls = max(spec.rank_controls, len(subject_groups)) if subject_groups and people else 0
        for k in range(n_controls):
            attribute, records = subject_groups[k % len(subject_groups)]
            person = people[k % len(people)]
            rewritten = []
            for item, span in records:
                prompt, completion, spans = rewrite_record(item, None, person, rng)
                at = _span_index(item, span)
                if at is None:
                    continue
                a, b, _attr = spans[at]
                rewritten.append((prompt, completion, (a, b, attribute)))
            values = {c[s[0] : s[1]] for _p, c, s in rewritten}
            if len(values) != 1:  # a value drawn at random per record: keep the first record alone
                rewritten = rewritten[:1]
            if not rewritten:
                continue
            control_value = rewritten[0][1][rewritten[0][2][0] : rewritten[0][2][1]]
            group = self._group(rewritten, control_value, attribute, person.name, population.get(attribute, []), True)
            if group is not None:
                self.groups.append(group)

    def _group(self, texts: list[tuple[str, str, tuple[int, int, str]]], value: str, attribute: str, name: str,
                     population: list[str], is_control: bool) -> RankGroup | None:
        secret = secret_of(value, attribute, name=name, population=population)
        if not secret.attackable:
            return None
        decoys = DecoySampler(secret, population, seed=self.spec.seed).distinct(self.spec.rank_candidates)
        if len(decoys) < 2:
            return None
        contexts, candidates = [], []
        for prompt, completion, (start, _end, _attr) in texts:
            cut = start - 1 if start > 0 and completion[start - 1] == " " else start
            lead = completion[cut:start]
            contexts.append(prompt_ids(self.tokenizer, prompt)
                            + list(self.tokenizer(completion[:cut], add_special_tokens=False)["input_ids"]))
            encoded = self.tokenizer([lead + v for v in [value, *decoys]], add_special_tokens=False)["input_ids"]
            candidates.append([list(ids) for ids in encoded])
        return RankGroup(contexts, candidates, is_control)

    @property
    def measurable(self) -> bool:
        return any(not g.is_control for g in self.groups) and sum(g.is_control for g in self.groups) >= 2

    def __call__(self, model: Any, device: torch.device) -> RankReading | None:
        """The reading for `model` (its training mode kept), or None with no subject value or control to rank."""
        if not self.measurable:
            return None
        was_training = model.training
        lm = LoadedModel(model=model, tokenizer=self.tokenizer, device=device)
        model.eval()
        try:
            zs: dict[bool, list[float]] = {False: [], True: []}
            # every record of every group in one call: the records share left-padded passes and batches
            requests = [(context, candidates) for group in self.groups
                        for context, candidates in zip(group.contexts, group.candidates, strict=True)]
            scored = iter(sequence_scores_many(lm, requests, check_batch_sizes(self.spec, device, len(self.tokenizer))[0]))
            for group in self.groups:
                totals = [0.0] * len(group.candidates[0])
                for _record in group.contexts:
                    for i, score in enumerate(next(scored)):
                        totals[i] += score
                true, rest = totals[0], totals[1:]
                sd = statistics.pstdev(rest)
                zs[group.is_control].append((true - statistics.fmean(rest)) / sd if sd > 0 else 0.0)
        finally:
            model.train(was_training)
        band = mean_gap_band(zs[False], zs[True], self.spec.rank_alpha)
        assert band is not None
        centre, spread = statistics.fmean(zs[True]), control_spread(zs[True])
        excess = tuple((z - centre) / spread for z in zs[False])
        bound = outlier_bound(len(excess), self.spec.rank_alpha)
        return RankReading(statistics.fmean(zs[False]), centre, band,
                           outliers=sum(abs(e) > bound for e in excess), excess=excess)

    def focus(self, reading: RankReading | None, strength: float) -> dict[int, float]:
        """Forget record -> its loss weight's multiplier: 1 + `strength` x how far the most familiar
        value it writes stands above the never-seen control in `reading` (in control spreads; values
        at or below the control add nothing). The records the attacker still reads the person in get
        the forget effort; a job's mean can sit at the control while one value of one person stays
        first of its candidates (ten subjects, demo model: a phone at rank 1 of 500 after relearning)."""
        if reading is None or strength <= 0 or len(reading.excess) != len(self.subject_items):
            return {}
        out: dict[int, float] = {}
        for items, excess in zip(self.subject_items, reading.excess, strict=True):
            for i in items:
                out[i] = max(out.get(i, 1.0), 1.0 + strength * max(0.0, excess))
        return out


def _span_index(item: ForgetItem, span: tuple[int, int, str]) -> int | None:
    """Where `span` lies among the record's spans as methods.counterfactual.rewrite_record orders them."""
    from unlearning_worker.methods.counterfactual import sorted_spans

    spans = sorted_spans(item)
    return spans.index(span) if span in spans else None


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
    # whether a reading (the gap, the rank and the relearned rank) lets this check meet the stop rule
    # (engine._close); None: the gap within gap_target
    close: Callable[[float | None, RankReading | None, RankReading | None], bool] | None = None
    # the rank check on the model and on the in-loop attacker's copy (None: none, or no attacker yet)
    rank: Callable[[], tuple[RankReading | None, RankReading | None]] | None = None
    clock: PhaseClock = field(default_factory=PhaseClock)

    def generation_batch(self) -> int:
        """Sequences a generation pass of this check holds (check_batch_sizes, by the model's vocabulary)."""
        return check_batch_sizes(self.spec, self.device, len(self.tokenizer) if self.tokenizer is not None else None)[1]

    def sampled(self, step: int) -> float | None:
        """The share of identifier values leaked in any of eval_samples samples (None: no sampling)."""
        spec = self.spec
        sampled_probes = identifier_probes(self.forget_probes, spec.attributes)
        if not spec.eval_samples or not sampled_probes:
            return None
        with self.clock("check:sampled"):
            leaked, _, total = run_probes(
                self.model, self.tokenizer, sampled_probes, threshold=spec.leak_threshold,
                samples=spec.eval_samples, temperature=spec.eval_temperature, seed=spec.seed + step,
                batch_size=self.generation_batch(),
            )
        return leaked / total

    def with_sampled(self, point: EvalPoint) -> EvalPoint:
        """`point` (the model's state now) with its sampled reading, taken now where it was skipped."""
        if point.forget_extraction_sampled is not None:
            return point
        sampled = self.sampled(point.step)
        if sampled is None:
            return point
        return replace(point, forget_extraction_sampled=sampled, forget_extraction=max(point.forget_extraction, sampled))

    def _retain_answers(self, model: Any) -> tuple[float, float, float]:
        """(leaked, exact, total) over the retain probes: each probe counts once, a (person, attribute)
        question as in the verdict's utility check, or, replayed, a retain record (a biography's six values
        come from one generation, where an early token decides the rest, and counted per value they made
        half the reading: demo and medium corpora, 1 biography per 6 QA records)."""
        return run_probes(model, self.tokenizer, self.retain_probes, threshold=self.spec.leak_threshold, per_probe=True,
                          batch_size=self.generation_batch())

    def retain_exact(self, model: Any) -> float:
        """The share of the retain probes `model` answers exactly, as a check reads the run's model: another
        model of the same line and tokenizer (the line's first version, engine._reference_retain)."""
        _leaked, exact, total = self._retain_answers(model)
        return exact / total if total else 1.0

    def __call__(self, step: int, step_losses: dict[str, float], phase: str) -> EvalPoint:
        spec = self.spec
        with self.clock("check:extraction"):
            leaked, _exact, total = run_probes(self.model, self.tokenizer, self.forget_probes,
                                               threshold=spec.leak_threshold,
                                               batch_size=self.generation_batch())
        greedy = leaked / total if total else 0.0
        sampled: float | None = None
        gap = self.gap()
        # The rank check, at every check: it decides the stop rule with extraction, and it sees an
        # overshoot, which no extraction probe does (a job of ten subjects kept one greedy hit of a shared
        # value, a region or a city, at 1-2% of its pairs for 500 steps: a check read only at 0 leaks
        # was read at 9 of 50 checks, and never after step 220)
        rank, relearned = self.rank() if self.rank is not None else (None, None)
        # Sampling can only add leaks: while greedy decoding alone misses the target, or the method is
        # still far from its never-seen target (not within gap_target, not settled; with the rank check,
        # the rank not yet near the control), the check cannot meet the stop rule and the sampled probes
        # (20x the generation) are skipped, except for the "before" point (the baseline every report
        # compares with) and the last step (the evidence of a run that ends at max_steps). Such points
        # record forget_extraction_sampled = None.
        close = self.close(gap, rank, relearned) if self.close is not None else gap is None or gap <= spec.gap_target
        decided = greedy > spec.forget_target or not close
        if not decided or phase == "before" or step == spec.max_steps:
            sampled = self.sampled(step)
        with self.clock("check:retain"):
            r_leaked, r_exact, r_total = self._retain_answers(self.model)
            retain_ppl = perplexity(self.model, self.retain_examples, self.pad_id, self.device)
        return EvalPoint(
            step=step,
            losses=dict(step_losses),
            forget_extraction=max(greedy, sampled or 0.0),
            forget_extraction_greedy=greedy,
            forget_extraction_sampled=sampled,
            retain_extraction=r_leaked / r_total if r_total else 1.0,
            retain_exact=r_exact / r_total if r_total else 1.0,
            retain_ppl=retain_ppl,
            phase=phase,
            forget_gap=gap,
            rank_gap=None if rank is None else rank.gap,
            rank_band=None if rank is None else rank.band,
            rank_gap_relearned=None if relearned is None else relearned.gap,
            rank_band_relearned=None if relearned is None else relearned.band,
            rank_outliers=None if rank is None else rank.outliers,
            rank_outliers_relearned=None if relearned is None else relearned.outliers,
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
    retain_exact: float  # share of retain values produced verbatim by greedy decoding (each probe weighing one)
    retain_ppl: float  # perplexity of the retain completions (teacher-forced)
    phase: str = "unlearn"  # "before", "unlearn" or "repair"
    # nats per value token between the model and the method's never-seen target (None: the method has none)
    forget_gap: float | None = None
    # the rank check (RankCheck; None where not taken): the subjects' mean z-score minus the never-seen
    # control's, and the chance band, on the model and on the in-loop attacker's fine-tuned copy
    rank_gap: float | None = None
    rank_band: float | None = None
    rank_gap_relearned: float | None = None
    rank_band_relearned: float | None = None
    # subject values that stand out on their own (RankReading.outliers), on the model and on the copy
    rank_outliers: int | None = None
    rank_outliers_relearned: int | None = None


