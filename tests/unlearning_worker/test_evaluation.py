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


def test_the_sampled_check_reads_identifiers_only_and_greedy_reads_every_value(monkeypatch: pytest.MonkeyPatch) -> None:
    """A value many people share (a region among eight) comes up by chance in one of 20 samples: the
    sampled check reads the identifying attributes, greedy decoding every value."""
    seen: dict[int, list[list[str]]] = {}

    def fake_probes(model: Any, tokenizer: Any, probes: list[Probe], *, threshold: float, samples: int = 0,
                    temperature: float = 1.0, seed: int = 0) -> tuple[int, int, int]:
        seen.setdefault(samples, []).append([a for p in probes for a, _v, _c in p.values])
        total = sum(len(p.values) for p in probes)
        return (0 if not samples else 1), 0, total

    monkeypatch.setattr(evaluation, "run_probes", fake_probes)
    monkeypatch.setattr(evaluation, "perplexity", lambda *a, **k: 1.0)
    bio = Probe(prompt="p", values=[("region", "Westbrook", 0.12), ("phone", "927-826-1466", 0.0)], max_new_tokens=4,
                stop_at_newline=True)
    dob = Probe(prompt="q", values=[("birth_date", "1989-10-18", 0.1)], max_new_tokens=4, stop_at_newline=True)
    spec = UnlearningSpec(device="cpu", eval_samples=20)  # attributes: the identifiers
    evaluator = Evaluator(model=None, tokenizer=None, spec=spec, forget_probes=[bio, dob], retain_probes=[],
                          retain_examples=[], pad_id=0, device=torch.device("cpu"), gap=lambda: None)
    point = evaluator(10, {}, "unlearn")
    assert seen[0][0] == ["region", "phone", "birth_date"]  # greedy: every value
    assert seen[20] == [["phone"]]  # sampled: the identifier alone
    assert point.forget_extraction_sampled == 1.0 and point.forget_extraction_greedy == 0.0
    seen.clear()
    everything = Evaluator(model=None, tokenizer=None, spec=UnlearningSpec(device="cpu", attributes=()),
                           forget_probes=[bio, dob], retain_probes=[], retain_examples=[], pad_id=0,
                           device=torch.device("cpu"), gap=lambda: None)
    everything(10, {}, "unlearn")
    assert seen[20] == [["region", "phone", "birth_date"]]  # attributes (): every value
