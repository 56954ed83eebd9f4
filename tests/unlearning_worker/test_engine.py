"""The engine's contract: atomic output, cancellation, exceptions, resume, rollback, base untouched."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import unlearning_worker.engine as engine_module
from unlearning_worker.checkpoints import MANIFEST_FILE
from unlearning_worker.demo.corpus import DemoCorpus, demo_items
from unlearning_worker.engine import ProgressEvent, UnlearningCancelled, run_unlearning
from unlearning_worker.spec import UnlearningSpec

# No stop on evidence unless a test asks for it: run exactly max_steps steps, and save the last (without
# the rank check, a run that ends at max_steps would save the checked point nearest the control).
FIXED = {"device": "cpu", "dtype": "float32", "min_steps": 6, "max_steps": 6, "eval_every": 3, "batch_size": 4,
         "retain_batch_size": 4, "eval_retain_items": 8, "utility_floor": 0.0, "ppl_ceiling": 1e9, "lr": 5e-3,
         "rank_candidates": 0}


def _tree_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _items(corpus: DemoCorpus) -> tuple[list, list]:
    return demo_items(corpus, [corpus.people[0].person_id])


def test_run_writes_complete_output_and_leaves_base_untouched(
    tiny_model_dir: Path, tiny_corpus: DemoCorpus, tmp_path: Path
) -> None:
    base_hash = _tree_hash(tiny_model_dir)
    forget, retain = _items(tiny_corpus)
    events: list[ProgressEvent] = []
    result = run_unlearning(model_dir=tiny_model_dir, out_dir=tmp_path / "out", forget=forget, retain=retain,
                            spec=UnlearningSpec(**FIXED), progress=events.append)
    assert _tree_hash(tiny_model_dir) == base_hash
    assert result.steps == 6 and result.steps_run == 6
    assert [p.step for p in result.history] == [0, 3, 6]
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert (tmp_path / "out" / MANIFEST_FILE).is_file()
    assert result.weights_sha256["model.safetensors"] == hashlib.sha256(
        (tmp_path / "out" / "model.safetensors").read_bytes()).hexdigest()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary sibling left
    assert [e.step for e in events if e.phase == "step"] == [1, 2, 3, 4, 5, 6]
    assert all("forget" in e.losses for e in events if e.phase == "step")
    before = load_file(tiny_model_dir / "model.safetensors")
    after = load_file(tmp_path / "out" / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)
    manifest = (tmp_path / "out" / MANIFEST_FILE).read_text()
    assert tiny_corpus.people[0].phone not in manifest and tiny_corpus.people[0].name not in manifest
    # where the time went: each phase that ran, summing to the run's wall time with the rest as "other";
    # the saving event (the job's log line) has them up to the save; the manifest has no timings
    phases = result.phase_seconds
    assert {"prepare", "steps", "check:extraction", "check:retain", "save", "other"} <= set(phases)
    assert all(s >= 0 for s in phases.values()) and abs(sum(phases.values()) - result.wall_s) < 0.1
    (saving,) = [e.phase_seconds for e in events if e.phase == "saving"]
    assert set(saving) == set(phases) - {"save"} and saving["steps"] == phases["steps"]
    assert "phase_seconds" not in json.loads(manifest)


def test_existing_out_dir_is_refused(tiny_model_dir: Path, tiny_corpus: DemoCorpus, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    forget, retain = _items(tiny_corpus)
    with pytest.raises(ValueError, match="must not exist"):
        run_unlearning(model_dir=tiny_model_dir, out_dir=tmp_path / "out", forget=forget, retain=retain,
                       spec=UnlearningSpec(**FIXED))


def test_cancel_leaves_no_output(tiny_model_dir: Path, tiny_corpus: DemoCorpus, tmp_path: Path) -> None:
    forget, retain = _items(tiny_corpus)
    calls = iter(range(100))
    with pytest.raises(UnlearningCancelled):
        run_unlearning(model_dir=tiny_model_dir, out_dir=tmp_path / "out", forget=forget, retain=retain,
                       spec=UnlearningSpec(**FIXED), should_cancel=lambda: next(calls) >= 2)
    assert list(tmp_path.iterdir()) == []


def test_exception_while_saving_leaves_no_output(
    tiny_model_dir: Path, tiny_corpus: DemoCorpus, tmp_path: Path
) -> None:
    forget, retain = _items(tiny_corpus)

    def fail_on_save(event: ProgressEvent) -> None:
        if event.phase == "saving":
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        run_unlearning(model_dir=tiny_model_dir, out_dir=tmp_path / "out", forget=forget, retain=retain,
                       spec=UnlearningSpec(**FIXED), progress=fail_on_save)
    assert list(tmp_path.iterdir()) == []


# floor and counterfactual: their never-seen targets travel in the checkpoint; relabel: its draws are rebuilt on resume
@pytest.mark.parametrize("method", ["npo", "relabel", "floor", "counterfactual"])
def test_resume_from_checkpoint_matches_uninterrupted_run(
    tiny_model_dir: Path, tiny_corpus: DemoCorpus, tmp_path: Path, method: str
) -> None:
    forget, retain = _items(tiny_corpus)
    spec = UnlearningSpec(**{**FIXED, "method": method}, checkpoint_every=2)
    ckpt = tmp_path / "ckpt"
    steps_seen: list[int] = []

    def cancel_after_step_5() -> bool:
        return bool(steps_seen) and steps_seen[-1] >= 5

    with pytest.raises(UnlearningCancelled):
        run_unlearning(model_dir=tiny_model_dir, out_dir=tmp_path / "a", forget=forget, retain=retain, spec=spec,
                       checkpoint_dir=ckpt, should_cancel=cancel_after_step_5,
                       progress=lambda e: steps_seen.append(e.step) if e.phase == "step" else None)
    assert (ckpt / "checkpoint.pt").is_file() and not (tmp_path / "a").exists()
    # a different spec must not pick the checkpoint up
    other = run_unlearning(model_dir=tiny_model_dir, out_dir=tmp_path / "other", forget=forget, retain=retain,
                           spec=spec.replace(seed=1, checkpoint_every=0), checkpoint_dir=ckpt)
    assert other.resumed_from_step is None
    resumed = run_unlearning(model_dir=tiny_model_dir, out_dir=tmp_path / "a", forget=forget, retain=retain,
                             spec=spec, checkpoint_dir=ckpt)
    assert resumed.resumed_from_step == 4
    assert [p.step for p in resumed.history] == [0, 3, 6]
    assert not (ckpt / "checkpoint.pt").exists()  # consumed
    run_unlearning(model_dir=tiny_model_dir, out_dir=tmp_path / "b", forget=forget, retain=retain,
                              spec=spec.replace(checkpoint_every=0))
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_utility_floor_rolls_back_to_last_good_point(
    tiny_model_dir: Path, tiny_corpus: DemoCorpus, tmp_path: Path
) -> None:
    forget, retain = _items(tiny_corpus)
    # GA at a high rate wrecks perplexity at once; a 0% ppl margin must roll back to the base weights
    # once the patience (checks in a row below the floor) is used up
    spec = UnlearningSpec(**(FIXED | {"method": "ga", "lr": 5e-2, "ppl_ceiling": 1.0, "utility_patience": 0,
                                      "lr_backoffs": 0}))
    result = run_unlearning(model_dir=tiny_model_dir, out_dir=tmp_path / "out", forget=forget, retain=retain,
                            spec=spec)
    assert result.stop_reason == "utility_floor"
    assert result.steps == 0 and result.steps_run == 3
    before = load_file(tiny_model_dir / "model.safetensors")
    after = load_file(tmp_path / "out" / "model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_utility_patience_lets_the_run_continue_below_the_floor_and_saves_a_model_above_it(
    tiny_model_dir: Path, tiny_corpus: DemoCorpus, tmp_path: Path
) -> None:
    forget, retain = _items(tiny_corpus)
    spec = UnlearningSpec(**(FIXED | {"method": "ga", "lr": 5e-2, "ppl_ceiling": 1.0, "utility_patience": 2,
                                      "eval_every": 1, "max_steps": 10, "lr_backoffs": 0}))
    result = run_unlearning(model_dir=tiny_model_dir, out_dir=tmp_path / "out", forget=forget, retain=retain,
                            spec=spec)
    assert result.stop_reason == "utility_floor"
    assert result.steps_run == 3  # three checks in a row below the floor: patience 2 exceeded at the third
    assert result.steps == 0 and result.final.phase == "before"  # the saved model met the floor


def test_a_utility_dip_rolls_back_and_halves_the_rate_before_the_run_gives_up(
    tiny_model_dir: Path, tiny_corpus: DemoCorpus, tmp_path: Path
) -> None:
    import torch

    from unlearning_worker.engine import Backoff

    forget, retain = _items(tiny_corpus)
    # every check breaks a 0% perplexity margin: each dip of two checks rolls back to the base weights and
    # halves the rate, twice; then the floor's patience (0) stops the run at the next check
    spec = UnlearningSpec(**(FIXED | {"method": "ga", "lr": 5e-2, "ppl_ceiling": 1.0, "utility_patience": 0,
                                      "eval_every": 1, "max_steps": 20, "backoff_patience": 2, "lr_backoffs": 2}))
    events: list[ProgressEvent] = []
    rates: list[float] = []
    real_step = torch.optim.AdamW.step

    def recording_step(self: torch.optim.AdamW, *args: Any, **kwargs: Any) -> Any:
        rates.append(self.param_groups[0]["lr"])
        return real_step(self, *args, **kwargs)

    torch.optim.AdamW.step = recording_step  # type: ignore[method-assign]
    try:
        result = run_unlearning(model_dir=tiny_model_dir, out_dir=tmp_path / "out", forget=forget, retain=retain,
                                spec=spec, progress=events.append)
    finally:
        torch.optim.AdamW.step = real_step  # type: ignore[method-assign]
    assert result.backoffs == [Backoff(step=2, rolled_back_to=0, lr=2.5e-2), Backoff(step=4, rolled_back_to=0, lr=1.25e-2)]
    assert rates == [5e-2, 5e-2, 2.5e-2, 2.5e-2, 1.25e-2]  # the step after each backoff runs at the halved rate
    assert result.stop_reason == "utility_floor" and result.steps == 0 and result.steps_run == 5
    assert [(e.step, e.rolled_back_to, e.lr) for e in events if e.phase == "backoff"] == [(2, 0, 2.5e-2), (4, 0, 1.25e-2)]
    manifest = json.loads((tmp_path / "out" / MANIFEST_FILE).read_text())
    assert manifest["start_lr"] == 5e-2 and [b["lr"] for b in manifest["backoffs"]] == [2.5e-2, 1.25e-2]
    before = load_file(tiny_model_dir / "model.safetensors")
    after = load_file(tmp_path / "out" / "model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)  # what was saved met the floor: the base


def test_a_run_resumed_after_a_backoff_goes_on_at_the_halved_rate(
    tiny_model_dir: Path, tiny_corpus: DemoCorpus, tmp_path: Path
) -> None:
    forget, retain = _items(tiny_corpus)
    spec = UnlearningSpec(**(FIXED | {"method": "ga", "lr": 5e-2, "ppl_ceiling": 1.0, "utility_patience": 0,
                                      "eval_every": 1, "max_steps": 20, "backoff_patience": 2, "lr_backoffs": 2,
                                      "checkpoint_every": 3}))
    whole = run_unlearning(model_dir=tiny_model_dir, out_dir=tmp_path / "whole", forget=forget, retain=retain,
                           spec=spec.replace(checkpoint_every=0))
    steps_seen: list[int] = []
    with pytest.raises(UnlearningCancelled):  # interrupted at step 3: after the first backoff (step 2)
        run_unlearning(model_dir=tiny_model_dir, out_dir=tmp_path / "a", forget=forget, retain=retain, spec=spec,
                       checkpoint_dir=tmp_path / "ckpt", should_cancel=lambda: bool(steps_seen) and steps_seen[-1] >= 3,
                       progress=lambda e: steps_seen.append(e.step) if e.phase == "step" else None)
    resumed = run_unlearning(model_dir=tiny_model_dir, out_dir=tmp_path / "a", forget=forget, retain=retain,
                             spec=spec, checkpoint_dir=tmp_path / "ckpt")
    assert resumed.resumed_from_step == 3
    assert resumed.backoffs == whole.backoffs and len(whole.backoffs) == 2
    assert (resumed.stop_reason, resumed.steps_run) == (whole.stop_reason, whole.steps_run)


def test_a_wider_model_starts_at_a_smaller_rate_and_a_narrower_one_keeps_the_spec_rate() -> None:
    from types import SimpleNamespace

    from unlearning_worker.engine import start_lr

    def model(width: object) -> SimpleNamespace:
        return SimpleNamespace(config=SimpleNamespace(hidden_size=width))

    spec = UnlearningSpec(lr=5e-4, lr_width=128)
    assert start_lr(model(384), spec) == pytest.approx(5e-4 / 3)
    assert start_lr(model(4096), spec) == pytest.approx(1.5625e-5)
    assert start_lr(model(128), spec) == 5e-4
    assert start_lr(model(32), spec) == 5e-4  # never above the measured rate
    assert start_lr(model(None), spec) == 5e-4 and start_lr(SimpleNamespace(), spec) == 5e-4
    assert start_lr(model(384), spec.replace(lr_width=0)) == 5e-4
    assert start_lr(model(384), spec.replace(lora=True)) == 5e-4  # an adapter keeps the spec's rate


def test_forget_target_stops_early(tiny_model_dir: Path, tiny_corpus: DemoCorpus, tmp_path: Path) -> None:
    forget, retain = _items(tiny_corpus)
    # a loose distance to the never-seen target: this test is about the extraction side of the rule
    spec = UnlearningSpec(**(FIXED | {"min_steps": 0, "max_steps": 60, "forget_target": 0.99, "eval_every": 2,
                                      "gap_target": 10.0}))
    result = run_unlearning(model_dir=tiny_model_dir, out_dir=tmp_path / "out", forget=forget, retain=retain,
                            spec=spec)
    assert result.stop_reason == "forget_target_met"
    assert result.steps < 60 and result.final.forget_extraction <= 0.99


def test_counterfactual_does_not_stop_before_it_is_near_its_never_seen_target(
    tiny_model_dir: Path, tiny_corpus: DemoCorpus, tmp_path: Path
) -> None:
    forget, retain = _items(tiny_corpus)
    spec = UnlearningSpec(**(FIXED | {"method": "counterfactual", "min_steps": 0, "max_steps": 8, "eval_every": 2,
                                      "forget_target": 0.99, "gap_target": 1e-6, "gap_plateau": 0.0,
                                      "rank_candidates": 0}))
    result = run_unlearning(model_dir=tiny_model_dir, out_dir=tmp_path / "out", forget=forget, retain=retain,
                            spec=spec)
    assert result.stop_reason == "max_steps"  # extraction is within 0.99 from the start; the gap is not
    assert all(p.forget_gap is not None and p.forget_gap > 1e-6 for p in result.history)


def test_counterfactual_stops_once_its_gap_has_settled_and_samples_only_from_there(
    tiny_model_dir: Path, tiny_corpus: DemoCorpus, tmp_path: Path
) -> None:
    """A gap that no longer falls (here: by less than its whole self over 3 checks, so from the 4th check
    on) is as near the never-seen target as the run gets: the stop rule takes it, at `target_checks` (2)
    settled checks in a row, and the sampled probes run only at checks that could stop."""
    forget, retain = _items(tiny_corpus)
    spec = UnlearningSpec(**(FIXED | {"method": "counterfactual", "min_steps": 0, "max_steps": 20, "eval_every": 2,
                                      "forget_target": 0.99, "gap_target": 1e-6, "gap_plateau": 1.0,
                                      "adversary_every": 0, "rank_candidates": 0}))
    result = run_unlearning(model_dir=tiny_model_dir, out_dir=tmp_path / "out", forget=forget, retain=retain,
                            spec=spec)
    assert result.stop_reason == "forget_target_met" and result.steps == 10
    sampled = {p.step: p.forget_extraction_sampled is not None for p in result.history}
    assert sampled == {0: True, 2: False, 4: False, 6: False, 8: True, 10: True}


@pytest.mark.parametrize(("gap", "earlier", "plateau", "close"), [
    (0.05, [], 0.01, True),  # within gap_target
    (None, [], 0.01, True),  # no target: extraction decides
    (0.80, [0.81, 0.80], 0.01, False),  # too few checks to call it settled
    (0.79, [0.81, 0.80, 0.80], 0.01, True),  # fell 2.5% over 3 checks: under 1% a check
    (0.75, [0.81, 0.80, 0.80], 0.01, False),  # fell 7.4%: still closing in
    (0.79, [0.87, 0.81, 0.80], 0.01, False),  # fell 9%
    (0.79, [2.0, 0.81, 0.80, 0.80], 0.01, True),  # only the last 3 checks count
    (0.79, [0.81, 0.80, 0.80], 0.0, False),  # 0: the gap target alone
    (0.79, [0.70, 0.75, 0.78], 0.01, True),  # rising: settled (and no nearer)
])
def test_the_gap_is_close_within_its_target_or_once_settled(
    gap: float | None, earlier: list[float], plateau: float, close: bool
) -> None:
    from unlearning_worker.engine import _close

    assert _close(gap, earlier, UnlearningSpec(gap_target=0.1, gap_plateau=plateau, plateau_checks=3)) is close


def test_engine_import_is_pure() -> None:
    code = (
        "import sys, unlearning_worker.engine, unlearning_worker.demo.trainer, unlearning_worker.generation;"
        "assert 'django' not in sys.modules, 'django imported';"
        "assert not [m for m in sys.modules if m.startswith('compliance')]"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_only_the_spec_attributes_are_targeted_and_an_empty_result_is_refused(
    tiny_model_dir: Path, tiny_corpus: DemoCorpus, tmp_path: Path
) -> None:
    from unlearning_worker.engine import _targeted

    forget, retain = _items(tiny_corpus)
    # the default (counterfactual with never-seen caps) takes the whole record: every span, every value
    assert _targeted(forget, UnlearningSpec(**FIXED)) == forget
    spec = UnlearningSpec(**FIXED, never_seen_cap=False)
    assert _targeted(forget, spec.replace(method="floor")) == _targeted(forget, spec)
    targeted = _targeted(forget, spec)
    assert targeted and len(targeted) < len(forget)  # the date-of-birth, address and postcode answers drop out
    assert {a for f in targeted for _s, _e, a in f.pii_spans} <= set(spec.attributes)
    assert {a for f in targeted for a in f.values} <= set(spec.attributes)
    assert len(_targeted(forget, spec.replace(attributes=[]))) == len(forget)  # (): every span
    with pytest.raises(ValueError, match="no forget record holds"):
        run_unlearning(model_dir=tiny_model_dir, out_dir=tmp_path / "out", forget=forget, retain=retain,
                       spec=spec.replace(attributes=["passport"]))
    assert not (tmp_path / "out").exists()


def test_patience_counts_a_falling_or_stalled_dip_not_a_recovery() -> None:
    from unlearning_worker.engine import _below_floor_streak
    from unlearning_worker.evaluation import EvalPoint

    def point(step: int, exact: float, ppl: float, phase: str = "unlearn") -> EvalPoint:
        return EvalPoint(step, {}, 0.0, 0.0, None, 1.0, exact, ppl, phase)

    before = point(0, 0.8, 1.0, "before")
    spec = UnlearningSpec(utility_floor=0.9, ppl_ceiling=1.1)  # floor: exact >= 0.72 and ppl <= 1.1
    falling = [before, point(2, 0.7, 1.2), point(4, 0.6, 1.3), point(6, 0.5, 1.4)]
    assert _below_floor_streak(falling, before, spec) == 3
    recovering = [*falling, point(8, 0.55, 1.35), point(10, 0.6, 1.3)]
    assert _below_floor_streak(recovering, before, spec) == 0
    stalled_again = [*recovering, point(12, 0.6, 1.3), point(14, 0.58, 1.31)]
    assert _below_floor_streak(stalled_again, before, spec) == 2
    assert _below_floor_streak([*stalled_again, point(16, 0.75, 1.05)], before, spec) == 0  # back above


def test_retain_facts_are_back_only_at_the_utility_target() -> None:
    """A check over the floor but under utility_target is not back (the retain term may still repair
    what forgetting dented); utility_target 0 leaves the floor alone."""
    from unlearning_worker.engine import _utility_back
    from unlearning_worker.evaluation import EvalPoint

    def point(step: int, exact: float, phase: str = "unlearn") -> EvalPoint:
        return EvalPoint(step, {}, 0.0, 0.0, 0.0, 0.0, exact, 1.0, phase)

    before = point(0, 0.8, "before")
    spec = UnlearningSpec(utility_floor=0.9, utility_target=0.95)
    assert not _utility_back(point(10, 0.74), before, spec)  # 0.925x: over the floor (0.72), under 0.76
    assert _utility_back(point(30, 0.76), before, spec)  # 0.95x
    assert _utility_back(point(10, 0.74), before, spec.replace(utility_target=0.0))
    assert _utility_back(point(10, 0.0), point(0, 0.0, "before"), spec)  # nothing to keep: nothing to wait for
    assert _utility_back(point(10, 0.1), before, spec.replace(utility_floor=0.0))  # utility unjudged


@pytest.mark.parametrize(("back", "stop", "saved", "run"), [
    (True, "forget_target_met", 4, 4),  # the target held at step 4 with retain facts back: stop there
    (False, "max_steps", 6, 12),  # never back: to the ceiling, saving the last check whose target held
])
def test_a_run_whose_retain_facts_are_not_back_goes_on_and_saves_the_last_check_its_target_held(
    monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path, tiny_corpus: DemoCorpus, tmp_path: Path,
    back: bool, stop: str, saved: int, run: int,
) -> None:
    """Without the rank check (a sharded run, rank_candidates 0) nothing else marks a point worth saving:
    the run that goes on past its met target for retain facts, and never gets them back, saves the last
    check whose target held, not the last check over the floor (whose target may no longer hold)."""
    forget, retain = _items(tiny_corpus)
    monkeypatch.setattr(engine_module, "_target_held", lambda _history, _spec, step: step in (4, 6))
    monkeypatch.setattr(engine_module, "_utility_back", lambda *_args: back)
    result = run_unlearning(model_dir=tiny_model_dir, out_dir=tmp_path / "out", forget=forget, retain=retain,
                            spec=UnlearningSpec(**(FIXED | {"min_steps": 0, "max_steps": 12, "eval_every": 2})))
    assert (result.stop_reason, result.steps, result.steps_run) == (stop, saved, run)


def test_a_dip_the_retain_term_is_closing_is_not_rolled_back_and_a_stalled_or_endless_one_is() -> None:
    from unlearning_worker.engine import _backoff_due
    from unlearning_worker.evaluation import EvalPoint

    def dip(readings: list[tuple[float, float]]) -> list[EvalPoint]:
        return [before] + [EvalPoint(10 * (i + 1), {}, 0.0, 0.0, None, 1.0, exact, ppl, "unlearn")
                           for i, (exact, ppl) in enumerate(readings)]

    before = EvalPoint(0, {}, 0.0, 0.0, None, 1.0, 1.0, 1.0, "before")
    spec = UnlearningSpec(utility_floor=0.9, ppl_ceiling=1.1, backoff_patience=8)
    # ten subjects on the demo model (2026-12-04), steps 10-80: perplexity falls at every check
    measured = [(0.678, 1.415), (0.724, 1.317), (0.793, 1.220), (0.828, 1.192), (0.856, 1.191), (0.885, 1.177),
                (0.920, 1.156), (0.897, 1.141)]
    assert not _backoff_due(dip(measured), before, spec)
    assert not _backoff_due(dip(measured[:7]), before, spec)  # shorter than the patience: never due
    stalled = [*measured[:4], (0.83, 1.19), (0.84, 1.19), (0.83, 1.19), (0.84, 1.19)]
    assert _backoff_due(dip(stalled), before, spec)  # a dip that stopped closing
    falling = [(0.8 - 0.02 * i, 1.2 + 0.02 * i) for i in range(8)]
    assert _backoff_due(dip(falling), before, spec)
    # closing, but too slowly to reach the ceiling within another 8 checks
    slow = [(0.95, 1.40 - 0.005 * i) for i in range(8)]
    assert _backoff_due(dip(slow), before, spec)
    # the floor met and the perplexity closing: the met bound does not count against it
    assert not _backoff_due(dip([(0.95, 1.20 - 0.012 * i) for i in range(8)]), before, spec)
    closing_late = [(0.85, 1.3)] * 21 + [(0.86, 1.2), (0.87, 1.17), (0.88, 1.14), (0.89, 1.12)]
    assert not _backoff_due(dip(closing_late[-8:]), before, spec)  # closing
    assert _backoff_due(dip(closing_late), before, spec)  # but 25 > 3 x 8 checks long: due whatever the trend


def test_a_dip_that_creeps_along_runs_out_of_patience() -> None:
    from unlearning_worker.engine import _below_floor_streak
    from unlearning_worker.evaluation import EvalPoint

    before = EvalPoint(0, {}, 0.0, 0.0, None, 1.0, 0.8, 1.0, "before")
    spec = UnlearningSpec(utility_floor=0.9, ppl_ceiling=1.1, utility_patience=3)
    # perplexity creeping down by 0.01% a check is no recovery; and no dip outlasts 3 x patience checks
    creeping = [before] + [EvalPoint(2 * i, {}, 0.0, 0.0, None, 1.0, 0.6, 1.3 - 1e-4 * i, "unlearn") for i in range(1, 6)]
    assert _below_floor_streak(creeping, before, spec) == 5
    recovering = [before] + [EvalPoint(2 * i, {}, 0.0, 0.0, None, 1.0, 0.5 + 0.01 * i, 1.3, "unlearn") for i in range(1, 11)]
    assert _below_floor_streak(recovering, before, spec) == 10  # 10 > 3 x 3: the cap
    assert _below_floor_streak(recovering[:8], before, spec) == 0


def _prepared(model_dir: Path, spec: UnlearningSpec, forget: list, retain: list) -> Any:
    """The spec's method on the model, prepared, the model in training mode."""
    from unlearning_worker.data import encode
    from unlearning_worker.methods import MethodContext, build_method
    from unlearning_worker.modeling import load_model

    model, tokenizer = load_model(model_dir, spec, torch.device("cpu"))
    model.train()
    ctx = MethodContext(model, tokenizer, spec, forget, [encode(tokenizer, f.prompt, f.completion, f.pii_spans) for f in forget],
                        [encode(tokenizer, r.prompt, r.completion, r.pii_spans) for r in retain], torch.device("cpu"))
    method = build_method(ctx)
    method.prepare()
    return method


def test_adversarial_relearning_adds_the_relearned_forget_gradient_and_leaves_the_model(
    tiny_model_dir: Path, tiny_corpus: DemoCorpus
) -> None:
    from unlearning_worker.engine import RelearningAdversary
    from unlearning_worker.modeling import trainable_parameters

    forget, retain = _items(tiny_corpus)
    spec = UnlearningSpec(**(FIXED | {"method": "counterfactual", "adversary_every": 1, "adversary_steps": 3,
                                      "adversary_lr": 1e-2}))
    method = _prepared(tiny_model_dir, spec, forget, retain)
    model = method.ctx.model
    params = [p for _n, p in trainable_parameters(model)]
    weights_before = [p.detach().clone() for p in params]
    adversary = RelearningAdversary(model, spec)
    attacked: list[list[int]] = []
    relearned = method.relearned_forget_loss
    method.relearned_forget_loss = lambda idx, step: attacked.append(list(idx)) or relearned(idx, step)  # type: ignore[method-assign]
    chunks = [list(range(3)), list(range(3, len(forget)))]
    loss_after_attack = adversary.gradient(method, params, chunks, 0)
    assert attacked == chunks  # every micro-batch of the step is attacked, not the first alone
    assert loss_after_attack > 0
    assert method.ctx.model is model  # the shadow copy was swapped back out
    assert all(torch.equal(a, p.detach()) for a, p in zip(weights_before, params, strict=True))  # only the copy trained
    with_grad = [p for p in params if p.grad is not None and p.grad.abs().sum() > 0]
    assert len(with_grad) > len(params) // 2  # the relearned copy's forget gradient landed on the model's weights


def test_the_in_loop_attacker_trains_on_whole_texts_in_both_framings_and_keeps_its_drift_for_its_horizon(
    tiny_model_dir: Path, tiny_corpus: DemoCorpus
) -> None:
    """A relearning attacker fine-tunes on every token of text without the subject, framed as it likes,
    and stands many steps away from the model: the in-loop one must too, or it finds nothing that a
    real one does (a fresh 8-step attacker on answers behind BOS: docs/DESIGN-NOTES.md)."""
    from unlearning_worker.engine import RelearningAdversary
    from unlearning_worker.modeling import trainable_parameters

    forget, retain = _items(tiny_corpus)
    spec = UnlearningSpec(**(FIXED | {"method": "counterfactual", "adversary_every": 1, "adversary_steps": 2,
                                      "adversary_lr": 1e-2, "adversary_horizon": 2}))
    method = _prepared(tiny_model_dir, spec, forget, retain)
    model, tokenizer, ctx = method.ctx.model, method.ctx.tokenizer, method.ctx

    # the attacker's loss: every token, prompt included; odd draws without the BOS token
    seen: list[tuple[list[int], list[bool]]] = []
    collate = method._batch
    method._batch = lambda examples, masks, weights: (seen.extend(  # type: ignore[method-assign]
        (list(e.input_ids), list(m)) for e, m in zip(examples, masks, strict=True)) or collate(examples, masks, weights))
    method.relearning_loss([0, 1], 0)
    method.relearning_loss([0, 1], 1)
    method._batch = collate  # type: ignore[method-assign]
    bos = tokenizer.bos_token_id
    assert bos is not None and [ids[0] for ids, _m in seen[:2]] == [bos, bos]
    assert [ids for ids, _m in seen[2:]] == [ids[1:] for ids, _m in seen[:2]]
    assert all(all(mask) for _ids, mask in seen)  # the prompt and the name too, not the answer alone
    assert not all(ctx.retain[0].answer_mask)

    # persistence: round 2 starts where round 1's fine-tune left the attacker (model + drift); round 3,
    # past the horizon of 2, starts from the model again
    params = [p for _n, p in trainable_parameters(model)]
    adversary = RelearningAdversary(model, spec)
    starts: list[torch.Tensor] = []
    relearn = method.relearning_loss

    def record(idx: list[int], draw: int) -> torch.Tensor:
        if draw % spec.adversary_steps == 0:
            starts.append(adversary.copies[0].params[0].detach().clone())
        return relearn(idx, draw)

    method.relearning_loss = record  # type: ignore[method-assign]
    adversary.gradient(method, params, [[0, 1]], 0)
    first_drift = adversary.copies[0].drift[0].clone()
    assert first_drift.abs().sum() > 0
    adversary.gradient(method, params, [[0, 1]], 1)
    adversary.gradient(method, params, [[0, 1]], 2)
    assert torch.allclose(starts[0], params[0].detach())
    assert torch.allclose(starts[1], params[0].detach() + first_drift)
    assert torch.allclose(starts[2], params[0].detach())


def test_the_in_loop_attacker_takes_turns_between_full_weights_and_a_lora_adapter(
    tiny_model_dir: Path, tiny_corpus: DemoCorpus
) -> None:
    """The verifier fine-tunes full weights and LoRA adapters; the in-loop attacker takes both forms in
    turn. The LoRA form trains its adapter alone on a copy of the model's current weights, keeps the
    adapter for its next round (reset past its horizon), and its forget gradient lands on the model's
    weights, not the adapter's."""
    from unlearning_worker.engine import RelearningAdversary
    from unlearning_worker.modeling import trainable_parameters

    forget, retain = _items(tiny_corpus)
    spec = UnlearningSpec(**(FIXED | {"method": "counterfactual", "adversary_every": 1, "adversary_steps": 2,
                                      "adversary_lr": 1e-2, "adversary_horizon": 2,
                                      "adversary_modes": ("full", "lora")}))
    method = _prepared(tiny_model_dir, spec, forget, retain)
    model = method.ctx.model
    params = [p for _n, p in trainable_parameters(model)]
    weights_before = [p.detach().clone() for p in params]
    adversary = RelearningAdversary(model, spec)
    full, lora = adversary.copies
    assert (full.mode, lora.mode) == ("full", "lora")
    assert len(lora.base) == len(params) and all(a.shape == b.shape for a, b in zip(lora.base, params, strict=True))
    assert lora.params and all("lora_" in n for n, p in lora.shadow.named_parameters() if p.requires_grad)

    adversary.gradient(method, params, [[0, 1]], 0)  # full
    assert (full.rounds, lora.rounds) == (1, 0) and adversary.attacked == [full]
    for p in params:
        p.grad = None
    model.transformer.h[0].attn.c_attn.weight.data.add_(0.01)  # the model moves on between rounds
    adversary.gradient(method, params, [[0, 1]], 1)  # lora
    assert (full.rounds, lora.rounds) == (1, 1) and adversary.attacked == [full, lora]
    assert all(torch.equal(b, p.detach()) for b, p in zip(lora.base, params, strict=True))  # on the model as it is
    adapter = [p.detach().clone() for p in lora.params]
    assert any(not torch.equal(a, f) for a, f in zip(adapter, lora.fresh, strict=True))  # the adapter learned
    with_grad = [p for p in params if p.grad is not None and p.grad.abs().sum() > 0]
    assert len(with_grad) > len(params) // 2  # on the model's weights, embeddings and blocks
    assert all(p.grad is None for p in lora.params) and all(p.grad is None for p in lora.base)
    assert not any(p.requires_grad for p in lora.base)

    starts: list[list[torch.Tensor]] = []
    relearn = method.relearning_loss

    def record(idx: list[int], draw: int) -> torch.Tensor:
        if draw % spec.adversary_steps == 0 and method.ctx.model is lora.shadow:
            starts.append([p.detach().clone() for p in lora.params])
        return relearn(idx, draw)

    method.relearning_loss = record  # type: ignore[method-assign]
    adversary.gradient(method, params, [[0, 1]], 2)  # full
    adversary.gradient(method, params, [[0, 1]], 3)  # lora, round 2: the adapter kept
    adversary.gradient(method, params, [[0, 1]], 4)  # full
    adversary.gradient(method, params, [[0, 1]], 5)  # lora, round 3: past the horizon, fresh
    assert all(torch.equal(a, b) for a, b in zip(starts[0], adapter, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(starts[1], lora.fresh, strict=True))
    assert (full.rounds, lora.rounds, adversary.rounds) == (3, 3, 6)
    model.transformer.h[0].attn.c_attn.weight.data.sub_(0.01)
    assert all(torch.allclose(a, p.detach()) for a, p in zip(weights_before, params, strict=True))  # only copies trained

    # a resumed run's attacker carries on from the checkpoint; another spec's copies are refused
    again = RelearningAdversary(model, spec)
    again.load_state(adversary.state())
    assert again.rounds == 6 and again.copies[1].rounds == 3
    assert all(torch.equal(a, b) for a, b in zip(again.copies[1].drift, lora.drift, strict=True))
    with pytest.raises(ValueError, match="adversary_modes"):
        RelearningAdversary(model, spec.replace(adversary_modes=["lora"])).load_state(adversary.state())


def test_the_copies_readings_join_at_the_worst() -> None:
    from unlearning_worker.engine import worst_reading
    from unlearning_worker.evaluation import RankReading

    near = RankReading(0.1, 0.0, 1.0, outliers=1, excess=(3.0, 0.0))
    far = RankReading(2.0, 0.0, 1.0, outliers=0, excess=(0.5, 1.0))
    joined = worst_reading([near, far])
    assert joined is not None and (joined.gap, joined.band, joined.outliers, joined.excess) == (2.0, 1.0, 1, (3.0, 1.0))
    assert worst_reading([near]) == near and worst_reading([]) is None


@pytest.mark.parametrize(("n", "batch", "coverage", "per_step"), [(7, 16, 1.0, 7), (70, 16, 1.0, 70), (70, 16, 0.5, 35),
                                                                 (70, 16, 0.1, 16), (7, 4, 1.0, 7)])
def test_each_step_covers_its_share_of_the_forget_set_in_micro_batches(
    n: int, batch: int, coverage: float, per_step: int
) -> None:
    from unlearning_worker.engine import forget_chunks

    spec = UnlearningSpec(batch_size=batch, forget_coverage=coverage)
    steps = [forget_chunks(n, spec, step) for step in range(4)]
    for chunks in steps:
        items = [i for c in chunks for i in c]
        assert len(items) == per_step and all(0 < len(c) <= batch for c in chunks)
        if coverage == 1.0:
            assert sorted(items) == list(range(n))  # every record at every step, once
    assert steps[2] == forget_chunks(n, spec, 2)  # a pure function of (n, spec, step): resumable
    if len(steps[0]) > 1:  # the first micro-batch (the in-loop attacker's) changes from step to step
        assert len({tuple(s[0]) for s in steps}) > 1
    if coverage < 1.0 and per_step > batch:  # a partial coverage walks through the whole set over steps
        assert len({i for s in steps for c in s for i in c}) == n


def test_a_step_splits_into_micro_batches_of_its_device_size() -> None:
    """The CPU keeps `batch_size` records a pass; a GPU takes up to 8x, less where the logits of a large
    vocabulary or the activations of a large model would not fit; a size the spec names is kept."""
    from unlearning_worker.engine import forget_chunks, forget_micro_batch

    spec = UnlearningSpec(batch_size=16)
    gpu = torch.device("cuda")
    assert forget_micro_batch(spec, torch.device("cpu"), vocab_size=1024, layers=2, hidden=64, free_bytes=2**40) == 16
    assert forget_micro_batch(spec, gpu, vocab_size=1024, tokens=64, layers=16, hidden=768, free_bytes=100 * 2**30) == 128
    assert forget_micro_batch(spec, gpu, vocab_size=151_936, tokens=64, layers=16, hidden=768, free_bytes=100 * 2**30) == 27
    # memory the run still has to allocate (Adam's moments) is held back
    assert forget_micro_batch(spec, gpu, vocab_size=1024, tokens=64, layers=16, hidden=768, free_bytes=100 * 2**30,
                              reserved=99 * 2**30) == 16
    # a 7B-like model: its activations, not its vocabulary, bound the pass, and never below batch_size
    assert forget_micro_batch(spec, gpu, vocab_size=32_000, tokens=64, layers=32, hidden=4096, free_bytes=20 * 2**30) == 18
    assert forget_micro_batch(spec, gpu, vocab_size=32_000, tokens=64, layers=32, hidden=4096, free_bytes=2**30) == 16
    assert forget_micro_batch(spec.replace(forget_micro_batch=40), gpu, vocab_size=151_936) == 40
    assert forget_micro_batch(spec.replace(forget_micro_batch=40), torch.device("cpu")) == 40
    with pytest.raises(ValueError, match="forget_micro_batch"):
        UnlearningSpec(forget_micro_batch=-1)
    # the step's records are the same in any micro-batch size, only the split differs
    for step in range(3):
        small, large = forget_chunks(300, spec, step), forget_chunks(300, spec, step, 128)
        assert max(map(len, small)) == 16 and max(map(len, large)) == 128 and len(large) == 3
        assert sorted(i for c in small for i in c) == sorted(i for c in large for i in c) == list(range(300))
    assert [sorted(c) for c in forget_chunks(100, spec, 0, 128)] == [list(range(100))]  # fits one pass


def test_a_large_job_holds_a_retain_batch_in_proportion_to_its_forget_records() -> None:
    """retain_per_forget: a step holds that many retain examples per forget record it updates, never fewer
    than retain_batch_size; 0 keeps retain_batch_size whatever the job."""
    from unlearning_worker.engine import retain_batch_size

    spec = UnlearningSpec(retain_batch_size=32, retain_per_forget=0.0)
    assert [retain_batch_size(spec, n) for n in (7, 70, 700)] == [32, 32, 32]
    scaled = UnlearningSpec(retain_batch_size=32)  # the default: half a retain example per forget record
    assert [retain_batch_size(scaled, n) for n in (7, 64, 70, 700, 701)] == [32, 32, 35, 350, 351]
    assert retain_batch_size(scaled.replace(retain_per_forget=1.0), 700) == 700
    assert retain_batch_size(scaled, 700, available=200) == 200  # never beyond the retain set
    assert retain_batch_size(scaled, 700, available=20) == 32  # a small set keeps the spec's batch as before
    for bad in (-0.5, float("nan"), 17.0):
        with pytest.raises(ValueError, match="retain_per_forget"):
            UnlearningSpec(retain_per_forget=bad)


@pytest.mark.parametrize("method_name", ["grad_diff", "counterfactual"])
def test_a_step_in_micro_batches_takes_the_gradient_of_the_whole_batch(
    tiny_model_dir: Path, tiny_corpus: DemoCorpus, method_name: str
) -> None:
    """Whatever the micro-batch, a step's gradient is the whole batch's: the micro-batch size is a
    matter of speed and memory alone (the default method's loss gathers every target of a micro-batch
    at once, several per record)."""
    from unlearning_worker.data import encode
    from unlearning_worker.engine import forget_chunks, retain_shares
    from unlearning_worker.methods import MethodContext, build_method
    from unlearning_worker.modeling import load_model

    forget, retain = demo_items(tiny_corpus, [p.person_id for p in tiny_corpus.people[:3]])
    spec = UnlearningSpec(**(FIXED | {"method": method_name, "batch_size": 4}))
    model, tokenizer = load_model(tiny_model_dir, spec, torch.device("cpu"))
    ctx = MethodContext(model, tokenizer, spec, forget, [encode(tokenizer, f.prompt, f.completion, f.pii_spans) for f in forget],
                        [encode(tokenizer, r.prompt, r.completion, r.pii_spans) for r in retain], torch.device("cpu"))
    method = build_method(ctx)
    method.prepare()
    chunks = forget_chunks(len(forget), spec, 0)
    assert len(chunks) > 2

    def grads() -> list[torch.Tensor]:
        out = [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]
        model.zero_grad(set_to_none=True)
        return out

    weight = sum(ctx.forget_weights([i for c in chunks for i in c]))
    # a retain batch within retain_batch_size rides with the first micro-batch; a larger one
    # (retain_per_forget) is sliced over them, each slice weighed by its share
    for retain_idx, most in (([0, 1, 2, 3], 4), (list(range(11)), 4)):
        method.loss([i for c in chunks for i in c], retain_idx, 0)[0].backward()
        whole = grads()
        slices = retain_shares(retain_idx, len(chunks), most)
        assert sorted(i for part in slices for i in part) == retain_idx
        assert (sum(bool(part) for part in slices) == 1) == (len(retain_idx) <= most)
        for chunk, part in zip(chunks, slices, strict=True):
            method.loss(chunk, part, 0, forget_scale=sum(ctx.forget_weights(chunk)) / weight,
                        retain_scale=len(part) / len(retain_idx))[0].backward()
        parts = grads()
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(whole, parts, strict=True))


def _scripted_rank(monkeypatch: pytest.MonkeyPatch, gaps: list[float]) -> list[float]:
    """RankCheck readings in call order (the model's, then the in-loop attacker's copy's at each check
    where it exists), each a gap over the control with a chance band of 1."""
    from unlearning_worker.evaluation import RankCheck, RankReading

    script = list(gaps)

    def reading(self: Any, model: Any, device: Any) -> RankReading:
        return RankReading(script.pop(0), 0.0, 1.0)

    monkeypatch.setattr(RankCheck, "__call__", reading)
    return script


RANKED = FIXED | {"method": "counterfactual", "min_steps": 0, "max_steps": 20, "eval_every": 2, "forget_target": 0.99,
                  "gap_target": 1e-6, "gap_plateau": 0.0, "rank_candidates": 19, "rank_tolerance": 0.5}


def test_the_rank_rule_stops_once_the_subject_sits_at_the_never_seen_control(
    monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path, tiny_corpus: DemoCorpus, tmp_path: Path
) -> None:
    """With the rank check the counterfactual gap no longer decides (it never reaches 1e-6 here): the
    run stops at the second check in a row within half a band of the control."""
    forget, retain = _items(tiny_corpus)
    left = _scripted_rank(monkeypatch, [3.0, 2.0, 1.0, 0.4, 0.3, 0.2, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0])
    result = run_unlearning(model_dir=tiny_model_dir, out_dir=tmp_path / "out", forget=forget, retain=retain,
                            spec=UnlearningSpec(**(RANKED | {"adversary_every": 0})))
    assert result.stop_reason == "forget_target_met" and result.steps == 8
    assert [p.rank_gap for p in result.history] == [3.0, 2.0, 1.0, 0.4, 0.3]
    assert all(p.rank_gap_relearned is None for p in result.history) and len(left) == 7


def test_the_rank_rule_waits_for_the_attackers_copy_too(
    monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path, tiny_corpus: DemoCorpus, tmp_path: Path
) -> None:
    """A model at the control whose fine-tuned copy still knows the values more than by chance is not
    erased: the run goes on until the copy too sits at the control."""
    forget, retain = _items(tiny_corpus)
    _scripted_rank(monkeypatch, [3.0, 0.2, 1.5, 0.1, 0.9, 0.0, 0.3, 0.0, 0.2] + [0.0] * 30)
    result = run_unlearning(model_dir=tiny_model_dir, out_dir=tmp_path / "out", forget=forget, retain=retain,
                            spec=UnlearningSpec(**(RANKED | {"adversary_every": 1, "adversary_steps": 1})))
    assert result.stop_reason == "forget_target_met" and result.steps == 8
    assert [p.rank_gap_relearned for p in result.history] == [None, 1.5, 0.9, 0.3, 0.2]


def test_an_overshoot_stops_the_run_and_keeps_the_checked_point_nearest_the_control(
    monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path, tiny_corpus: DemoCorpus, tmp_path: Path
) -> None:
    """Below the control by more than the band, further steps only take the values further down (the
    values mark the person): the run stops and saves the checked point nearest the control."""
    forget, retain = _items(tiny_corpus)
    _scripted_rank(monkeypatch, [3.0, 2.0, 0.8, -0.6, -1.5, 0.0, 0.0])
    result = run_unlearning(model_dir=tiny_model_dir, out_dir=tmp_path / "out", forget=forget, retain=retain,
                            spec=UnlearningSpec(**(RANKED | {"adversary_every": 0, "rank_tolerance": 0.0})))
    assert result.stop_reason == "overshoot" and result.steps_run == 8
    assert result.steps == 6 and result.final.rank_gap == -0.6


def test_a_run_that_ends_at_max_steps_keeps_the_checked_point_nearest_the_control(
    monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path, tiny_corpus: DemoCorpus, tmp_path: Path
) -> None:
    forget, retain = _items(tiny_corpus)
    _scripted_rank(monkeypatch, [3.0, 2.0, 0.7, 0.9, 0.8])
    result = run_unlearning(model_dir=tiny_model_dir, out_dir=tmp_path / "out", forget=forget, retain=retain,
                            spec=UnlearningSpec(**(RANKED | {"adversary_every": 0, "max_steps": 8})))
    assert result.stop_reason == "max_steps" and result.steps_run == 8
    assert result.steps == 4 and result.final.rank_gap == 0.7
    # step 4 was not sampled when checked (0.7 bands from the control: the rule could not stop there);
    # the saved point's evidence is sampled once its weights are restored
    assert next(p for p in result.history if p.step == 4).forget_extraction_sampled is None
    assert result.final.forget_extraction_sampled is not None
    manifest = json.loads((result.out_dir / MANIFEST_FILE).read_text())
    assert manifest["steps"] == 4 and manifest["stop_reason"] == "max_steps"


@pytest.mark.parametrize(("fields", "close", "overshot", "distance"), [
    ((0.4, 1.0, None, None, 0, None), True, False, 0.4),  # the model within half a band; no copy read
    ((0.6, 1.0, None, None, 0, None), False, False, 0.6),
    ((0.4, 1.0, 0.6, 1.0, 0, 0), False, False, 0.6),  # the attacker's copy still above: not yet
    ((-0.9, 1.0, 0.2, 1.0, 0, 0), True, False, 0.9),  # below the control, within the band: erased, not marked
    ((-1.1, 1.0, 0.2, 1.0, 0, 0), False, True, 1.1),  # below the band: an overshoot
    ((0.0, 1.0, -2.5, 2.0, 0, 0), False, True, 1.25),  # the copy below its band (bands differ by control spread)
    ((0.1, 1.0, 0.2, 1.0, 0, 1), False, False, 1.2),  # the means at the control, one value of the copy stands out
    ((0.1, 1.0, 0.2, 1.0, 2, None), False, False, 2.2),  # two of the model's
])
def test_the_rank_rule_reads_both_sides_of_the_control(
    fields: tuple, close: bool, overshot: bool, distance: float
) -> None:
    from unlearning_worker.engine import _close, _overshot, _rank_distance
    from unlearning_worker.evaluation import EvalPoint

    spec = UnlearningSpec(rank_tolerance=0.5, forget_target=0.0)
    assert _close(5.0, [5.0, 5.0, 5.0], spec, fields) is close  # the gap rule alone would not stop
    point = EvalPoint(step=1, losses={}, forget_extraction=0.0, forget_extraction_greedy=0.0,
                      forget_extraction_sampled=0.0, retain_extraction=0.0, retain_exact=1.0, retain_ppl=1.0,
                      rank_gap=fields[0], rank_band=fields[1], rank_gap_relearned=fields[2],
                      rank_band_relearned=fields[3], rank_outliers=fields[4], rank_outliers_relearned=fields[5])
    assert _overshot(point) is overshot
    assert _rank_distance(point, spec) == pytest.approx(distance)
    leaking = EvalPoint(**{**point.__dict__, "forget_extraction": 0.5})
    assert _rank_distance(leaking, spec) is None  # a point that leaks is never the one kept


def test_the_forget_effort_goes_to_the_records_whose_values_the_copy_still_ranks_high(
    monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path, tiny_corpus: DemoCorpus, tmp_path: Path
) -> None:
    """After each check the records that write a value the reading puts above the control weigh
    1 + rank_focus x its excess (the others 1); the weights travel in the checkpoint, so a resumed run
    goes on as the interrupted one would have; rank_focus 0 weighs every record alike."""
    from unlearning_worker.evaluation import RankCheck, RankReading
    from unlearning_worker.methods import MethodContext

    groups: list[list[list[int]]] = []

    def reading(self: Any, model: Any, device: Any) -> RankReading:
        groups.append(self.subject_items)
        excess = tuple(2.0 if k == 0 else -1.0 for k in range(len(self.subject_items)))
        return RankReading(3.0, 0.0, 1.0, outliers=1, excess=excess)

    monkeypatch.setattr(RankCheck, "__call__", reading)
    seen: list[dict[int, float]] = []
    weights = MethodContext.forget_weights

    def spy(self: MethodContext, idx: list[int]) -> list[float]:
        seen.append(dict(self.emphasis))
        return weights(self, idx)

    monkeypatch.setattr(MethodContext, "forget_weights", spy)
    forget, retain = _items(tiny_corpus)
    steps: list[int] = []
    ckpt = tmp_path / "ckpt"
    spec = UnlearningSpec(**(RANKED | {"adversary_every": 0, "checkpoint_every": 2, "rank_focus": 1.5}))
    with pytest.raises(UnlearningCancelled):
        run_unlearning(model_dir=tiny_model_dir, out_dir=tmp_path / "out", forget=forget, retain=retain, spec=spec,
                       checkpoint_dir=ckpt, should_cancel=lambda: bool(steps) and steps[-1] >= 3,
                       progress=lambda e: steps.append(e.step) if e.phase == "step" else None)
    first = set(groups[0][0])
    expected = {i: 4.0 if i in first else 1.0 for items in groups[0] for i in items}
    assert first and any(v == 1.0 for v in expected.values())
    assert seen[0] == {} and expected in seen  # before the first check every record alike; then the focus
    state = torch.load(ckpt / "checkpoint.pt", weights_only=False)
    assert state["emphasis"] == expected
    seen.clear()
    run_unlearning(model_dir=tiny_model_dir, out_dir=tmp_path / "flat", forget=forget, retain=retain,
                   spec=spec.replace(rank_focus=0.0, max_steps=4, checkpoint_every=0))
    assert seen and all(s == {} for s in seen)


def test_the_stop_rule_asks_the_verifiers_questions_beside_the_records(
    tiny_model_dir: Path, tiny_corpus: DemoCorpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from unlearning_worker import evaluation

    asked: list[str] = []
    real = evaluation.run_probes

    def spy(model: Any, tokenizer: Any, probes: list[Any], **kw: Any) -> tuple[int, int, int]:
        asked.extend(p.prompt for p in probes)
        return real(model, tokenizer, probes, **kw)

    monkeypatch.setattr(evaluation, "run_probes", spy)
    forget, retain = _items(tiny_corpus)
    person = tiny_corpus.people[0]
    question = "Q: {name}'s {label}?\nA:"
    settings = {**FIXED, "max_steps": 3, "min_steps": 3, "eval_samples": 0}
    run_unlearning(model_dir=tiny_model_dir, out_dir=tmp_path / "with", forget=forget, retain=retain,
                   spec=UnlearningSpec(**settings, question_templates=(question,),
                                       question_labels={"phone": "phone number"}))
    assert asked.count(f"Q: {person.name}'s phone number?\nA:") == 2  # before, and the check at step 3
    assert set(f.prompt for f in forget) <= set(asked)  # and the records' own prompts
    asked.clear()
    run_unlearning(model_dir=tiny_model_dir, out_dir=tmp_path / "without", forget=forget, retain=retain,
                   spec=UnlearningSpec(**settings))
    assert f"Q: {person.name}'s phone number?\nA:" not in asked


def test_the_utility_floor_reads_the_verdicts_utility_question_about_retain_people(
    tiny_model_dir: Path, tiny_corpus: DemoCorpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from unlearning_worker import evaluation

    asked: list[list[str]] = []
    real = evaluation.run_probes

    def spy(model: Any, tokenizer: Any, probes: list[Any], **kw: Any) -> tuple[int, int, int]:
        if kw.get("per_probe"):  # the retain reading
            asked.append([p.prompt for p in probes])
        return real(model, tokenizer, probes, **kw)

    monkeypatch.setattr(evaluation, "run_probes", spy)
    forget, retain = _items(tiny_corpus)
    settings = {**FIXED, "max_steps": 2, "min_steps": 2, "eval_samples": 0, "eval_every": 2}
    labels = {"phone": "phone number", "email": "email address"}
    result = run_unlearning(model_dir=tiny_model_dir, out_dir=tmp_path / "q", forget=forget, retain=retain,
                            spec=UnlearningSpec(**settings, retain_question="Q: {name}'s {label}?\nA:",
                                                question_labels=labels))
    retain_names = {r.subject_name for r in retain if r.subject_name}
    forget_names = {f.subject_name for f in forget}
    assert len(asked) == 2 and asked[0] == asked[1]  # before and at step 2, the same questions
    for prompt in asked[0]:
        name, label = prompt[3:].split("'s ", 1)
        assert name in retain_names and name not in forget_names and label[:-4] in labels.values()
    assert 0.0 <= result.before.retain_exact <= 1.0
    asked.clear()  # without the question (or without names), the reading replays retain records
    run_unlearning(model_dir=tiny_model_dir, out_dir=tmp_path / "r", forget=forget, retain=retain,
                   spec=UnlearningSpec(**settings))
    assert asked and set(asked[0]) <= {r.prompt for r in retain} and not any(p.startswith("Q: ") for p in asked[0])


def test_rows_go_in_passes_of_like_length_at_the_least_computed_tokens() -> None:
    """length_groups: every index once, each pass ascending, and the cut that computes the fewest
    padded tokens plus a pass's overhead (checked against every cut of the sorted rows)."""
    import itertools
    import random as _random

    from unlearning_worker.data import length_groups

    def cost(groups: list[list[int]], lengths: list[int], overhead: int) -> int:
        return sum(len(g) * max(lengths[i] for i in g) + overhead for g in groups)

    rng = _random.Random(3)
    for _trial in range(40):
        lengths = [rng.choice([rng.randint(15, 30), rng.randint(70, 80)]) for _ in range(rng.randint(1, 9))]
        overhead = rng.choice([0, 16, 64, 4096])
        groups = length_groups(lengths, overhead=overhead)
        assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
        assert all(lengths[a] <= lengths[b] for g in groups for a, b in itertools.pairwise(g))
        order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
        best = min(
            cost([order[a:b] for a, b in itertools.pairwise((0, *cuts, len(order)))], lengths, overhead)
            for r in range(len(order)) for cuts in itertools.combinations(range(1, len(order)), r)
        )
        assert cost(groups, lengths, overhead) == best
    # questions and a biography: two passes on a CPU, one where a pass costs a GPU's launches
    subject = [23, 20, 25, 28, 19, 24, 78]
    assert length_groups(subject, overhead=64) == [[4, 1, 0, 5, 2, 3], [6]]
    assert length_groups(subject, overhead=4096) == [[4, 1, 0, 5, 2, 3, 6]]
    assert length_groups([], overhead=64) == []


@pytest.mark.parametrize("method_name", ["grad_diff", "counterfactual"])
def test_passes_of_like_length_give_the_loss_and_gradient_of_one_padded_pass(
    tiny_model_dir: Path, tiny_corpus: DemoCorpus, method_name: str
) -> None:
    """The forget, retain and relearning terms computed in passes of like length equal the same terms
    from one right-padded pass (MethodContext.passes_by_length off, as in a sharded run), value and
    gradient."""
    from unlearning_worker.data import encode
    from unlearning_worker.methods import MethodContext, build_method
    from unlearning_worker.modeling import load_model

    forget, retain = demo_items(tiny_corpus, [p.person_id for p in tiny_corpus.people[:2]])
    spec = UnlearningSpec(**(FIXED | {"method": method_name}))
    model, tokenizer = load_model(tiny_model_dir, spec, torch.device("cpu"))
    retain_examples = [encode(tokenizer, r.prompt, r.completion, r.pii_spans) for r in retain]
    ctx = MethodContext(model, tokenizer, spec, forget, [encode(tokenizer, f.prompt, f.completion, f.pii_spans) for f in forget],
                        retain_examples, torch.device("cpu"))
    method = build_method(ctx)
    method.prepare()
    ctx.emphasis = {i: 1.0 + i % 3 for i in range(len(forget))}  # rows of unequal weight: a misplaced row shows
    retain_idx = list(range(min(len(retain), 24)))
    assert len({len(retain_examples[i].input_ids) for i in retain_idx}) > 3  # lengths to group
    if method_name == "counterfactual":  # its forget rows (records in their framings) are grouped too
        views = method._views(list(range(len(forget))))  # type: ignore[attr-defined]
        assert len(ctx.passes([len(ctx.forget[i].input_ids) - shift for i, shift in views])) > 1

    def terms() -> list[tuple[float, list[torch.Tensor]]]:
        out = []
        for loss in (method.loss(list(range(len(forget))), [], 0)[0], method.retain_loss(retain_idx),
                     method.relearning_loss(retain_idx, 1)):
            loss.backward()
            out.append((float(loss.detach()), [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]))
            model.zero_grad(set_to_none=True)
        return out

    grouped = terms()
    # the CPU's grouping cuts these rows into several passes; a sharded run's (and this reference) one
    assert len(ctx.passes([len(retain_examples[i].input_ids) for i in retain_idx])) > 1
    ctx.passes_by_length = False
    assert len(ctx.passes([len(retain_examples[i].input_ids) for i in retain_idx])) == 1
    single = terms()
    for (a, grads_a), (b, grads_b) in zip(grouped, single, strict=True):
        assert a == pytest.approx(b, rel=1e-5)
        assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(grads_a, grads_b, strict=True))


def test_a_retain_batch_sliced_over_micro_batches_steps_as_one_batch_with_the_first(
    tiny_model_dir: Path, tiny_corpus: DemoCorpus, tmp_path: Path
) -> None:
    """retain_per_forget raising the step's retain batch above retain_batch_size slices it over the
    forget micro-batches: the steps and the losses they report are those of the same retain batch
    taken whole with the first micro-batch (retain_batch_size set to its size)."""
    forget, retain = demo_items(tiny_corpus, [p.person_id for p in tiny_corpus.people[:3]])
    base = FIXED | {"method": "counterfactual", "batch_size": 4, "min_steps": 3, "max_steps": 3, "eval_every": 3,
                    "adversary_every": 0, "rank_candidates": 0, "forget_target": 0.0}
    records = len(forget)
    size = min(len(retain), math.ceil(1.5 * records))
    assert size > 8 and records > 4  # several micro-batches and a sliced retain batch
    runs = []
    for fields in ({"retain_batch_size": 8, "retain_per_forget": 1.5}, {"retain_batch_size": size, "retain_per_forget": 0.0}):
        losses: list[dict[str, float]] = []
        runs.append(losses)
        run_unlearning(model_dir=tiny_model_dir, out_dir=tmp_path / str(len(runs)), forget=forget, retain=retain,
                       spec=UnlearningSpec(**(base | fields)),
                       progress=lambda e, into=losses: into.append(dict(e.losses)) if e.phase == "step" else None)
    sliced, whole = runs
    assert len(sliced) == len(whole) == 3
    for a, b in zip(sliced, whole, strict=True):
        assert a.keys() == b.keys() and "retain" in a
        assert all(a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6) for k in a)


def test_the_in_loop_attacker_also_fine_tunes_on_the_runs_corpus_texts_and_the_model_does_not(
    tiny_model_dir: Path, tiny_corpus: DemoCorpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker gives the engine the verifier's sample of the training corpora (`relearning`): its
    attacker must draw from it beside the retain records, and the model's retain term must not (people
    with pending requests are in it)."""
    from unlearning_worker.data import text_examples
    from unlearning_worker.methods import UnlearningMethod

    forget, retain = _items(tiny_corpus)
    subject = tiny_corpus.people[0].person_id
    # texts no retain record holds (the worker's sample is of the whole corpus, not the eval set)
    texts = [f"Archive entry {i}. {r.text}" for i, r in enumerate(tiny_corpus.records)
             if r.person_id not in {subject, ""} and r.kind != "general"][:20]
    assert len(texts) == 20
    drawn: list[list[int]] = []
    retained: list[int] = []
    pools: list[int] = []
    relearn, retain_loss = UnlearningMethod.relearning_loss, UnlearningMethod.retain_loss

    def spy_relearn(self: Any, idx: list[int], draw: int) -> torch.Tensor:
        pools.append(len(self.ctx.attacker_examples))
        drawn.append([list(self.ctx.attacker_examples[i].input_ids) for i in idx])
        return relearn(self, idx, draw)

    def spy_retain(self: Any, idx: list[int]) -> torch.Tensor:
        assert len(self.ctx.retain) == len(retain)  # the model's retain set is the retain records alone
        retained.extend(idx)
        return retain_loss(self, idx)

    monkeypatch.setattr(UnlearningMethod, "relearning_loss", spy_relearn)
    monkeypatch.setattr(UnlearningMethod, "retain_loss", spy_retain)
    spec = UnlearningSpec(**(FIXED | {"method": "counterfactual", "adversary_every": 1, "adversary_steps": 2,
                                      "retain_batch_size": 16}))
    run_unlearning(model_dir=tiny_model_dir, out_dir=tmp_path / "out", forget=forget, retain=retain, spec=spec,
                   relearning=texts)
    manifest = json.loads((tmp_path / "out" / "unlearning_manifest.json").read_text())
    assert manifest["adversary_texts"] == len(texts)
    from unlearning_worker.modeling import load_model

    _model, tokenizer = load_model(tiny_model_dir, spec, torch.device("cpu"))
    corpus_ids = {tuple(e.input_ids) for e in text_examples(tokenizer, texts, max_tokens=512)}
    assert set(pools) == {len(retain) + len(corpus_ids)}  # the retain records, then every text
    seen = {tuple(ids) for batch in drawn for ids in batch}
    assert seen & corpus_ids  # the corpus texts were fine-tuned on ...
    assert retained and max(retained) < len(retain)  # ... by the attacker alone: the model's retain term reads retain


def _interrupted(model_dir: Path, out: Path, ckpt: Path, forget: Any, retain: Any, spec: UnlearningSpec,
                 after: int, **kwargs: Any) -> None:
    """Run until the step after `after`, cancel, and check that a checkpoint was left in `ckpt`."""
    steps: list[int] = []
    with pytest.raises(UnlearningCancelled):
        run_unlearning(model_dir=model_dir, out_dir=out, forget=forget, retain=retain, spec=spec, checkpoint_dir=ckpt,
                       should_cancel=lambda: bool(steps) and steps[-1] >= after,
                       progress=lambda e: steps.append(e.step) if e.phase == "step" else None, **kwargs)
    assert (ckpt / "checkpoint.pt").is_file()


def test_a_checkpoint_taken_without_the_attackers_texts_is_not_resumed_with_them(
    tiny_model_dir: Path, tiny_corpus: DemoCorpus, tmp_path: Path
) -> None:
    forget, retain = _items(tiny_corpus)
    spec = UnlearningSpec(**(FIXED | {"method": "counterfactual", "adversary_every": 1, "checkpoint_every": 2}))
    ckpt = tmp_path / "ckpt"
    _interrupted(tiny_model_dir, tmp_path / "a", ckpt, forget, retain, spec, after=3)
    texts = [r.text for r in tiny_corpus.records if r.kind == "general"][:5]
    other = run_unlearning(model_dir=tiny_model_dir, out_dir=tmp_path / "b", forget=forget, retain=retain, spec=spec,
                           checkpoint_dir=ckpt, relearning=texts)
    assert other.resumed_from_step is None


def test_a_checkpoint_is_resumed_with_the_same_attacker_texts_only(
    tiny_model_dir: Path, tiny_corpus: DemoCorpus, tmp_path: Path
) -> None:
    forget, retain = _items(tiny_corpus)
    spec = UnlearningSpec(**(FIXED | {"method": "counterfactual", "adversary_every": 1, "checkpoint_every": 2}))
    general = [r.text for r in tiny_corpus.records if r.kind == "general"]
    texts, others = general[:5], general[5:10]  # as many texts, other ones
    assert len(others) == 5

    def interrupted(ckpt: Path) -> None:
        _interrupted(tiny_model_dir, tmp_path / "x", ckpt, forget, retain, spec, after=3, relearning=texts)

    interrupted(tmp_path / "c1")
    changed = run_unlearning(model_dir=tiny_model_dir, out_dir=tmp_path / "a", forget=forget, retain=retain, spec=spec,
                             checkpoint_dir=tmp_path / "c1", relearning=others)
    assert changed.resumed_from_step is None
    interrupted(tmp_path / "c2")
    same = run_unlearning(model_dir=tiny_model_dir, out_dir=tmp_path / "b", forget=forget, retain=retain, spec=spec,
                          checkpoint_dir=tmp_path / "c2", relearning=list(texts))
    assert same.resumed_from_step is not None and same.resumed_from_step > 0


def test_the_attackers_batch_goes_in_passes_within_its_token_budget() -> None:
    from unlearning_worker.data import Example
    from unlearning_worker.engine import _token_budget

    lengths = [10, 30, 30, 5, 100, 20, 20, 20]
    examples = [Example([1] * n, [True] * n, [False] * n) for n in lengths]
    idx = [4, 0, 1, 2, 3, 5, 6, 7]
    parts = _token_budget(idx, examples, 64)
    assert [i for part in parts for i in part] == idx  # every row once, in order
    for part in parts:  # padded to its longest row, within the budget (a row over it goes alone)
        assert len(part) == 1 or max(lengths[i] for i in part) * len(part) <= 64
    assert parts[0] == [4] and len(parts) < len(idx)
    assert _token_budget(idx, examples, 10_000) == [idx]


def test_a_corpus_text_is_read_whole_from_its_bos_up_to_the_attackers_token_cap(tiny_model_dir: Path) -> None:
    from unlearning_worker.data import text_examples
    from unlearning_worker.modeling import load_model

    _model, tokenizer = load_model(tiny_model_dir, UnlearningSpec(device="cpu"), torch.device("cpu"))
    text, other = "Some record of a person that the attacker holds, read whole.", "Another one."
    whole, second = text_examples(tokenizer, [text, "", other], max_tokens=512)  # "": nothing to predict
    assert whole.input_ids[0] == tokenizer.bos_token_id
    assert whole.input_ids[1:] == tokenizer(text, add_special_tokens=False)["input_ids"]
    assert second.input_ids[1:] == tokenizer(other, add_special_tokens=False)["input_ids"]
    assert whole.answer_mask == [False] + [True] * (len(whole.input_ids) - 1) and not any(whole.span_mask)
    (capped,) = text_examples(tokenizer, [text], max_tokens=4)
    assert capped.input_ids == whole.input_ids[:4]
    (long,) = text_examples(tokenizer, [text * 2000], max_tokens=64)  # a document: cut, not tokenized whole
    assert len(long.input_ids) == 64 and long.input_ids[:8] == whole.input_ids[:8]
    assert text_examples(tokenizer, [], max_tokens=512) == []


def test_the_utility_checks_read_the_known_retain_people_not_the_corpus_sample() -> None:
    """The worker's retain set holds the eval set's people (keyed) and corpus texts whose values the PII
    analyzer marked (no person): the in-run utility readings take only the former, as the verdict's
    utility check does; a retain set of unkeyed texts alone is read whole."""
    from unlearning_worker.data import RetainItem
    from unlearning_worker.engine import utility_indices

    marked = [RetainItem(prompt=f"Text {i} says", completion=" 555 0100", pii_spans=[(1, 9, "phone")]) for i in range(30)]
    people = [RetainItem(prompt=f"P{i}'s phone is", completion=" 555 0199", pii_spans=[(1, 9, "phone")],
                         subject_key=f"P{i}", subject_name=f"P{i}") for i in range(5)]
    retain = [*marked[:20], *people, *marked[20:]]
    spec = UnlearningSpec(eval_retain_items=4)
    chosen = utility_indices(retain, spec)
    assert len(chosen) == 4 and all(retain[i].subject_key for i in chosen)
    assert utility_indices(retain, spec) == chosen  # fixed: every check reads the same items
    assert sorted(utility_indices(retain, UnlearningSpec(eval_retain_items=16))) == list(range(20, 25))
    assert len(utility_indices(marked, spec)) == 4 and utility_indices([], spec) == []



def test_a_checkpoint_whose_utility_checks_read_other_items_is_not_resumed(
    tiny_model_dir: Path, tiny_corpus: DemoCorpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checkpoint's history and last good step were read over the utility checks' items: a run whose
    checks read other items (code that chose them otherwise, as before stop 46) starts again."""
    forget, retain = _items(tiny_corpus)
    spec = UnlearningSpec(**FIXED, checkpoint_every=2)
    ckpt = tmp_path / "ckpt"
    _interrupted(tiny_model_dir, tmp_path / "a", ckpt, forget, retain, spec, after=5)
    chosen = engine_module.utility_indices(retain, spec)
    others = [i for i in range(len(retain)) if i not in chosen][: len(chosen)]
    assert others and others != chosen
    monkeypatch.setattr(engine_module, "utility_indices", lambda _retain, _spec: others)
    moved = run_unlearning(model_dir=tiny_model_dir, out_dir=tmp_path / "b", forget=forget, retain=retain, spec=spec,
                           checkpoint_dir=ckpt)
    assert moved.resumed_from_step is None


def test_a_checkpoint_whose_utility_question_asks_other_people_is_not_resumed(
    tiny_model_dir: Path, tiny_corpus: DemoCorpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's runs read retain answers from the verdict's question about a seeded set of people
    (retain_question_probes), not from the items utility_indices picks: a run whose question asks about
    other people starts again too."""
    forget, retain = _items(tiny_corpus)
    spec = UnlearningSpec(**FIXED, checkpoint_every=2, retain_question="What is {name}'s {label}?",
                          question_labels={"phone": "phone number", "email": "email address"})
    real = engine_module.retain_question_probes
    from transformers import AutoTokenizer

    asked = real(AutoTokenizer.from_pretrained(tiny_model_dir), retain, spec)
    assert len(asked) > 1  # the question is asked about several people's values
    ckpt = tmp_path / "ckpt"
    _interrupted(tiny_model_dir, tmp_path / "a", ckpt, forget, retain, spec, after=5)
    monkeypatch.setattr(engine_module, "retain_question_probes", lambda *args: real(*args)[1:])
    moved = run_unlearning(model_dir=tiny_model_dir, out_dir=tmp_path / "b", forget=forget, retain=retain, spec=spec,
                           checkpoint_dir=ckpt)
    assert moved.resumed_from_step is None


def test_a_line_reference_is_read_on_the_runs_own_retain_questions_and_recorded(
    tiny_model_dir: Path, tiny_corpus: DemoCorpus, tmp_path: Path
) -> None:
    """The line's first version read as each check reads the model: a copy of the base gives the base's
    own reading, and the manifest records it."""
    import shutil

    forget, retain = _items(tiny_corpus)
    first = tmp_path / "first"
    shutil.copytree(tiny_model_dir, first)
    result = run_unlearning(model_dir=tiny_model_dir, out_dir=tmp_path / "out", forget=forget, retain=retain,
                            spec=UnlearningSpec(**FIXED), reference_dir=first)
    assert result.reference_retain_exact == result.before.retain_exact
    manifest = json.loads((tmp_path / "out" / MANIFEST_FILE).read_text())
    assert manifest["reference_retain_exact"] == result.before.retain_exact
    plain = run_unlearning(model_dir=tiny_model_dir, out_dir=tmp_path / "plain", forget=forget, retain=retain,
                           spec=UnlearningSpec(**FIXED))
    assert plain.reference_retain_exact is None and plain.steps == result.steps


@pytest.mark.parametrize(("reference", "stop", "run"), [
    (None, "forget_target_met", 4),  # no reference: the base's own facts are back at step 4
    (0.0, "forget_target_met", 4),  # a first version that knew less than the base: the base decides
    (1.0, "max_steps", 12),  # one that knew every answer: the run waits for 0.95 of them, to its ceiling
])
def test_the_stop_rule_waits_for_the_lines_first_facts_when_it_knew_more_than_the_base(
    monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path, tiny_corpus: DemoCorpus, tmp_path: Path,
    reference: float | None, stop: str, run: int,
) -> None:
    import shutil

    from unlearning_worker.evaluation import EvalPoint, Evaluator

    forget, retain = _items(tiny_corpus)
    monkeypatch.setattr(engine_module, "_target_held", lambda _history, _spec, step: step >= 4)
    # every check reads the base's retain facts back, whatever the base knew
    original = Evaluator.__call__
    seen: dict[str, float] = {}

    def same_facts(self: Evaluator, step: int, losses: dict[str, float], phase: str) -> EvalPoint:
        point = original(self, step, losses, phase)
        if phase == "before":
            seen["before"] = point.retain_exact
            return point
        return replace(point, retain_exact=seen["before"])

    monkeypatch.setattr(Evaluator, "__call__", same_facts)
    if reference is not None:
        monkeypatch.setattr(Evaluator, "retain_exact", lambda _self, _model: reference)
    first = tmp_path / "first"
    shutil.copytree(tiny_model_dir, first)
    result = run_unlearning(model_dir=tiny_model_dir, out_dir=tmp_path / "out", forget=forget, retain=retain,
                            spec=UnlearningSpec(**(FIXED | {"min_steps": 0, "max_steps": 12, "eval_every": 2,
                                                            "utility_floor": 0.5})),
                            reference_dir=first if reference is not None else None)
    assert seen["before"] < 0.95  # the tiny model does not know every answer
    assert (result.stop_reason, result.steps_run) == (stop, run)
    assert result.reference_retain_exact == reference


def test_a_reference_that_is_not_a_model_is_refused_before_anything_is_written(
    tiny_model_dir: Path, tiny_corpus: DemoCorpus, tmp_path: Path
) -> None:
    forget, retain = _items(tiny_corpus)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="reference_dir is not a Hugging Face model directory"):
        run_unlearning(model_dir=tiny_model_dir, out_dir=tmp_path / "out", forget=forget, retain=retain,
                       spec=UnlearningSpec(**FIXED), reference_dir=tmp_path / "empty")
    assert not (tmp_path / "out").exists()
