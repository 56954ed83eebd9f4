"""The verdict fails a model that hides instead of removes.

On the tiny memorising model of conftest.py: plain gradient ascent stopped as soon as greedy
extraction is zero is the textbook suppression. It passes the black-box probes; relearning on other
people's data (and the candidate rank against the never-seen control) must fail it. The overshoot
side of the rule is tested in test_adaptive.py and measured on the demo model in bench_erasure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from unlearning_worker.data import ForgetItem, RetainItem
from unlearning_worker.engine import run_unlearning
from unlearning_worker.spec import UnlearningSpec
from unlearning_worker.threads import torch_threads
from unlearning_worker.verify import SubjectFacts, VerificationPolicy, VerificationReport, run_verification


def _split(person: SubjectFacts, text: str) -> tuple[str, str, list[tuple[int, int, str]]]:
    """(prompt, completion, spans): the prompt ends before the first value the text holds."""
    found = sorted((text.find(v), text.find(v) + len(v), a) for a, v in person.values.items() if v in text)
    cut = found[0][0] - 1  # the space before the value opens the completion, as in training
    return text[:cut], text[cut:], [(s - cut, e - cut, a) for s, e, a in found]


def _items(world: Any) -> tuple[list[ForgetItem], list[RetainItem]]:
    forget = []
    for person in world.subjects:
        for text in person.forget_texts:
            prompt, completion, spans = _split(person, text)
            forget.append(ForgetItem(subject_key=person.subject_key, prompt=prompt, completion=completion, pii_spans=spans,
                                     values={a: completion[s:e] for s, e, a in spans}, subject_name=person.name))
    retain = [RetainItem(*_split(p, t)) for p in world.retain for t in p.forget_texts]
    retain += [RetainItem(t.split(" ", 1)[0], " " + t.split(" ", 1)[1], []) for t in world.general_texts]
    return forget, retain


def _unlearn(world: Any, out: Path, **spec: Any) -> Path:
    forget, retain = _items(world)
    base = {"method": "ga", "lr": 1e-3, "eval_every": 2, "eval_samples": 0, "attributes": ("phone", "ssn"),
            "retain_batch_size": 8, "batch_size": 8, "num_threads": 1, "span_only": True}
    run_unlearning(model_dir=world.trained_dir, out_dir=out, forget=forget, retain=retain,
                   spec=UnlearningSpec(**(base | spec)))
    return out


def _verify(world: Any, model_dir: Path, policy: VerificationPolicy) -> VerificationReport:
    with torch_threads(1):
        return run_verification(model_dir=model_dir, base_model_dir=world.trained_dir, subjects=world.subjects,
                                retain=world.retain, holdout_texts=world.holdout_texts,
                                general_texts=world.general_texts, policy=policy, controls=world.controls)


def _adaptive_only(policy: VerificationPolicy) -> VerificationPolicy:
    """The attacks this test reads, each judged at the level it has in the whole policy (the others'
    shares of the verdict's level are left unspent rather than handed to these)."""
    raw = policy.to_dict()
    kept = ("direct_probe", "candidate_rank", "relearning", "quantization")
    for name, entry in raw["attacks"].items():
        if name not in kept:
            entry["enabled"] = False
            entry["mandatory"] = False
    judged = policy.judged()
    share = sum(policy.attacks[n].level_share for n in kept) / sum(policy.attacks[n].level_share for n in judged)
    raw["verdict_level"] = policy.verdict_level * share
    reduced = VerificationPolicy.from_dict(raw)
    assert all(reduced.attack_quantile(n) == pytest.approx(policy.attack_quantile(n)) for n in kept)
    return reduced


@pytest.fixture(scope="module")
def suppressed(world: Any, tmp_path_factory: pytest.TempPathFactory) -> VerificationReport:
    # the textbook suppression: stop at the first check with no extraction (no rank rule, no attacker's
    # copy inside the run: those are what the engine adds to remove rather than hide)
    out = _unlearn(world, tmp_path_factory.mktemp("ga") / "stopped-at-zero", max_steps=200, utility_floor=0.0,
                   ppl_ceiling=1000.0, rank_candidates=0, adversary_every=0, target_checks=1)
    return _verify(world, out, _adaptive_only(world.policy))


def _failing(report: VerificationReport) -> set[str]:
    return {c.attack for c in report.verdict.failing}


def test_verdict_fails_a_model_that_only_suppresses(suppressed: VerificationReport) -> None:
    """One test over the one suppressed model (its fixture takes ~40 s; xdist would build it once per
    worker for separate tests)."""
    # gradient ascent stopped at zero extraction passes the probes ...
    assert suppressed.attacks["direct_probe"].after.metrics["leak_rate"] == 0.0
    # ... but the verdict fails: fine-tuning on other people's records brings the subjects' values back
    # above the control
    assert not suppressed.verdict.passed
    relearning = suppressed.attacks["relearning"].after
    assert relearning is not None
    assert relearning.metrics["mean_z_gap"] > 0 and relearning.metrics["mean_z_excess"] > 0 or \
        relearning.metrics["extraction_rate"] > 0 or relearning.metrics["leak_rate"] > 0
    assert "relearning" in _failing(suppressed)
    # and the report states the threat model it was measured against
    model = suppressed.to_dict()["threat_model"]
    assert model["relearning_settings"] == list(relearning.params["settings"])
    assert model["relearning_texts"] == relearning.params["fine_tune_texts"] > 0  # what the attacker held
    assert model["relearning_corpus_texts"] == 0  # no training corpus given here: the retain records and general text
    assert model["control"] == {"people": 4, "source": "held-out"}
    assert set(model["never_seen_comparison"]) == {"candidate_rank", "relearning", "quantization"}
    # and how often a person the model never saw would fail it, each attack's share of that
    levels = model["false_failure_level"]
    assert levels["verdict"] == pytest.approx(0.05 * 8 / 14)  # these four attacks' shares of the default's 0.05
    assert set(levels["attacks"]) == {"direct_probe", "candidate_rank", "relearning", "quantization"}
    assert levels["attacks"]["relearning"] == pytest.approx(0.05 * 3 / 14, abs=1e-6)
