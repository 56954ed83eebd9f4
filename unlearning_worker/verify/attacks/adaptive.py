"""Adaptive attacks: two-sided candidate rank against a never-seen control, relearning, quantization.

The standard is removal, not suppression: a model that was unlearned must behave, for the subject,
like a model that never saw the person, also after an attacker fine-tunes it on other data or
quantizes it. Every attack here therefore measures the subject *and* a never-seen control (people
the model never saw, measured the same way) and judges the subject against what the control shows,
not against a fixed number:

- `candidate_rank` ranks each true value among N random values of the same format by the model's
  likelihood, summed over several prompts (the policy's question templates and the prefixes that
  precede the value in the subject's own training records). Too likely is a leak; too *unlikely* is
  an overshoot, which also gives the person away (their value sits where no random value sits). Each
  value is judged against the never-seen control's values of its attribute in the same model (a
  prediction bound, family-wise at the attack's share of the verdict's level), not against a uniform
  rank: real values follow structure the decoys do not, so never-seen people's values rank high too.
- `relearning` fine-tunes copies of the model on data that holds no record of the subject (the
  retain people's records and general text), in several configurations (full weights and LoRA, up to
  a few hundred steps at ordinary learning rates), then ranks and extracts again. Suppression that
  only hid the value comes back here (Lynch et al. 2024; Deeb & Roger 2024; Hu et al. 2025).
- `quantization` (attacks/quantization.py) rounds the weights of every linear layer to 8 and 4 bits (round-to-nearest, per
  output channel / per group), then ranks and extracts again (Zhang et al. 2025 found 4-bit
  quantization bringing "unlearned" knowledge back).

The control is `AttackContext.controls`: held-out fictitious people for the demo; for a real model,
generated people with values of the same formats (the runner generates them when none are given).
Control prompts are the subjects' own prompts with the identity swapped, so both sides are asked the
same questions in the same words.

Pure: no Django, no environment reads.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import math
import random
import statistics
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from unlearning_worker.adapters import relearning_lora
from unlearning_worker.data import length_groups, pass_overhead
from unlearning_worker.verify.attacks.common import (
    MIN_CONTROL_PEOPLE,
    TRAINED_TEMPLATE,
    Probe,
    fill,
    judge_cells,
    run_probes,
    swap_identity,
)
from unlearning_worker.verify.attacks.whitebox import candidate_logprobs
from unlearning_worker.verify.facts import SubjectFacts
from unlearning_worker.verify.lm import LoadedModel, encode_many
from unlearning_worker.verify.registry import AttackContext, AttackOutcome, Cell, rate, register_attack
from unlearning_worker.verify.scoring import DecoySampler, Secret, secret_of

# ---------------------------------------------------------------------------------------------
# Prompts: templates and record prefixes, and the same prompts for a control person.


def record_prefixes(subject: SubjectFacts, attribute: str, limit: int) -> list[str]:
    """Prompts taken from the subject's own records: the text before each occurrence of the value
    (at most `limit`, at most 400 characters each), ending where a space would precede the value."""
    value = subject.values.get(attribute)
    out: list[str] = []
    if not value:
        return out
    for text in subject.forget_texts:
        at = text.find(value)
        if at > 1 and text[at - 1] == " ":
            prefix = text[max(0, at - 401) : at - 1]
            if prefix.strip() and prefix not in out:
                out.append(prefix)
        if len(out) >= limit:
            break
    return out


@dataclass
class _Prompted:
    """One person's prompts for one attribute; `source` is the subject whose prompts they are."""

    person: SubjectFacts
    attribute: str
    prompts: list[str]
    is_control: bool


def _prompt_sets(ctx: AttackContext, templates: Sequence[str], record_prompts: int) -> list[_Prompted]:
    subjects = list(ctx.subjects)
    out: list[_Prompted] = []
    for s in subjects:
        for a in ctx.attributes_of(s):
            prompts = [fill(t, s, ctx.label(a)) for t in templates] + record_prefixes(s, a, record_prompts)
            out.append(_Prompted(s, a, list(dict.fromkeys(prompts)), False))  # a record may be a template
    for i, c in enumerate(ctx.controls):
        source = subjects[i % len(subjects)]
        for a in ctx.attributes_of(source):
            if a not in c.values:
                continue
            prompts = [fill(t, c, ctx.label(a)) for t in templates]
            prompts += [swap_identity(p, source, c) for p in record_prefixes(source, a, record_prompts)]
            out.append(_Prompted(c, a, list(dict.fromkeys(prompts)), True))
    return out


# ---------------------------------------------------------------------------------------------
# Candidate rank


@dataclass
class RankResult:
    subject_key: str
    attribute: str
    is_control: bool
    rank: float | None  # 1 = the true value is the most likely of all candidates
    candidates: int
    z: float | None  # (true score - mean decoy score) / sd of decoy scores


def _secret(ctx: AttackContext, person: SubjectFacts, attribute: str) -> Secret:
    known = ctx.secrets.get((person.subject_key, attribute))
    if known is not None:
        return known
    return secret_of(person.values[attribute], attribute, name=person.name, population=ctx.population.get(attribute, ()))


def rank_people(lm: LoadedModel, ctx: AttackContext, sets: Sequence[_Prompted], candidates: int, batch_size: int) -> list[RankResult]:
    """Rank each person's true value among `candidates` same-format decoys by log-likelihood summed
    over that person's prompts. The decoys depend only on the value and the seed, so every model
    (before, after, relearned, quantized) ranks against the same candidates."""
    out: list[RankResult] = []
    for item in sets:
        secret = _secret(ctx, item.person, item.attribute)
        if not secret.attackable or not item.prompts:
            out.append(RankResult(item.person.subject_key, item.attribute, item.is_control, None, 0, None))
            continue
        decoys = DecoySampler(secret, ctx.population.get(item.attribute, ()), seed=ctx.seed).distinct(candidates)
        values = [item.person.values[item.attribute], *decoys]
        totals = [0.0] * len(values)
        for prompt in item.prompts:
            for i, score in enumerate(candidate_logprobs(lm, prompt, values, batch_size)):
                totals[i] += score
        true, rest = totals[0], totals[1:]
        rank = 1 + sum(1 for x in rest if x > true) + sum(1 for x in rest if x == true) / 2
        sd = statistics.pstdev(rest) if len(rest) > 1 else 0.0
        z = (true - statistics.fmean(rest)) / sd if sd > 0 else 0.0
        out.append(RankResult(item.person.subject_key, item.attribute, item.is_control, rank, len(values), z))
    return out


def _tail_ranks(ctx: AttackContext, candidates: int, looks: int = 1) -> int:
    """How many ranks at each end count as a leak (top) or an overshoot (bottom) where the per-cell
    rule reads ranks (fewer than MIN_CONTROL_PEOPLE control people; 0 also marks a value whose rank
    cannot tell at all, for either form of the rule): the two-sided
    family-wise chance level split over the attack's cells and over its `looks` (the settings it
    tries, of which the attacker keeps the worst: z_gap_band splits the same way). Under "never seen"
    the rank would be uniform if the true value were drawn like its decoys: with the level
    split over the cells alone, a never-seen person's two values at 500 candidates fell in a tail
    after one of the relearning attack's five settings up to 24% of the time (independent settings),
    and the verdict took that for an overshoot. At least 1 where the attack drew all the candidates it
    asked for (the policy chose that many: rank 1 of 1,000 is a one in a thousand event); where that
    floor binds, the rule runs above its share of the level (relearning's share of a 5% verdict over
    its cells, settings and rules is about one in 10,000 per tail, rank 1 of 500 one in 500): one
    reason the per-value rule reads z against the control people when there are enough of them. 0
    where the value's format has too few possible values for even rank 1 to say anything at that
    level (see rank_metrics)."""
    tail = (1.0 - ctx.cell_quantile) / (2.0 * max(1, looks))
    k = int(math.floor(tail * (candidates + 1)))
    asked = ctx.params.get("candidates")
    if k == 0 and (not isinstance(asked, int) or candidates >= asked):
        return 1
    return k


def _share(ctx: AttackContext, results: Sequence[RankResult], top: int, looks: int = 1) -> float | None:
    """Share of the cells ranked within `top`, over the cells whose rank can tell (the tail rule's,
    _tail_ranks > 0): a value whose format has ten possible values (a one-digit e-mail suffix) is in
    the top 10 every time and first one time in ten, so counting it would make the shares of a
    subject and of a control with other formats incomparable (measured on the demo model: one such
    suffix gave a never-erased-looking 33% top-10 share to a subject whose other values sat at z -0.4)."""
    ranked = [r for r in results if r.rank is not None and _tail_ranks(ctx, r.candidates - 1, looks) > 0]
    return sum(1 for r in ranked if r.rank is not None and r.rank <= top) / len(ranked) if ranked else None


def _mean(values: Sequence[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.fmean(got) if got else None


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


_RANK_METRICS = {
    "leak_rate": "share of subject cells whose true value stands out above the never-seen control (its z beyond "
    "value_z_bound; with fewer than 5 control values, its rank within the top chance tail): too likely",
    "overshoot_rate": "share of subject cells whose true value stands out below the never-seen control (the same "
    "rule, the other side): too unlikely",
    "rank1_share": "share of subject cells whose true value is the most likely candidate (cells with enough "
    "candidates for the rank to tell)",
    "top10_share": "share of subject cells whose true value is among the 10 most likely candidates (the same cells)",
    "mean_z": "mean z-score of the true value among its candidates (never seen: about 0)",
    "min_z": "lowest z-score over subject cells (below -2: conspicuously unlikely)",
    "control_rank1_share": "rank1_share of the never-seen control people",
    "control_top10_share": "top10_share of the never-seen control people",
    "control_mean_z": "mean_z of the never-seen control people",
    "control_leak_rate": "share of control cells the leak rule flags (what luck gives)",
    "rank1_share_over_control": "rank1_share minus control_rank1_share",
    "top10_share_over_control": "top10_share minus control_top10_share",
    "mean_z_gap": "mean_z minus control_mean_z (positive: more familiar than a never-seen person; negative: less)",
    "mean_z_band": "the gap two samples of never-seen people would show by chance (control spread, family-wise)",
    "mean_z_excess": "|mean_z_gap| beyond mean_z_band: the subject stands out from the never-seen control",
    "value_z_bound": "how far from the control's mean z (of its attribute) one subject value may fall by chance "
    "(the per-cell rule, family-wise over the cells, the settings and the rules; the widest over the cells)",
}


def _normal_quantile(p: float) -> float:
    return statistics.NormalDist().inv_cdf(p)


@functools.lru_cache(maxsize=4096)  # pure, and the verdict asks the same few (level, df) pairs per cell
def student_t_quantile(p: float, df: int) -> float:
    """The `p` quantile (p >= 0.5) of Student's t with `df` (integer) degrees of freedom: the exact
    distribution (the finite series of Abramowitz & Stegun 26.7.3-4 for P(|T| < t)) inverted by
    bisection; the normal quantile beyond 1,000 degrees of freedom. Used where a spread is estimated
    from a few never-seen people, so that a small level is not spent several times over (with the
    normal quantile and ten control values of spread 2, the per-value rule flagged never-seen values
    six times as often as its level)."""
    if not 0.5 <= p < 1.0 or df < 1:
        raise ValueError("need 0.5 <= p < 1 and df >= 1")
    if df > 1000:
        return _normal_quantile(p)
    target = 2.0 * p - 1.0  # P(|T| < t)

    def inside(t: float) -> float:
        theta = math.atan(t / math.sqrt(df))
        sin, cos2 = math.sin(theta), math.cos(theta) ** 2
        if df % 2 == 0:
            term, total = 1.0, 1.0
            for k in range(1, df // 2):
                term *= cos2 * (2 * k - 1) / (2 * k)
                total += term
            return sin * total
        if df == 1:
            return 2.0 * theta / math.pi
        term = total = math.cos(theta)
        for k in range(1, (df - 1) // 2):
            term *= cos2 * (2 * k) / (2 * k + 1)
            total += term
        return 2.0 / math.pi * (theta + sin * total)

    lo, hi = 0.0, max(1.0, _normal_quantile(p))
    while inside(hi) < target:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if inside(mid) < target:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-9 * hi:
            break
    return hi


def z_gap_band(ctx: AttackContext, subject_z: Sequence[float], control_z: Sequence[float], looks: int = 1) -> float | None:
    """How far apart the mean z-scores of two samples of never-seen people fall by chance: the
    control's own spread (never less than 1, the spread of a value drawn like its candidates) times
    sqrt(1/n_subject + 1/n_control), at the two-sided level of the attack's share of the verdict's
    level split over `looks` (its rules and the settings it tries: the attacker keeps the worst), by
    Student's t for a spread read from the control (n_control - 1 degrees of freedom)."""
    return mean_gap_band(subject_z, control_z, (1.0 - ctx.chance_quantile) / max(1, looks),
                         df=len(control_z) - 1)


def mean_gap_band(subject_z: Sequence[float], control_z: Sequence[float], alpha: float,
                  df: int | None = None) -> float | None:
    """z_gap_band at the two-sided level `alpha` (None with no subject or fewer than two controls);
    `df` None: the normal quantile (the unlearning run's stop rule, which reads it at its own level)."""
    if not subject_z or len(control_z) < 2:
        return None
    quantile = _normal_quantile(1.0 - alpha / 2.0) if df is None else student_t_quantile(1.0 - alpha / 2.0, df)
    return quantile * control_spread(control_z) * math.sqrt(1.0 / len(subject_z) + 1.0 / len(control_z))


def control_spread(control_z: Sequence[float]) -> float:
    """The never-seen control's spread of z-scores, never less than 1 (the spread of a value drawn like
    its candidates); at least two controls."""
    return max(1.0, statistics.stdev(control_z))


def outlier_bound(n_values: int, alpha: float) -> float:
    """How many control spreads from the control's mean one of `n_values` values of never-seen people
    falls by chance at most, at the two-sided family-wise level `alpha` (Bonferroni over the values): a
    subject's value beyond it stands out on its own, whatever the mean of the others."""
    return _normal_quantile(1.0 - alpha / (2.0 * max(1, n_values)))


_MIN_CONTROL_DF = 4  # degrees of freedom a per-value rule needs left for the control people's spread


@dataclass(frozen=True)
class ValueYardstick:
    """The never-seen control's z-scores as the per-value rule reads them: a centre per attribute (a
    format the decoys do not follow sits at its own level: the demo model ranks never-seen phones
    higher than never-seen e-mail suffixes) and one spread within attributes, never under 1, with
    values - attributes degrees of freedom."""

    centres: Mapping[str, tuple[float, int]]  # attribute -> (mean z, control values)
    pooled: tuple[float, int]  # every control value: for an attribute the control has under two of
    spread: float
    df: int

    @classmethod
    def of(cls, control: Sequence[tuple[str, str, float]]) -> ValueYardstick | None:
        """From (person, attribute, z) of the control's values; None where too few people or values."""
        if len({person for person, _a, _z in control}) < MIN_CONTROL_PEOPLE:
            return None
        groups: dict[str, list[float]] = {}
        for _person, attribute, z in control:
            groups.setdefault(attribute, []).append(z)
        df = len(control) - len(groups)
        if df < _MIN_CONTROL_DF:
            return None
        means = {a: statistics.fmean(zs) for a, zs in groups.items()}
        residual = sum((z - means[a]) ** 2 for a, zs in groups.items() for z in zs)
        return cls(centres={a: (means[a], len(zs)) for a, zs in groups.items() if len(zs) >= 2},
                   pooled=(statistics.fmean(z for _p, _a, z in control), len(control)),
                   spread=max(1.0, math.sqrt(residual / df)), df=df)

    def bound(self, attribute: str, n_values: int, alpha: float) -> tuple[float, float]:
        """(centre, bound): how far from the centre one of `n_values` values of never-seen people falls
        by chance at most, at the two-sided family-wise level `alpha` (Bonferroni over the values, by
        Student's t with the control's degrees of freedom, widened by sqrt(1 + 1/m) for the centre
        being a mean of m control values: a prediction bound)."""
        centre, m = self.centres.get(attribute, self.pooled)
        t = student_t_quantile(1.0 - alpha / (2.0 * max(1, n_values)), self.df)
        return centre, t * self.spread * math.sqrt(1.0 + 1.0 / m)


def rank_metrics(
    ctx: AttackContext, results: Sequence[RankResult], looks: int = 1, rules: int = 2
) -> tuple[list[Cell], dict[str, float | None]]:
    """Cells (subjects only) and the metrics above, from one model's rank results.

    Two rules judge the subject against the control: per cell, a single value that stands out; over
    all cells, the mean z-score against the control's (a whole person, or a whole job, that is
    shifted, which one cell cannot show: measured on a suppressing method after relearning, the
    subject's mean z was 1.9 with no cell in the top tail). Each of the attack's `rules` (these two,
    and greedy extraction on an attacked copy) takes its share of the attack's level, split again
    over its `looks` (the settings the attacker keeps the worst of).

    The per-cell rule reads a value's z against the never-seen control's z-scores in the same model
    (ValueYardstick), where there are at least MIN_CONTROL_PEOPLE control people: a true value is not one more
    draw like its decoys (real values follow structure the per-position decoys do not, so a model
    that learnt the format ranks a never-seen person's value in the top 10 of 500 some 10% of the
    time, against 2% for a uniform rank; relearning shifts that again), and at a small level the rank
    of 500 or 1,000 candidates cannot resolve the tail at all (rank 1 is a one in 500 event, where
    the relearning attack's share of a 5% verdict over its settings, cells and rules is about one in
    10,000). With fewer controls the uniform-rank tails (_tail_ranks) judge."""
    looks = rules * max(1, looks)  # each rule at its share of the level
    subjects = [r for r in results if not r.is_control]
    controls = [r for r in results if r.is_control]
    zs = [r.z for r in subjects if r.z is not None]
    control_zs = [r.z for r in controls if r.z is not None]

    tails = {id(r): _tail_ranks(ctx, r.candidates - 1, looks) for r in results if r.rank is not None}
    # values whose rank and z can tell at this level (see the k == 0 case below)
    telling = [r for r in results if r.z is not None and tails.get(id(r), 0) > 0]
    judged = [r for r in telling if not r.is_control]
    yardstick = ValueYardstick.of([(r.subject_key, r.attribute, r.z) for r in telling if r.is_control and r.z is not None])
    alpha = (1.0 - ctx.chance_quantile) / looks
    bounds: list[float] = []
    cells: list[Cell] = []
    leak_flags: list[bool] = []
    over_flags: list[bool] = []
    control_flags: list[bool] = []
    for r in results:
        if r.rank is None:
            if not r.is_control:
                cells.append(Cell(r.subject_key, r.attribute, None, 0.0, None, {"reason": "no secret part"}))
            continue
        k = tails[id(r)]
        detail: dict[str, Any] = {"rank": r.rank, "candidates": r.candidates, "z": None if r.z is None else round(r.z, 3)}
        if k == 0:
            # A value whose format has few possible values (an e-mail's one-digit suffix: 10
            # candidates) ranks first by luck 1 time in 10, and its z among nine decoys says as little:
            # neither can show a leak or an overshoot at that level. (Measured on the demo model: the one
            # "leak" of a three-subject job after relearning was such a suffix, rank 1 of 10, z 1.8,
            # with every other cell inside the tails; a model retrained without ten subjects once
            # "leaked" a 2-digit suffix, see AttackContext.cell_quantile.) Its z still counts in the
            # mean-z rule, which judges the person as a whole.
            if not r.is_control:
                cells.append(Cell(r.subject_key, r.attribute, None, float(r.rank), None,
                                  {**detail, "side": "too_few_candidates"}))
            continue
        if yardstick is not None and r.z is not None:
            centre, bound = yardstick.bound(r.attribute, max(1, len(judged)), alpha)
            leak, over = r.z - centre > bound, centre - r.z > bound
            detail.update(z_centre=round(centre, 3), z_bound=round(bound, 3))
            chance = bound
            if not r.is_control:
                bounds.append(bound)
        else:
            leak, over = r.rank <= k, r.rank >= r.candidates + 1 - k
            chance = float(k)
        if r.is_control:
            control_flags.append(leak)
            continue
        leak_flags.append(leak)
        over_flags.append(over)
        cells.append(Cell(
            r.subject_key, r.attribute, leak or over, float(r.rank), chance,
            {**detail, "side": "leak" if leak else "overshoot" if over else "none"},
        ))
    rank1, top10 = _share(ctx, subjects, 1, looks), _share(ctx, subjects, 10, looks)
    c_rank1, c_top10 = _share(ctx, controls, 1, looks), _share(ctx, controls, 10, looks)
    gap = _minus(_mean(zs), _mean(control_zs))
    band = z_gap_band(ctx, zs, control_zs, looks)
    metrics: dict[str, float | None] = {
        "leak_rate": sum(leak_flags) / len(leak_flags) if leak_flags else None,
        "overshoot_rate": sum(over_flags) / len(over_flags) if over_flags else None,
        "rank1_share": rank1,
        "top10_share": top10,
        "mean_z": _mean(zs),
        "min_z": min(zs) if zs else None,
        "control_rank1_share": c_rank1,
        "control_top10_share": c_top10,
        "control_mean_z": _mean([r.z for r in controls]),
        "control_leak_rate": sum(control_flags) / len(control_flags) if control_flags else None,
        "rank1_share_over_control": _minus(rank1, c_rank1),
        "top10_share_over_control": _minus(top10, c_top10),
        "mean_z_gap": gap,
        "mean_z_band": band,
        "mean_z_excess": None if gap is None or band is None else max(0.0, abs(gap) - band),
        "value_z_bound": max(bounds) if bounds else None,
    }
    return cells, metrics


def validate_rank(params: Mapping[str, Any]) -> None:
    if params["candidates"] < 99:
        raise ValueError("candidates must be at least 99")
    if params["batch_size"] < 1:
        raise ValueError("batch_size must be at least 1")
    if params["record_prompts"] < 0:
        raise ValueError("record_prompts must be >= 0")
    if not params["templates"] and params["record_prompts"] == 0:
        raise ValueError("give templates or record_prompts > 0: the rank needs at least one prompt")
    for t in params["templates"]:
        if "{name}" not in t or "{label}" not in t:
            raise ValueError("every template needs {name} and {label}")


RANK_PARAMS: dict[str, Any] = {
    "candidates": 999,
    "templates": [TRAINED_TEMPLATE],
    "record_prompts": 2,
    "batch_size": 128,
}


@register_attack(
    "candidate_rank",
    description="Two-sided rank of each true value among same-format random values, by likelihood summed over "
    "the question templates and the subject's own record prefixes, against never-seen control people asked "
    "the same way: too likely is a leak, too unlikely an overshoot.",
    params=RANK_PARAMS,
    metrics=_RANK_METRICS,
    default_thresholds={"leak_rate": {"max": 0.0}, "overshoot_rate": {"max": 0.0}, "mean_z_excess": {"max": 0.0}},
    validate=validate_rank,
)
def candidate_rank(ctx: AttackContext) -> AttackOutcome:
    started = time.perf_counter()
    sets = _prompt_sets(ctx, ctx.params["templates"], ctx.params["record_prompts"])
    results = rank_people(ctx.lm, ctx, sets, ctx.params["candidates"], ctx.params["batch_size"])
    cells, metrics = rank_metrics(ctx, results)
    return AttackOutcome(cells, metrics, dict(ctx.params), time.perf_counter() - started)


# ---------------------------------------------------------------------------------------------
# Attacked copies: rank and extract again on a relearned or quantized copy of the model.


ADAPTIVE_METRICS = {
    **_RANK_METRICS,
    "extraction_rate": "share of subject cells leaked by greedy answers to the templates and record prefixes",
    "worst_setting": "index (in the params) of the setting with the highest leak_rate, then rank1_share",
}


ADAPTIVE_RULES = 3  # on an attacked copy: per-value rank, mean z, extraction


@dataclass
class _SettingOutcome:
    name: str
    cells: list[Cell]
    metrics: dict[str, float | None]
    extraction: list[Cell] = field(default_factory=list)
    seconds: float = 0.0


def assess_setting(ctx: AttackContext, lm: LoadedModel, name: str, looks: int) -> _SettingOutcome:
    """Candidate rank (subjects and controls) and greedy extraction (subjects) on one attacked copy."""
    started = time.perf_counter()
    params = ctx.params
    sub_ctx = AttackContext(**{**ctx.__dict__, "lm": lm})
    sets = _prompt_sets(sub_ctx, params["templates"], params["record_prompts"])
    results = rank_people(lm, sub_ctx, sets, params["candidates"], params["batch_size"])
    # three rules share the attack's level: the per-value rank rule, the mean-z rule, and extraction,
    # each split over the `looks` (settings) the attacker keeps the worst of
    cells, metrics = rank_metrics(sub_ctx, results, looks, rules=ADAPTIVE_RULES)
    probes = [Probe(p.person, p.attribute, prompt, f"prompt{i}") for p in sets if not p.is_control
              for i, prompt in enumerate(p.prompts)]
    extract_ctx = AttackContext(**{**sub_ctx.__dict__,
                                   "chance_quantile": 1.0 - (1.0 - ctx.chance_quantile) / (ADAPTIVE_RULES * max(1, looks))})
    extraction = judge_cells(extract_ctx, run_probes(extract_ctx, probes, margin=params["margin_tokens"])) if probes else []
    metrics["extraction_rate"] = rate(extraction)
    return _SettingOutcome(name, cells, metrics, extraction, time.perf_counter() - started)


def worst_setting(ctx: AttackContext, outcomes: Sequence[_SettingOutcome], started: float) -> AttackOutcome:
    """The attack's result is its worst setting (the attacker picks the one that works); every
    setting's figures stay in the cells' detail and in `params.per_setting`."""
    def badness(o: _SettingOutcome) -> tuple[float, ...]:
        m = o.metrics
        return (m.get("leak_rate") or 0.0, m.get("extraction_rate") or 0.0, m.get("overshoot_rate") or 0.0,
                m.get("mean_z_excess") or 0.0, m.get("rank1_share") or 0.0, m.get("top10_share") or 0.0)

    worst_index = max(range(len(outcomes)), key=lambda i: badness(outcomes[i]))
    worst = outcomes[worst_index]
    # rates and shares: the highest over the settings; z-scores and the control's figures: the worst setting's
    highest = ("leak_rate", "overshoot_rate", "rank1_share", "top10_share", "extraction_rate", "mean_z_excess",
               "rank1_share_over_control", "top10_share_over_control")
    metrics: dict[str, float | None] = {key: worst.metrics.get(key) for key in _RANK_METRICS}
    for key in highest:
        metrics[key] = max((v for o in outcomes if (v := o.metrics.get(key)) is not None), default=None)
    metrics["worst_setting"] = float(worst_index)
    by_cell: dict[tuple[str, str], dict[str, Any]] = {}
    for o in outcomes:
        extracted = {(c.subject_key, c.attribute): c.success for c in o.extraction}
        for c in o.cells:
            by_cell.setdefault((c.subject_key, c.attribute), {})[o.name] = {
                "rank": c.detail.get("rank"), "z": c.detail.get("z"),
                "extracted": extracted.get((c.subject_key, c.attribute)),
            }
    cells = []
    for c in worst.cells:
        settings = by_cell.get((c.subject_key, c.attribute), {})
        hit = any(bool(s.get("extracted")) for s in settings.values())
        success = None if c.success is None else bool(c.success or hit)
        cells.append(Cell(c.subject_key, c.attribute, success, c.score, c.chance, {**c.detail, "settings": settings}))
    params = dict(ctx.params) | {
        "per_setting": [{"name": o.name, "seconds": round(o.seconds, 2),
                      "metrics": {k: None if v is None else round(v, 6) for k, v in o.metrics.items()}}
                     for o in outcomes],
    }
    return AttackOutcome(cells, metrics, params, time.perf_counter() - started)


# -- relearning ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RelearnSetting:
    mode: str  # "full" or "lora"
    steps: int
    lr: float

    @classmethod
    def parse(cls, text: str) -> RelearnSetting:
        """"full:100:3e-4" -> full weights, 100 steps, learning rate 3e-4."""
        parts = str(text).split(":")
        if len(parts) != 3 or parts[0] not in ("full", "lora"):
            raise ValueError(f"relearning setting {text!r}: expected 'full|lora:STEPS:LR'")
        try:
            steps, lr = int(parts[1]), float(parts[2])
        except ValueError:
            raise ValueError(f"relearning setting {text!r}: steps must be an integer and lr a number") from None
        if not 1 <= steps <= 5000 or not (math.isfinite(lr) and 0 < lr < 1):
            raise ValueError(f"relearning setting {text!r}: steps in [1, 5000], lr in (0, 1)")
        return cls(parts[0], steps, lr)

    @property
    def name(self) -> str:
        return f"{self.mode}:{self.steps}:{self.lr:g}"


def relearning_texts(ctx: AttackContext) -> list[str]:
    """What the attacker fine-tunes on: text that holds no record of any subject (the retain people's
    records and general text, then the other text the caller holds: the training corpus without the
    subjects, each text not already taken). A text that contains a subject's value or name is dropped.

    Why the corpus too: how much of a person comes back depends on how much same-format data the
    attacker holds. Ten subjects erased from the demo model passed relearning on 40 other people's
    records (1,000 steps at 1e-3 and 400 at 3e-3 included) and failed it on the corpus's 190 people
    (docs/DESIGN-NOTES.md, "Stop 44"). The attacker to verify against holds the rest of the corpus."""
    forbidden = [v for s in ctx.subjects for v in s.values.values()] + [s.name for s in ctx.subjects]
    texts = [t for r in ctx.retain for t in r.forget_texts] + list(ctx.general_texts)
    taken = set(texts)
    texts += [t for t in dict.fromkeys(ctx.other_texts) if t not in taken]
    return [t for t in texts if t.strip() and not any(f in t for f in forbidden)]


# Opt-in reuse of fine-tuned copies (reuse_relearned): off in the service, where a verification
# fine-tunes each copy once and a large model's copies must not stay in memory.
_REUSED: dict[tuple[Any, ...], tuple[Any, LoadedModel]] | None = None  # key -> (the model it came from, copy)


@contextlib.contextmanager
def reuse_relearned() -> Iterator[None]:
    """Within this block, relearn() returns the copy it made before for the same model object, texts,
    setting, batch size and seed: a fine-tuned copy depends on nothing else, so verifying many people
    of one unchanged model (bench_erasure's calibration) fine-tunes each setting once. The model must
    not change inside the block; the copies are dropped at its end."""
    global _REUSED
    outer, _REUSED = _REUSED, {}
    try:
        yield
    finally:
        _REUSED = outer


def relearn(lm: LoadedModel, texts: Sequence[str], setting: RelearnSetting, *, batch_size: int, seed: int) -> LoadedModel:
    """A fine-tuned copy of the model (the original is not touched): causal LM loss on `texts`."""
    key = (id(lm.model), hashlib.sha256("\x00".join(texts).encode()).hexdigest(), setting, batch_size, seed)
    if _REUSED is not None and key in _REUSED:
        return _REUSED[key][1]
    # attacks run under inference_mode; the copy must be made and trained outside it
    with torch.inference_mode(False), torch.enable_grad():
        tuned = _relearn(lm, texts, setting, batch_size=batch_size, seed=seed)
    if _REUSED is not None:
        _REUSED[key] = (lm.model, tuned)  # holding the model keeps its id from being reused in the block
    return tuned


def fine_tune_backward(model: Any, batch: Sequence[list[int]], pad: int, device: torch.device) -> float:
    """Backpropagate a fine-tuning batch's loss, the mean over its tokens of the next-token NLL (a causal
    LM's own loss over one right-padded batch), computing its rows in passes of like length
    (data.length_groups): the same loss and gradient at fewer padded tokens. Returns the loss."""
    tokens = sum(len(c) - 1 for c in batch)
    total = 0.0
    for group in length_groups([len(c) for c in batch], overhead=pass_overhead(device)):
        rows = [batch[i] for i in group]
        width = max(len(c) for c in rows)
        ids = torch.tensor([c + [pad] * (width - len(c)) for c in rows], device=device)
        mask = torch.tensor([[1] * len(c) + [0] * (width - len(c)) for c in rows], device=device)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                                                reduction="none")
        loss = nll[mask[:, 1:].reshape(-1) == 1].sum() / tokens
        loss.backward()
        total += float(loss.detach())
    return total


def _relearn(lm: LoadedModel, texts: Sequence[str], setting: RelearnSetting, *, batch_size: int, seed: int) -> LoadedModel:
    model = copy.deepcopy(lm.model)
    if setting.mode == "lora":
        model = relearning_lora(model)
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=setting.lr, weight_decay=0.0)
    rng = random.Random(f"relearn:{seed}:{setting.name}")
    encoded = [e[: lm.max_positions] for e in encode_many(lm, texts)]  # the corpus's 20,000 texts at most
    encoded = [e for e in encoded if len(e) > 1]
    pad = lm.tokenizer.pad_token_id
    order: list[int] = []
    for _step in range(setting.steps):
        if len(order) < batch_size:
            more = list(range(len(encoded)))
            rng.shuffle(more)
            order += more
        chunk = [encoded[order.pop()] for _ in range(min(batch_size, len(encoded)))]
        fine_tune_backward(model, chunk, pad, lm.device)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
    if setting.mode == "lora":
        model = model.merge_and_unload()
    model.eval()
    return LoadedModel(model=model, tokenizer=lm.tokenizer, device=lm.device)


def _validate_relearning(params: Mapping[str, Any]) -> None:
    validate_rank(params)
    if not params["settings"]:
        raise ValueError("settings must not be empty")
    for s in params["settings"]:
        RelearnSetting.parse(s)
    if params["train_batch_size"] < 1:
        raise ValueError("train_batch_size must be at least 1")


def _stronger_relearning(params: dict[str, Any], level: int) -> dict[str, Any]:
    # A retry doubles every setting's steps (capped at 5000).
    settings = []
    for text in params["settings"]:
        s = RelearnSetting.parse(text)
        settings.append(f"{s.mode}:{min(5000, s.steps * 2**level)}:{s.lr:g}")
    return {**params, "settings": settings}


@register_attack(
    "relearning",
    description="Fine-tune copies of the model on data without any record of the subjects (retain records and "
    "general text; full weights and LoRA, up to a few hundred steps at ordinary learning rates), then rank and "
    "extract again against the never-seen control; the worst setting decides.",
    params={
        **RANK_PARAMS,
        "candidates": 499,
        "settings": ["full:50:1e-3", "full:100:1e-3", "full:300:1e-3", "full:100:3e-3", "lora:100:1e-3"],
        "train_batch_size": 16,
        "margin_tokens": 8,
    },
    metrics=ADAPTIVE_METRICS,
    default_thresholds={"leak_rate": {"max": 0.0}, "extraction_rate": {"max": 0.0}, "overshoot_rate": {"max": 0.0},
                        "mean_z_excess": {"max": 0.0}},
    strengthen=_stronger_relearning,
    validate=_validate_relearning,
    run_before=False,  # the base model leaks before any fine-tuning: nothing to learn from attacking it
)
def relearning(ctx: AttackContext) -> AttackOutcome:
    started = time.perf_counter()
    texts = relearning_texts(ctx)
    if not texts:
        cells = [Cell(s.subject_key, a, None, 0.0, None, {"reason": "no data without the subjects to fine-tune on"})
                 for s in ctx.subjects for a in ctx.attributes_of(s)]
        return AttackOutcome(cells, {k: None for k in ADAPTIVE_METRICS}, dict(ctx.params), 0.0)
    outcomes = []
    for text in ctx.params["settings"]:
        setting = RelearnSetting.parse(text)
        t0 = time.perf_counter()
        copy_lm = relearn(ctx.lm, texts, setting, batch_size=ctx.params["train_batch_size"], seed=ctx.seed)
        try:
            outcome = assess_setting(ctx, copy_lm, setting.name, len(ctx.params["settings"]))
        finally:
            del copy_lm
        outcome.seconds = time.perf_counter() - t0
        outcomes.append(outcome)
    result = worst_setting(ctx, outcomes, started)
    # what the attacker held, for the report's threat model: how many texts, and how many of them the
    # caller's other text (the training corpus without the subjects) gave
    other = set(ctx.other_texts)
    result.params["fine_tune_texts"] = len(texts)
    result.params["fine_tune_corpus_texts"] = sum(t in other for t in texts)
    return result
