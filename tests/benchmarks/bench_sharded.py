"""Exact erasure by sharded adapters (SISA, issue 15): quality, cost of an erasure, what is left of the subject.

    nice -n 10 .venv/bin/python -m tests.benchmarks.bench_sharded               # default size (~10 min on 2 cores, base model included)
    .venv/bin/python -m tests.benchmarks.bench_sharded --quick                  # ~2 min
    .venv/bin/python -m tests.benchmarks.bench_sharded --shards 16 --slices 4 --epochs 12
    .venv/bin/python -m tests.benchmarks.bench_sharded --check-exact            # + train from scratch without the subject
    .venv/bin/python -m tests.benchmarks.bench_sharded --group                  # records placed by person (the README's figures)
    .venv/bin/python -m tests.benchmarks.bench_sharded --group --people 150 --scale --no-approx --no-route --relearn
                                                                                # + 1/10/100 subjects in one job, 10 in sequence

The base model is a demo model trained on *other* people (corpus seed 101): it knows the record formats
but none of the people the adapters are fine-tuned on (the demo corpus of seed 0, people + general text).
Everything is trained with one intra-op thread, as the recipe requires for bitwise results.

Tables:
  quality  retain facts (share of trained people whose greedy answer to the phone / e-mail / SSN
           question is exactly right; the logic of demo.trainer.memorisation_rate) and perplexity on the
           retained people's records and on held-out general text, for: the base model; a single adapter
           (the same code with shards=1, slices=1, trained for slices x epochs passes: as many as the
           sharded model's first slice gets); the sharded model as the library builds it with each combine:
           "sum" and "mean" (the shards' LoRA updates added to the base weights, or their average) and
           "route" (the default: unlearning_worker.routed, each sequence served by the shard under which
           its input is most likely); and, for comparison, routing computed here in the bench (each
           question answered by the shard most confident in its greedy answer; perplexity of the uniform
           token-level mixture; candidate scores the max over shards).
           Target: sharded retain facts within 2 points of the single adapter.
  cost     training seconds and record passes (records x epochs, the compute) of: the sharded model
           from scratch (= a full retrain), exact erasure of 1 and of 10 subjects (retrain_without), a
           projection for subject-keyed placement (all of a subject's records in one shard and slice:
           one shard from that slice, from the measured per-slice times), and a single-adapter fine-tune
           (whose erasure is a full retrain). Target: 1 subject <= 15% of a full retrain with K >= 8.
  erased   after exact erasure of one subject: greedy extraction of the subject's phone / e-mail / SSN
           by the trained question, and the rank of each true value among N random same-format values
           (unlearning_worker.verify.scoring's decoys) by its likelihood after the question, next to
           never-seen holdout people (the control) measured the same way. Target: 0 exact answers and a
           subject mean z within the control's chance band.
  scale    (--scale) one job erasing 1, 10 and --batch subjects, and --sequential one-subject jobs in a
           row on one model line, each judged as "erased" is (0 extracted, mean z within the control's
           band, at most 10 subjects ranked per job) with the retain facts of the people no job erased;
           then the line's last model against one job erasing the same people at once. Targets (issue
           21): every job passes with retain facts >= 95% of before; --batch subjects <= 5x one subject.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import torch

from compliance.registry.artifacts import tree_sha256
from pii.synth import Person
from tests.benchmarks.bench_unlearning import pick_people
from unlearning_worker.demo.corpus import DemoCorpus, build_demo_corpus, question_prompt
from unlearning_worker.demo.trainer import DemoModelConfig, train_demo_model
from unlearning_worker.generation import generate_batch
from unlearning_worker.sharded.recipe import ShardRecipe
from unlearning_worker.sharded.train import (
    AdapterStore,
    Manifest,
    Record,
    layout,
    merge_into,
    retrain_without,
    train_sharded,
    write_model,
)
from unlearning_worker.threads import torch_threads
from unlearning_worker.verify.lm import (
    LoadedModel,
    continuation_logprobs,
    load_model,
    token_logprobs,
    wrap_model,
)
from unlearning_worker.verify.scoring import DecoySampler, secret_of

IDENTIFIERS = ("phone", "email", "ssn")
BASE_SEED = 101  # the base model's corpus: other people, same formats


@dataclass(frozen=True)
class Size:
    shape: dict[str, Any]  # DemoModelConfig fields shared by the base model and the corpus
    base_people: int
    base_steps: int
    people: int
    holdout: int
    epochs: int
    rank: int
    lr: float
    batch_size: int
    candidates: int


SIZES = {
    # 4 x 128 GPT-2 (~0.95M parameters, the demo model's shape); base trained once and cached (~2 min).
    "default": Size(shape={"n_layer": 4, "n_head": 4, "n_embd": 128, "vocab_size": 1024, "n_positions": 160},
                    base_people=100, base_steps=1000, people=60, holdout=20, epochs=12, rank=32, lr=3e-3,
                    batch_size=8, candidates=499),
    # 2 x 128: everything in about two minutes (a 2 x 64 model memorised nothing through LoRA in 40 epochs).
    "quick": Size(shape={"n_layer": 2, "n_head": 4, "n_embd": 128, "vocab_size": 1024, "n_positions": 160},
                  base_people=100, base_steps=600, people=20, holdout=10, epochs=10, rank=16, lr=3e-3,
                  batch_size=8, candidates=249),
}


# --- models under test: one LM (a merged model directory) or K routed shard LMs ---------------------------


@dataclass
class Under:
    label: str
    lms: list[LoadedModel]  # one: a plain model; several: routed shards


def shard_lms(base_dir: Path, manifest: Manifest, store: AdapterStore) -> list[LoadedModel]:
    """One in-memory model per shard: the base with that shard's adapter merged in."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir, local_files_only=True)
    out = []
    for sha in manifest.adapters():
        model = AutoModelForCausalLM.from_pretrained(base_dir, local_files_only=True, dtype=torch.float32)
        merge_into(model, manifest.recipe, [store.get(sha)])
        out.append(wrap_model(model, tokenizer))
    return out


def _ids(lm: LoadedModel, prompt: str, continuation: str) -> tuple[list[int], list[int]]:
    """Prompt ids (with BOS, as in training) and the continuation's ids after them."""
    tok = lm.tokenizer
    p = list(tok(prompt)["input_ids"])
    full = list(tok(prompt + continuation)["input_ids"])
    if full[: len(p)] == p:
        return p, full[len(p):]
    return p, list(tok(continuation, add_special_tokens=False)["input_ids"])


def answers(under: Under, prompts: list[str]) -> list[str]:
    """Greedy answers (up to the newline). Routed: the answer of the shard most confident in its own
    answer (highest mean log-probability per token, the newline included)."""
    best: list[tuple[float, str]] = [(-math.inf, "")] * len(prompts)
    for lm in under.lms:
        texts = [a[0] for a in generate_batch(lm.model, lm.tokenizer, prompts, max_new_tokens=40, stop_at_newline=True)]
        if len(under.lms) == 1:
            return [t.strip() for t in texts]
        pairs = [_ids(lm, p, t + "\n") for p, t in zip(prompts, texts, strict=True)]
        scores = continuation_logprobs(lm, [p for p, _ in pairs], [c for _, c in pairs], batch_size=64)
        for i, (score, (_, cont), text) in enumerate(zip(scores, pairs, texts, strict=True)):
            mean = score / max(1, len(cont))
            if mean > best[i][0]:
                best[i] = (mean, text.strip())
    return [text for _, text in best]


def exact_facts(under: Under, people: Sequence[Person]) -> dict[str, float]:
    """Per identifier: the share of people whose greedy answer is exactly their value."""
    out = {}
    for attribute in IDENTIFIERS:
        got = answers(under, [question_prompt(p.name, attribute) for p in people])
        out[attribute] = sum(g == p.attribute(attribute) for g, p in zip(got, people, strict=True)) / max(1, len(people))
    return out


def perplexity(under: Under, texts: list[str]) -> float:
    """Token-weighted perplexity; routed shards as a uniform token-level mixture."""
    per_lm = [token_logprobs(lm, texts) for lm in under.lms]
    total, count = 0.0, 0
    log_k = math.log(len(under.lms))
    for t in range(len(texts)):
        for j in range(len(per_lm[0][t])):
            total -= torch.logsumexp(torch.tensor([lps[t][j] for lps in per_lm]), 0).item() - log_k
            count += 1
    return math.exp(total / max(1, count))


@dataclass
class Rank:
    rank: float
    candidates: int
    z: float


def rank_values(under: Under, people: Sequence[Person], population: dict[str, list[str]], candidates: int) -> list[Rank]:
    """Each identifier's true value ranked among `candidates` same-format decoys by log p(" " + value |
    question); routed shards score a value by its best shard."""
    out = []
    for person in people:
        for attribute in IDENTIFIERS:
            value = person.attribute(attribute)
            secret = secret_of(value, attribute, name=person.name, population=population[attribute])
            if not secret.attackable:
                continue
            values = [value, *DecoySampler(secret, population[attribute], seed=0).distinct(candidates)]
            prompt = question_prompt(person.name, attribute)
            pairs = [_ids(under.lms[0], prompt, " " + v) for v in values]  # one tokenizer for all shards
            totals = [-math.inf] * len(values)
            for lm in under.lms:
                scores = continuation_logprobs(lm, [p for p, _ in pairs], [c for _, c in pairs], batch_size=256)
                totals = [max(a, b) for a, b in zip(totals, scores, strict=True)]
            true, rest = totals[0], totals[1:]
            rank = 1 + sum(x > true for x in rest) + sum(x == true for x in rest) / 2
            sd = statistics.pstdev(rest)
            out.append(Rank(rank, len(values), (true - statistics.fmean(rest)) / sd if sd > 0 else 0.0))
    return out


# --- data -------------------------------------------------------------------------------------------------


def held_out_general(corpus: DemoCorpus, base_corpus: DemoCorpus) -> list[str]:
    """General (non-personal) sentences of the same generator that neither the base nor the adapters saw."""
    seen = {r.text for r in (*corpus.records, *base_corpus.records)}
    other = build_demo_corpus(400, 7, 0)
    return sorted({r.text for r in other.records if r.kind == "general"} - seen)


def base_config(size: Size) -> DemoModelConfig:
    return DemoModelConfig(**size.shape, n_people=size.base_people, n_holdout=10, seed=BASE_SEED, steps=size.base_steps)


# --- sections ---------------------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "    -" if x is None else f"{100 * x:5.1f}%"


def _mean(values: dict[str, float]) -> float:
    return statistics.fmean(values.values())


def record_passes(recipe: ShardRecipe, records: Sequence[Record], first: Sequence[int | None] | None = None) -> int:
    """Records x epochs that training presents: shard k from slice j trains slices s = j..S-1 on the
    records of slices 0..s for epochs_per_slice epochs each."""
    grid = layout(recipe, records)
    total = 0
    for k, slices in enumerate(grid):
        start = 0 if first is None else first[k]
        if start is None:
            continue
        sizes = [len(s) for s in slices]
        total += sum(sum(sizes[: s + 1]) for s in range(start, recipe.slices)) * recipe.epochs_per_slice
    return total


class SliceClock:
    """Progress callback that times each (shard, slice) of a training run."""

    def __init__(self) -> None:
        self.last = time.perf_counter()
        self.seconds: dict[tuple[int, int], float] = {}

    def __call__(self, event: dict[str, Any]) -> None:
        now = time.perf_counter()
        self.seconds[(event["shard"], event["slice"])] = now - self.last
        self.last = now


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tiny model and corpus (~2 min)")
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--slices", type=int, default=4)
    parser.add_argument("--epochs", type=int, help="epochs per slice (default: the size's)")
    parser.add_argument("--single-epochs", type=int, help="the single adapter's epochs (default: slices x epochs)")
    parser.add_argument("--people", type=int, help="trained people (default: the size's)")
    parser.add_argument("--rank", type=int, help="LoRA rank (alpha = 2 x rank)")
    parser.add_argument("--lr", type=float)
    parser.add_argument("--candidates", type=int, help="decoys per true value in the rank (default: the size's)")
    parser.add_argument("--subjects", type=int, default=10, help="subjects in the larger erasure")
    parser.add_argument("--seed", type=int, default=0, help="which people are erased, and the placement key")
    parser.add_argument("--no-route", action="store_true", help="skip the routed-shards comparison")
    parser.add_argument("--relearn", nargs="*", default=["full:100:3e-3", "full:300:1e-3", "lora:100:3e-3"],
                        metavar="MODE:STEPS:LR", help="relearning attacks on the exact result (none: skip the section)")
    parser.add_argument("--no-approx", action="store_true", help="skip timing the approximate default method")
    parser.add_argument("--group", action="store_true",
                        help="place records by person (recipe group_field): one subject's records in one shard and slice")
    parser.add_argument("--scale", action="store_true",
                        help="+ one job of 1, 10 and --batch subjects, and --sequential one-subject jobs one after "
                             "another (accumulation), each judged on its own (--batch is capped at --people minus "
                             "--sequential minus 10)")
    parser.add_argument("--batch", type=int, default=100, help="subjects in the large one-job erasure of --scale")
    parser.add_argument("--sequential", type=int, default=10, help="sequential one-subject jobs of --scale")
    parser.add_argument("--check-exact", action="store_true",
                        help="also train from scratch without the subject and compare adapters and model hashes")
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "sharded-bench-cache")
    args = parser.parse_args()
    size = SIZES["quick" if args.quick else "default"]
    size = replace(size, people=args.people or size.people, epochs=args.epochs or size.epochs,
                   rank=args.rank or size.rank, lr=args.lr or size.lr, candidates=args.candidates or size.candidates)
    started = time.perf_counter()
    torch.set_num_threads(1)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar per model load: hundreds of lines around the tables
    work = Path(tempfile.mkdtemp(prefix="bench-sharded-"))
    try:
        run(args, size, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\ntotal wall time {time.perf_counter() - started:.0f} s")


def run(args: argparse.Namespace, size: Size, work: Path) -> None:
    t0 = time.perf_counter()
    config = base_config(size)
    base_dir = train_demo_model(config, cache_dir=args.cache_dir)
    base_sha = tree_sha256(base_dir)
    print(f"base model {base_dir.name}: {size.shape['n_layer']} x {size.shape['n_embd']}, trained on {size.base_people} "
          f"other people (seed {BASE_SEED}), {size.base_steps} steps; ready in {time.perf_counter() - t0:.0f} s")
    corpus = build_demo_corpus(size.people, 0, size.holdout)
    base_corpus = config.corpus()
    records = [Record(r.record_id, r.text, group=r.person_id if args.group else "") for r in corpus.records]
    erased_ids = pick_people(corpus, args.subjects, args.seed)
    subject = corpus.person(erased_ids[0])
    retained = [p for p in corpus.people if p.person_id not in set(erased_ids)]
    retained_texts = [r.text for r in corpus.records_of(p.person_id for p in retained)]
    general = held_out_general(corpus, base_corpus)
    population = {a: [p.attribute(a) for p in (*corpus.people, *corpus.holdout_people)] for a in IDENTIFIERS}

    # A fixed placement key (from --seed) so that runs are comparable; a real training run draws a fresh one.
    key = hashlib.sha256(f"bench-sharded:{args.seed}".encode()).hexdigest()
    recipe = ShardRecipe(shards=args.shards, slices=args.slices, epochs_per_slice=size.epochs, lr=size.lr,
                         lora_rank=size.rank, lora_alpha=2 * size.rank, batch_size=size.batch_size, seed=1,
                         assignment_key=key, group_field="person_id" if args.group else "", combine="sum")
    single_epochs = args.single_epochs or args.slices * size.epochs
    single = recipe.replace(shards=1, slices=1, epochs_per_slice=single_epochs)
    print(f"corpus: {len(corpus.people)} people x 7 records + {sum(r.kind == 'general' for r in corpus.records)} general "
          f"= {len(records)} records; {len(corpus.holdout_people)} never-seen holdout people; "
          f"{len(general)} held-out general sentences")
    print(f"recipe: K={recipe.shards} shards x S={recipe.slices} slices, {recipe.epochs_per_slice} epochs per slice, LoRA "
          f"rank {recipe.lora_rank} alpha {recipe.lora_alpha} (every block linear layer), lr {recipe.lr:g}, batch "
          f"{recipe.batch_size}; single adapter: 1 x 1, {single_epochs} epochs; one intra-op thread", flush=True)

    store = AdapterStore(work / "store")
    clock = SliceClock()
    t = time.perf_counter()
    full = train_sharded(base_dir, records, recipe, store, base_sha256=base_sha, progress=clock)
    full_s = time.perf_counter() - t
    print(f"  sharded model trained in {full_s:.0f} s", flush=True)
    t = time.perf_counter()
    single_manifest = train_sharded(base_dir, records, single, store, base_sha256=base_sha)
    single_s = time.perf_counter() - t
    print(f"  single adapter trained in {single_s:.0f} s", flush=True)

    remaining_1 = [r for r in records if not r.record_id.startswith(subject.person_id + "-")]
    gone = tuple(f"{pid}-" for pid in erased_ids)
    remaining_n = [r for r in records if not r.record_id.startswith(gone)]
    t = time.perf_counter()
    after_1, plan_1, _ = retrain_without(base_dir, full, remaining_1, store, base_sha256=base_sha)
    erase1_s = time.perf_counter() - t
    t = time.perf_counter()
    _after_n, plan_n, _ = retrain_without(base_dir, full, remaining_n, store, base_sha256=base_sha)
    erasen_s = time.perf_counter() - t
    print(f"  erasures: 1 subject in {erase1_s:.0f} s, {len(erased_ids)} subjects in {erasen_s:.0f} s", flush=True)

    dirs = {name: write_model(base_dir, m, store, work / name)
            for name, m in (("sharded", full), ("single", single_manifest), ("erased", after_1))}
    for combine, name, manifest in (("mean", "mean", full), ("route", "route", full), ("route", "route-erased", after_1)):
        variant = Manifest(recipe=manifest.recipe.replace(combine=combine), base_sha256=manifest.base_sha256,
                           shards=manifest.shards)
        dirs[name] = write_model(base_dir, variant, store, work / name)
    exact_line = ""
    if args.check_exact:
        scratch_store = AdapterStore(work / "scratch-store")
        scratch = train_sharded(base_dir, remaining_1, recipe, scratch_store, base_sha256=base_sha)
        scratch_dir = write_model(base_dir, scratch, scratch_store, work / "scratch")
        same = scratch.adapters() == after_1.adapters() and tree_sha256(scratch_dir) == tree_sha256(dirs["erased"])
        exact_line = (f"exact: erased model == sharded model trained from scratch without the subject "
                      f"(adapters and model directory hash): {'yes' if same else 'NO'}")

    with torch_threads(1):
        quality(args, size, base_dir, dirs, store, full, corpus, retained, retained_texts, general, full_s, single_s,
                single_epochs)
        cost(args, recipe, records, remaining_1, remaining_n, full, plan_1, plan_n, clock, full_s, erase1_s, erasen_s,
             single, single_s, len(erased_ids))
        erased(args, size, base_dir, dirs, store, full, after_1, corpus, subject, retained, population)
        if args.relearn:
            attacked(args, size, dirs, corpus, subject, retained, population)
        if args.scale:
            scale(args, size, base_dir, full, records, corpus, store, work, population, full_s=full_s,
                  erase1_s=erase1_s)
    if not args.no_approx:
        approximate(dirs, corpus, erased_ids, work, full_s=full_s, single_s=single_s, erase1_s=erase1_s,
                    erasen_s=erasen_s)
    if exact_line:
        print("\n" + exact_line)


def quality(args: argparse.Namespace, size: Size, base_dir: Path, dirs: dict[str, Path], store: AdapterStore,
            full: Manifest, corpus: DemoCorpus, retained: list[Person], retained_texts: list[str], general: list[str],
            full_s: float, single_s: float, single_epochs: int) -> None:
    rows: list[tuple[str, Under, float | None]] = [
        ("base (formats only)", Under("base", [load_model(base_dir)]), None),
        (f"single adapter (1 x 1, {single_epochs} ep)", Under("single", [load_model(dirs["single"])]), single_s),
        (f"sharded K={full.recipe.shards} S={full.recipe.slices}, sum",
         Under("sum", [load_model(dirs["sharded"])]), full_s),
        (f"sharded K={full.recipe.shards} S={full.recipe.slices}, mean",
         Under("mean", [load_model(dirs["mean"])]), full_s),
        (f"sharded K={full.recipe.shards} S={full.recipe.slices}, route (default)",
         Under("route-lib", [load_model(dirs["route"])]), full_s),
    ]
    if not args.no_route:
        rows.append((f"sharded K={full.recipe.shards} S={full.recipe.slices}, routed (bench)",
                     Under("route", shard_lms(base_dir, full, store)), full_s))
    print(f"\n== quality: {len(corpus.people)} trained people (retain facts over all of them), "
          f"{len(retained)} retained people's records and {len(general)} held-out general sentences for perplexity")
    head = (f"{'model':40} {'retain facts':>12} {'phone':>7} {'email':>7} {'ssn':>7} {'ppl retained':>12}"
            f" {'ppl general':>11} {'train s':>8}")
    print(head)
    print("-" * len(head))
    facts: dict[str, float] = {}
    for label, under, seconds in rows:
        got = exact_facts(under, corpus.people)
        facts[under.label] = _mean(got)
        print(f"{label:40} {_pct(_mean(got)):>12} {_pct(got['phone']):>7} {_pct(got['email']):>7} {_pct(got['ssn']):>7}"
              f" {perplexity(under, retained_texts):12.3f} {perplexity(under, general):11.3f}"
              f" {'-' if seconds is None else f'{seconds:.0f}':>8}", flush=True)
    for name in ("sum", "mean", "route-lib", "route"):
        if name in facts:
            gap = facts[name] - facts["single"]
            verdict = "n/a, the single adapter memorised nothing" if facts["single"] == 0 else (
                "PASS" if gap >= -0.02 else "MISS")
            print(f"target: sharded ({name}) retain facts within 2 points of the single adapter: {verdict} "
                  f"({100 * facts[name]:.1f}% vs {100 * facts['single']:.1f}%, {100 * gap:+.1f} points)")


def cost(args: argparse.Namespace, recipe: ShardRecipe, records: list[Record], remaining_1: list[Record],
         remaining_n: list[Record], full: Manifest, plan_1: Any, plan_n: Any, clock: SliceClock, full_s: float,
         erase1_s: float, erasen_s: float, single: ShardRecipe, single_s: float, n_subjects: int) -> None:
    K, S = recipe.shards, recipe.slices
    full_passes = record_passes(recipe, records)
    # subject-keyed placement: the subject's records in one (shard, slice), uniformly placed; erasing
    # them retrains that shard from that slice. Measured per-slice times of the full training, averaged.
    slice_s = clock.seconds
    projected = statistics.fmean(
        sum(slice_s.get((k, s), 0.0) for s in range(j, S)) for k in range(K) for j in range(S)
    )
    grid = layout(recipe, records)
    projected_passes = statistics.fmean(
        sum(sum(len(x) for x in grid[k][: s + 1]) for s in range(j, S)) * recipe.epochs_per_slice
        for k in range(K) for j in range(S)
    )

    def units(plan: Any) -> int:
        return sum(S - j for j in plan.first_changed if j is not None)

    print("\n== cost: training seconds (one intra-op thread) and record passes (records x epochs presented)")
    head = f"{'run':52} {'shards':>7} {'slice runs':>10} {'seconds':>8} {'share':>7} {'passes':>8} {'share':>7}"
    print(head)
    print("-" * len(head))
    rows = [
        (f"sharded K={K} S={S} from scratch (= full retrain)", f"{K}/{K}", K * S, full_s, full_passes),
        ("exact erasure, 1 subject (retrain_without)", f"{len(plan_1.affected)}/{K}", units(plan_1), erase1_s,
         record_passes(recipe, remaining_1, plan_1.first_changed)),
        (f"exact erasure, {n_subjects} subjects (retrain_without)", f"{len(plan_n.affected)}/{K}", units(plan_n), erasen_s,
         record_passes(recipe, remaining_n, plan_n.first_changed)),
        ("projected: subject-keyed placement, 1 subject", f"1/{K}", (S + 1) / 2, projected, projected_passes),
        (f"single adapter fine-tune (= its erasure), {single.epochs_per_slice} ep", "1/1", 1, single_s,
         record_passes(single, records)),
    ]
    for label, shards, runs, seconds, passes in rows:
        print(f"{label:52} {shards:>7} {runs:>10} {seconds:8.1f} {_pct(seconds / full_s):>7} {passes:8.0f}"
              f" {_pct(passes / full_passes):>7}")
    share = erase1_s / full_s
    verdict = "PASS" if share <= 0.15 and K >= 8 else "MISS"
    print(f"target: exact erasure of 1 subject <= 15% of a full retrain with K >= 8: {verdict} ({100 * share:.1f}%"
          f"{'' if K >= 8 else f', K={K}'}); projected with subject-keyed placement: {100 * projected / full_s:.1f}%")


def vs_control(subject: Sequence[Rank], control: Sequence[Rank]) -> tuple[float, float]:
    """(subject mean z - control mean z, its chance band at 95%: the control's spread x sqrt(1/n + 1/m))."""
    control_z = [r.z for r in control]
    band = 1.96 * max(1.0, statistics.stdev(control_z)) * math.sqrt(1 / len(subject) + 1 / len(control))
    return statistics.fmean(r.z for r in subject) - statistics.fmean(control_z), band


def erased(args: argparse.Namespace, size: Size, base_dir: Path, dirs: dict[str, Path], store: AdapterStore,
           full: Manifest, after: Manifest, corpus: DemoCorpus, subject: Person, retained: list[Person],
           population: dict[str, list[str]]) -> None:
    controls = list(corpus.holdout_people)
    pairs: list[tuple[str, Under, Under]] = [
        ("route (library)", Under("route-lib", [load_model(dirs["route"])]),
         Under("route-lib", [load_model(dirs["route-erased"])])),
    ]
    if not args.no_route:
        pairs.append(("routed (bench)", Under("route", shard_lms(base_dir, full, store)),
                      Under("route", shard_lms(base_dir, after, store))))
    print(f"\n== erased: subject {subject.person_id} ({len(IDENTIFIERS)} identifiers) after exact erasure; rank of the "
          f"true value among {size.candidates} same-format decoys; control: {len(controls)} never-seen holdout people")
    head = (f"{'model':16} {'who':22} {'exact greedy':>12} {'mean rank':>10} {'best rank':>10} {'top-10':>7}"
            f" {'mean z':>7} {'retain facts':>12}")
    print(head)
    print("-" * len(head))
    for label, before, after_under in pairs:
        rows = []
        for who, under, people in (("subject, before", before, [subject]), ("subject, after", after_under, [subject]),
                                   ("control, after", after_under, controls)):
            got = exact_facts(under, people)
            ranks = rank_values(under, people, population, size.candidates)
            rows.append((who, got, ranks))
            retain = _mean(exact_facts(under, retained)) if who != "control, after" else None
            exact = sum(round(v * len(people)) for v in got.values())
            print(f"{label:16} {who:22} {f'{exact}/{len(people) * len(IDENTIFIERS)}':>12}"
                  f" {statistics.fmean(r.rank for r in ranks):10.1f} {min(r.rank for r in ranks):10.1f}"
                  f" {_pct(sum(r.rank <= 10 for r in ranks) / len(ranks)):>7} {statistics.fmean(r.z for r in ranks):7.2f}"
                  f" {_pct(retain):>12}", flush=True)
            label = ""
        _, got_after, subj = rows[1]
        _, _, ctrl = rows[2]
        gap, band = vs_control(subj, ctrl)
        control_z = [r.z for r in ctrl]
        leaked = sum(round(v) for v in got_after.values())
        verdict = "PASS" if leaked == 0 and abs(gap) <= band else "MISS"
        _, got_before, subj_before = rows[0]
        before_gap = statistics.fmean(r.z for r in subj_before) - statistics.fmean(control_z)
        known = sum(round(v) for v in got_before.values()) > 0 or before_gap > band
        print(f"{'':16} target: 0 exact and |subject z - control z| <= chance band: {verdict} "
              f"({leaked} exact; gap {gap:+.2f}, band {band:.2f})"
              f"{'' if known else '; vacuous: the model did not know the subject before either'}")



def attacked(args: argparse.Namespace, size: Size, dirs: dict[str, Path], corpus: DemoCorpus, subject: Person,
             retained: list[Person], population: dict[str, list[str]]) -> None:
    """The exact result (routed, as served) attacked as an adaptive attacker would: fine-tuned on other
    people's records and general text (no record of the subject), and quantized; the subject's values
    ranked again next to the never-seen control."""
    from unlearning_worker.verify.attacks.adaptive import RelearnSetting, relearn
    from unlearning_worker.verify.attacks.quantization import quantize_weights
    from unlearning_worker.verify.lm import LoadedModel

    lm = load_model(dirs["route-erased"])
    texts = [r.text for r in corpus.records_of(p.person_id for p in retained)] + [
        r.text for r in corpus.records if r.kind == "general"]
    controls = list(corpus.holdout_people)
    copies: list[tuple[str, LoadedModel]] = []
    for setting in args.relearn:
        copies.append((f"relearned {setting}", relearn(lm, texts, RelearnSetting.parse(setting), batch_size=8, seed=0)))
    for bits, group in ((8, 0), (4, 64)):
        copies.append((f"int{bits}", LoadedModel(model=quantize_weights(lm.model, bits, group), tokenizer=lm.tokenizer,
                                                 device=lm.device)))
    print(f"\n== attacked: the exact result (route) of subject {subject.person_id}, fine-tuned on {len(texts)} other "
          f"records (none of the subject's) or quantized; rank among {size.candidates} decoys vs the control")
    head = (f"{'attack':28} {'subject exact':>13} {'subject z':>9} {'control z':>9} {'top-1 subj/ctrl':>16}"
            f" {'gap':>6} {'band':>5}  verdict")
    print(head)
    print("-" * len(head))
    for name, copy_lm in copies:
        under = Under(name, [copy_lm])
        got = exact_facts(under, [subject])
        subj = rank_values(under, [subject], population, size.candidates)
        ctrl = rank_values(under, controls, population, size.candidates)
        control_z = [r.z for r in ctrl]
        gap, band = vs_control(subj, ctrl)
        leaked = sum(round(v) for v in got.values())
        top1 = (sum(r.rank <= 1 for r in subj) / len(subj), sum(r.rank <= 1 for r in ctrl) / len(ctrl))
        verdict = "PASS" if leaked == 0 and abs(gap) <= band else "MISS"
        print(f"{name:28} {f'{leaked}/{len(IDENTIFIERS)}':>13} {statistics.fmean(r.z for r in subj):9.2f}"
              f" {statistics.fmean(control_z):9.2f} {_pct(top1[0]):>8}/{_pct(top1[1]):>7} {gap:+6.2f} {band:5.2f}  {verdict}",
              flush=True)



def _without(records: Sequence[Record], person_ids: Sequence[str]) -> list[Record]:
    gone = tuple(f"{pid}-" for pid in person_ids)
    return [r for r in records if not r.record_id.startswith(gone)]


def _judge(under: Under, subjects: Sequence[Person], controls: Sequence[Person], population: dict[str, list[str]],
           candidates: int, ranked: int) -> tuple[int, int, float, float, float]:
    """One erasure job judged as the bench judges the exact result: (values extracted by the trained
    question over every subject, values asked, subject mean z, control mean z, chance band). The rank
    test takes at most `ranked` subjects (a seeded sample), which bounds its cost for large batches."""
    got = exact_facts(under, subjects)
    leaked = sum(round(v * len(subjects)) for v in got.values())
    sample = list(subjects) if len(subjects) <= ranked else random.Random("scale").sample(list(subjects), ranked)
    subj = rank_values(under, sample, population, candidates)
    ctrl = rank_values(under, controls, population, candidates)
    gap, band = vs_control(subj, ctrl)
    return leaked, len(subjects) * len(IDENTIFIERS), statistics.fmean(r.z for r in subj), gap, band


class ScaleRow(NamedTuple):
    label: str
    shards: int  # shards retrained
    subjects: int
    seconds: float
    passes: int  # record passes of the retraining
    leaked: int
    asked: int
    z: float  # subjects' mean z
    gap: float  # subjects' mean z minus the control's
    band: float
    facts: float  # retain facts of the people no job erased


def scale(args: argparse.Namespace, size: Size, base_dir: Path, full: Manifest, records: list[Record],
          corpus: DemoCorpus, store: AdapterStore, work: Path, population: dict[str, list[str]], *, full_s: float,
          erase1_s: float) -> None:
    """Batching and accumulation on the exact path (issue 21's utility targets): one job of 1, 10 and
    --batch subjects, and --sequential one-subject jobs on the same model line, each judged on its own:
    no value extracted by the trained question, the subjects' mean z within the chance band of the
    never-seen control, retain facts of the people no job erased against the model before any erasure.
    Then the sequential line's last model is compared with one job erasing all of them at once: the
    exact path has nothing to accumulate, so the two must be the same adapters."""
    people = [p.person_id for p in corpus.people]
    n_batch = min(args.batch, len(people) - args.sequential - 10)
    if n_batch < 10:
        raise SystemExit(f"--scale needs --people >= {args.sequential + 20} (here {len(people)})")
    order = pick_people(corpus, len(people), args.seed + 1)  # a different draw from the main section's
    sequential_ids = order[n_batch: n_batch + args.sequential]  # nobody the one-job erasures took
    kept_people = [corpus.person(pid) for pid in order[n_batch + args.sequential:]]
    controls = list(corpus.holdout_people)
    ranked = 10

    def served(manifest: Manifest, name: str) -> Under:
        routed = Manifest(recipe=manifest.recipe.replace(combine="route"), base_sha256=manifest.base_sha256,
                          shards=manifest.shards)
        return Under(name, [load_model(write_model(base_dir, routed, store, work / f"scale-{name}"))])

    facts_before = _mean(exact_facts(served(full, "before"), kept_people))
    rows: list[ScaleRow] = []

    def judge(label: str, manifest: Manifest, plan: Any, seconds: float, kept: list[Record], subjects: list[str],
              name: str) -> None:
        under = served(manifest, name)
        leaked, asked, z, gap, band = _judge(under, [corpus.person(p) for p in subjects], controls, population,
                                             size.candidates, ranked)
        passes = record_passes(manifest.recipe, kept, plan.first_changed)
        rows.append(ScaleRow(label, len(plan.affected), len(subjects), seconds, passes, leaked, asked, z, gap, band,
                     _mean(exact_facts(under, kept_people))))
        print(f"  {label}: retrained in {seconds:.1f} s, judged", flush=True)

    for n in sorted({1, 10, n_batch}):
        ids = order[:n]
        kept = _without(records, ids)
        after, plan, seconds = retrain_without(base_dir, full, kept, store, base_sha256=full.base_sha256)
        judge(f"one job, {n} subject{'s' if n > 1 else ''}", after, plan, seconds, kept, ids, f"batch-{n}")
    manifest, remaining = full, list(records)
    for i, pid in enumerate(sequential_ids, 1):
        remaining = _without(remaining, [pid])
        manifest, plan, seconds = retrain_without(base_dir, manifest, remaining, store, base_sha256=full.base_sha256)
        judge(f"sequential job {i}", manifest, plan, seconds, remaining, [pid], f"seq-{i}")
    at_once, _, _ = retrain_without(base_dir, full, _without(records, sequential_ids), store,
                                    base_sha256=full.base_sha256)

    # One subject's cost depends on the slice that held them (a late slice retrains less): the baseline
    # is the mean over every one-subject job here (the one-job erasure of 1 and the sequential ones), in
    # seconds and in record passes (the compute, which other load on the machine does not change).
    one_s = statistics.fmean(r.seconds for r in rows if r.subjects == 1)
    one_passes = statistics.fmean(r.passes for r in rows if r.subjects == 1)
    print(f"\n== scale: exact erasure of N subjects in one job, and {len(sequential_ids)} one-subject jobs in sequence "
          f"on one model line; retain facts over the {len(kept_people)} people no job erased (before any erasure: "
          f"{_pct(facts_before)}); each job's subjects (at most {ranked} ranked, {size.candidates} decoys) against "
          f"the {len(controls)} never-seen controls; 1 subject = {one_s:.1f} s and {one_passes:.0f} record passes, the "
          f"mean of the one-subject jobs")
    head = (f"{'job':26} {'shards':>7} {'seconds':>8} {'x 1 subj':>8} {'% retrain':>9} {'passes':>7} {'x 1 subj':>8}"
            f" {'extracted':>9}"
            f" {'subj z':>7} {'gap':>6} {'band':>5} {'retain facts':>12} {'x before':>8}  verdict")
    print(head)
    print("-" * len(head))
    failed = []
    full_passes = record_passes(full.recipe, records)
    for label, shards, _n, seconds, passes, leaked, asked, z, gap, band, facts in rows:
        ratio = facts / facts_before if facts_before else float("nan")
        ok = leaked == 0 and abs(gap) <= band and ratio >= 0.95
        if not ok:
            failed.append(label)
        print(f"{label:26} {f'{shards}/{full.recipe.shards}':>7} {seconds:8.1f} {seconds / one_s:8.2f}"
              f" {_pct(seconds / full_s):>9} {passes:7d} {passes / one_passes:8.2f} {f'{leaked}/{asked}':>9} {z:7.2f}"
              f" {gap:+6.2f} {band:5.2f}"
              f" {_pct(facts):>12} {ratio:8.3f}  {'PASS' if ok else 'MISS'}")
    sequential_s = sum(r.seconds for r in rows if r.label.startswith("sequential"))
    same = at_once.adapters() == manifest.adapters()
    print(f"sequential: {len(sequential_ids)} jobs in {sequential_s:.0f} s; the last model == one job erasing all "
          f"{len(sequential_ids)} from the first (same adapters): {'yes' if same else 'NO'}")
    batch = next(r for r in rows if r.subjects == n_batch and r.label.startswith("one job"))
    ratio, by_passes = batch.seconds / one_s, batch.passes / one_passes
    print(f"target: {n_batch} subjects in one job <= 5x one subject: {'PASS' if max(ratio, by_passes) <= 5 else 'MISS'} "
          f"({ratio:.1f}x in seconds, {by_passes:.1f}x in record passes, {100 * batch.passes / full_passes:.0f}% of a full "
          f"retrain's; they sit in {batch.shards} of {full.recipe.shards} shards)")
    print(f"target: every job passes (0 extracted, |gap| <= band, retain facts >= 95% of before): "
          f"{'PASS' if not failed and same else 'MISS (' + ', '.join(failed or ['sequential != at once']) + ')'}")


def approximate(dirs: dict[str, Path], corpus: DemoCorpus, erased_ids: list[str], work: Path, *, full_s: float,
                single_s: float, erase1_s: float, erasen_s: float) -> None:
    """The approximate default method (the service's default spec) on the single-adapter model, for the
    same 1 and N subjects: what erasure costs where the model was not fine-tuned in shards."""
    from unlearning_worker.demo.corpus import demo_items
    from unlearning_worker.engine import run_unlearning
    from unlearning_worker.spec import UnlearningSpec

    print("\n== time: exact erasure vs a full retrain vs the approximate default method (one intra-op thread)")
    head = f"{'subjects':>8} {'exact (route)':>13} {'full retrain':>12} {'single-adapter retrain':>22} {'approximate':>22}"
    print(head)
    print("-" * len(head))
    for n, exact_s in ((1, erase1_s), (len(erased_ids), erasen_s)):
        forget, retain = demo_items(corpus, erased_ids[:n])
        spec = UnlearningSpec(num_threads=1, device="cpu")
        t = time.perf_counter()
        result = run_unlearning(model_dir=dirs["single"], out_dir=work / f"approx-{n}", forget=forget, retain=retain,
                                spec=spec)
        approx_s = time.perf_counter() - t
        label = f"{approx_s:.0f} s ({spec.method}, {getattr(result, 'steps', '?')} steps)"
        print(f"{n:8d} {f'{exact_s:.0f} s':>13} {f'{full_s:.0f} s':>12} {f'{single_s:.0f} s':>22} {label:>22}", flush=True)


if __name__ == "__main__":
    main()
