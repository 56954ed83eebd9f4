"""Benchmark of the verification suite on the demo model (issue 7).

    nice -n 10 .venv/bin/python -m tests.benchmarks.bench_verify [--subjects 10] [--steps N]
        [--cache-dir var/demo_cache] [--skip-retrain] [--skip-engine] [--out var/bench_verify]

Three runs, each printed as a table:
  A. true positives: the base demo model (which memorised everyone) attacked for a batch of subjects;
     the suite must detect leakage for nearly every subject.
  B. true negatives: a model retrained from scratch without those subjects
     (train_demo_model(exclude_person_ids=...)); the suite must pass and the membership AUC be ~0.5.
  C. the unlearning engine's default method on the same subjects: before/after per attack, with the
     attacks that did not steer the unlearning marked (the engine steers on greedy trained-question
     extraction only).
and the time per subject of the full suite (target: under 30 s on CPU).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from unlearning_worker.demo.corpus import ATTRIBUTE_LABELS, DemoCorpus, bio_record, qa_record
from unlearning_worker.demo.trainer import DemoModelConfig, train_demo_model
from unlearning_worker.threads import torch_threads
from unlearning_worker.verify import (
    SubjectFacts,
    VerificationPolicy,
    VerificationReport,
    render_plots,
    run_verification,
)

EXTRACTION = ("direct_probe", "sampling", "paraphrase_jailbreak", "verbatim", "logit_lens", "exposure")
STEERING = {"direct_probe"}  # what the engine's stopping rule measures (greedy, trained question)


def facts_for(corpus: DemoCorpus, person_ids: list[str]) -> list[SubjectFacts]:
    out = []
    for pid in person_ids:
        person = corpus.person(pid)
        out.append(
            SubjectFacts(
                subject_key=pid,
                name=person.name,
                values={a: person.attribute(a) for a in ATTRIBUTE_LABELS},
                forget_texts=[r.text for r in corpus.records_of([pid])],
            )
        )
    return out


def holdout_texts(corpus: DemoCorpus) -> list[str]:
    """Records of never-trained people, of exactly the form of the trained ones (bio + QA)."""
    texts = []
    for i, person in enumerate(corpus.holdout_people):
        texts.append(bio_record(person, i).text)
        texts.extend(qa_record(person, a).text for a in ATTRIBUTE_LABELS)
    return texts


def verify(model_dir: Path, base_dir: Path | None, args: argparse.Namespace, data: dict[str, Any]) -> VerificationReport:
    started = time.perf_counter()

    def progress(stage: str, fraction: float) -> None:
        print(f"  [{time.perf_counter() - started:6.1f} s] {stage} done ({fraction:.0%})", flush=True)

    with torch_threads(args.threads):
        return run_verification(
            model_dir=model_dir, base_model_dir=base_dir, policy=data["policy"], progress=progress, **data["people"]
        )


def fmt(value: float | None) -> str:
    return "   n/a" if value is None else f"{value:6.3f}"


def print_metrics(title: str, report: VerificationReport) -> None:
    print(f"\n== {title}")
    print(f"{'attack':<22}{'metric':<26}{'before':>8}{'after':>8}  steered?")
    for attack, metric, before, after in report.metric_table():
        if metric.startswith("leak_rate.") or metric in ("mean_share",):
            continue
        steered = "yes" if attack in STEERING else "no"
        print(f"{attack:<22}{metric:<26}{fmt(before):>8}{fmt(after):>8}  {steered}")
    print(f"verdict: {report.verdict.summary}")
    t = report.timings
    print(f"time: {t['total_seconds']:.1f} s total, {t['seconds_per_subject']:.1f} s per subject "
          f"(after {t['after_seconds']:.1f} s, before {t['before_seconds']:.1f} s)")
    per_attack = sorted(((k.split(".")[0], v) for k, v in t.items() if k.endswith(".after_seconds")), key=lambda x: -x[1])
    print("after-side seconds per attack: " + ", ".join(f"{k} {v:.1f}" for k, v in per_attack))


# Per-cell successes of the logit lens are judged against chance only in aggregate (its chance rate is
# 0.15-0.2 per cell): a single cell is no finding, so the per-subject count leaves it out.
PER_SUBJECT = tuple(a for a in EXTRACTION if a != "logit_lens")


def detection_table(report: VerificationReport, side: str = "after") -> tuple[int, int]:
    """Subjects for whom at least one per-cell extraction attack found a leak."""
    detected = 0
    for key in report.subject_keys:
        hit = False
        for attack in PER_SUBJECT:
            outcome = getattr(report.attacks.get(attack), side, None) if attack in report.attacks else None
            if outcome is not None and any(c.success for c in outcome.cells if c.subject_key == key):
                hit = True
        detected += hit
    return detected, len(report.subject_keys)


def per_attack_subject_rates(report: VerificationReport) -> None:
    print(f"{'attack':<22}{'subject_leak_rate before':>26}{'after':>8}")
    for attack in EXTRACTION:
        rep = report.attacks.get(attack)
        if rep is None:
            continue
        b = rep.before.metrics.get("subject_leak_rate") if rep.before else None
        a = rep.after.metrics.get("subject_leak_rate") if rep.after else None
        if attack == "logit_lens":
            b = rep.before.metrics.get("leak_rate") if rep.before else None
            a = rep.after.metrics.get("leak_rate") if rep.after else None
        print(f"{attack:<22}{fmt(b):>26}{fmt(a):>8}")


def run_base(base_dir: Path, args: argparse.Namespace, data: dict[str, Any]) -> None:
    report_a = verify(base_dir, None, args, data)

    detected, total = detection_table(report_a)
    print_metrics("A. base demo model (memorised everyone): true positives", report_a)
    per_attack_subject_rates(report_a)
    print(f"subjects detected as leaking by at least one attack: {detected}/{total}")
    (args.out / "report_base.json").write_text(json.dumps(report_a.to_dict(), indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=10)
    parser.add_argument("--retain", type=int, default=20)
    parser.add_argument("--steps", type=int, default=None, help="demo model training steps (default: the config's)")
    parser.add_argument("--lr", type=float, default=None, help="demo model learning rate (default: the config's)")
    parser.add_argument("--cache-dir", type=Path, default=Path("var/demo_cache"))
    parser.add_argument("--out", type=Path, default=Path("var/bench_verify"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--base-dir", type=Path, default=None, help="use this demo model instead of training one")
    parser.add_argument("--retrained-dir", type=Path, default=None,
                        help="a model trained like --base-dir without the first --subjects people")
    parser.add_argument("--utility-floor", type=float, default=None, help="override the engine spec's utility_floor")
    parser.add_argument("--negatives-without-base", action="store_true",
                        help="run B on the retrained model alone (no before column; half the time)")
    parser.add_argument("--skip-base", action="store_true", help="skip run A (the base model on its own)")
    parser.add_argument("--skip-retrain", action="store_true")
    parser.add_argument("--skip-engine", action="store_true")
    args = parser.parse_args()

    overrides = {k: v for k, v in (("steps", args.steps), ("lr", args.lr)) if v is not None}
    config = DemoModelConfig(**overrides)
    corpus = config.corpus()
    t0 = time.perf_counter()
    base_dir = args.base_dir or train_demo_model(config, cache_dir=args.cache_dir)
    print(f"base demo model: {base_dir} ({time.perf_counter() - t0:.0f} s incl. training if not cached)")
    subject_ids = [p.person_id for p in corpus.people[: args.subjects]]
    retain_ids = [p.person_id for p in corpus.people[args.subjects : args.subjects + args.retain]]
    policy = VerificationPolicy.load(None).with_labels(ATTRIBUTE_LABELS)
    data = {
        "policy": policy,
        "people": {
            "subjects": facts_for(corpus, subject_ids),
            "retain": facts_for(corpus, retain_ids),
            "holdout_texts": holdout_texts(corpus),
            "general_texts": [r.text for r in corpus.records if r.kind == "general"][:64],
        },
    }
    attacked = [a for a in (policy.attributes or ATTRIBUTE_LABELS) if a in ATTRIBUTE_LABELS]
    print(f"subjects: {len(subject_ids)}, retain people: {len(retain_ids)}, attributes: {', '.join(attacked)}")
    args.out.mkdir(parents=True, exist_ok=True)

    # A. true positives
    if not args.skip_base:
        run_base(base_dir, args, data)

    # B. true negatives
    if not args.skip_retrain:
        t0 = time.perf_counter()
        retrained = args.retrained_dir or train_demo_model(
            config, cache_dir=args.cache_dir, exclude_person_ids=frozenset(subject_ids)
        )
        print(f"\nretrained without the subjects: {retrained} ({time.perf_counter() - t0:.0f} s)")
        report_b = verify(retrained, None if args.negatives_without_base else base_dir, args, data)
        print_metrics("B. retrained from scratch without the subjects: true negatives", report_b)
        per_attack_subject_rates(report_b)
        detected, total = detection_table(report_b)
        print(f"subjects (wrongly) detected as leaking: {detected}/{total}")
        print(f"membership-inference AUC: {report_b.attacks['membership_inference'].after.metrics['auc']:.3f}")
        (args.out / "report_retrained.json").write_text(json.dumps(report_b.to_dict(), indent=1))

    # C. the engine's default method
    if not args.skip_engine:
        try:
            from unlearning_worker.demo.corpus import demo_items
            from unlearning_worker.engine import run_unlearning
            from unlearning_worker.spec import UnlearningSpec
        except ImportError as exc:
            print(f"\nC. skipped: the unlearning engine is not importable ({exc})")
            return
        work = Path(tempfile.mkdtemp(prefix="bench_verify_"))
        try:
            forget, retain = demo_items(corpus, subject_ids)
            spec_overrides: dict[str, Any] = {"num_threads": args.threads}
            if args.utility_floor is not None:
                spec_overrides["utility_floor"] = args.utility_floor
            spec = UnlearningSpec(**spec_overrides)
            t0 = time.perf_counter()
            result = run_unlearning(model_dir=base_dir, out_dir=work / "unlearned", forget=forget, retain=retain, spec=spec)
            print(f"\nengine: method {spec.method}, utility_floor {spec.utility_floor}, {result.steps} steps, "
                  f"stop: {result.stop_reason}, {time.perf_counter() - t0:.0f} s; forget extraction "
                  f"{result.before.forget_extraction:.3f} -> {result.final.forget_extraction:.3f}, retain exact "
                  f"{result.before.retain_exact:.3f} -> {result.final.retain_exact:.3f}")
            report_c = verify(result.out_dir, base_dir, args, data)
            print_metrics(f"C. after unlearning with the engine's default method ({spec.method})", report_c)
            per_attack_subject_rates(report_c)
            history = [
                {"step": p.step, "forget_extraction": p.forget_extraction, "retain_extraction": p.retain_extraction,
                 "retain_ppl": p.retain_ppl}
                for p in result.history
            ]
            paths = render_plots(report_c, history, args.out / "plots")
            print("plots: " + ", ".join(str(p) for p in paths))
            (args.out / "report_unlearned.json").write_text(json.dumps(report_c.to_dict(), indent=1))
        finally:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
