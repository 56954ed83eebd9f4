"""run_verification: attack the new model version (and the base version), apply the policy, give a verdict.

Steps:
1. Check the inputs and work out, for each subject and attribute, the secret part of the value.
2. Load the new version and run every enabled attack. An attack whose measured values all pass is
   rerun with stronger settings up to `policy.retries` times; the report keeps the strongest run
   (or the first one that failed) and lists every attempt.
3. Load the base version, if given, and run the same attacks at the same strength ("before").
4. Relative metrics (utility against the base version), then one check per policy threshold; the
   verdict fails on any failing check and on any mandatory attack that could not be evaluated.

Pure: no Django, no environment reads.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from unlearning_worker.verify.attacks.common import fictitious_people
from unlearning_worker.verify.facts import SubjectFacts
from unlearning_worker.verify.lm import LoadedModel, load_model
from unlearning_worker.verify.policy import AttackPolicy, VerificationPolicy
from unlearning_worker.verify.registry import ATTACKS, AttackContext, AttackOutcome
from unlearning_worker.verify.report import AttackReport, CheckResult, Verdict, VerificationReport
from unlearning_worker.verify.scoring import Secret, secret_of

Progress = Callable[[str, float], None]
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")


def run_verification(
    *,
    model_dir: Path,
    base_model_dir: Path | None,
    subjects: list[SubjectFacts],
    retain: list[SubjectFacts],
    holdout_texts: list[str],
    general_texts: list[str],
    policy: VerificationPolicy,
    controls: list[SubjectFacts] | None = None,
    device: str = "cpu",
    progress: Progress | None = None,
    other_texts: Sequence[str] = (),
) -> VerificationReport:
    """Attack `model_dir` (and `base_model_dir` for the before column) for each subject; see module doc."""
    started = time.perf_counter()
    after_lm = load_model(Path(model_dir), device)
    try:
        report = verify_loaded(
            lm=after_lm,
            base_loader=(lambda: load_model(Path(base_model_dir), device)) if base_model_dir is not None else None,
            subjects=subjects,
            retain=retain,
            holdout_texts=holdout_texts,
            general_texts=general_texts,
            policy=policy,
            controls=controls,
            progress=progress,
            other_texts=other_texts,
        )
    finally:
        del after_lm
        gc.collect()
    report.model_sha256 = weights_sha256(Path(model_dir))
    report.base_model_sha256 = weights_sha256(Path(base_model_dir)) if base_model_dir is not None else None
    report.timings["total_seconds"] = time.perf_counter() - started
    report.timings["seconds_per_subject"] = report.timings["total_seconds"] / max(1, len(subjects))
    return report


def verify_loaded(
    *,
    lm: LoadedModel,
    base_loader: Callable[[], LoadedModel] | None,
    subjects: Sequence[SubjectFacts],
    retain: Sequence[SubjectFacts],
    holdout_texts: Sequence[str],
    general_texts: Sequence[str],
    policy: VerificationPolicy,
    controls: Sequence[SubjectFacts] | None = None,
    progress: Progress | None = None,
    other_texts: Sequence[str] = (),
) -> VerificationReport:
    """The same as run_verification on an already loaded model (tests, the engine's live evaluation).

    `controls`: people the model never saw (None: generated fictitious people, see never_seen_controls).
    `other_texts`: text an attacker may hold beyond the retain records and general text (the training
    corpus without the subjects' records), which the relearning attack fine-tunes on as well."""
    started = time.perf_counter()
    _check_inputs(subjects, retain)
    other = tuple(other_texts)  # shared by every attack's context
    control_people = choose_controls(controls, subjects, retain, policy)
    _check_inputs([*subjects, *control_people], retain)
    population, secrets = _secrets([*subjects, *control_people], retain)
    enabled = [(name, ap) for name, ap in policy.attacks.items() if ap.enabled]
    reports: dict[str, AttackReport] = {}
    with_before = [name for name, _ap in enabled if ATTACKS[name].run_before]
    total_steps = len(enabled) + (len(with_before) if base_loader is not None else 0)
    step = 0

    def tick(stage: str) -> None:
        nonlocal step
        step += 1
        if progress is not None:
            progress(stage, step / total_steps)

    def context(model: LoadedModel, name: str, params: dict[str, Any]) -> AttackContext:
        return AttackContext(
            lm=model,
            subjects=list(subjects),
            retain=list(retain),
            holdout_texts=list(holdout_texts),
            general_texts=list(general_texts),
            params=params,
            leak_share=policy.leak_share,
            chance_quantile=policy.attack_quantile(name),
            attribute_labels=policy.attribute_labels,
            attributes=policy.attributes,
            seed=policy.seed,
            secrets=secrets,
            population=population,
            controls=control_people,
            other_texts=other,
        )

    # 2. The new version, with retries at stronger settings while everything passes.
    after_seconds = time.perf_counter()
    for name, ap in enabled:
        reports[name] = _attack_with_retries(name, ap, policy.retries, functools.partial(context, lm, name))
        tick(f"after:{name}")
    after_seconds = time.perf_counter() - after_seconds

    # 3. The base version, at the strength each attack ended at.
    before_seconds = 0.0
    if base_loader is not None:
        t0 = time.perf_counter()
        base = base_loader()
        try:
            for name in with_before:
                rep = reports[name]
                if rep.after is not None:
                    try:
                        rep.before = _run(name, context(base, name, dict(rep.after.params)))
                    except Exception as exc:  # noqa: BLE001  (recorded; the after side decides)
                        rep.attempts.append({"side": "before", "error": _error_text(exc)})
                tick(f"before:{name}")
        finally:
            del base
            gc.collect()
        before_seconds = time.perf_counter() - t0

    # 4. Relative metrics and checks.
    for name, rep in reports.items():
        spec = ATTACKS[name]
        if spec.compare is not None and rep.after is not None and rep.before is not None:
            rep.relative = spec.compare(rep.before, rep.after)
        elif spec.compare is not None:
            rep.relative = {k: None for k in spec.metrics if k not in (rep.after.metrics if rep.after else {})}
    checks = [check for name, ap in enabled for check in _checks(name, ap, reports[name])]
    verdict = Verdict(passed=not any(c.decides_failure for c in checks), checks=checks)
    timings = {"after_seconds": after_seconds, "before_seconds": before_seconds}
    for name, rep in reports.items():
        timings[f"{name}.after_seconds"] = sum(a.get("seconds", 0.0) for a in rep.attempts if a.get("side") == "after")
        if rep.before is not None:
            timings[f"{name}.before_seconds"] = rep.before.seconds
    timings["verify_seconds"] = time.perf_counter() - started
    return VerificationReport(
        threat_model=threat_model(policy, reports, control_people, generated=not controls),
        policy_name=policy.name,
        policy_sha256=policy.sha256,
        model_sha256=None,
        base_model_sha256=None,
        subject_keys=[s.subject_key for s in subjects],
        attacks=reports,
        verdict=verdict,
        timings=timings,
    )


def _attack_with_retries(
    name: str, ap: AttackPolicy, retries: int, make_context: Callable[[dict[str, Any]], AttackContext]
) -> AttackReport:
    spec = ATTACKS[name]
    report = AttackReport(name=name, after=None, before=None, strength=0)
    levels = range(0, (retries if spec.strengthen is not None else 0) + 1)
    for level in levels:
        params = dict(ap.params) if level == 0 or spec.strengthen is None else spec.strengthen(dict(ap.params), level)
        try:
            outcome = _run(name, make_context(params))
        except Exception as exc:  # noqa: BLE001  (an attack that crashes is reported, not fatal)
            report.error = _error_text(exc)
            report.attempts.append({"side": "after", "strength": level, "error": report.error})
            break
        report.after, report.strength, report.error = outcome, level, None
        report.attempts.append({"side": "after", "strength": level, "metrics": outcome.metrics, "seconds": outcome.seconds})
        measured = [(t, outcome.metrics.get(t.metric)) for t in ap.thresholds]
        failed = any(v is not None and not t.passes(v) for t, v in measured)
        if failed:
            break  # already found a leak: a stronger attack can only confirm it
    return report


def _run(name: str, ctx: AttackContext) -> AttackOutcome:
    with torch.inference_mode():
        return ATTACKS[name].fn(ctx)


def _checks(name: str, ap: AttackPolicy, rep: AttackReport) -> list[CheckResult]:
    out = []
    for t in ap.thresholds:
        value = rep.metric(t.metric)
        if rep.error is not None and rep.after is None:
            status = "error"
        elif value is None:
            status = "not_evaluated"
        else:
            status = "pass" if t.passes(value) else "fail"
        out.append(
            CheckResult(
                attack=name,
                metric=t.metric,
                threshold=t.describe(),
                bound=t.to_dict(),
                value=value,
                status=status,
                mandatory=ap.mandatory,
                strength=rep.strength,
            )
        )
    return out


def _check_inputs(subjects: Sequence[SubjectFacts], retain: Sequence[SubjectFacts]) -> None:
    if not subjects:
        raise ValueError("run_verification needs at least one subject")
    keys = [s.subject_key for s in subjects] + [r.subject_key for r in retain]
    if len(set(keys)) != len(keys):
        raise ValueError("subject keys must be unique across subjects and retain people")


def _secrets(
    subjects: Sequence[SubjectFacts], retain: Sequence[SubjectFacts]
) -> tuple[dict[str, list[str]], dict[tuple[str, str], Secret]]:
    population: dict[str, list[str]] = {}
    for person in [*subjects, *retain]:
        for attribute, value in person.values.items():
            population.setdefault(attribute, []).append(value)
    secrets = {
        (s.subject_key, a): secret_of(v, a, name=s.name, population=population[a])
        for s in subjects
        for a, v in s.values.items()
    }
    return population, secrets


COMPARED = ("candidate_rank", "relearning", "quantization")
_COMPARISON_METRICS = ("mean_z", "control_mean_z", "mean_z_band", "rank1_share", "control_rank1_share",
                       "top10_share", "control_top10_share")


def threat_model(
    policy: VerificationPolicy, reports: dict[str, AttackReport], controls: Sequence[SubjectFacts], *, generated: bool
) -> dict[str, Any]:
    """The attacker the verdict was measured against, as the report, the certificate and an auditor
    read it: the families that ran at the strength they ended at, their budgets, and how the subjects
    compared with the never-seen control (figures only, no values)."""

    def params(name: str) -> dict[str, Any]:
        rep = reports.get(name)
        return dict(rep.after.params) if rep is not None and rep.after is not None else {}

    budgets: dict[str, Any] = {}
    if "sampling" in reports:
        budgets["sampling_budget"] = params("sampling").get("budget")
    if "candidate_rank" in reports:
        budgets["rank_candidates"] = params("candidate_rank").get("candidates")
    if "relearning" in reports:
        budgets["relearning_settings"] = list(params("relearning").get("settings", []))
        # the data the relearning attacker fine-tuned on: texts in all, and those from the training corpus
        budgets["relearning_texts"] = params("relearning").get("fine_tune_texts")
        budgets["relearning_corpus_texts"] = params("relearning").get("fine_tune_corpus_texts")
    if "quantization" in reports:
        budgets["quantization_levels"] = list(params("quantization").get("levels", []))
    comparison = {}
    for name in COMPARED:
        rep = reports.get(name)
        if rep is not None and rep.after is not None:
            comparison[name] = {k: rep.after.metrics.get(k) for k in _COMPARISON_METRICS}
    return {
        "families": sorted(reports),
        "strength": {name: rep.strength for name, rep in sorted(reports.items())},
        "retries": policy.retries,
        **budgets,
        "control": {"people": len(controls), "source": "generated" if generated else "held-out"},
        "never_seen_comparison": comparison,
        # how often a person the model never saw may fail: the whole verdict (None: not bounded as a
        # whole, each attack at its own level) and each attack's share, per run (policy.attack_quantile)
        "false_failure_level": {
            "verdict": policy.verdict_level,
            "attacks": {name: round(1.0 - policy.attack_quantile(name), 6)
                        for name in sorted(reports) if name in policy.judged()},
        },
    }


CONTROL_SEED = 7_919  # fictitious people drawn for the control: never the demo corpus's seed (0)


def choose_controls(
    held_out: Sequence[SubjectFacts] | None, subjects: Sequence[SubjectFacts], retain: Sequence[SubjectFacts],
    policy: VerificationPolicy,
) -> list[SubjectFacts]:
    """The never-seen control the verdict compares the subjects with: the eval set's held-out people,
    the first policy.control_people of them (a longer list is cut, so that the same policy reads the
    same number of people whatever the eval set holds; a shorter one is read whole, and the report's
    threat model says how many), else policy.control_people generated fictitious people
    (never_seen_controls). The two are not mixed: held-out people come with records of their own and
    generated ones borrow the subjects', and a rule reads one spread over people alike."""
    if held_out:
        return list(held_out)[: policy.control_people]
    return never_seen_controls(subjects, retain, policy)


def never_seen_controls(
    subjects: Sequence[SubjectFacts], retain: Sequence[SubjectFacts], policy: VerificationPolicy,
    *, count: int | None = None,
) -> list[SubjectFacts]:
    """`count` (default policy.control_people) generated fictitious people with values of the
    subjects' formats: the never-seen control where the caller has no held-out people. Names or values
    that collide with a subject or a person in `retain` are skipped. Their records are the subjects' own
    records with the identity swapped (so that membership-style prompts compare like with like)."""
    return fictitious_people([*subjects, *retain], sorted({a for s in subjects for a in s.values}),
                             policy.control_people if count is None else count, seed=CONTROL_SEED + policy.seed,
                             key_prefix="control")


def _error_text(exc: Exception) -> str:
    # The exception type only: messages from deep inside a model or tokenizer can quote the inputs,
    # and the report is stored; the traceback goes to the worker's own handling.
    return type(exc).__name__


def weights_sha256(model_dir: Path) -> str | None:
    """SHA-256 over the weight files of a model directory (names and bytes, in name order)."""
    files = sorted(p for p in model_dir.iterdir() if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES))
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()
