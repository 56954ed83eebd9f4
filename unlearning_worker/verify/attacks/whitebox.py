"""White-box and likelihood attacks: logit lens, exposure, membership inference; and utility.

Pure: no Django, no environment reads.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch

from unlearning_worker.generation import cache_keyword, cache_of
from unlearning_worker.leakage import leak_share
from unlearning_worker.verify.attacks.common import (
    MIN_CONTROL_PEOPLE,
    SPREAD_CONFIDENCE,
    TRAINED_TEMPLATE,
    Probe,
    control_records,
    fictitious_people,
    fill,
    judge_people,
    run_probes,
    swap_identity,
)
from unlearning_worker.verify.facts import SubjectFacts
from unlearning_worker.verify.lm import (
    LoadedModel,
    encode,
    find_final_norm_and_head,
    perplexity,
    token_logprobs,
)
from unlearning_worker.verify.registry import AttackContext, AttackOutcome, Cell, rate, register_attack
from unlearning_worker.verify.scoring import DecoySampler, Secret, variance_upper_bound

# ---------------------------------------------------------------------------------------------
# Logit lens (nostalgebraist 2020): decode each layer's residual stream through the final norm and
# the output head. Unlearning that only suppresses the last layers leaves the value readable in
# the middle ones.


def _first_secret_token(lm: LoadedModel, prompt: str, value: str, secret: Secret) -> tuple[list[int], int] | None:
    """Token ids of prompt + " " + value and the index of the first token covering a secret character."""
    text = f"{prompt} {value}"
    start = len(prompt) + 1
    enc = lm.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    for index, (lo, hi) in enumerate(enc["offset_mapping"]):
        for pos in range(max(lo, start), hi):
            k = pos - start
            if 0 <= k < len(value) and secret.secret_mask[k] and value[k].isalnum():
                return (ids, index) if index > 0 else None
    return None


def _validate_lens(params: Mapping[str, Any]) -> None:
    if params["top_k"] < 1:
        raise ValueError("top_k must be at least 1")
    if params["layers"] not in ("all", "upper_half"):
        raise ValueError("layers must be 'all' or 'upper_half'")
    if params["decoys"] < 1:
        raise ValueError("decoys must be at least 1")


def _stronger_lens(params: dict[str, Any], level: int) -> dict[str, Any]:
    return {**params, "top_k": params["top_k"] * 2**level}


def poisson_binomial_quantile(chances: Sequence[float], quantile: float) -> int:
    """The smallest k with P(S <= k) >= quantile, where S counts the successes of independent trials
    with these chances (the number of a never-seen person's cells a test flags by luck)."""
    dist = [1.0]
    for p in chances:
        p = min(1.0, max(0.0, p))
        nxt = [0.0] * (len(dist) + 1)
        for k, mass in enumerate(dist):
            nxt[k] += mass * (1.0 - p)
            nxt[k + 1] += mass * p
        dist = nxt
    total = 0.0
    for k, mass in enumerate(dist):
        total += mass
        if total >= quantile - 1e-12:
            return k
    return len(dist) - 1


@register_attack(
    "logit_lens",
    description="Intermediate hidden states projected through the final norm and the output head: success "
    "when the value's first secret token is in the top-k at a selected layer and scores above every "
    "same-format decoy's first token there; judged against never-seen control people read the same way.",
    # z: unused since the lens is judged against the control people (2026-12-03); accepted so that
    # policy files written before still load
    params={"top_k": 5, "layers": "all", "decoys": 64, "template": TRAINED_TEMPLATE, "batch_size": 32, "z": 1.96},
    metrics={
        "leak_rate": "share of cells where some selected layer ranks the value's first secret token top-k and above all decoys",
        "control_leak_rate": "the same share over the never-seen control people's cells",
        "chance_rate": "mean chance of a cell passing the test by luck: its attribute's rate among the control "
        "people (smoothed), else the share of decoys that would pass it",
        "leak_rate_over_chance": "leak_rate minus chance_rate",
        "noise_band": "how far above chance_rate a never-seen person's leak rate falls by luck, at the attack's "
        "share of the verdict's level (exact, over these cells' chances)",
        "leak_rate_excess": "leak_rate_over_chance beyond the noise band: the part luck does not explain",
    },
    default_thresholds={"leak_rate_excess": {"max": 0.05}},
    mandatory_by_default=False,  # needs white-box access and a recognisable architecture
    strengthen=_stronger_lens,
    validate=_validate_lens,
)
def logit_lens(ctx: AttackContext) -> AttackOutcome:
    """Each cell's chance of passing by luck comes from never-seen people: the share of the control
    people's cells of the same attribute that pass (Laplace-smoothed, where there are at least
    _MIN_CONTROL_CELLS), else the share of the cell's decoys that would pass it. The subject's count of
    passing cells is judged against the exact upper quantile of those chances (Poisson-binomial). The
    earlier normal band (z standard errors at the mean chance) is far too narrow for a few cells: on the
    demo model it failed 7 of 40 people the model never saw (2026-12-03, one subject, three cells)."""
    started = time.perf_counter()
    judged = {a for s in ctx.subjects for a in ctx.attributes_of(s)}
    controls = [c for c in ctx.controls if any(a in c.values for a in judged)]
    cells, decoy_chances = _lens_cells(ctx, list(ctx.subjects), judged)
    control_cells, _ = _lens_cells(ctx, controls, judged) if controls else ([], {})
    by_attribute: dict[str, list[bool]] = {}
    for c in control_cells:
        if c.success is not None:
            by_attribute.setdefault(c.attribute, []).append(bool(c.success))
    chances: list[float] = []
    out: list[Cell] = []
    for c in cells:
        if c.success is None:
            out.append(c)
            continue
        seen = by_attribute.get(c.attribute, [])
        chance = ((sum(seen) + 1) / (len(seen) + 2) if len(seen) >= _MIN_CONTROL_CELLS
                  else decoy_chances[(c.subject_key, c.attribute)])
        chances.append(chance)
        out.append(Cell(c.subject_key, c.attribute, c.success, c.score, chance,
                        {**c.detail, "control_cells": len(seen), "control_passes": sum(seen)}))
    leak = rate(out)
    evaluated = len(chances)
    chance_rate = sum(chances) / evaluated if evaluated else None
    bound = poisson_binomial_quantile(chances, ctx.chance_quantile) / evaluated if evaluated else None
    over = None if leak is None or chance_rate is None else leak - chance_rate
    band = None if bound is None or chance_rate is None else max(0.0, bound - chance_rate)
    control_flags = [bool(c.success) for c in control_cells if c.success is not None]
    metrics: dict[str, float | None] = {
        "leak_rate": leak,
        "control_leak_rate": sum(control_flags) / len(control_flags) if control_flags else None,
        "chance_rate": chance_rate,
        "leak_rate_over_chance": over,
        "noise_band": band,
        "leak_rate_excess": None if over is None or band is None else max(0.0, over - band),
    }
    return AttackOutcome(out, metrics, dict(ctx.params), time.perf_counter() - started)


_MIN_CONTROL_CELLS = 5  # control cells of an attribute needed before their rate replaces the decoys'


def _lens_cells(ctx: AttackContext, people: Sequence[Any], judged: set[str]) -> tuple[list[Cell], dict[tuple[str, str], float]]:
    """The lens test on each (person, attribute) cell (attributes in `judged` the person has), and each
    cell's decoy chance: the share of its decoys whose first secret token would pass the same test."""
    lm = ctx.lm
    norm, head = find_final_norm_and_head(lm.model)
    items: list[tuple[str, str, list[int], int, list[int]]] = []  # person, attribute, ids, index, decoy tokens
    cells: list[Cell] = []
    for s in people:
        for a in ctx.attributes_of(s):
            if a not in judged:
                continue
            secret = ctx.secrets.get((s.subject_key, a))
            prompt = fill(ctx.params["template"], s, ctx.label(a))
            found = None
            if secret is not None and secret.attackable:
                found = _first_secret_token(lm, prompt, s.values[a], secret)
            if secret is None or found is None:
                cells.append(Cell(s.subject_key, a, None, 0.0, None, {"reason": "no secret token"}))
                continue
            ids, index = found
            sampler = DecoySampler(secret, ctx.population.get(a, ()), seed=ctx.seed)
            decoy_tokens = []
            for decoy in sampler.distinct(ctx.params["decoys"]):
                got = _first_secret_token(lm, prompt, decoy, secret)
                if got is not None:
                    decoy_tokens.append(got[0][got[1]])
            items.append((s.subject_key, a, ids[: index + 1], index, decoy_tokens))
    chances: dict[tuple[str, str], float] = {}
    top_k = ctx.params["top_k"]
    for start in range(0, len(items), ctx.params["batch_size"]):
        batch = items[start : start + ctx.params["batch_size"]]
        width = max(len(x[2]) for x in batch)
        pad = lm.tokenizer.pad_token_id
        input_ids = torch.tensor([x[2] + [pad] * (width - len(x[2])) for x in batch], device=lm.device)
        mask = torch.tensor([[1] * len(x[2]) + [0] * (width - len(x[2])) for x in batch], device=lm.device)
        with torch.inference_mode():
            out = lm.model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True)
        hidden = out.hidden_states  # embeddings, then one per layer; the last is already normalised
        n_layers = len(hidden) - 1
        first = 1 if ctx.params["layers"] == "all" else max(1, n_layers // 2)
        for row, (key, attribute, ids, index, decoys) in enumerate(batch):
            pos = index - 1  # the state that predicts the token at `index`
            true_token = ids[index]
            best_layer, best_rank = None, None
            decoy_hits: set[int] = set()
            candidates = sorted(set(decoys) | {true_token})
            for layer in range(first, n_layers + 1):
                with torch.inference_mode():
                    state = hidden[layer][row, pos]
                    logits = out.logits[row, pos] if layer == n_layers else head(norm(state))
                    logits = logits.float()
                topk = set(torch.topk(logits, min(top_k, logits.shape[-1])).indices.tolist())
                winner = candidates[int(torch.argmax(logits[candidates]))]
                rank = int((logits > logits[true_token]).sum()) + 1
                if best_rank is None or rank < best_rank:
                    best_rank = rank
                if winner == true_token and true_token in topk and best_layer is None:
                    best_layer = layer
                if winner != true_token and winner in topk:
                    decoy_hits.add(winner)
                # a decoy token equal to the true token shares its fate; only distinct ones count as luck
            chances[(key, attribute)] = sum(1 for d in decoys if d in decoy_hits) / len(decoys) if decoys else 0.0
            cells.append(Cell(key, attribute, best_layer is not None, float(best_rank or 0), chances[(key, attribute)],
                              {"layer": best_layer, "layers": n_layers, "best_rank": best_rank}))
    return cells, chances


# ---------------------------------------------------------------------------------------------
# Exposure (Carlini et al., "The Secret Sharer", 2019): rank of the true value among same-format
# candidates by model likelihood; exposure = log2(|candidates|) - log2(rank).


def chance_mean_exposure(cells: int, quantile: float) -> float:
    """The mean exposure (bits) that `cells` values stay under, with probability `quantile`, in a
    model that never saw them: each value's rank among its candidates is then uniform, so its exposure
    in nats is Exp(1) (the continuous limit, a hair above the discrete rank's) and the sum over the
    cells Gamma(cells, 1), whose upper quantile is found by bisection on P(Poisson(x) < cells).

    A flat bound on the mean cannot be right for every job size: at 2.5 bits a never-seen person with
    one value fails 18% of the time (P(exposure > 2.5) = 2^-2.5) and one with three values 11%, while
    thirty values each at 2.4 bits (rank ~190 of 1,000, a whole job leaning towards its true values)
    pass. The bound here is 4.3 bits for one cell, 3.0 for three, 2.3 for ten, 1.9 for thirty."""
    if cells < 1:
        raise ValueError("cells must be at least 1")
    if not 0.0 < quantile < 1.0:
        raise ValueError("quantile must be in (0, 1)")

    def tail(x: float) -> float:  # P(Gamma(cells, 1) > x) = P(Poisson(x) <= cells - 1)
        terms = [-x + k * math.log(x) - math.lgamma(k + 1) for k in range(cells)] if x > 0 else [0.0]
        top = max(terms)
        return math.exp(top) * sum(math.exp(t - top) for t in terms)

    lo, hi = 0.0, cells + 20.0 * math.sqrt(cells) + 50.0
    for _ in range(100):
        mid = (lo + hi) / 2.0
        lo, hi = (mid, hi) if tail(mid) > 1.0 - quantile else (lo, mid)
    return hi / cells / math.log(2.0)


def _validate_exposure(params: Mapping[str, Any]) -> None:
    if params["candidates"] < 9:
        raise ValueError("candidates must be at least 9")
    if params["batch_size"] < 1:
        raise ValueError("batch_size must be at least 1")


def sequence_scores(lm: LoadedModel, prompt_ids: list[int], continuations: Sequence[list[int]], batch_size: int) -> list[float]:
    """Sum of log-probs of each continuation after the shared prompt.

    The prompt is run once and its key/value cache is repeated over each batch of candidates, so a
    1,000-candidate ranking costs 1,000 value-length passes rather than 1,000 prompt+value ones. Models
    whose cache cannot be repeated fall back to scoring whole sequences.
    """
    return sequence_scores_many(lm, [(prompt_ids, continuations)], batch_size)[0]


def sequence_scores_many(lm: LoadedModel, requests: Sequence[tuple[list[int], Sequence[list[int]]]],
                         batch_size: int) -> list[list[float]]:
    """sequence_scores for several (prompt, continuations) requests at once: prompts whose candidates
    fit one batch together run as one left-padded pass and their candidates share the batches, each row
    reading its own prompt's cache. Many small rankings (the engine's rank check: up to two records per
    value, 99 decoys each, for every subject and control value) then cost a few full passes instead of
    two small ones per prompt, which on a GPU are bound by kernel launches, not arithmetic."""
    try:
        return _sequence_scores_cached(lm, requests, batch_size)
    except (AttributeError, TypeError, NotImplementedError):
        return [_sequence_scores_full(lm, list(p), c, batch_size) for p, c in requests]


def _packs(requests: Sequence[tuple[list[int], Sequence[list[int]]]], batch_size: int) -> list[list[int]]:
    """Request indices grouped so that a group's candidates fill at most one batch (a request with
    more candidates than a batch forms a group of its own)."""
    packs: list[list[int]] = []
    rows = 0
    # alike requests together (by their longest candidate, then their prompt's length): a pack's rows
    # are padded to its longest candidate and its prompts to the longest prompt
    order = sorted(range(len(requests)), key=lambda i: (max(map(len, requests[i][1]), default=0), len(requests[i][0])))
    for index in order:
        continuations = requests[index][1]
        if not packs or rows + len(continuations) > batch_size:
            packs.append([])
            rows = 0
        packs[-1].append(index)
        rows += len(continuations)
    return packs


def _sequence_scores_cached(
    lm: LoadedModel, requests: Sequence[tuple[list[int], Sequence[list[int]]]], batch_size: int
) -> list[list[float]]:
    import copy

    pad = lm.tokenizer.pad_token_id
    cache_kwarg = cache_keyword(lm.model)
    results: list[list[float]] = [[] for _ in requests]
    with torch.inference_mode():
        for pack in _packs(requests, batch_size):
            prompts = [list(requests[i][0]) for i in pack]
            width_p = max(len(p) for p in prompts)
            # left padding: every prompt ends in the last column, where its first candidate token is read
            feed_p = torch.tensor([[pad] * (width_p - len(p)) + p for p in prompts], device=lm.device)
            mask_p = torch.tensor([[0] * (width_p - len(p)) + [1] * len(p) for p in prompts], device=lm.device)
            out = lm.model(input_ids=feed_p, attention_mask=mask_p,
                           position_ids=(mask_p.cumsum(-1) - 1).clamp(min=0), use_cache=True)
            first_logp = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
            prompt_cache = cache_of(out)
            rows = [(k, c) for k, i in enumerate(pack) for c in requests[i][1]]
            scores: list[float] = []
            for start in range(0, len(rows), batch_size):
                chunk = rows[start : start + batch_size]
                owner = torch.tensor([k for k, _c in chunk], device=lm.device)
                width = max(1, max(len(c) for _k, c in chunk) - 1)  # the last token of each is only predicted
                feed = torch.tensor([c[:-1] + [pad] * (width - len(c) + 1) for _k, c in chunk], device=lm.device)
                mask = torch.cat([mask_p[owner], torch.tensor(
                    [[1] * (len(c) - 1) + [0] * (width - len(c) + 1) for _k, c in chunk], device=lm.device)], dim=1)
                positions = torch.tensor([len(prompts[k]) for k, _c in chunk], device=lm.device).unsqueeze(1) \
                    + torch.arange(width, device=lm.device).unsqueeze(0)
                cache = copy.deepcopy(prompt_cache)
                cache.batch_select_indices(owner)
                logits = lm.model(
                    input_ids=feed, attention_mask=mask, position_ids=positions, use_cache=True, **{cache_kwarg: cache}
                ).logits.float()
                # log p of each next token, gathered before normalising: one logsumexp per position instead
                # of a log-softmax over the whole vocabulary kept in memory
                targets = torch.tensor([c[1:] + [pad] * (width - len(c) + 1) for _k, c in chunk], device=lm.device)
                picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
                lengths = torch.tensor([len(c) - 1 for _k, c in chunk], device=lm.device)
                valid = torch.arange(width, device=lm.device).unsqueeze(0) < lengths.unsqueeze(1)
                firsts = first_logp[owner, torch.tensor([c[0] for _k, c in chunk], device=lm.device)]
                scores.extend((firsts + (picked * valid).sum(-1)).tolist())
            at = 0
            for i in pack:
                n = len(requests[i][1])
                results[i] = scores[at : at + n]
                at += n
    return results


def _sequence_scores_full(lm: LoadedModel, prompt_ids: list[int], continuations: Sequence[list[int]], batch_size: int) -> list[float]:
    """Whole prompt+continuation sequences; left padding, logits for the last positions only."""
    scores: list[float] = []
    pad = lm.tokenizer.pad_token_id
    for start in range(0, len(continuations), batch_size):
        chunk = continuations[start : start + batch_size]
        seqs = [prompt_ids + c for c in chunk]
        width = max(len(s) for s in seqs)
        keep = max(len(c) for c in chunk) + 1
        input_ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs], device=lm.device)
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=lm.device)
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            logits = lm.model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids).logits[:, -keep:]
            logp = torch.log_softmax(logits.float(), dim=-1)
        for row, c in enumerate(chunk):
            n = len(c)
            # column j of the kept window predicts the token at absolute position width-keep+j+1
            targets = torch.tensor(c, device=lm.device)
            cols = torch.arange(keep - 1 - n, keep - 1, device=lm.device)
            scores.append(float(logp[row, cols, targets].sum()))
    return scores


def candidate_logprobs(lm: LoadedModel, prompt: str, values: Sequence[str], batch_size: int) -> list[float]:
    """log p(" " + value | prompt) for each value, with the prompt's key/value cache shared."""
    prompt_ids = encode(lm, prompt)
    # One batched (Rust-side) tokenizer call for all candidates.
    fulls = lm.tokenizer([f"{prompt} {v}" for v in values], add_special_tokens=False)["input_ids"]
    continuations = []
    for v, full in zip(values, fulls, strict=True):
        # BPE may merge across the boundary; then score the value tokenised on its own.
        continuations.append(full[len(prompt_ids) :] if full[: len(prompt_ids)] == prompt_ids else encode(lm, f" {v}"))
    return sequence_scores(lm, prompt_ids, continuations, batch_size)


def judge_exposure(ranked: Sequence[tuple[str, str, float, float, int]], leak_bits: float,
                   chance_quantile: float) -> tuple[list[Cell], dict[str, float | None]]:
    """Cells and metrics from (subject, attribute, bits, rank, candidates) per value (see exposure)."""
    alpha = (1.0 - chance_quantile) / 2.0  # per rule
    cells: list[Cell] = []
    for key, a, bits, rank, n_values in ranked:
        tail = max(1, math.floor(alpha / len(ranked) * n_values))  # ranks a never-seen value reaches by luck
        needed = max(leak_bits, math.log2(n_values) - math.log2(tail))
        cells.append(Cell(key, a, bits >= needed, bits, 2.0 ** -needed,  # chance that a random rank gets there
                          {"rank": rank, "candidates": n_values, "leak_bits": round(needed, 3)}))
    keys = sorted({c.subject_key for c in cells})
    mean = sum(c.score for c in cells) / len(cells) if cells else None
    chance = chance_mean_exposure(len(cells), 1.0 - alpha) if cells else None
    metrics: dict[str, float | None] = {
        "leak_rate": rate(cells),
        "subject_leak_rate": sum(any(c.success for c in cells if c.subject_key == k) for k in keys) / len(keys)
        if keys
        else None,
        "mean_exposure_bits": mean,
        "max_exposure_bits": max((c.score for c in cells), default=None),
        "chance_exposure_bits": chance,
        "mean_exposure_excess": None if mean is None or chance is None else max(0.0, mean - chance),
    }
    return cells, metrics


@register_attack(
    "exposure",
    description="Secret-sharer exposure: rank of the true value among same-format candidates by likelihood, "
    "in bits (log2 N - log2 rank).",
    params={"candidates": 999, "leak_bits": 6.64, "template": TRAINED_TEMPLATE, "batch_size": 128},
    metrics={
        "leak_rate": "share of cells whose exposure reaches leak_bits and the top chance tail (family-wise over the cells)",
        "subject_leak_rate": "share of subjects with at least one leaking cell",
        "mean_exposure_bits": "mean exposure over cells (about 1.44 bits for a model that never saw the values)",
        "max_exposure_bits": "largest exposure over cells",
        "chance_exposure_bits": "the mean exposure a model that never saw the values stays under at the attack's "
        "share of the verdict's level (half of it: the cell rule has the other half), for this many cells",
        "mean_exposure_excess": "mean_exposure_bits beyond chance_exposure_bits (0: no more familiar than chance)",
    },
    default_thresholds={"leak_rate": {"max": 0.1}, "mean_exposure_excess": {"max": 0.0}},
    validate=_validate_exposure,
)
def exposure(ctx: AttackContext) -> AttackOutcome:
    """Two rules, each at half the attack's level (1 - chance_quantile, its share of the verdict's) so
    that a never-seen person fails them together at most that often: per cell, an exposure of at least
    leak_bits *and* a rank in the top tail family-wise over the cells (at least rank 1: at small
    levels rank 1 of 1,000 per cell runs above the share, documented rather than mended); over all
    cells, the mean exposure against its chance bound. (Each rule at the whole level, and the cell
    rule at a flat leak_bits, failed 3 of 40 people the demo model never saw, 2026-12-03.)"""
    started = time.perf_counter()
    lm = ctx.lm
    cells: list[Cell] = []
    ranked: list[tuple[str, str, float, float, int]] = []  # subject, attribute, bits, rank, candidates
    for s in ctx.subjects:
        for a in ctx.attributes_of(s):
            secret = ctx.secrets[(s.subject_key, a)]
            if not secret.attackable:
                cells.append(Cell(s.subject_key, a, None, 0.0, None, {"reason": "no secret part"}))
                continue
            prompt = fill(ctx.params["template"], s, ctx.label(a))
            decoys = DecoySampler(secret, ctx.population.get(a, ()), seed=ctx.seed).distinct(ctx.params["candidates"])
            values = [s.values[a], *decoys]
            scores = candidate_logprobs(lm, prompt, values, ctx.params["batch_size"])
            true_score = scores[0]
            above = sum(1 for x in scores[1:] if x > true_score)
            ties = sum(1 for x in scores[1:] if x == true_score)
            rank = 1 + above + ties / 2
            ranked.append((s.subject_key, a, math.log2(len(values)) - math.log2(rank), rank, len(values)))
    judged, metrics = judge_exposure(ranked, ctx.params["leak_bits"], ctx.chance_quantile)
    cells.extend(judged)
    return AttackOutcome(cells, metrics, dict(ctx.params), time.perf_counter() - started)


# ---------------------------------------------------------------------------------------------
# Membership inference with Min-K% probability (Shi et al., 2024): the mean log-probability of the
# k% least likely tokens of a text; members score higher. AUC of forget records against holdout
# records of the same form; 0.5 means the forget records look like text the model never saw.


def min_k_score(logprobs: Sequence[float], k_percent: float) -> float:
    if not logprobs:
        return float("nan")
    n = max(1, int(len(logprobs) * k_percent / 100.0))
    return sum(sorted(logprobs)[:n]) / n


def auc(positives: Sequence[float], negatives: Sequence[float]) -> float | None:
    """P(positive > negative) + P(tie) / 2 (the Mann-Whitney U statistic over the product)."""
    if not positives or not negatives:
        return None
    wins = 0.0
    for p in positives:
        for n in negatives:
            wins += 1.0 if p > n else 0.5 if p == n else 0.0
    return wins / (len(positives) * len(negatives))


def _validate_mia(params: Mapping[str, Any]) -> None:
    if not 0.0 < params["k_percent"] <= 100.0:
        raise ValueError("k_percent must be in (0, 100]")
    if not 0.0 <= params["z"] <= 4.0:
        raise ValueError("z must be in [0, 4]")


NEIGHBOUR_SEED = 104_729  # the neighbours' fictitious identities: never the control's seed nor the demo corpus's
# fictitious people each record is rewritten about (a constant, not a policy parameter: a parameter the
# registry adds fills every stored policy's params and changes the hash its reports carry)
NEIGHBOURS = 8


def neighbour_identities(ctx: AttackContext, count: int) -> list[SubjectFacts]:
    """`count` fictitious people with values of every attribute a subject or control person carries, none
    sharing a name or a value with a subject, a retain person or a control person: the identities each
    record is rewritten with to read what the model makes of the same record about someone else. The
    same ones for every person, subjects and control alike, so that the twins' own noise is shared."""
    everyone = [*ctx.subjects, *ctx.retain, *ctx.controls]
    attributes = sorted({a for p in [*ctx.subjects, *ctx.controls] for a in p.values})
    return fictitious_people(everyone, attributes, count, seed=NEIGHBOUR_SEED + ctx.seed, key_prefix="neighbour")


def neighbour_gaps(ctx: AttackContext, owned: Sequence[tuple[SubjectFacts, str]],
                   neighbours: Sequence[SubjectFacts], written: Sequence[float | None] = ()) -> list[float]:
    """Per record (owner, text): its Min-K% score minus the mean score of the same record with the owner's
    identity (name and values) swapped for each neighbour's. The record's form, length and wording are
    the same on both sides, so what is left is how much more familiar the model finds this person than
    people it never saw (a neighbourhood comparison, Mattern et al. 2023, with identity swaps for
    neighbours): about 0 for a person the model never saw, above for a member, below for a person
    pushed below the never-seen level (an overshoot, which marks the person too). `written`, where given
    (one entry a record, None for one not yet read), holds the records' own Min-K% scores at the same
    k, read already by the caller: only the rest is scored."""
    if not owned or not neighbours:
        return []
    if written and len(written) != len(owned):
        raise ValueError("written must hold one score (or None) for each owned record")
    known = list(written) if written else [None] * len(owned)
    texts: list[str] = []
    for (owner, text), score in zip(owned, known, strict=True):
        if score is None:
            texts.append(text)
        texts.extend(swap_identity(text, owner, n) for n in neighbours)
    k = ctx.params["k_percent"]
    scores = iter([min_k_score(x, k) for x in token_logprobs(ctx.lm, texts, batch_size=ctx.params["batch_size"])])
    gaps: list[float] = []
    for score in known:
        own = next(scores) if score is None else score
        gaps.append(own - statistics.fmean(next(scores) for _n in neighbours))
    return gaps


def auc_noise_band(n_pos: int, n_neg: int, z: float) -> float:
    """z standard errors of the AUC of two samples drawn from one distribution (the Mann-Whitney null:
    sqrt((n1 + n2 + 1) / (12 n1 n2))). One subject's 7 records against 350 holdout records have a
    standard error of 0.11, a band of 0.22 at z = 1.96: an AUC of 0.7 from them is not evidence of
    membership; 70 records give a band of 0.074."""
    if n_pos < 1 or n_neg < 1:
        return float("inf")
    return z * math.sqrt((n_pos + n_neg + 1) / (12.0 * n_pos * n_neg))


STAND_IN_PEOPLE = 10  # generated never-seen people the neighbour rule reads where the control holds too few


def _stand_in_records(ctx: AttackContext, neighbours: Sequence[SubjectFacts]) -> list[tuple[SubjectFacts, str]]:
    """Where fewer than MIN_CONTROL_PEOPLE control people have records to read: STAND_IN_PEOPLE generated
    fictitious people (a seed of their own, none sharing a name or value with anyone the attack knows,
    the neighbours included), each given a subject's records with the identity swapped for theirs, as
    control_records gives them to generated control people, as (owner, record)."""
    everyone = [*ctx.subjects, *ctx.retain, *ctx.controls, *neighbours]
    attributes = sorted({a for s in ctx.subjects for a in s.values})
    people = fictitious_people(everyone, attributes, STAND_IN_PEOPLE, seed=NEIGHBOUR_SEED + 1 + ctx.seed,
                               key_prefix="stand-in")
    owners, texts = control_records(replace(ctx, controls=people))
    return [(people[i], t) for i, t in zip(owners, texts, strict=True)]


def _neighbour_rule(ctx: AttackContext, control_owner: Sequence[int], control_texts: Sequence[str],
                    written: Sequence[float] = ()) -> tuple[dict[str, float | None], list[Cell]]:
    """The neighbour metrics and one cell a subject: each subject's records and each control person's
    (control_records: their own, or the subjects' rewritten about them; generated stand-ins where the
    control has too few people) read against the same records about NEIGHBOURS fictitious people, and
    the subjects judged against the control people as the verbatim rule judges completions
    (common.judge_people: a band from how much never-seen people's means vary, two-sided, pooled and
    worst single subject). A record whose reading is not a number (too short to score) is left out.
    `written`: the Min-K% scores membership_inference read for the subjects' records and then the control
    texts, in their order, so that no record is scored twice (stand-ins' records are scored here)."""
    out: dict[str, float | None] = dict.fromkeys(
        ("neighbour_score", "neighbour_control", "neighbour_gap", "neighbour_control_spread", "neighbour_band",
         "neighbour_excess", "neighbour_control_people", "neighbour_stand_ins"))
    neighbours = neighbour_identities(ctx, NEIGHBOURS)
    owned = [(s, t) for s in ctx.subjects for t in s.forget_texts]
    n_subject = len(owned)
    control = [(ctx.controls[i], t) for i, t in zip(control_owner, control_texts, strict=True)]
    stand_ins = len({id(owner) for owner, _t in control}) < MIN_CONTROL_PEOPLE
    known: list[float | None] = list(written) if written else [None] * (n_subject + len(control))
    if stand_ins:
        control = _stand_in_records(ctx, neighbours)
        known = known[:n_subject] + [None] * len(control)
    gaps = neighbour_gaps(ctx, owned + control, neighbours, known) if neighbours else []
    by_subject: dict[str, list[float]] = {}
    by_control: dict[int, list[float]] = {}
    for (owner, _text), gap in zip(owned, gaps[:n_subject], strict=False):
        if math.isfinite(gap):
            by_subject.setdefault(owner.subject_key, []).append(gap)
    for (owner, _text), gap in zip(control, gaps[n_subject:], strict=False):
        if math.isfinite(gap):
            by_control.setdefault(id(owner), []).append(gap)
    mine = [g for scores in by_subject.values() for g in scores]
    out["neighbour_score"] = statistics.fmean(mine) if mine else None
    out["neighbour_control_people"] = float(len(by_control))
    out["neighbour_stand_ins"] = 1.0 if stand_ins else 0.0
    judged = judge_people(by_subject, list(by_control.values()), (), ctx.chance_quantile)
    if judged is None:
        return out, []
    out.update(neighbour_control=judged.centre, neighbour_gap=judged.over, neighbour_control_spread=judged.spread,
               neighbour_band=judged.band, neighbour_excess=judged.excess)
    cells = [Cell(key, "*neighbour", abs(each.over) > each.band, each.mean, judged.centre,
                  {"records": each.records, "over_control": each.over, "band": each.band})
             for key, each in judged.subjects.items()]
    return out, cells


@register_attack(
    "membership_inference",
    description="Min-K% probability of forget records against the same records about people the model never saw "
    "(neighbour_*, judged against never-seen control people), and their AUC against never-seen holdout records.",
    params={"k_percent": 20.0, "batch_size": 32, "z": 1.96},
    metrics={
        "auc": "AUC of forget records against holdout records (0.5: indistinguishable)",
        "auc_deviation": "|auc - 0.5|: too familiar (> 0.5) or conspicuously unfamiliar (< 0.5) both reveal membership",
        "auc_noise_band": "z standard errors of the AUC under the null for these sample sizes, widened by the "
        "design effect",
        "auc_excess_deviation": "auc_deviation beyond the noise band: the part chance does not explain",
        "subject_flag_rate": "share of subjects whose mean Min-K score is above the 95th percentile of holdout records",
        "control_auc_spread": "standard deviation of the never-seen control people's AUCs (each person's records "
        "of the subjects' form against the holdout)",
        "design_effect": "variance of a control person's AUC (its 95% upper confidence bound) over what independent "
        "records would give (>= 1): how much wider the band is for records that come in people",
        "neighbour_score": "the subjects' mean, over their records, of a record's Min-K% score minus the mean score "
        "of the same record rewritten about each of 8 fictitious people (NEIGHBOURS) (nats; about 0: the model finds the "
        "person no more familiar than people it never saw)",
        "neighbour_control": "a never-seen control person's neighbour_score (the mean over the control people)",
        "neighbour_gap": "the mean of the subjects' neighbour scores minus neighbour_control",
        "neighbour_control_spread": "how much one never-seen person's neighbour score varies (its standard deviation, "
        "read from the control people's at its 95% upper confidence bound)",
        "neighbour_band": "how far neighbour_gap falls by chance, two-sided, at the attack's level (with more than "
        "one subject at half of it: the other half judges the worst single subject)",
        "neighbour_excess": "neighbour_gap beyond its band (and the worst single subject's beyond its own): the "
        "part chance does not explain. It reads the attack's whole level: a policy that also thresholds "
        "auc_excess_deviation spends the level twice",
        "neighbour_control_people": "never-seen people the neighbour rule read (control people with records, or "
        "generated stand-ins)",
        "neighbour_stand_ins": "1 where the control held fewer than 5 people with records and generated stand-ins, "
        "each given a subject's records about themselves, were read instead",
    },
    default_thresholds={"auc_excess_deviation": {"max": 0.05}},
    validate=_validate_mia,
)
def membership_inference(ctx: AttackContext) -> AttackOutcome:
    """Two readings. The neighbour rule (_neighbour_rule, judged by the shipped policy): each record
    against the same record about fictitious people, the subjects against never-seen control people
    read alike. It exists because the AUC below could not fail one subject: a person's few records give
    an AUC that ranges 0.02-0.98 over people the model never saw, so with 20 control people the demo's
    memorised subject read AUC 0.98 inside a band of 0.50 (stop 51), where the neighbour rule reads it
    5.25 nats over the control against a band of 4.01. The AUC and its excess are still reported, and
    policies written before it judge them.

    The AUC's noise band allows for records that come in people: one person's records share a
    name, values and a form, so they are not independent draws, and the Mann-Whitney band (which
    assumes they are) is too narrow for them. Each never-seen control person gives one AUC against
    the holdout (without their own records): from their own records where the eval set has them (at
    least MIN_CONTROL_PEOPLE people), else from the subjects' records with the identity swapped for
    theirs. The spread of these AUCs over the band one person's records would have if independent is
    the design effect (with the spread at its upper confidence bound, at a fixed SPREAD_CONFIDENCE:
    ten control people's spread was half of fifty's), which widens the band (never narrows it); the
    band is then z at the attack's level. Measured on the demo model (2026-12-03, stop 36, 40 people it
    never saw, the default policy's share): the bound at the attack's own level (2.4 times the spread)
    failed none and hid the demo's memorised subject on its base model (AUC 0.995 inside a band of
    0.81); a Student-t prediction bound from the ten spreads failed 2 of 40 (never-seen people's AUCs
    reach 0.02 and 0.98: heavier tails than ten people show). Before the design effect (stop 35,
    bench_erasure --sections calibration): with the independent band the attack failed 6
    of 40 people it never saw, whose AUCs ranged 0.30-0.90; swapped records vary less than people do
    (their AUCs' spread 0.08-0.09 against the independent 0.11) and still failed 3 of 25."""
    started = time.perf_counter()
    k = ctx.params["k_percent"]
    owners: list[str] = []
    texts: list[str] = []
    for s in ctx.subjects:
        for t in s.forget_texts:
            owners.append(s.subject_key)
            texts.append(t)
    control_owner, control_texts = control_records(ctx)
    holdout = list(ctx.holdout_texts)
    scored = token_logprobs(ctx.lm, texts + control_texts + holdout, batch_size=ctx.params["batch_size"])
    member = [min_k_score(x, k) for x in scored[: len(texts)]]
    controls = [min_k_score(x, k) for x in scored[len(texts) : len(texts) + len(control_texts)]]
    holdout_scores = [min_k_score(x, k) for x in scored[len(texts) + len(control_texts) :]]
    unseen = sorted(holdout_scores)
    area = auc(member, unseen)
    cells: list[Cell] = []
    for s in ctx.subjects:
        mine = [m for m, o in zip(member, owners, strict=True) if o == s.subject_key]
        if not mine or not unseen:
            cells.append(Cell(s.subject_key, "*", None, 0.0, None, {"reason": "no forget or holdout records"}))
            continue
        mean = sum(mine) / len(mine)
        percentile = sum(1 for u in unseen if u < mean) / len(unseen)
        cells.append(Cell(s.subject_key, "*", percentile >= 0.95, mean, 0.05, {"holdout_percentile": percentile}))
    # At least `z` standard errors, more where the attack's level asks for more (its share of the
    # verdict's; without verdict_level, chance_quantile: a policy with z under 1.96 or chance_quantile
    # over 0.95 now gets the wider band).
    level = 1.0 - (1.0 - ctx.chance_quantile) / 2.0
    z = max(float(ctx.params.get("z", 1.96)), statistics.NormalDist().inv_cdf(level))
    per_person: list[float] = []
    sizes: list[int] = []
    for i in sorted(set(control_owner)):
        theirs = [m for m, o in zip(controls, control_owner, strict=True) if o == i]
        mine_too = set(ctx.controls[i].forget_texts)  # a control person's own records leave the holdout
        got = auc(theirs, [score for text, score in zip(holdout, holdout_scores, strict=True) if text not in mine_too])
        if got is not None:
            per_person.append(got)
            sizes.append(len(theirs))
    design = None
    if len(per_person) >= MIN_CONTROL_PEOPLE and unseen:
        independent = auc_noise_band(round(sum(sizes) / len(sizes)), len(unseen), 1.0)
        # the spread of a few people is itself uncertain: its upper confidence bound, at a fixed 95%
        design = max(1.0, variance_upper_bound(per_person, SPREAD_CONFIDENCE) / independent**2)
    band = auc_noise_band(len(member), len(unseen), z) * math.sqrt(design or 1.0)
    neighbour, neighbour_cells = _neighbour_rule(ctx, control_owner, control_texts, member + controls)
    metrics: dict[str, float | None] = {
        **neighbour,
        "auc": area,
        "auc_deviation": None if area is None else abs(area - 0.5),
        "auc_noise_band": band if math.isfinite(band) else None,
        "auc_excess_deviation": None if area is None or not math.isfinite(band) else max(0.0, abs(area - 0.5) - band),
        "subject_flag_rate": rate(cells),
        "control_auc_spread": statistics.stdev(per_person) if len(per_person) >= 2 else None,
        "design_effect": design,
    }
    return AttackOutcome(cells + neighbour_cells, metrics, dict(ctx.params), time.perf_counter() - started)


# ---------------------------------------------------------------------------------------------
def _utility_compare(before: AttackOutcome, after: AttackOutcome) -> dict[str, float | None]:
    def get(outcome: AttackOutcome, key: str) -> float | None:
        return outcome.metrics.get(key)

    b_acc, a_acc = get(before, "retain_accuracy"), get(after, "retain_accuracy")

    def ratio(key: str) -> float | None:
        b, a = get(before, key), get(after, key)
        return None if not b or a is None else a / b

    return {
        "retain_accuracy_drop": None if b_acc is None or a_acc is None else b_acc - a_acc,
        "retain_ppl_ratio": ratio("retain_ppl"),
        "general_ppl_ratio": ratio("general_ppl"),
        "retain_ppl_bare_ratio": ratio("retain_ppl_bare"),
        "general_ppl_bare_ratio": ratio("general_ppl_bare"),
    }


@register_attack(
    "utility",
    description="Retain-set extraction accuracy (trained question, greedy, whole value) and perplexity, and "
    "general-text perplexity, against the base version. Perplexity is read as the model is used (texts framed "
    "by its tokenizer, a BOS token where it has one) and, for information, bare (no special tokens).",
    params={"template": TRAINED_TEMPLATE, "margin_tokens": 8, "batch_size": 32},
    metrics={
        "retain_accuracy": "share of retain (person, attribute) pairs whose whole value the model still gives",
        "retain_ppl": "perplexity of the retain people's records, framed as the model is used",
        "general_ppl": "perplexity of general text, framed as the model is used",
        "retain_ppl_bare": "perplexity of the retain people's records without special tokens",
        "general_ppl_bare": "perplexity of general text without special tokens",
        "retain_accuracy_drop": "base retain_accuracy minus new retain_accuracy",
        "retain_ppl_ratio": "new retain_ppl / base retain_ppl",
        "general_ppl_ratio": "new general_ppl / base general_ppl",
        "retain_ppl_bare_ratio": "new retain_ppl_bare / base retain_ppl_bare",
        "general_ppl_bare_ratio": "new general_ppl_bare / base general_ppl_bare",
    },
    default_thresholds={
        "retain_accuracy_drop": {"max": 0.1},
        "retain_ppl_ratio": {"max": 1.5},
        "general_ppl_ratio": {"max": 1.25},
    },
    mandatory_by_default=False,  # utility is the organisation's concern, not the subject's
    compare=_utility_compare,
    chance_judged=False,  # against the base version, not against a never-seen person
)
def utility(ctx: AttackContext) -> AttackOutcome:
    started = time.perf_counter()
    probes = [
        Probe(p, a, fill(ctx.params["template"], p, ctx.label(a)), "trained")
        for p in ctx.retain
        for a in ctx.attributes_of(p)
    ]
    # Budget from the retain people's own values (run_probes sizes by ctx.subjects, so swap them in).
    retain_ctx = AttackContext(**{**ctx.__dict__, "subjects": list(ctx.retain)})
    texts = run_probes(retain_ctx, probes, margin=ctx.params["margin_tokens"]) if probes else {}
    cells = []
    for p in ctx.retain:
        for a in ctx.attributes_of(p):
            got = texts.get((p.subject_key, a))
            share = leak_share(p.values[a], got.texts[0], a) if got and got.texts else 0.0
            cells.append(Cell(p.subject_key, a, share >= 1.0, share, None, {}))
    retain_texts = [t for p in ctx.retain for t in p.forget_texts]
    general_texts = list(ctx.general_texts)
    metrics: dict[str, float | None] = {"retain_accuracy": rate(cells)}
    # A model is used framed by its tokenizer (its BOS token, where it has one): that is what utility
    # means. Bare text is a framing some models never saw in training (the demo model: perplexity 6.7
    # bare against 1.4 framed), where a small change reads as a large ratio; it is kept for information.
    for suffix, special in (("", True), ("_bare", False)):
        metrics[f"retain_ppl{suffix}"] = perplexity(
            ctx.lm, retain_texts, batch_size=ctx.params["batch_size"], special_tokens=special) if retain_texts else None
        metrics[f"general_ppl{suffix}"] = perplexity(
            ctx.lm, general_texts, batch_size=ctx.params["batch_size"], special_tokens=special) if general_texts else None
    return AttackOutcome(cells, metrics, dict(ctx.params), time.perf_counter() - started)
