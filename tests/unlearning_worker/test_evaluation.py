"""The in-run evidence check: which probes it runs at each point."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from unlearning_worker import evaluation
from unlearning_worker.evaluation import Evaluator, Probe
from unlearning_worker.spec import UnlearningSpec


@pytest.mark.parametrize(
    ("greedy_leaks", "gap", "phase", "step", "sampled"),
    [
        (0, None, "unlearn", 10, True),  # a method without a target: greedy clean, sampling decides
        (0, 0.05, "unlearn", 10, True),  # within gap_target: the stop rule could fire, so sample
        (0, 0.5, "unlearn", 10, False),  # still far from the never-seen target: the check is decided
        (1, None, "unlearn", 10, False),  # greedy already leaks: decided
        (1, 0.5, "before", 0, True),  # the baseline is always measured in full
        (0, 0.5, "unlearn", 200, True),  # the last step: the evidence of a run that ends at max_steps
    ],
)
def test_sampled_probes_run_only_where_they_can_decide_the_stop_rule(
    monkeypatch: pytest.MonkeyPatch, greedy_leaks: int, gap: float | None, phase: str, step: int, sampled: bool
) -> None:
    calls: list[int] = []

    def fake_probes(model: Any, tokenizer: Any, probes: list[Probe], *, threshold: float, samples: int = 0,
                    temperature: float = 1.0, seed: int = 0) -> tuple[int, int, int]:
        calls.append(samples)
        return (greedy_leaks if not samples else 2), 0, 2

    monkeypatch.setattr(evaluation, "run_probes", fake_probes)
    monkeypatch.setattr(evaluation, "perplexity", lambda *a, **k: 1.0)
    spec = UnlearningSpec(device="cpu", max_steps=200, eval_samples=20, gap_target=0.1)
    probe = Probe(prompt="p", values=[("phone", "1", 0.0)], max_new_tokens=4, stop_at_newline=True)
    evaluator = Evaluator(model=None, tokenizer=None, spec=spec, forget_probes=[probe], retain_probes=[probe],
                          retain_examples=[], pad_id=0, device=torch.device("cpu"), gap=lambda: gap)
    point = evaluator(step, {}, phase)
    assert (20 in calls) is sampled
    assert (point.forget_extraction_sampled is not None) is sampled
    assert point.forget_gap == gap
    # a skipped sampled check never hides a leak the stop rule needs: it is skipped only where the rule fails
    assert point.forget_extraction == (1.0 if sampled else greedy_leaks / 2)
