"""Unlearning under FSDP (unlearning_worker.distributed), on CPU with two real processes (gloo).

The two-process run is the engine's run with the weights sharded: it must write a complete model
atomically, take the same steps and stop for the same reason as one process, and land on (nearly) the
same weights: FSDP averages the two halves' gradients where one process takes one mean over the batch.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from unlearning_worker import distributed, fsdp
from unlearning_worker.checkpoints import MANIFEST_FILE
from unlearning_worker.demo.corpus import DemoCorpus, demo_items
from unlearning_worker.engine import ProgressEvent, UnlearningCancelled, run_unlearning
from unlearning_worker.spec import UnlearningSpec

pytestmark = pytest.mark.distributed

# Forget and retain batches even (4 of the 7 forget records a step, one micro-batch: an odd micro-batch
# splits 2 + 1 and the two processes' means weigh its records unequally), greedy evidence only (no
# sampling), a fixed number of steps; no in-loop relearning attacker and no rank check (a sharded run
# refuses both: execution turns them off there, and the manifest says so).
FIXED = {"device": "cpu", "dtype": "float32", "min_steps": 4, "max_steps": 4, "eval_every": 2, "batch_size": 4,
         "forget_coverage": 0.5, "retain_batch_size": 4, "eval_retain_items": 8, "utility_floor": 0.0,
         "ppl_ceiling": 1e9, "lr": 5e-3, "eval_samples": 0, "num_threads": 1, "adversary_every": 0,
         "rank_candidates": 0}


def _items(corpus: DemoCorpus) -> tuple[list, list]:
    forget, retain = demo_items(corpus, [corpus.people[0].person_id])
    return forget, retain[:40]


@pytest.mark.parametrize("method", ["counterfactual", "grad_diff"])
def test_two_processes_unlearn_like_one(tiny_model_dir: Path, tiny_corpus: DemoCorpus, tmp_path: Path,
                                        method: str) -> None:
    forget, retain = _items(tiny_corpus)
    spec = UnlearningSpec(**FIXED, method=method)
    single = run_unlearning(model_dir=tiny_model_dir, out_dir=tmp_path / "one", forget=forget, retain=retain, spec=spec)
    events: list[ProgressEvent] = []
    result = distributed.launch(model_dir=tiny_model_dir, out_dir=tmp_path / "two", forget=forget, retain=retain,
                                spec=spec, processes=2, progress=events.append, work_dir=tmp_path)
    assert result["stop_reason"] == single.stop_reason and result["steps"] == single.steps == 4
    assert [e.step for e in events if e.phase == "step"] == [1, 2, 3, 4]
    assert events[-1].phase == "done"
    written = load_file(tmp_path / "two" / "model.safetensors")
    reference = load_file(tmp_path / "one" / "model.safetensors")
    base = load_file(tiny_model_dir / "model.safetensors")
    assert set(written) == set(reference)
    # Adam moves a weight by up to its learning rate whatever the size of its gradient, so where a
    # gradient is nearly zero the two ways of taking the batch mean can move it differently: compare
    # the whole update (L2), not the worst weight
    moved = sum(float((reference[k] - base[k]).square().sum()) for k in base) ** 0.5
    apart = sum(float((written[k] - reference[k]).square().sum()) for k in reference) ** 0.5
    print(f"update {moved:.4f}, sharded minus single {apart:.6f}")
    assert moved > 1e-2  # the run changed the weights ...
    assert apart < 0.05 * moved  # ... and the sharded run changed them the same way
    manifest = json.loads((tmp_path / "two" / MANIFEST_FILE).read_text())
    assert manifest["files_sha256"] == result["weights_sha256"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]  # no run or temporary directory left


def test_a_cancelled_sharded_run_writes_nothing(tiny_model_dir: Path, tiny_corpus: DemoCorpus, tmp_path: Path) -> None:
    forget, retain = _items(tiny_corpus)
    seen: list[ProgressEvent] = []
    with pytest.raises(UnlearningCancelled):
        distributed.launch(model_dir=tiny_model_dir, out_dir=tmp_path / "two", forget=forget, retain=retain,
                           spec=UnlearningSpec(**{**FIXED, "max_steps": 200, "min_steps": 200}), processes=2,
                           progress=seen.append, should_cancel=lambda: any(e.phase == "step" for e in seen),
                           work_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"lora": True}, "lora"),
        ({"saliency": 0.5}, "saliency"),
        ({"noise_scale": 0.1}, "noise_scale"),
        ({"adversary_every": 2}, "adversary_every"),
        ({"checkpoint_every": 2}, "checkpoint_every"),
        ({"rank_candidates": 99}, "rank_candidates"),
        ({"method": "rmu"}, "method rmu"),
    ],
)
def test_what_a_sharded_run_does_not_support_is_refused_before_it_starts(
    tiny_model_dir: Path, tmp_path: Path, override: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=f"not supported in a sharded \\(FSDP\\) run: .*{message}"):
        distributed.launch(model_dir=tiny_model_dir, out_dir=tmp_path / "two", forget=[], retain=[],
                           spec=UnlearningSpec(**{**FIXED, **override}), processes=2, work_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_one_process_is_not_a_sharded_run(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least two processes"):
        distributed.launch(model_dir=tiny_model_dir, out_dir=tmp_path / "two", forget=[], retain=[],
                           spec=UnlearningSpec(**FIXED), processes=1, work_dir=tmp_path)


def test_a_failed_process_raises_and_leaves_no_output(tiny_model_dir: Path, tiny_corpus: DemoCorpus,
                                                      tmp_path: Path) -> None:
    forget, retain = _items(tiny_corpus)
    (tmp_path / "two").mkdir()  # the engine refuses an existing out_dir in every process
    with pytest.raises(RuntimeError, match="sharded unlearning run failed"):
        distributed.launch(model_dir=tiny_model_dir, out_dir=tmp_path / "two", forget=forget, retain=retain,
                           spec=UnlearningSpec(**FIXED), processes=2, work_dir=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["two"] and not any((tmp_path / "two").iterdir())


def test_split_without_a_process_group_keeps_the_batch() -> None:
    assert fsdp.split([3, 1, 2]) == [3, 1, 2]
    assert fsdp.agreed(True) and not fsdp.agreed(False)
    assert torch.distributed.is_available()
