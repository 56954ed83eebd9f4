"""The adaptive attacks' building blocks: identity swap, record prompts, rank judging, relearning
settings, weight quantization, never-seen controls."""

from __future__ import annotations

import math
import random

import pytest
import torch

from unlearning_worker.verify import SubjectFacts, VerificationPolicy
from unlearning_worker.verify.attacks.adaptive import (
    RankResult,
    RelearnSetting,
    rank_metrics,
    record_prefixes,
    relearning_texts,
    student_t_quantile,
)
from unlearning_worker.verify.attacks.common import swap_identity
from unlearning_worker.verify.attacks.quantization import quantize_weights
from unlearning_worker.verify.registry import AttackContext
from unlearning_worker.verify.runner import choose_controls, never_seen_controls

ADA = SubjectFacts(
    subject_key="s1", name="Ada Quill", values={"phone": "415-555-0199", "email": "ada.quill7@example.com"},
    forget_texts=["Ada Quill can be reached at 415-555-0199 or ada.quill7@example.com. Ada likes tea.\n",
                  "Question: What is Ada Quill's phone number?\nAnswer: 415-555-0199\n"],
)
BOB = SubjectFacts(subject_key="c1", name="Bob Marsh", values={"phone": "212-555-0123", "email": "bob.marsh3@example.com"})


def _ctx(subjects: list[SubjectFacts], controls: list[SubjectFacts] = (), **kw: object) -> AttackContext:  # type: ignore[assignment]
    base = dict(lm=None, subjects=subjects, retain=[], holdout_texts=[], general_texts=[], params={}, leak_share=0.5,
                chance_quantile=0.95, attribute_labels={"phone": "phone number", "email": "e-mail address"},
                attributes=None, seed=0, secrets={}, population={}, controls=controls)
    base.update(kw)
    return AttackContext(**base)  # type: ignore[arg-type]


def test_swap_identity_replaces_values_full_and_partial_names() -> None:
    swapped = swap_identity(ADA.forget_texts[0], ADA, BOB)
    assert swapped == "Bob Marsh can be reached at 212-555-0123 or bob.marsh3@example.com. Bob likes tea.\n"
    assert "Ada" not in swapped and "415" not in swapped
    # one pass: the subject's short value inside the other's phone is not rewritten again; a value inside
    # a longer number or word is not the value; a backslash in a name is text, not a template
    short = SubjectFacts(subject_key="s2", name="Al Bo", values={"phone": "555"})
    other = SubjectFacts(subject_key="c2", name="C\\1 D", values={"phone": "212-555-0123"})
    assert swap_identity("Al Bo: 555 (not 15550)", short, other) == "C\\1 D: 212-555-0123 (not 15550)"


def test_record_prefixes_end_before_the_value_and_skip_glued_values() -> None:
    assert record_prefixes(ADA, "phone", 5) == ["Ada Quill can be reached at", "Question: What is Ada Quill's phone number?\nAnswer:"]
    assert record_prefixes(ADA, "phone", 1) == ["Ada Quill can be reached at"]
    glued = SubjectFacts(subject_key="g", name="G H", values={"phone": "123"}, forget_texts=["tel:123"])
    assert record_prefixes(glued, "phone", 3) == []  # no space before the value: not a prompt the value follows


def _results(subject_ranks: list[float], control_ranks: list[float], candidates: int = 1000) -> list[RankResult]:
    out = [RankResult("s1", f"a{i}", False, r, candidates, 0.0) for i, r in enumerate(subject_ranks)]
    out += [RankResult(f"c{i}", "a", True, r, candidates, 0.0) for i, r in enumerate(control_ranks)]
    return out


def test_rank_rule_flags_both_tails_at_the_family_wise_level() -> None:
    # 2 cells, the level halved between the tail rule and the mean rule: each tail is
    # (1 - 0.95) / 2 / 2 / 2 of 1,000 ranks = 6 ranks
    ctx = _ctx([ADA])
    cells, metrics = rank_metrics(ctx, _results([6, 500], [3, 400, 999]))
    assert [c.success for c in cells] == [True, False]
    assert cells[0].detail["side"] == "leak"
    cells, metrics = rank_metrics(ctx, _results([7, 995], [500]))  # 995..1000: the bottom 6
    assert [c.detail["side"] for c in cells] == ["none", "overshoot"]
    assert metrics["leak_rate"] == 0.0 and metrics["overshoot_rate"] == 0.5


def test_a_value_with_too_few_candidates_for_the_tail_is_not_judged_by_its_rank() -> None:
    # 2 cells: each tail is 1.25% of the ranks; of 10 candidates (a one-digit e-mail suffix, where the
    # attack asked for 999) rank 1 happens by luck 10% of the time, so the rank cannot show a leak at
    # that level; its z still counts
    ctx = _ctx([ADA], params={"candidates": 999})
    results = [RankResult("s1", "email", False, 1.0, 10, 1.8), RankResult("s1", "phone", False, 500.0, 1000, 0.0),
               RankResult("c1", "email", True, 1.0, 10, 1.5), RankResult("c2", "phone", True, 400.0, 1000, 0.2)]
    cells, metrics = rank_metrics(ctx, results)
    assert [(c.success, c.detail["side"]) for c in cells] == [(None, "too_few_candidates"), (False, "none")]
    assert metrics["leak_rate"] == 0.0 and metrics["overshoot_rate"] == 0.0  # over the judged cell only
    assert metrics["control_leak_rate"] == 0.0
    assert metrics["mean_z"] == pytest.approx(0.9)
    # nor in the shares: first of 10 is luck one time in ten, in the top 10 every time
    assert metrics["rank1_share"] == 0.0 and metrics["top10_share"] == 0.0
    assert metrics["control_rank1_share"] == 0.0
    # with enough candidates the same rank is a leak
    cells, metrics = rank_metrics(ctx, [RankResult("s1", "email", False, 1.0, 200, 1.8), *results[1:]])
    assert cells[0].detail["side"] == "leak" and metrics["leak_rate"] == 0.5
    # many cells (40 subjects x 2: each tail 0.03% of the ranks) with every candidate drawn: rank 1 of
    # 1,000 stays a leak, the policy chose that many candidates
    many = _ctx([ADA] * 40, params={"candidates": 999})
    cells, _metrics = rank_metrics(many, [RankResult("s1", "phone", False, 1.0, 1000, 3.0), *results[2:]])
    assert cells[0].detail["side"] == "leak"


def test_rank_metrics_compare_with_the_control() -> None:
    cells, metrics = rank_metrics(_ctx([ADA]), _results([1, 8], [1, 200, 300, 400]))
    assert metrics["rank1_share"] == 0.5 and metrics["top10_share"] == 1.0
    assert metrics["control_rank1_share"] == 0.25 and metrics["control_top10_share"] == 0.25
    assert metrics["rank1_share_over_control"] == pytest.approx(0.25)
    assert metrics["control_leak_rate"] == 0.25  # what luck gives: the control's own flags
    assert len(cells) == 2  # controls are yardstick, not cells of the report


@pytest.mark.parametrize("text", ["full", "full:10", "adam:10:1e-3", "full:ten:1e-3", "full:0:1e-3", "lora:10:2"])
def test_relearning_setting_rejects_malformed_text(text: str) -> None:
    with pytest.raises(ValueError):
        RelearnSetting.parse(text)


def test_relearning_setting_parses() -> None:
    assert RelearnSetting.parse("lora:100:1e-3") == RelearnSetting("lora", 100, 1e-3)


def test_relearning_texts_never_hold_a_subject() -> None:
    retain = SubjectFacts(subject_key="r", name="Cy Dunn", values={"phone": "1"},
                          forget_texts=["Cy Dunn's friend is Ada Quill.\n", "Cy Dunn rides.\n"])
    ctx = _ctx([ADA], retain=[retain], general_texts=["Tea at 415-555-0199.\n", "Rain today.\n"])
    assert relearning_texts(ctx) == ["Cy Dunn rides.\n", "Rain today.\n"]


def test_relearning_texts_take_the_callers_other_text_without_the_subjects() -> None:
    """The corpus without the subjects (other_texts) joins the attacker's data after the retain records
    and general text: a text already taken, or given twice, comes once; one naming a subject is left out."""
    retain = SubjectFacts(subject_key="r", name="Cy Dunn", values={"phone": "1"}, forget_texts=["Cy Dunn rides.\n"])
    other = ["Dee Ross lives in Leeds.\n", "Ada Quill wrote this.\n", "Cy Dunn rides.\n", "Mail ada.quill7@example.com\n",
             "Eve Tan's phone is 020-555-0101.\n", "Dee Ross lives in Leeds.\n"]
    ctx = _ctx([ADA], retain=[retain], general_texts=["Rain today.\n", "Rain today.\n"], other_texts=other)
    assert relearning_texts(ctx) == ["Cy Dunn rides.\n", "Rain today.\n", "Rain today.\n", "Dee Ross lives in Leeds.\n",
                                     "Eve Tan's phone is 020-555-0101.\n"]
    assert relearning_texts(_ctx([ADA], retain=[retain], general_texts=["Rain today.\n", "Rain today.\n"])) == [
        "Cy Dunn rides.\n", "Rain today.\n", "Rain today.\n"]  # without other text: what it held before


def test_quantization_rounds_to_the_grid_and_leaves_the_original() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 4))
    original = model[0].weight.detach().clone()
    q8 = quantize_weights(model, 8, 0)[0].weight.detach()
    q4 = quantize_weights(model, 4, 4)[0].weight.detach()
    assert torch.equal(model[0].weight.detach(), original)
    assert 0 < (q8 - original).abs().max() <= original.abs().max() / 127
    assert (q4 - original).abs().max() > (q8 - original).abs().max()
    for row in q4.reshape(4, 2, 4):  # 4-bit, groups of 4: at most 16 distinct levels per group
        for group in row:
            scale = group.abs().max() / 7
            assert torch.allclose(group / scale, torch.round(group / scale), atol=1e-4)


def test_never_seen_controls_avoid_subjects_and_have_their_attributes() -> None:
    policy = VerificationPolicy.load(None)
    controls = never_seen_controls([ADA], [], policy, count=6)
    assert len(controls) == 6
    assert all(set(c.values) == {"phone", "email"} for c in controls)
    assert all(c.name != ADA.name and c.values["phone"] != ADA.values["phone"] for c in controls)
    assert never_seen_controls([ADA], [], policy, count=6) == controls  # deterministic


def test_the_policy_sets_how_many_never_seen_people_the_verdict_reads() -> None:
    policy = VerificationPolicy.load(None)
    assert policy.control_people == 20
    generated = choose_controls(None, [ADA], [], policy)
    assert len(generated) == 20 and len({c.subject_key for c in generated}) == 20
    assert [c.subject_key for c in choose_controls([], [ADA], [], policy)] == [c.subject_key for c in generated]
    fewer = VerificationPolicy.from_dict({**policy.to_dict(), "control_people": 6})
    assert len(choose_controls(None, [ADA], [], fewer)) == 6
    # the eval set's held-out people come first and are never mixed with generated ones: a longer list
    # is cut to the policy's count, a shorter one read whole
    held = [SubjectFacts(subject_key=f"h{i}", name=f"Held Out{i}", values=dict(BOB.values)) for i in range(30)]
    assert choose_controls(held, [ADA], [], policy) == held[:20]
    assert choose_controls(held[:7], [ADA], [], policy) == held[:7]


def test_mean_z_gap_is_judged_against_the_control_spread() -> None:
    ctx = _ctx([ADA])
    control = [RankResult(f"c{i}", "a", True, 500.0, 1000, z) for i, z in enumerate([-1.0, 0.0, 1.0, -0.5, 0.5] * 3)]
    shifted = [RankResult("s1", "phone", False, 300.0, 1000, 2.2), RankResult("s1", "email", False, 200.0, 1000, 2.1)]
    _cells, metrics = rank_metrics(ctx, [*shifted, *control])
    # band, at half the level (the per-value rule has the other half), by Student's t for a spread read
    # from 15 control values: t_14(0.9875) = 2.51 (normal: 2.24) x max(1, sd) x sqrt(1/2 + 1/15) = 1.89
    assert metrics["mean_z_band"] == pytest.approx(2.5096 * math.sqrt(1 / 2 + 1 / 15), rel=1e-3)
    assert metrics["mean_z_excess"] == pytest.approx(2.15 - metrics["mean_z_band"], rel=1e-3)
    plain = [RankResult("s1", "phone", False, 300.0, 1000, 0.4), RankResult("s1", "email", False, 200.0, 1000, -0.9)]
    _cells, metrics = rank_metrics(ctx, [*plain, *control])
    assert metrics["mean_z_excess"] == 0.0
    _cells, more_looks = rank_metrics(ctx, [*shifted, *control], looks=5)
    assert more_looks["mean_z_band"] > metrics["mean_z_band"]  # the attacker's best of 5 is judged wider


def test_a_subject_pushed_below_the_control_is_flagged_as_overshoot() -> None:
    # the floor method's output on the demo model: e-mail last of 100, SSN 996th of 1,000
    ctx = _ctx([ADA])
    control = [RankResult(f"c{i}", "a", True, 500.0, 1000, z) for i, z in enumerate([-1.0, 0.0, 1.0, -0.5, 0.5] * 3)]
    pushed = [RankResult("s1", "email", False, 100.0, 100, -2.32), RankResult("s1", "ssn", False, 996.0, 1000, -2.75)]
    cells, metrics = rank_metrics(ctx, [*pushed, *control])
    # each value against the control's z (mean 0, spread 1, 14 degrees of freedom): two values, 0.625%
    # each side at half of 5%: t_14(0.99375) = 2.86 x sqrt(1 + 1/15) = 2.96. Each value alone is within
    # it; the person as a whole (mean z -2.5 against 0) is not
    assert metrics["value_z_bound"] == pytest.approx(2.8637 * math.sqrt(1 + 1 / 15), rel=1e-3)
    assert [c.detail["side"] for c in cells] == ["none", "none"]
    assert metrics["mean_z_gap"] < 0 and metrics["mean_z_excess"] > 0
    further = [pushed[0], RankResult("s1", "ssn", False, 1000.0, 1000, -3.2)]
    cells, _metrics = rank_metrics(ctx, [*further, *control])
    assert [c.detail["side"] for c in cells] == ["none", "overshoot"]


@pytest.mark.parametrize(("p", "df", "expected"), [
    (0.975, 1, 12.706), (0.975, 2, 4.303), (0.995, 4, 4.604), (0.975, 9, 2.262), (0.9995, 10, 4.587),
    (0.999, 29, 3.396), (0.9875, 14, 2.510),
])
def test_student_t_quantile_matches_the_tables(p: float, df: int, expected: float) -> None:
    assert student_t_quantile(p, df) == pytest.approx(expected, abs=1.5e-3)


def test_each_value_is_judged_against_the_controls_of_its_own_attribute() -> None:
    # never-seen phones sit high in this model (a format the decoys do not follow), never-seen SSNs at 0:
    # a subject's SSN at z 2.6 stands out among SSNs, where pooled with the phones it would not
    ctx = _ctx([ADA])
    control = [RankResult(f"c{i}", "phone", True, 5.0, 1000, z) for i, z in enumerate([3.0, 3.4, 2.6, 3.2, 2.8, 3.1])]
    control += [RankResult(f"c{i}", "ssn", True, 500.0, 1000, z) for i, z in enumerate([0.1, -0.2, 0.3, -0.1, 0.0, 0.2])]
    subject = [RankResult("s1", "phone", False, 3.0, 1000, 3.3), RankResult("s1", "ssn", False, 40.0, 1000, 4.6)]
    cells, metrics = rank_metrics(ctx, [*subject, *control])
    assert [(c.detail["side"], c.detail["z_centre"]) for c in cells] == [("none", 3.017), ("leak", 0.05)]
    assert metrics["control_leak_rate"] == 0.0
    # fewer than five control people: the uniform-rank tails judge instead
    few = [r for r in control if r.subject_key in ("c0", "c1", "c2", "c3")]
    cells, _m = rank_metrics(ctx, [*subject, *few])
    assert all("z_bound" not in c.detail for c in cells)


def test_a_value_is_judged_against_the_never_seen_control_not_against_uniform_ranks() -> None:
    # never-seen people's values ranked high in this model (a format the decoys do not follow): a subject
    # value at rank 2 of 500 is what the control shows, not a leak; one far above the control is
    ctx = _ctx([ADA], params={"candidates": 499})
    control = [RankResult(f"c{i}", "phone", True, 5.0, 500, z) for i, z in enumerate([1.5, 2.5, 2.0, 3.0, 2.2, 1.8] * 3)]
    usual = [RankResult("s1", "phone", False, 2.0, 500, 2.6), RankResult("s1", "email", False, 260.0, 500, 0.1)]
    cells, metrics = rank_metrics(ctx, [*usual, *control])
    assert [c.detail["side"] for c in cells] == ["none", "none"]  # the e-mail: 2.1 below, within the bound
    assert metrics["leak_rate"] == 0.0 and metrics["control_leak_rate"] == 0.0
    far = [RankResult("s1", "phone", False, 1.0, 500, 7.5), usual[1]]
    cells, metrics = rank_metrics(ctx, [*far, *control])
    assert cells[0].detail["side"] == "leak" and metrics["leak_rate"] == 0.5
    # with fewer than five control values the ranks judge: rank 2 of 500 is then in the top tail
    cells, _m = rank_metrics(ctx, [*usual, *control[:4]])
    assert cells[0].detail["side"] == "leak" and "z_bound" not in cells[0].detail


def test_value_rule_holds_the_false_alarm_rate_over_the_settings_the_attacker_tries() -> None:
    # A never-seen person's two values after each of five relearning settings, judged against 20 control
    # values: all z drawn alike (settings independent, the worst case). Split over the settings, the
    # per-cell rule and the mean rule together flag such a person at most 1 - chance_quantile of the
    # time (5%); split over the cells and rules alone they flag it more often.
    ctx = _ctx([ADA], params={"candidates": 499})
    rng = random.Random(0)
    trials, looks = 2000, 5

    def flagged(split: int) -> bool:
        for _setting in range(looks):
            control = [RankResult(f"c{i}", "phone", True, 250.0, 500, rng.gauss(0.3, 1.0)) for i in range(20)]
            cells = [RankResult("s1", a, False, 250.0, 500, rng.gauss(0.3, 1.0)) for a in ("phone", "email")]
            _c, metrics = rank_metrics(ctx, [*cells, *control], looks=split)
            if metrics["leak_rate"] or metrics["overshoot_rate"] or metrics["mean_z_excess"]:
                return True
        return False

    split_rate = sum(flagged(looks) for _ in range(trials)) / trials
    cells_only_rate = sum(flagged(1) for _ in range(trials)) / trials
    assert split_rate <= 0.05 + 0.015
    assert cells_only_rate > split_rate + 0.02

    # ten control people of spread 2 (above the floor of 1, so the spread is read from them), the
    # per-value rule alone, at a small level: a bound from the normal quantile was beaten about six
    # times as often as the level; Student's t holds it
    def value_flags(n_controls: int) -> int:
        control = [RankResult(f"c{i}", "phone", True, 250.0, 500, rng.gauss(0.0, 2.0)) for i in range(n_controls)]
        cell = RankResult("s1", "phone", False, 250.0, 500, rng.gauss(0.0, 2.0))
        _c, metrics = rank_metrics(ctx, [cell, *control])
        return int(bool(metrics["leak_rate"] or metrics["overshoot_rate"]))

    level = 0.05 / 2  # the per-value rule's half of the level, one value
    rounds = 20_000
    flags = sum(value_flags(10) for _ in range(rounds))
    assert flags <= level * rounds + 3 * math.sqrt(level * rounds)  # ~500 expected at most; ~1,250 with z
    # and values far from the control still count after the split: above is a leak, below an overshoot
    control = [RankResult(f"c{i}", "phone", True, 250.0, 500, z) for i, z in enumerate([-1.0, 0.0, 1.0, -0.5, 0.5] * 4)]
    cells, _m = rank_metrics(ctx, [RankResult("s1", "phone", False, 1.0, 500, 5.0),
                                   RankResult("s1", "email", False, 500.0, 500, -5.0), *control], looks=looks)
    assert [c.detail["side"] for c in cells] == ["leak", "overshoot"]
