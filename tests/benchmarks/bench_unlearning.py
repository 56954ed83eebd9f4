"""Benchmark of the unlearning engine on the demo model (prints tables).

    nice -n 10 .venv/bin/python -m tests.benchmarks.bench_unlearning                   # methods table
    nice -n 10 .venv/bin/python -m tests.benchmarks.bench_unlearning --sections methods,batching,accumulation,baseline
    .venv/bin/python -m tests.benchmarks.bench_unlearning --device cuda --big             # 100M+ model, full + LoRA

Sections:
  methods       every registered method on the same forget set: forget extraction (greedy and best of
                --samples samples at temperature 1, partial leaks counted by leakage.judge_leak at 0.5)
                before/after, retain extraction and perplexity before/after, steps, wall time
  batching      the default method on 1, 10 and 100 subjects in one run: wall time
  accumulation  10 sequential one-subject runs, each from the previous output: utility and the earlier
                subjects' extraction after each run
  baseline      retraining the demo model from scratch without the subject, next to the unlearning time
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from unlearning_worker.data import ForgetItem, RetainItem, encode
from unlearning_worker.demo.corpus import DemoCorpus, demo_items
from unlearning_worker.demo.trainer import DemoModelConfig, train_demo_model
from unlearning_worker.engine import _targeted, run_unlearning
from unlearning_worker.evaluation import perplexity, probes, run_probes
from unlearning_worker.spec import METHODS, UnlearningSpec

# Per-method settings for the comparison. The classic methods are run as they are usually published
# (whole answer, their own learning rates); every run stops on the same evidence rule.
_PUBLISHED = {"span_only": False, "lr": 2e-4, "retain_weight": 1.0, "retain_batch_size": 32, "retain_focus": 0.0}
METHOD_SPECS: dict[str, dict[str, Any]] = {
    "ga": _PUBLISHED,
    "grad_diff": _PUBLISHED,
    "npo": _PUBLISHED,
    "simnpo": _PUBLISHED,
    "idk_dpo": _PUBLISHED,
    "rmu": _PUBLISHED | {"retain_weight": 10.0},
    "relabel": {},  # span-only relabelling with the default method's retain settings
    "floor": {},  # the default
}


@dataclass
class Measure:
    forget_greedy: float
    forget_sampled: float | None
    retain_leak: float
    retain_exact: float
    retain_ppl: float


def measure(model_dir: Path, forget: list[ForgetItem], retain_probe: list[RetainItem], *, samples: int,
            device: str, seed: int = 0) -> Measure:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).to(device)
    f_probes = probes(tokenizer, (f.prompt for f in forget), (f.completion for f in forget), (f.values for f in forget))
    leaked, _, total = run_probes(model, tokenizer, f_probes, threshold=0.5)
    sampled = None
    if samples:
        s_leaked, _, _ = run_probes(model, tokenizer, f_probes, threshold=0.5, samples=samples, seed=seed)
        sampled = s_leaked / total
    r_probes = probes(tokenizer, (r.prompt for r in retain_probe), (r.completion for r in retain_probe),
                       (r.values() for r in retain_probe))
    r_leaked, r_exact, r_total = run_probes(model, tokenizer, r_probes, threshold=0.5)
    pad = tokenizer.pad_token_id
    examples = [encode(tokenizer, r.prompt, r.completion, r.pii_spans) for r in retain_probe]
    ppl = perplexity(model, examples, pad, torch.device(device))
    return Measure(leaked / total, sampled, r_leaked / max(r_total, 1), r_exact / max(r_total, 1), ppl)


def pick_people(corpus: DemoCorpus, n: int, seed: int) -> list[str]:
    ids = [p.person_id for p in corpus.people]
    random.Random(f"bench:{seed}").shuffle(ids)
    return ids[:n]


def retain_probe_set(retain: list[RetainItem], n: int) -> list[RetainItem]:
    with_pii = [r for r in retain if r.pii_spans and "\n" not in r.completion.rstrip("\n")]
    rng = random.Random("retain-probe")
    return rng.sample(with_pii, min(n, len(with_pii))) + [r for r in retain if not r.pii_spans][:50]


def fmt(x: float | None, pct: bool = True) -> str:
    if x is None:
        return "-"
    return f"{100 * x:5.1f}%" if pct else f"{x:6.3f}"


def section_methods(args: argparse.Namespace, model_dir: Path, corpus: DemoCorpus, work: Path) -> None:
    people = pick_people(corpus, args.subjects, args.seed)
    forget, retain = demo_items(corpus, people)
    forget = _targeted(forget, base_spec(args))  # what every run forgets: the identifiers (spec.attributes)
    probe = retain_probe_set(retain, args.retain_probes)
    base = measure(model_dir, forget, probe, samples=args.samples, device=args.device)
    print(f"\n== methods: {len(people)} subject(s), {len(forget)} forget records, {len(retain)} retain records; "
          f"retain probes {len(probe)}; samples {args.samples} at T=1; threshold 0.5")
    header = (f"{'method':10} {'forget greedy':>15} {'forget sampled':>15} {'retain leak':>15} {'retain exact':>15}"
              f" {'retain ppl':>17} {'steps':>5} {'stop':>18} {'wall s':>7}")
    print(header)
    print("-" * len(header))
    for method in args.methods:
        spec = base_spec(args).replace(method=method, **METHOD_SPECS.get(method, {}))
        out = work / f"out-{method}"
        result = run_unlearning(model_dir=model_dir, out_dir=out, forget=forget, retain=retain, spec=spec)
        after = measure(out, forget, probe, samples=args.samples, device=args.device)
        print(f"{method:10} {fmt(base.forget_greedy)} -> {fmt(after.forget_greedy)}"
              f" {fmt(base.forget_sampled)} -> {fmt(after.forget_sampled)}"
              f" {fmt(base.retain_leak)} -> {fmt(after.retain_leak)} {fmt(base.retain_exact)} -> {fmt(after.retain_exact)}"
              f" {base.retain_ppl:6.3f} -> {after.retain_ppl:6.3f} {result.steps:5d} {result.stop_reason:>18}"
              f" {result.wall_s:7.1f}", flush=True)
        shutil.rmtree(out)


def section_batching(args: argparse.Namespace, model_dir: Path, corpus: DemoCorpus, work: Path) -> None:
    print("\n== batching: default method, subjects in one run")
    print(f"{'subjects':>8} {'forget greedy after':>20} {'retain exact':>13} {'steps':>6} {'stop':>18} {'wall s':>8}"
          f" {'x one':>6}")
    one = None
    for n in args.batch_sizes:
        people = pick_people(corpus, n, args.seed + 1)
        forget, retain = demo_items(corpus, people)
        out = work / f"batch-{n}"
        result = run_unlearning(model_dir=model_dir, out_dir=out, forget=forget, retain=retain, spec=base_spec(args))
        one = one or result.wall_s
        print(f"{n:8d} {fmt(result.final.forget_extraction_greedy):>20} {fmt(result.final.retain_exact):>13}"
              f" {result.steps:6d} {result.stop_reason:>18} {result.wall_s:8.1f} {result.wall_s / one:6.2f}", flush=True)
        shutil.rmtree(out)


def section_accumulation(args: argparse.Namespace, model_dir: Path, corpus: DemoCorpus, work: Path) -> None:
    print("\n== accumulation: 10 sequential runs, each from the previous output")
    people = pick_people(corpus, 10, args.seed + 2)
    _, all_retain = demo_items(corpus, people)
    probe = retain_probe_set(all_retain, args.retain_probes)
    print(f"{'run':>3} {'this subject':>13} {'earlier subjects':>17} {'retain exact':>13} {'retain ppl':>10}"
          f" {'stop':>18} {'wall s':>7}")
    current = model_dir
    for i, person in enumerate(people):
        forget, retain = demo_items(corpus, [person])
        retain = [r for r in retain if not any(r.prompt == f.prompt for f in demo_items(corpus, people)[0])]
        out = work / f"acc-{i}"
        result = run_unlearning(model_dir=current, out_dir=out, forget=forget, retain=retain, spec=base_spec(args))
        earlier = _targeted(demo_items(corpus, people[: i + 1])[0], base_spec(args))
        m = measure(out, earlier, probe, samples=0, device=args.device)
        print(f"{i + 1:3d} {fmt(result.final.forget_extraction_greedy):>13} {fmt(m.forget_greedy):>17}"
              f" {fmt(m.retain_exact):>13} {m.retain_ppl:10.3f} {result.stop_reason:>18} {result.wall_s:7.1f}", flush=True)
        if current != model_dir:
            shutil.rmtree(current)
        current = out


def section_baseline(args: argparse.Namespace, config: DemoModelConfig, model_dir: Path, corpus: DemoCorpus,
                     work: Path) -> None:
    print("\n== exact baseline: retrain from scratch without the subject vs unlearning")
    person = pick_people(corpus, 1, args.seed)
    forget, retain = demo_items(corpus, person)
    forget = _targeted(forget, base_spec(args))
    started = time.perf_counter()
    retrained = train_demo_model(config, cache_dir=work / "retrain", exclude_person_ids=frozenset(person))
    retrain_s = time.perf_counter() - started
    out = work / "baseline-unlearn"
    result = run_unlearning(model_dir=model_dir, out_dir=out, forget=forget, retain=retain, spec=base_spec(args))
    probe = retain_probe_set(retain, args.retain_probes)
    m_retrain = measure(retrained, forget, probe, samples=args.samples, device=args.device)
    m_unlearn = measure(out, forget, probe, samples=args.samples, device=args.device)
    print(f"{'model':10} {'forget greedy':>13} {'forget sampled':>14} {'retain exact':>13} {'wall s':>8}")
    print(f"{'retrain':10} {fmt(m_retrain.forget_greedy):>13} {fmt(m_retrain.forget_sampled):>14}"
          f" {fmt(m_retrain.retain_exact):>13} {retrain_s:8.1f}")
    print(f"{'unlearn':10} {fmt(m_unlearn.forget_greedy):>13} {fmt(m_unlearn.forget_sampled):>14}"
          f" {fmt(m_unlearn.retain_exact):>13} {result.wall_s:8.1f}")


def base_spec(args: argparse.Namespace) -> UnlearningSpec:
    overrides = {k: v for k, v in (("eval_samples", args.eval_samples), ("max_steps", args.max_steps)) if v is not None}
    return UnlearningSpec(device=args.device, num_threads=args.threads, seed=args.seed, lora=args.lora, **overrides)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default="methods", help="comma list: methods,batching,accumulation,baseline")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--subjects", type=int, default=1, help="forget-set size of the methods section")
    parser.add_argument("--batch-sizes", default="1,10,100")
    parser.add_argument("--samples", type=int, default=20, help="samples at temperature 1 per forget probe")
    parser.add_argument("--eval-samples", type=int, default=None, help="sampled probes inside the stopping rule (default: the spec's)")
    parser.add_argument("--retain-probes", type=int, default=300)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--n-people", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--lora", action="store_true")
    parser.add_argument("--big", action="store_true", help="100M+ parameter model from config (GPU)")
    parser.add_argument("--model-dir", type=Path, help="use this trained demo model (same n_people/seed) as is")
    parser.add_argument("--smoke", action="store_true", help="a tiny 6-person model: checks the script runs")
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "erasure-demo-cache")
    args = parser.parse_args()
    args.methods = [m for m in args.methods.split(",") if m]
    args.batch_sizes = [int(x) for x in args.batch_sizes.split(",")]
    sections = set(args.sections.split(","))
    torch.set_num_threads(args.threads) if args.threads else None

    config = DemoModelConfig(n_people=args.n_people)
    if args.big:
        config = DemoModelConfig.big(n_people=args.n_people, device=args.device)
    if args.smoke:
        config = DemoModelConfig(n_people=6, n_holdout=2, n_layer=2, n_head=2, n_embd=32, vocab_size=400, steps=150,
                                 batch_size=8, lr=1e-2, warmup_steps=5, n_positions=320)
        args.batch_sizes = [1, 3]
    started = time.perf_counter()
    model_dir = args.model_dir or train_demo_model(config, cache_dir=args.cache_dir)
    n_params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(model_dir).parameters())
    print(f"demo model {model_dir.name}: {n_params / 1e6:.2f}M parameters, ready in {time.perf_counter() - started:.1f} s")
    corpus = config.corpus()
    work = Path(tempfile.mkdtemp(prefix="bench-unlearning-"))
    try:
        if "methods" in sections:
            section_methods(args, model_dir, corpus, work)
            if args.big and not args.lora:
                section_methods(replace_lora(args), model_dir, corpus, work)
        if "batching" in sections:
            section_batching(args, model_dir, corpus, work)
        if "accumulation" in sections:
            section_accumulation(args, model_dir, corpus, work)
        if "baseline" in sections:
            section_baseline(args, config, model_dir, corpus, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def replace_lora(args: argparse.Namespace) -> argparse.Namespace:
    print("\n(LoRA)")
    return argparse.Namespace(**(vars(args) | {"lora": True}))


if __name__ == "__main__":
    main()
