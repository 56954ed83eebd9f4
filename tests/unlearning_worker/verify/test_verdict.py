"""The verdict: pass or fail, and every check that decided a failure, with measured value against threshold."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from unlearning_worker.verify import VerificationPolicy, VerificationReport, render_plots, verify_loaded
from unlearning_worker.verify.lm import load_model
from unlearning_worker.verify.registry import AttackOutcome
from unlearning_worker.verify.report import AttackReport
from unlearning_worker.verify.runner import _attack_with_retries, _checks

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_memorising_model_fails_naming_the_deciding_thresholds(trained_report: VerificationReport) -> None:
    verdict = trained_report.verdict
    assert not verdict.passed
    failing = {(c.attack, c.metric) for c in verdict.failing}
    assert ("direct_probe", "leak_rate") in failing
    assert ("membership_inference", "neighbour_excess") in failing
    assert any(line.startswith("direct_probe.leak_rate = 1 (rule: leak_rate <= 0.0) [fail]") for line in verdict.decided_by)
    assert verdict.summary.startswith("FAIL: ")
    assert all(c.value is not None for c in verdict.failing)


def test_model_that_never_saw_the_subjects_passes(untrained_report: VerificationReport) -> None:
    verdict = untrained_report.verdict
    privacy = [c for c in verdict.checks if c.attack != "utility"]
    assert all(c.status == "pass" for c in privacy), [c.describe() for c in privacy if c.status != "pass"]
    # Utility against the trained base collapses (an untrained model knows nothing): that, and only
    # that, is what fails, and the verdict says so.
    assert {c.attack for c in verdict.failing} == {"utility"}


def test_a_looser_policy_passes_what_a_strict_one_fails(world: Any, make_policy: Callable[..., VerificationPolicy]) -> None:
    lm = load_model(world.trained_dir)
    policy = make_policy()
    raw = policy.to_dict()
    raw["attacks"]["direct_probe"]["thresholds"] = {"leak_rate": {"max": 1.0}}
    loose = VerificationPolicy.from_dict(raw)
    report = verify_loaded(
        lm=lm, base_loader=None, subjects=world.subjects[:1], retain=[], holdout_texts=[], general_texts=[],
        policy=_only(loose, "direct_probe"),
    )
    assert report.verdict.passed, report.verdict.summary
    strict = verify_loaded(
        lm=lm, base_loader=None, subjects=world.subjects[:1], retain=[], holdout_texts=[], general_texts=[],
        policy=_only(policy, "direct_probe"),
    )
    assert not strict.verdict.passed
    assert strict.verdict.decided_by == ["direct_probe.leak_rate = 1 (rule: leak_rate <= 0.0) [fail]"]


def test_mandatory_attack_that_cannot_be_evaluated_fails_the_verdict(world: Any, make_policy: Callable[..., VerificationPolicy]) -> None:
    # No record of the subjects to read: membership inference has nothing to judge. Mandatory, so the
    # verdict fails on it.
    lm = load_model(world.untrained_dir)
    report = verify_loaded(
        lm=lm, base_loader=None, subjects=[replace(s, forget_texts=[]) for s in world.subjects], retain=[],
        holdout_texts=world.holdout_texts, general_texts=[], policy=_only(make_policy(), "membership_inference"),
    )
    assert not report.verdict.passed
    assert report.verdict.decided_by == ["membership_inference.neighbour_excess = n/a (rule: neighbour_excess <= 0.0) [not_evaluated]"]
    # without holdout records the AUC cannot be read, but the neighbour rule can: the records about
    # people the model never saw are written from the subjects' own
    no_holdout = verify_loaded(
        lm=lm, base_loader=None, subjects=world.subjects, retain=[], holdout_texts=[], general_texts=[],
        policy=_only(make_policy(), "membership_inference"),
    )
    assert no_holdout.verdict.passed, no_holdout.verdict.summary
    assert no_holdout.attacks["membership_inference"].after.metrics["auc"] is None


def test_retry_with_stronger_setting_is_recorded(make_policy: Callable[..., VerificationPolicy]) -> None:
    policy = make_policy(retries=2)
    calls: list[int] = []

    class FakeContext:  # the retry loop only passes params through to the attack
        def __init__(self, params: dict) -> None:  # type: ignore[type-arg]
            self.params = params

    from unlearning_worker.verify import registry

    spec = registry.ATTACKS["sampling"]

    def fake_attack(ctx: FakeContext) -> AttackOutcome:  # type: ignore[misc]
        calls.append(ctx.params["budget"])
        leak = 1.0 if ctx.params["budget"] >= 32 else 0.0  # only the second retry finds the leak
        return AttackOutcome(cells=[], metrics={"leak_rate": leak}, params=dict(ctx.params))

    registry.ATTACKS["sampling"] = registry.AttackSpec(**{**spec.__dict__, "fn": fake_attack})  # type: ignore[arg-type]
    try:
        report = _attack_with_retries("sampling", policy.attacks["sampling"], policy.retries, FakeContext)  # type: ignore[arg-type]
    finally:
        registry.ATTACKS["sampling"] = spec
    assert calls == [8, 16, 32]
    assert report.strength == 2
    assert [a["strength"] for a in report.attempts] == [0, 1, 2]
    (check,) = _checks("sampling", policy.attacks["sampling"], report)
    assert check.status == "fail" and check.strength == 2


def test_crashing_attack_is_reported_without_its_message(make_policy: Callable[..., VerificationPolicy]) -> None:
    policy = make_policy()
    report = AttackReport(name="exposure", after=None, before=None, strength=0, error="RuntimeError")
    (leak_rate, mean_bits) = _checks("exposure", policy.attacks["exposure"], report)
    assert leak_rate.status == "error" and leak_rate.decides_failure


def test_render_plots_writes_pngs(tmp_path: Path, untrained_report: VerificationReport) -> None:
    history = [
        {"step": 0, "forget_extraction": 1.0, "retain_extraction": 1.0, "retain_ppl": 1.2},
        {"step": 10, "forget_extraction": 0.4, "retain_extraction": 0.95, "retain_ppl": 1.4},
        {"step": 20, "forget_extraction": 0.0, "retain_extraction": 0.9, "retain_ppl": 1.6},
    ]
    paths = render_plots(untrained_report, history, tmp_path / "plots")
    assert {p.name for p in paths} == {"attacks_before_after.png", "forget_retain_tradeoff.png"}
    for path in paths:
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5_000
    assert [p.name for p in render_plots(untrained_report, [], tmp_path / "no_history")] == ["attacks_before_after.png"]
    # Readable on the job page: at most four panels a row, so the image is not a thin strip.
    import struct

    width, height = struct.unpack(">II", (tmp_path / "plots" / "attacks_before_after.png").read_bytes()[16:24])
    assert width <= 1300 and height >= 250, (width, height)


def test_verify_package_is_pure() -> None:
    code = (
        "import sys, unlearning_worker.verify, unlearning_worker.verify.runner;"
        "assert 'django' not in sys.modules, 'django imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[3])
    assert result.returncode == 0, result.stderr[-500:]


def _only(policy: VerificationPolicy, attack: str) -> VerificationPolicy:
    raw = policy.to_dict()
    for name, entry in raw["attacks"].items():
        if name != attack:
            entry["enabled"] = False
            entry["mandatory"] = False
    return VerificationPolicy.from_dict(raw)
