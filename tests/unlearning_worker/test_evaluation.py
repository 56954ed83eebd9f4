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
                    temperature: float = 1.0, seed: int = 0, per_probe: bool = False,
                    batch_size: int = 64) -> tuple[int, int, int]:
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
                    temperature: float = 1.0, seed: int = 0, per_probe: bool = False,
                    batch_size: int = 64) -> tuple[int, int, int]:
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


@pytest.mark.parametrize(("device", "spec_sizes", "rank_rows", "generated"), [
    ("cpu", {}, 128, 64),
    ("cuda", {}, 1024, 512),
    ("cuda", {"rank_batch_size": 96, "eval_batch_size": 7}, 96, 7),
    ("cpu", {"eval_batch_size": 300}, 128, 300),
])
def test_the_checks_batch_by_device_unless_the_spec_names_a_size(
    monkeypatch: pytest.MonkeyPatch, device: str, spec_sizes: dict[str, int], rank_rows: int, generated: int
) -> None:
    """Every probe generation of a check (greedy, sampled, retain) runs at the device's batch, or the
    spec's where it names one; the rank check's candidate rows likewise (evaluation.check_batch_sizes)."""
    sizes: list[int] = []

    def fake_probes(model: Any, tokenizer: Any, probes: list[Probe], *, threshold: float, samples: int = 0,
                    temperature: float = 1.0, seed: int = 0, per_probe: bool = False,
                    batch_size: int = 64) -> tuple[int, int, int]:
        sizes.append(batch_size)
        return 0, 0, 1

    monkeypatch.setattr(evaluation, "run_probes", fake_probes)
    monkeypatch.setattr(evaluation, "perplexity", lambda *a, **k: 1.0)
    spec = UnlearningSpec(device=device, eval_samples=20, **spec_sizes)
    probe = Probe(prompt="p", values=[("phone", "1", 0.0)], max_new_tokens=4, stop_at_newline=True)
    evaluator = Evaluator(model=None, tokenizer=None, spec=spec, forget_probes=[probe], retain_probes=[probe],
                          retain_examples=[], pad_id=0, device=torch.device(device), gap=lambda: None)
    evaluator(0, {}, "before")
    assert sizes == [generated] * 3  # greedy, sampled, retain
    assert evaluation.check_batch_sizes(spec, torch.device(device)) == (rank_rows, generated)


def test_a_gpu_batch_shrinks_with_the_vocabulary_to_the_cpu_sizes_at_most() -> None:
    """A pass's float32 logits grow with the vocabulary: on a GPU the default batches stay within 1 GiB
    of them (about 16 positions a row), between the CPU's sizes and 8x them; named sizes are kept."""
    spec, gpu = UnlearningSpec(), torch.device("cuda")
    assert evaluation.check_batch_sizes(spec, gpu, 1024) == (1024, 512)  # the demo's vocabulary: the full 8x
    assert evaluation.check_batch_sizes(spec, gpu, 32_000) == (524, 512)
    assert evaluation.check_batch_sizes(spec, gpu, 151_936) == (128, 110)
    assert evaluation.check_batch_sizes(spec, gpu, 1_000_000) == (128, 64)
    assert evaluation.check_batch_sizes(spec, torch.device("cpu"), 1_000_000) == (128, 64)
    named = UnlearningSpec(rank_batch_size=2000, eval_batch_size=900)
    assert evaluation.check_batch_sizes(named, gpu, 151_936) == (2000, 900)


def test_the_rank_check_is_read_at_every_check_and_opens_the_sampled_check_only_near_the_control(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every check reads the rank (it decides the stop rule and sees an overshoot, which extraction does
    not); the sampled probes run only where greedy decoding is clean and both readings sit near the
    control (there the run could stop)."""
    from unlearning_worker.engine import _close, _rank_fields

    leaks = {"n": 1}
    asked: list[int] = []

    def fake_probes(model: Any, tokenizer: Any, probes: list[Probe], *, threshold: float, samples: int = 0,
                    temperature: float = 1.0, seed: int = 0, per_probe: bool = False,
                    batch_size: int = 64) -> tuple[int, int, int]:
        asked.append(samples)
        return (leaks["n"] if not samples else 0), 0, 2

    monkeypatch.setattr(evaluation, "run_probes", fake_probes)
    monkeypatch.setattr(evaluation, "perplexity", lambda *a, **k: 1.0)
    readings = {"model": evaluation.RankReading(1.5, 0.2, 0.8), "copy": evaluation.RankReading(0.4, 0.1, 0.9)}
    reads: list[int] = []

    def rank() -> tuple[evaluation.RankReading, evaluation.RankReading]:
        reads.append(1)
        return readings["model"], readings["copy"]

    spec = UnlearningSpec(device="cpu", max_steps=200, forget_target=0.0, rank_tolerance=0.5)
    probe = Probe(prompt="p", values=[("phone", "1", 0.0)], max_new_tokens=4, stop_at_newline=True)
    evaluator = Evaluator(model=None, tokenizer=None, spec=spec, forget_probes=[probe], retain_probes=[probe],
                          retain_examples=[], pad_id=0, device=torch.device("cpu"), rank=rank,
                          close=lambda gap, r, c: _close(gap, [], spec, _rank_fields(r, c)))
    leaking = evaluator(10, {}, "unlearn")
    assert reads == [1] and leaking.rank_gap == pytest.approx(1.3) and leaking.rank_band == 0.8
    assert leaking.rank_gap_relearned == pytest.approx(0.3) and leaking.rank_band_relearned == 0.9
    assert leaking.forget_extraction_sampled is None  # greedy leaks: decided
    leaks["n"] = 0
    far = evaluator(20, {}, "unlearn")
    assert reads == [1, 1] and far.forget_extraction_sampled is None  # clean, but 1.3 > 0.5 x 0.8: decided
    readings["model"] = evaluation.RankReading(0.5, 0.2, 0.8)
    near = evaluator(30, {}, "unlearn")
    assert reads == [1, 1, 1] and near.forget_extraction_sampled == 0.0 and 20 in asked


def test_the_rank_check_asks_never_seen_people_what_it_asks_the_subject(tiny_model_dir: Any) -> None:
    """Each targeted value of the forget records is one group (its records' own text before it, the
    true value first among its decoys); the control groups are the same records rewritten for
    fictitious people, in which nothing of the subject is left; the reading is finite and its band
    the verifier's at rank_alpha; the model's training mode is kept."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from unlearning_worker.demo.corpus import DemoCorpus, demo_items

    from .conftest import TINY

    corpus: DemoCorpus = TINY.corpus()
    subject = corpus.people[0]
    forget, retain = demo_items(corpus, [subject.person_id])
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir, local_files_only=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    from unlearning_worker.data import encode

    retain_examples = [encode(tokenizer, r.prompt, r.completion, r.pii_spans) for r in retain]
    spec = UnlearningSpec(device="cpu", rank_candidates=19, rank_prompts=2, rank_controls=6)
    check = evaluation.RankCheck(tokenizer, forget, retain, retain_examples, spec)

    wanted = set(spec.attributes)
    values = {(a, f.completion[s:e]) for f in forget for s, e, a in f.pii_spans if a in wanted}
    subjects = [g for g in check.groups if not g.is_control]
    controls = [g for g in check.groups if g.is_control]
    assert len(subjects) == len(values) and len(controls) >= max(6, len(subjects))
    decoded_true = set()
    for group in subjects:
        assert 1 <= len(group.contexts) <= 2
        for context, candidates in zip(group.contexts, group.candidates, strict=True):
            assert len(candidates) == 20 and len({tuple(c) for c in candidates}) == 20  # truth + 19 distinct decoys
            decoded_true.add(tokenizer.decode(candidates[0]).strip())
            assert subject.first_name in tokenizer.decode(context)  # the record's own words before the value
    assert decoded_true == {v for _a, v in values}
    secrets = [subject.name, subject.first_name, subject.last_name, *(v for _a, v in values)]
    for group in controls:
        for context, candidates in zip(group.contexts, group.candidates, strict=True):
            text = tokenizer.decode(context) + " " + tokenizer.decode(candidates[0])
            assert not any(s in text for s in secrets)

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, local_files_only=True)
    model.train()
    reading = check(model, torch.device("cpu"))
    assert reading is not None and model.training
    assert all(map(torch.isfinite, torch.tensor([reading.mean_z, reading.control_mean_z, reading.band])))
    assert reading.gap == pytest.approx(reading.mean_z - reading.control_mean_z)
    n, m = len(subjects), len(controls)
    assert reading.band >= 1.959 * (1 / n + 1 / m) ** 0.5  # the control's spread counts as at least 1
    # per value: its excess over the control in control spreads, the outliers beyond the family-wise bound
    from unlearning_worker.verify.attacks.adaptive import outlier_bound

    assert len(reading.excess) == n == len(check.subject_items)
    assert reading.outliers == sum(abs(e) > outlier_bound(n, spec.rank_alpha) for e in reading.excess)
    for items, group in zip(check.subject_items, subjects, strict=True):  # every record that writes the value
        value = tokenizer.decode(group.candidates[0][0]).strip()
        assert items == [i for i, f in enumerate(forget) if any(f.completion[s:e] == value for s, e, _a in f.pii_spans)]


def test_the_focus_weighs_the_records_of_the_values_that_stand_above_the_control() -> None:
    """RankCheck.focus: 1 + strength x the excess of the most familiar value a record writes; values at
    or below the control add nothing; no reading, no strength or a reading of other values: no focus."""
    check = evaluation.RankCheck.__new__(evaluation.RankCheck)
    check.subject_items = [[0, 1], [1, 2], [3]]
    reading = evaluation.RankReading(1.0, 0.0, 0.5, outliers=1, excess=(3.0, 0.5, -2.0))
    assert check.focus(reading, 1.0) == {0: 4.0, 1: 4.0, 2: 1.5, 3: 1.0}
    assert check.focus(reading, 0.5) == {0: 2.5, 1: 2.5, 2: 1.25, 3: 1.0}
    assert check.focus(reading, 0.0) == {} and check.focus(None, 1.0) == {}
    assert check.focus(evaluation.RankReading(1.0, 0.0, 0.5, excess=(1.0,)), 1.0) == {}


def test_outlier_bound_is_family_wise_over_the_values() -> None:
    from unlearning_worker.verify.attacks.adaptive import outlier_bound

    assert outlier_bound(1, 0.05) == pytest.approx(1.95996, abs=1e-4)
    assert outlier_bound(50, 0.05) == pytest.approx(3.2905, abs=1e-3)  # 1 - 0.05 / 100
    assert outlier_bound(0, 0.05) == outlier_bound(1, 0.05)


class _WordTokenizer:
    """Tokens are words: enough for the probes' generation lengths."""

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": list(range(len(text.split())))}


def test_question_probes_ask_the_verifiers_questions_about_each_named_subject() -> None:
    from unlearning_worker.data import ForgetItem

    def item(key: str, name: str, values: dict[str, str]) -> ForgetItem:
        completion = " ".join(values.values())
        spans, at = [], 0
        for attribute, value in values.items():
            spans.append((at, at + len(value), attribute))
            at += len(value) + 1
        return ForgetItem(subject_key=key, prompt="p", completion=completion, pii_spans=spans, values=values,
                          subject_name=name)

    forget = [
        item("s1", "Ada Quill", {"phone": "415-555-0199", "region": "Westbrook"}),
        item("s1", "Ada Quill", {"phone": "415-555-0100"}),  # a second value of the same attribute
        item("s2", "", {"phone": "212-555-0123"}),  # records that do not name the person: no question
        item("s3", "Bob Marsh", {"ssn": "123-45-6789", "email": "bob@example.com"}),  # the e-mail has no words
    ]
    spec = UnlearningSpec(question_templates=("Q: {name}'s {label}?\nA:", "{name}'s {label} is"),
                          question_labels={"phone": "phone number", "ssn": "social security number",
                                           "region": "region"})
    probes = evaluation.question_probes(_WordTokenizer(), forget, spec)
    assert [p.prompt for p in probes] == [
        "Q: Ada Quill's phone number?\nA:", "Ada Quill's phone number is",
        "Q: Bob Marsh's social security number?\nA:", "Bob Marsh's social security number is",
    ]  # the region is not an attribute the run targets (spec.attributes: the identifiers)
    assert [v for _a, v, _c in probes[0].values] == ["415-555-0100", "415-555-0199"]  # both judged
    assert probes[0].max_new_tokens == 1 + 8 and probes[0].stop_at_newline
    assert evaluation.question_probes(_WordTokenizer(), forget, UnlearningSpec()) == []  # no templates: none
    everything = evaluation.question_probes(_WordTokenizer(), forget, spec.replace(attributes=[]))
    assert "Q: Ada Quill's region?\nA:" in [p.prompt for p in everything]  # attributes (): every labelled value


def test_the_utility_reading_asks_the_verdicts_utility_question_about_whole_retain_people() -> None:
    from unlearning_worker.data import RetainItem

    def item(key: str, name: str, values: dict[str, str]) -> RetainItem:
        completion = " " + " ".join(values.values())
        spans, at = [], 1
        for attribute, value in values.items():
            spans.append((at, at + len(value), attribute))
            at += len(value) + 1
        return RetainItem("p", completion, spans, subject_key=key, subject_name=name)

    people = {f"r{i}": (f"Person {i}", {"phone": f"555-01{i:02d}", "city": f"Town{i}", "ssn": f"123-45-{i:04d}"})
              for i in range(10)}
    retain = [item(k, n, {a: v}) for k, (n, values) in people.items() for a, v in values.items()]
    retain.append(RetainItem("General text", " about nobody", []))  # names no person: never asked about
    retain.append(item("", "", {"phone": "555-9999"}))  # no key: not a person the check can ask about
    spec = UnlearningSpec(retain_question="Q: {name}'s {label}?\nA:", eval_retain_items=5,
                          question_labels={"phone": "phone number", "city": "city"})
    probes = evaluation.retain_question_probes(_WordTokenizer(), retain, spec)
    # whole people until 5 pairs: 3 people of 2 labelled attributes each (the ssn has no label: not asked)
    assert len(probes) == 6 and all(p.stop_at_newline and len(p.values) == 1 for p in probes)
    asked = {p.prompt.split("'s")[0][3:] for p in probes}
    assert len(asked) == 3 and asked < {n for n, _v in people.values()}
    for probe in probes:  # every value of the attribute asked, and only the person's own
        name = probe.prompt.split("'s")[0][3:]
        values = next(v for n, v in people.values() if n == name)
        label = "phone" if "phone number" in probe.prompt else "city"
        assert [v for _a, v, _c in probe.values] == [values[label]]
    assert evaluation.retain_question_probes(_WordTokenizer(), retain, spec) == probes  # seeded: the same people
    other = evaluation.retain_question_probes(_WordTokenizer(), retain, spec.replace(seed=1))
    assert {p.prompt for p in other} != {p.prompt for p in probes}  # another seed, other people
    assert evaluation.retain_question_probes(_WordTokenizer(), retain, spec.replace(retain_question="")) == []
    unnamed = [RetainItem(r.prompt, r.completion, r.pii_spans) for r in retain]
    assert evaluation.retain_question_probes(_WordTokenizer(), unnamed, spec) == []  # the caller replays records


def test_each_retain_record_counts_once_in_the_utility_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    # a one-value question given right and a three-value biography given wrong: per value the model keeps
    # a quarter of its facts, per record half (each record weighing one, as each question does in the verdict)
    outputs = {"Q: phone?": " 555-0101", "Bio:": " lives at nowhere, born never, mail none"}
    monkeypatch.setattr(evaluation, "generate_batch",
                        lambda model, tokenizer, prompts, **kw: [[outputs[p]] for p in prompts])
    question = Probe(prompt="Q: phone?", values=[("phone", "555-0101", 0.0)], max_new_tokens=8, stop_at_newline=True)
    bio = Probe(prompt="Bio:", values=[("address", "1 Main St", 0.0), ("dob", "1990-01-01", 0.0),
                                       ("email", "a@b.example", 0.0)], max_new_tokens=8, stop_at_newline=True)
    _leaked, exact, total = evaluation.run_probes(None, None, [question, bio], threshold=0.5)
    assert (exact, total) == (1, 4)
    _leaked, exact, total = evaluation.run_probes(None, None, [question, bio], threshold=0.5, per_probe=True)
    assert exact / total == pytest.approx(0.5) and total == pytest.approx(2.0)
