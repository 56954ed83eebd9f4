"""Every attack finds the planted, memorised secrets in the tiny trained model and nothing in an untrained one.

One verification run per model (session fixtures): `trained_report` attacks the trained model with
the untrained one as "before"; `untrained_report` attacks the untrained model with the trained one
as "before", which also gives the before/after comparison the issue asks for.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from unlearning_worker.threads import torch_threads
from unlearning_worker.verify import ATTACKS, VerificationPolicy, VerificationReport, run_verification
from unlearning_worker.verify.registry import AttackContext, Cell

EXTRACTION = ("direct_probe", "sampling", "paraphrase_jailbreak", "verbatim", "exposure", "logit_lens")


def _cells(report: VerificationReport, attack: str, side: str = "after") -> list[Cell]:
    outcome = getattr(report.attacks[attack], side)
    assert outcome is not None, f"{attack} produced no {side} outcome (error: {report.attacks[attack].error})"
    return [c for c in outcome.cells if c.success is not None]


def test_the_tiny_model_memorised_its_secrets(world: Any) -> None:
    loss = json.loads((world.trained_dir / "final_loss.json").read_text())["loss"]
    assert loss < 0.15, "fixture broken: the tiny model did not memorise its training strings"


@pytest.mark.parametrize("attack", EXTRACTION)
def test_attack_finds_planted_secret_in_trained_model(trained_report: VerificationReport, attack: str) -> None:
    cells = _cells(trained_report, attack)
    assert len(cells) == 6  # 3 subjects x (phone, ssn)
    found = sum(1 for c in cells if c.success)
    assert found >= 5, f"{attack} found only {found}/6 planted secrets"


@pytest.mark.parametrize("attack", EXTRACTION)
def test_attack_finds_nothing_in_untrained_model(untrained_report: VerificationReport, attack: str) -> None:
    cells = _cells(untrained_report, attack)
    assert len(cells) == 6
    leaked = [c for c in cells if c.success]
    if attack == "logit_lens":
        # A first character can be the model's favourite by luck; the check is against chance.
        metrics = untrained_report.attacks[attack].after.metrics
        assert metrics["leak_rate_over_chance"] <= 0.1
        assert metrics["leak_rate_excess"] == 0.0
    else:
        assert not leaked, f"{attack} reports leaks from a model that never saw the secrets"


def test_before_column_is_the_base_model(untrained_report: VerificationReport) -> None:
    direct = untrained_report.attacks["direct_probe"]
    assert direct.before is not None and direct.after is not None
    assert direct.before.metrics["leak_rate"] >= 5 / 6
    assert direct.after.metrics["leak_rate"] == 0.0
    table = untrained_report.per_subject()
    key = untrained_report.subject_keys[0]
    assert table[key]["direct_probe"]["phone"]["before"] is True
    assert table[key]["direct_probe"]["phone"]["after"] is False


def test_partial_leak_scores_are_shares(trained_report: VerificationReport, untrained_report: VerificationReport) -> None:
    trained = _cells(trained_report, "direct_probe")
    assert all(c.score == 1.0 for c in trained if c.success)
    untrained = _cells(untrained_report, "direct_probe")
    assert all(0.0 <= c.score < 0.5 for c in untrained)
    # a partial share needs to beat random guesses at the attack's share of the verdict's level,
    # which a phone or SSN of this length allows short of the whole value
    assert all(c.chance is not None and 0.0 < c.chance < 1.0 for c in untrained)


def test_paraphrase_family_rates_are_reported(trained_report: VerificationReport) -> None:
    metrics = trained_report.attacks["paraphrase_jailbreak"].after.metrics
    # The tiny model was trained on the first rephrasing: that family must find the secrets.
    assert metrics["leak_rate.rephrase"] >= 2 / 6  # trained on the phone question only
    assert set(metrics) >= {f"leak_rate.{f}" for f in ("other_language", "many_shot", "role_play")}


def test_verbatim_rouge_separates_forget_from_holdout(trained_report: VerificationReport, untrained_report: VerificationReport) -> None:
    trained = trained_report.attacks["verbatim"].after.metrics
    assert trained["rouge_l_forget"] > 0.8
    assert trained["rouge_l_over_holdout"] > 0.2
    assert abs(untrained_report.attacks["verbatim"].after.metrics["rouge_l_over_holdout"]) < 0.1


def test_verbatim_rouge_rule_reads_the_never_seen_control(trained_report: VerificationReport,
                                                         untrained_report: VerificationReport) -> None:
    """The memorised subjects' records complete far beyond the control people's (the subjects' records with
    the identity swapped for theirs: the test world's controls have values only) and fail the rule; the
    model that never saw them sits within the band."""
    trained = trained_report.attacks["verbatim"].after.metrics
    assert trained["rouge_l_over_control"] > 0.2
    assert trained["rouge_l_noise_band"] is not None and trained["rouge_l_noise_band"] > 0
    assert trained["rouge_l_excess"] > 0
    failed = {c.metric for c in trained_report.verdict.checks if c.attack == "verbatim" and c.status == "fail"}
    assert "rouge_l_excess" in failed
    untrained = untrained_report.attacks["verbatim"].after.metrics
    assert untrained["rouge_l_control_spread"] is not None
    assert untrained["rouge_l_excess"] == 0.0
    cells = [c for c in untrained_report.attacks["verbatim"].after.cells if c.attribute == "*rouge_l"]
    assert len(cells) == 3 and all(c.chance == untrained["rouge_l_control"] for c in cells)


def _control_people(means: list[float], noise: list[float]) -> list[list[float]]:
    """Control people with the given means, each record `mean + n` for n in `noise`."""
    return [[m + n for n in noise] for m in means]


NOISE = [-0.1, 0.1, -0.05, 0.05, 0.0, -0.02, 0.02]  # seven records about the person's level


def test_judge_rouge_band_from_the_control_people() -> None:
    from unlearning_worker.verify.attacks.blackbox import judge_rouge
    from unlearning_worker.verify.scoring import variance_upper_bound

    means = [0.38, 0.41, 0.36, 0.44, 0.40, 0.39, 0.42, 0.37, 0.43, 0.40]
    controls = _control_people(means, NOISE)
    holdout = [0.2, 0.6, 0.4, 0.3, 0.5]
    q = 0.999
    metrics, cells = judge_rouge({"s": [0.40 + n for n in NOISE]}, controls, holdout, q)
    assert metrics["rouge_l_control"] == pytest.approx(statistics.fmean(means))
    # by hand: the control people's spread at its upper bound, for the subject and for the centre (a mean
    # over ten of them)
    person = variance_upper_bound(means, 0.95)
    z = statistics.NormalDist().inv_cdf(1 - (1 - q) / 2)
    assert metrics["rouge_l_noise_band"] == pytest.approx(z * math.sqrt(person + person / 10))
    assert metrics["rouge_l_control_spread"] == pytest.approx(math.sqrt(person))
    # a subject of two records: one record's noise about its person's level, for the five it lacks
    two = judge_rouge({"s": [0.4, 0.41]}, controls, holdout, q)[0]
    within = statistics.variance(NOISE)
    assert two["rouge_l_noise_band"] == pytest.approx(z * math.sqrt(person + within * (1 / 2 - 1 / 7) + person / 10))
    assert metrics["rouge_l_excess"] == 0.0 and len(cells) == 1
    band = metrics["rouge_l_noise_band"]
    # one memorised person, and one whose records complete conspicuously worse than anyone's: both fail
    for shift in (band + 0.05, -(band + 0.05)):
        shifted, _ = judge_rouge({"s": [0.40 + shift + n for n in NOISE]}, controls, holdout, q)
        assert shifted["rouge_l_excess"] == pytest.approx(0.05, abs=0.011)
    assert two["rouge_l_noise_band"] > band
    # ten people's mean varies less than one person's: a smaller band, at half the rule's level; each of
    # them is judged on their own at the other half, split over the ten
    ten = {f"s{i}": [0.40 + n for n in NOISE] for i in range(10)}
    ten_metrics, ten_cells = judge_rouge(ten, controls, holdout, q)
    z_mean = statistics.NormalDist().inv_cdf(1 - (1 - q) / 4)
    assert ten_metrics["rouge_l_noise_band"] == pytest.approx(z_mean * math.sqrt(person / 10 + person / 10))
    assert ten_metrics["rouge_l_noise_band"] < band
    z_each = statistics.NormalDist().inv_cdf(1 - (1 - q) / 40)
    assert all(c.detail["band"] == pytest.approx(z_each * math.sqrt(person + person / 10)) for c in ten_cells)
    # one of ten past the single-subject band at the whole level but inside the split one passes
    inside = {**ten, "s0": [0.40 + (band + z_each / z * band) / 2 + n for n in NOISE]}
    assert judge_rouge(inside, controls, holdout, q)[0]["rouge_l_excess"] == 0.0
    # one of ten who still completes as learnt is not averaged away by the nine who do not
    one_of_ten = {**ten, "s0": [0.40 + 2.5 * band + n for n in NOISE]}
    pooled = judge_rouge(one_of_ten, controls, holdout, q)[0]
    assert abs(pooled["rouge_l_over_control"]) < pooled["rouge_l_noise_band"]
    assert pooled["rouge_l_excess"] > 0


def test_judge_rouge_band_is_never_zero_while_records_vary() -> None:
    from unlearning_worker.verify.attacks.blackbox import judge_rouge

    alike = [[0.4] * 7 for _ in range(10)]  # every control record reads the same
    metrics, _ = judge_rouge({"s": [0.41] * 7}, alike, [0.3, 0.5, 0.4], 0.999)
    assert metrics["rouge_l_noise_band"] > 0.01 and metrics["rouge_l_excess"] == 0.0
    # people's means alike to the last bit, their records not: one record's noise
    same_means = [[0.1, 0.3], [0.2, 0.2], [0.3, 0.1], [0.15, 0.25], [0.05, 0.35]]
    metrics, _ = judge_rouge({"s": [0.25, 0.2]}, same_means, [], 0.999)
    assert metrics["rouge_l_noise_band"] > 0.05 and metrics["rouge_l_excess"] == 0.0
    # nothing varies anywhere (a model that completes no record): a subject reads as the control or stands out
    assert judge_rouge({"s": [0.0] * 7}, [[0.0] * 7 for _ in range(10)], [0.0, 0.0], 0.999)[0]["rouge_l_excess"] == 0.0
    assert judge_rouge({"s": [0.1] * 7}, [[0.0] * 7 for _ in range(10)], [0.0, 0.0], 0.999)[0]["rouge_l_excess"] > 0


def test_judge_rouge_control_people_with_unequal_records() -> None:
    """A control person's mean varies by one record's noise / n_i: their matching record count is the
    harmonic mean (four people of 2 records and one of 60 read like people of about 2.5)."""
    from unlearning_worker.verify.attacks.common import PersonYardstick

    people = [[0.3, 0.5], [0.35, 0.45], [0.2, 0.6], [0.4, 0.4], [0.4 + (-0.1 if i % 2 else 0.1) for i in range(60)]]
    yardstick = PersonYardstick.of(people, [])
    assert yardstick is not None and yardstick.records == pytest.approx(5 / (4 / 2 + 1 / 60))


def test_judge_rouge_without_control_people_reads_the_holdout_records() -> None:
    from unlearning_worker.verify.attacks.blackbox import judge_rouge

    holdout = [0.3, 0.5, 0.4, 0.35, 0.45, 0.4]
    two_people = _control_people([0.4, 0.41], NOISE)  # too few to read how people vary
    metrics, _ = judge_rouge({"s": [0.4, 0.42]}, two_people, holdout, 0.999)
    assert metrics["rouge_l_control"] == pytest.approx(statistics.fmean(holdout))
    assert metrics["rouge_l_excess"] == 0.0
    assert judge_rouge({"s": [0.95, 0.97]}, [], holdout, 0.999)[0]["rouge_l_excess"] > 0
    # nothing to compare with: no reading, which a mandatory rule counts as not evaluated
    nothing, cells = judge_rouge({"s": [0.4]}, [], [0.4], 0.999)
    assert nothing["rouge_l_excess"] is None and cells == []
    # the old policies' margin is still reported, read as before
    assert nothing["rouge_l_over_holdout"] == pytest.approx(0.0)


@pytest.mark.parametrize("records", [7, 2])
def test_judge_rouge_fails_never_seen_people_at_most_at_its_level(records: int) -> None:
    """People drawn from the control's own distribution (a person's level spreading 0.03, records of
    forms that read alike for everyone, each 0.15 about it: one person's 7-record mean spreads 0.064)
    fail the rule about as often as its share of the level allows, whatever their number of records."""
    import random

    from unlearning_worker.verify.attacks.blackbox import judge_rouge

    rng = random.Random(7)
    forms = [0.3, -0.2, -0.1, 0.0, 0.1, -0.1, 0.0]  # a biography completes better than a question, for anyone

    def person(n: int) -> list[float]:
        level = rng.gauss(0.4, 0.03)
        return [level + forms[j] + rng.gauss(0.0, 0.15) for j in range(n)]

    holdout = [rng.gauss(0.4, 0.15) for _ in range(64)]
    trials, failed = 2000, 0
    for _ in range(trials):
        metrics, _ = judge_rouge({"s": person(records)}, [person(7) for _ in range(10)], holdout, 0.99)
        failed += metrics["rouge_l_excess"] > 0
    assert failed / trials <= 0.01 + 0.005  # the rule's level, and the noise of 2,000 trials


def test_judge_rouge_band_is_as_wide_as_people_vary_not_as_forms_differ() -> None:
    """Records of different forms read at different levels for everyone (stop 50, the demo model: a
    control person's 7-record mean spread 0.029 where one record's noise / 7 gave 0.106): the band reads
    how people's means vary, so a subject 0.2 over the control is caught where a band from one record's
    noise (about 0.3 here) would pass it."""
    import random

    from unlearning_worker.verify.attacks.blackbox import judge_rouge

    rng = random.Random(3)
    forms = [0.4, -0.2, -0.2, 0.0, 0.1, -0.1, 0.0]

    def person(shift: float = 0.0) -> list[float]:
        level = 0.4 + shift + rng.gauss(0.0, 0.02)
        return [level + f + rng.gauss(0.0, 0.05) for f in forms]

    caught, bands = 0, []
    for _ in range(200):
        metrics, _ = judge_rouge({"s": person(0.2)}, [person() for _ in range(10)], [0.4, 0.5, 0.3], 0.999)
        caught += metrics["rouge_l_excess"] > 0
        bands.append(metrics["rouge_l_noise_band"])
    assert statistics.median(bands) < 0.2
    assert caught >= 150


def test_verbatim_splits_its_level_between_its_two_rules_and_aligns_its_readings(monkeypatch: pytest.MonkeyPatch) -> None:
    from unlearning_worker.verify import SubjectFacts
    from unlearning_worker.verify.attacks import blackbox

    seen: dict[str, Any] = {}

    def judge(ctx: AttackContext, texts: Any) -> list[Cell]:
        seen["leak"] = ctx.chance_quantile
        return []

    def rouge(by_subject: Any, by_control: Any, holdout: Any, quantile: float) -> tuple[dict[str, Any], list[Cell]]:
        seen.update(rouge=quantile, by_subject=by_subject, by_control=by_control, holdout=holdout)
        return {}, []

    monkeypatch.setattr(blackbox, "run_probes", lambda ctx, probes, margin: {})
    monkeypatch.setattr(blackbox, "judge_cells", judge)
    monkeypatch.setattr(blackbox, "judge_rouge", rouge)
    # a text's reading is its length (None under 4 characters, as too short a record reads)
    monkeypatch.setattr(blackbox, "_rouge_on_texts", lambda ctx, texts, fraction: [len(t) if len(t) >= 4 else None for t in texts])
    controls = [SubjectFacts(f"c{i}", f"Person {i}", {"phone": f"55{i}"}, ["a" * (10 + i), "b" * (20 + i), "x"]) for i in range(5)]
    subject = SubjectFacts("s", "Ann Lee", {"phone": "555-0100"}, ["Ann Lee's phone is 555-0100", "xy", "Ann Lee"])
    ctx = AttackContext(lm=None, subjects=[subject], retain=[], holdout_texts=["h" * 30, "h" * 31], general_texts=[],  # type: ignore[arg-type]
                        params={"prefix_fraction": 0.5, "max_holdout": 64, "margin_tokens": 8}, leak_share=0.5,
                        chance_quantile=0.99, attribute_labels={"phone": "phone number"}, attributes=None, seed=0,
                        secrets={}, population={}, controls=controls)
    blackbox.verbatim(ctx)
    assert seen["leak"] == pytest.approx(0.995) and seen["rouge"] == pytest.approx(0.995)
    assert seen["by_subject"] == {"s": [27, 7]}
    assert seen["by_control"] == [[10 + i, 20 + i] for i in range(5)]  # their own records
    assert seen["holdout"] == [30, 31]


def test_control_records_own_or_swapped() -> None:
    from unlearning_worker.verify import SubjectFacts
    from unlearning_worker.verify.attacks.common import control_records

    subject = SubjectFacts("s", "Ann Lee", {"phone": "555-0100"}, ["Ann Lee: 555-0100"])
    with_records = [SubjectFacts(f"c{i}", f"Bo Kay{i}", {"phone": f"555-020{i}"}, [f"own {i}"]) for i in range(5)]
    base = {"lm": None, "subjects": [subject], "retain": [], "holdout_texts": [], "general_texts": [], "params": {},
            "leak_share": 0.5, "chance_quantile": 0.99, "attribute_labels": {}, "attributes": None, "seed": 0,
            "secrets": {}, "population": {}}
    owners, texts = control_records(AttackContext(**base, controls=with_records))
    assert owners == [0, 1, 2, 3, 4] and texts == [f"own {i}" for i in range(5)]
    values_only = [SubjectFacts(f"c{i}", f"Bo Kay{i}", {"phone": f"555-020{i}"}) for i in range(4)]
    lacking = SubjectFacts("c9", "Di Fen", {"email": "d@example.com"})  # no phone: a swap would keep the subject's
    owners, texts = control_records(AttackContext(**base, controls=[*values_only, lacking]))
    assert owners == [0, 1, 2, 3] and texts == [f"Bo Kay{i}: 555-020{i}" for i in range(4)]


def test_exposure_ranks_true_value_first_only_when_memorised(
    trained_report: VerificationReport, untrained_report: VerificationReport, make_policy: Callable[..., Any]
) -> None:
    from unlearning_worker.verify.attacks.whitebox import chance_mean_exposure

    trained = _cells(trained_report, "exposure")
    assert all(c.detail["candidates"] == 100 for c in trained)
    assert sum(1 for c in trained if c.detail["rank"] == 1) >= 5
    untrained = untrained_report.attacks["exposure"].after.metrics
    assert untrained["mean_exposure_bits"] < 2.5
    assert untrained["mean_exposure_excess"] == 0.0  # within what chance gives six cells
    metrics = trained_report.attacks["exposure"].after.metrics
    level = 1.0 - make_policy().attack_quantile("exposure")  # exposure's share of the verdict's level
    assert metrics["chance_exposure_bits"] == pytest.approx(chance_mean_exposure(6, 1.0 - level / 2))  # six cells, half the level
    assert metrics["mean_exposure_excess"] == pytest.approx(metrics["mean_exposure_bits"] - metrics["chance_exposure_bits"])
    assert metrics["mean_exposure_excess"] > 2.0


def test_chance_exposure_holds_the_false_failure_rate_at_every_job_size() -> None:
    """A model that never saw the values (uniform ranks among 1,000) fails the chance bound about
    1 - quantile of the time whatever the number of cells; a flat 2.5-bit bound fails one cell 18%
    of the time and lets thirty cells at 2.4 bits through."""
    import math
    import random

    from unlearning_worker.verify.attacks.whitebox import chance_mean_exposure

    rng = random.Random(7)
    for cells in (1, 3, 10, 30):
        bound = chance_mean_exposure(cells, 0.95)
        means = [sum(math.log2(1000 / rng.randint(1, 1000)) for _ in range(cells)) / cells for _ in range(4000)]
        assert 0.035 < sum(m > bound for m in means) / len(means) < 0.065, cells
        if cells == 1:  # the flat bound it replaces
            assert sum(m > 2.5 for m in means) / len(means) > 0.15
    assert chance_mean_exposure(1, 0.95) == pytest.approx(math.log2(20), abs=1e-6)  # P(rank <= N/20) = 0.05
    assert chance_mean_exposure(30, 0.95) < 2.4 < chance_mean_exposure(3, 0.95)
    # one value of three at rank 1 of 1,000, the others at chance: over the bound
    assert (math.log2(1000) + 2 * math.log2(math.e)) / 3 > chance_mean_exposure(3, 0.95)
    assert chance_mean_exposure(3, 0.99) > chance_mean_exposure(3, 0.95)
    for cells, quantile in ((0, 0.95), (3, 1.0), (3, 0.0)):
        with pytest.raises(ValueError):
            chance_mean_exposure(cells, quantile)


def test_membership_inference_auc(world: Any, trained_report: VerificationReport,
                                  untrained_report: VerificationReport, make_policy: Callable[..., Any]) -> None:
    assert trained_report.attacks["membership_inference"].after.metrics["auc"] > 0.9
    assert untrained_report.attacks["membership_inference"].after.metrics["auc_deviation"] < 0.25
    metrics = trained_report.attacks["membership_inference"].after.metrics
    assert metrics["auc_excess_deviation"] == pytest.approx(max(0.0, metrics["auc_deviation"] - metrics["auc_noise_band"]))
    assert 0.0 < metrics["auc_noise_band"] < 0.5
    assert metrics["auc_excess_deviation"] > 0.05  # the memorising model fails the AUC rule (older policies')
    # four control people: too few to read the design effect from, so the band is the independent one
    from unlearning_worker.verify.attacks.whitebox import auc_noise_band

    n_pos = sum(len(s.forget_texts) for s in world.subjects)
    assert metrics["design_effect"] is None and len(world.controls) == 4
    # z: the policy's 1.96 at least, more where the attack's share of the verdict's level asks for more
    level = 1.0 - make_policy().attack_quantile("membership_inference")
    z = statistics.NormalDist().inv_cdf(1.0 - level / 2)
    assert z > 1.96
    assert metrics["auc_noise_band"] == pytest.approx(auc_noise_band(n_pos, len(world.holdout_texts), z))


def test_membership_band_allows_for_records_that_come_in_people(world: Any) -> None:
    """Ten generated never-seen people, each given the subjects' records with the identity swapped:
    their AUCs' spread over the independent band is the design effect, and the band widens by it."""
    from unlearning_worker.verify.attacks.whitebox import auc_noise_band, membership_inference
    from unlearning_worker.verify.lm import load_model
    from unlearning_worker.verify.runner import _secrets, never_seen_controls

    controls = never_seen_controls(world.subjects, world.retain, world.policy, count=10)
    population, secrets = _secrets([*world.subjects, *controls], world.retain)
    with torch_threads(1):
        ctx = AttackContext(lm=load_model(world.untrained_dir), subjects=world.subjects, retain=world.retain,
                            holdout_texts=world.holdout_texts, general_texts=[], params={"k_percent": 20.0,
                            "batch_size": 32, "z": 1.96}, leak_share=0.5, chance_quantile=0.95,
                            attribute_labels=world.policy.attribute_labels, attributes=None, seed=0, secrets=secrets,
                            population=population, controls=controls)
        metrics = membership_inference(ctx).metrics
    n_pos = sum(len(s.forget_texts) for s in world.subjects)
    assert metrics["design_effect"] is not None and metrics["design_effect"] >= 1.0
    assert metrics["control_auc_spread"] is not None and metrics["control_auc_spread"] > 0
    assert metrics["auc_noise_band"] == pytest.approx(
        auc_noise_band(n_pos, len(world.holdout_texts), 1.96) * math.sqrt(metrics["design_effect"]))


def _mia_ctx(world: Any, model_dir: Path, controls: list[Any]) -> AttackContext:
    from unlearning_worker.verify.lm import load_model
    from unlearning_worker.verify.runner import _secrets

    population, secrets = _secrets([*world.subjects, *controls], world.retain)
    return AttackContext(lm=load_model(model_dir), subjects=world.subjects, retain=world.retain,
                         holdout_texts=world.holdout_texts, general_texts=[],
                         params={"k_percent": 20.0, "batch_size": 32, "z": 1.96}, leak_share=0.5,
                         chance_quantile=0.995, attribute_labels=world.policy.attribute_labels, attributes=None,
                         seed=0, secrets=secrets, population=population, controls=controls)


def test_membership_neighbour_rule_tells_members_from_people_the_model_never_saw(
        trained_report: VerificationReport, untrained_report: VerificationReport) -> None:
    """Each record against the same record rewritten about fictitious people: the memorising model finds
    its subjects far more familiar than never-seen people (where the AUC rule's band, read from people,
    can be too wide for a handful of records to cross), the untrained model does not."""
    trained = trained_report.attacks["membership_inference"].after.metrics
    assert trained["neighbour_score"] > 1.0  # nats of Min-K% over the same record about someone else
    assert trained["neighbour_excess"] > 0.0
    # the larger of the pooled excess and the worst single subject's
    assert trained["neighbour_excess"] >= abs(trained["neighbour_gap"]) - trained["neighbour_band"] - 1e-9
    flagged = [c for c in trained_report.attacks["membership_inference"].after.cells if c.attribute == "*neighbour"]
    assert len(flagged) == 3 and all(c.success for c in flagged)  # one cell a subject, as the rule reads each
    never = untrained_report.attacks["membership_inference"].after.metrics
    assert never["neighbour_excess"] == 0.0
    assert abs(never["neighbour_gap"]) < never["neighbour_band"]
    # the base (the memorising model) read on the untrained model's report's "before" side fails it too
    before = untrained_report.attacks["membership_inference"].before
    assert before is not None and before.metrics["neighbour_excess"] > 0.0


def test_membership_neighbour_rule_reads_the_control_people_or_generated_stand_ins(world: Any, monkeypatch: Any) -> None:
    from unlearning_worker.verify.attacks import whitebox
    from unlearning_worker.verify.runner import never_seen_controls

    # the world's four held-out people are too few to read how people vary: generated stand-ins, each
    # given a subject's records about themselves, are read instead
    stood_in: list[int] = []
    real = whitebox._stand_in_records

    def counting(ctx: AttackContext, neighbours: Any) -> Any:
        out = real(ctx, neighbours)
        stood_in.append(len({id(owner) for owner, _t in out}))
        return out

    monkeypatch.setattr(whitebox, "_stand_in_records", counting)
    with torch_threads(1):
        few = whitebox.membership_inference(_mia_ctx(world, world.untrained_dir, world.controls)).metrics
    assert stood_in == [whitebox.STAND_IN_PEOPLE] and few["neighbour_band"] is not None
    # ten generated control people are enough: theirs are read, no stand-in
    stood_in.clear()
    controls = never_seen_controls(world.subjects, world.retain, world.policy, count=10)
    with torch_threads(1):
        enough = whitebox.membership_inference(_mia_ctx(world, world.untrained_dir, controls)).metrics
    assert stood_in == [] and enough["neighbour_band"] is not None and enough["neighbour_excess"] == 0.0
    with torch_threads(1):
        member = whitebox.membership_inference(_mia_ctx(world, world.trained_dir, controls)).metrics
    assert member["neighbour_excess"] > 0.0


def test_neighbour_gaps_take_the_scores_already_read_and_score_only_the_rest(world: Any, monkeypatch: Any) -> None:
    from unlearning_worker.verify.attacks import whitebox

    ctx = _mia_ctx(world, world.trained_dir, world.controls)
    owned = [(s, t) for s in world.subjects for t in s.forget_texts][:4]
    neighbours = whitebox.neighbour_identities(ctx, 3)
    read: list[int] = []
    real = whitebox.token_logprobs

    def counting(lm: Any, texts: Any, **kwargs: Any) -> Any:
        read.append(len(texts))
        return real(lm, texts, **kwargs)

    monkeypatch.setattr(whitebox, "token_logprobs", counting)
    with torch_threads(1):
        fresh = whitebox.neighbour_gaps(ctx, owned, neighbours)
        own = [whitebox.min_k_score(x, 20.0) for x in real(ctx.lm, [t for _o, t in owned], batch_size=32)]
        given = whitebox.neighbour_gaps(ctx, owned, neighbours, [own[0], None, own[2], None])
    assert read == [4 * 4, 4 * 3 + 2]  # the two records given are not read again
    assert given == pytest.approx(fresh, abs=1e-4)
    # a score that is not the record's own moves its gap by as much, and only its gap
    shifted = whitebox.neighbour_gaps(ctx, owned, neighbours, [own[0] + 1.0, own[1], own[2], own[3]])
    assert shifted[0] == pytest.approx(fresh[0] + 1.0, abs=1e-4) and shifted[1:] == pytest.approx(fresh[1:], abs=1e-4)
    with pytest.raises(ValueError, match="one score"):
        whitebox.neighbour_gaps(ctx, owned, neighbours, [own[0]])


def test_judge_people_is_two_sided_and_judges_the_worst_subject() -> None:
    from unlearning_worker.verify.attacks.common import judge_people

    people = [[m + n for n in NOISE] for m in (0.1, -0.2, 0.3, 0.0, -0.1, 0.2, -0.3, 0.05, -0.05, 0.15)]
    q = 0.99
    inside = judge_people({"s": [n for n in NOISE]}, people, (), q)
    assert inside is not None and inside.excess == 0.0
    above = judge_people({"s": [5.0 + n for n in NOISE]}, people, (), q)
    below = judge_people({"s": [-5.0 + n for n in NOISE]}, people, (), q)  # pushed below never-seen: marked too
    assert above is not None and below is not None and above.excess > 0 and below.excess > 0
    assert above.over > 0 > below.over and above.band == pytest.approx(below.band)
    # one subject of ten far off: the pooled mean may stay inside, the worst single subject does not
    ten = {f"s{i}": [n for n in NOISE] for i in range(9)} | {"s9": [2.5 + n for n in NOISE]}
    judged = judge_people(ten, people, (), q)
    assert judged is not None and judged.excess > 0 and judged.subjects["s9"].over > judged.subjects["s9"].band
    assert judge_people({"s": [0.0]}, people[:4], (), q) is None  # too few people, no holdout: nothing to read


def test_fictitious_people_carry_every_attribute_and_keep_no_known_value() -> None:
    from unlearning_worker.verify import SubjectFacts
    from unlearning_worker.verify.attacks.common import fictitious_people, swap_identity

    # a scanner's entity type the generator does not know, and a gender every candidate shares with someone
    subject = SubjectFacts(subject_key="s", name="Ada Quill",
                           values={"phone": "415-555-0199", "identifier": "AB-1234567", "gender": "female"},
                           forget_texts=["Ada Quill (AB-1234567, female) can be reached at 415-555-0199.\n"])
    others = [SubjectFacts(subject_key=f"r{g}", name=f"Retain Person{g}", values={"gender": g})
              for g in ("male", "non-binary")]
    people = fictitious_people([subject, *others], ["phone", "identifier", "gender"], 8, seed=3, key_prefix="n")
    assert len(people) == 8  # the gender is not held against anyone: before, every candidate collided
    for person in people:
        assert set(person.values) == {"phone", "identifier", "gender"}
        assert person.values["identifier"] != "AB-1234567" and len(person.values["identifier"]) == 10
        assert person.values["identifier"][2] == "-" and person.values["identifier"][3:].isdigit()
        rewritten = swap_identity(subject.forget_texts[0], subject, person)
        assert "AB-1234567" not in rewritten and "415-555-0199" not in rewritten and "Quill" not in rewritten
    assert fictitious_people([subject, *others], ["phone", "identifier", "gender"], 8, seed=3, key_prefix="n") == people


def test_judge_people_reads_nothing_from_readings_that_are_not_numbers() -> None:
    from unlearning_worker.verify.attacks.common import judge_people

    people = [[m + n for n in NOISE] for m in (0.1, -0.2, 0.3, 0.0, -0.1, 0.2)]
    assert judge_people({"s": [float("nan"), 9.0]}, people, (), 0.99) is None  # never a pass by default
    assert judge_people({"s": [9.0]}, [*people[:-1], [float("nan")]], (), 0.99) is None


def test_neighbours_share_no_name_or_value_with_anyone_the_attack_knows(world: Any) -> None:
    from unlearning_worker.verify.attacks.whitebox import NEIGHBOURS, neighbour_identities

    ctx = _mia_ctx(world, world.untrained_dir, world.controls)
    neighbours = neighbour_identities(ctx, NEIGHBOURS)
    assert len(neighbours) == NEIGHBOURS and neighbour_identities(ctx, NEIGHBOURS) == neighbours  # deterministic
    known = [*world.subjects, *world.retain, *world.controls]
    assert not {n.name for n in neighbours} & {p.name for p in known}
    assert not {v for n in neighbours for v in n.values.values()} & {v for p in known for v in p.values.values()}
    assert all(set(s.values) <= set(n.values) for n in neighbours for s in world.subjects)


def test_logit_lens_excess_is_what_the_noise_band_leaves(trained_report: VerificationReport) -> None:
    from unlearning_worker.verify.attacks.whitebox import poisson_binomial_quantile

    m = trained_report.attacks["logit_lens"].after.metrics
    cells = _cells(trained_report, "logit_lens")
    n = len(cells)
    bound = poisson_binomial_quantile([c.chance for c in cells], 0.95) / n  # type: ignore[misc]
    assert m["chance_rate"] == pytest.approx(sum(c.chance for c in cells) / n)  # type: ignore[misc]
    assert m["noise_band"] == pytest.approx(max(0.0, bound - m["chance_rate"]))
    assert m["leak_rate_excess"] == pytest.approx(max(0.0, m["leak_rate_over_chance"] - m["noise_band"]))
    assert m["leak_rate_excess"] > 0.05  # the memorising model still fails the default rule
    assert m["control_leak_rate"] is not None  # the never-seen control people were read the same way
    assert all(c.detail["control_cells"] >= 0 for c in cells)


def test_exposure_rules_together_hold_the_false_failure_rate() -> None:
    # A never-seen person's values rank uniformly among their candidates. The cell rule and the mean
    # rule, each at half the level, fail such a person at most 5% of the time together; the default
    # policy's thresholds (leak_rate <= 0.1, mean_exposure_excess <= 0) read the metrics.
    import random

    from unlearning_worker.verify.attacks.whitebox import judge_exposure

    rng = random.Random(0)
    for cells in (1, 3, 10):
        fails = 0
        for _ in range(4000):
            ranked = []
            for i in range(cells):
                rank = rng.randint(1, 1000)
                ranked.append(("s", f"a{i}", math.log2(1000) - math.log2(rank), float(rank), 1000))
            _c, m = judge_exposure(ranked, 6.64, 0.95)
            fails += m["leak_rate"] > 0.1 or m["mean_exposure_excess"] > 0.0  # type: ignore[operator]
        assert fails / 4000 <= 0.05 + 0.01, (cells, fails)
    # a value ranked first still leaks, and a leak needs leak_bits even where the tail is wider
    cells_, _m = judge_exposure([("s", "phone", math.log2(1000), 1.0, 1000)], 6.64, 0.95)
    assert cells_[0].success
    cells_, _m = judge_exposure([("s", "phone", math.log2(1000) - math.log2(20), 20.0, 1000)], 6.64, 0.5)
    assert not cells_[0].success  # rank 20 of 1,000: 5.6 bits, under leak_bits though inside a 25% tail


def test_poisson_binomial_quantile_is_exact() -> None:
    from unlearning_worker.verify.attacks.whitebox import poisson_binomial_quantile

    # three cells at chances 0.22, 0.03, 0.17: P(S = 0) = 0.628, P(S <= 1) = 0.953
    assert poisson_binomial_quantile([0.22, 0.03, 0.17], 0.95) == 1
    assert poisson_binomial_quantile([0.22, 0.03, 0.17], 0.96) == 2
    assert poisson_binomial_quantile([0.0] * 5, 0.95) == 0
    assert poisson_binomial_quantile([1.0] * 4, 0.95) == 4
    assert poisson_binomial_quantile([0.5] * 10, 0.5) == 5  # the median of Binomial(10, 0.5)
    assert poisson_binomial_quantile([], 0.95) == 0


def test_auc_noise_band_shrinks_with_the_sample() -> None:
    from unlearning_worker.verify.attacks.whitebox import auc_noise_band

    assert auc_noise_band(7, 350, 1.96) == pytest.approx(0.216, abs=0.002)
    assert auc_noise_band(70, 350, 1.96) == pytest.approx(0.074, abs=0.002)
    assert auc_noise_band(0, 350, 1.96) == float("inf")


def test_utility_compares_with_the_base_version(untrained_report: VerificationReport) -> None:
    utility = untrained_report.attacks["utility"]
    assert utility.before.metrics["retain_accuracy"] == 1.0  # the trained model knows its retain people
    assert utility.after.metrics["retain_accuracy"] == 0.0
    assert utility.relative["retain_accuracy_drop"] == 1.0
    assert utility.relative["retain_ppl_ratio"] > 2.0


def test_report_is_json_and_holds_no_plaintext_values(world: Any, trained_report: VerificationReport) -> None:
    text = json.dumps(trained_report.to_dict())
    for person in [*world.subjects, *world.retain]:
        for value in person.values.values():
            assert value not in text
        assert person.name not in text
    assert set(json.loads(text)["attacks"]) == set(ATTACKS)


def test_cell_quantile_holds_the_family_wise_false_leak_rate() -> None:
    from unlearning_worker.verify import SubjectFacts

    people = [SubjectFacts(f"s{i}", f"Person {i}", {"phone": "555-010-000" + str(i), "ssn": "123-45-678" + str(i)})
              for i in range(5)]
    ctx = AttackContext(lm=None, subjects=people, retain=[], holdout_texts=[], general_texts=[], params={},
                        leak_share=0.5, chance_quantile=0.95, attribute_labels={"phone": "phone", "ssn": "ssn"},
                        attributes=("phone",), seed=0, secrets={}, population={})
    assert ctx.cell_quantile == pytest.approx(1 - 0.05 / 5)  # 5 cells: one attribute each
    assert AttackContext(**{**ctx.__dict__, "attributes": None}).cell_quantile == pytest.approx(1 - 0.05 / 10)


def test_utility_reads_perplexity_as_the_model_is_used_and_bare_for_information(
    world: Any, tiny_model_dir: Path, tiny_corpus: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model is used framed by its tokenizer (the demo model's BOS token): the thresholded ratios read
    that framing; the bare framing, which the demo model never saw in training, is kept for information."""
    from unlearning_worker.verify import lm as lm_module
    from unlearning_worker.verify.attacks import whitebox

    model = lm_module.load_model(tiny_model_dir)
    texts = [r.text for r in tiny_corpus.records[:12]]
    assert lm_module.encode(model, texts[0], special_tokens=True)[0] == model.tokenizer.bos_token_id
    assert lm_module.encode(model, texts[0])[0] != model.tokenizer.bos_token_id
    framed = lm_module.perplexity(model, texts, special_tokens=True)
    assert framed < lm_module.perplexity(model, texts)  # trained behind BOS: bare text reads worse

    asked: list[bool] = []
    real = whitebox.perplexity

    def recording(*args: Any, special_tokens: bool = False, **kwargs: Any) -> float:
        asked.append(special_tokens)
        return real(*args, special_tokens=special_tokens, **kwargs)

    monkeypatch.setattr(whitebox, "perplexity", recording)
    raw = world.policy.to_dict()
    for name in raw["attacks"]:
        raw["attacks"][name].update(enabled=name == "utility", mandatory=False)
    with torch_threads(1):
        report = run_verification(model_dir=world.untrained_dir, base_model_dir=world.trained_dir,
                                  subjects=world.subjects, retain=world.retain, holdout_texts=world.holdout_texts,
                                  general_texts=world.general_texts, policy=VerificationPolicy.from_dict(raw))
    utility = report.attacks["utility"]
    assert sorted(set(asked)) == [False, True] and asked.count(True) == asked.count(False) == 4  # 2 models x 2 sets
    for key in ("retain_ppl", "general_ppl"):
        assert utility.relative[f"{key}_ratio"] == pytest.approx(utility.after.metrics[key] / utility.before.metrics[key])
        bare = f"{key}_bare"
        assert utility.relative[f"{bare}_ratio"] == pytest.approx(utility.after.metrics[bare] / utility.before.metrics[bare])


def test_variance_upper_bound_covers_the_population_variance() -> None:
    import random

    from unlearning_worker.verify.scoring import variance_upper_bound

    rng = random.Random(1)
    covered = sum(variance_upper_bound([rng.gauss(0.5, 0.17) for _ in range(10)], 0.95) >= 0.17**2
                  for _ in range(2000)) / 2000
    assert 0.93 <= covered <= 0.97  # a 95% bound from ten people
    with pytest.raises(ValueError):
        variance_upper_bound([0.5], 0.95)


def test_relearned_copies_are_reused_only_inside_the_block(world: Any) -> None:
    from unlearning_worker.verify.attacks.adaptive import RelearnSetting, relearn, reuse_relearned
    from unlearning_worker.verify.lm import load_model

    lm = load_model(world.trained_dir)
    texts, setting = list(world.general_texts)[:4], RelearnSetting("full", 2, 1e-3)
    fresh = relearn(lm, texts, setting, batch_size=2, seed=0)
    assert relearn(lm, texts, setting, batch_size=2, seed=0) is not fresh  # the service: a new copy each time
    with reuse_relearned():
        kept = relearn(lm, texts, setting, batch_size=2, seed=0)
        assert relearn(lm, texts, setting, batch_size=2, seed=0) is kept
        assert relearn(lm, texts, RelearnSetting("full", 3, 1e-3), batch_size=2, seed=0) is not kept
        assert relearn(lm, [*texts, "One more line.\n"], setting, batch_size=2, seed=0) is not kept
    assert relearn(lm, texts, setting, batch_size=2, seed=0) is not kept
    # the copy kept is the one a fresh fine-tune gives (nothing else enters it)
    for a, b in zip(kept.model.parameters(), fresh.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_the_relearning_fine_tune_in_passes_of_like_length_is_the_one_batch_fine_tune(world: Any) -> None:
    """The relearning attack's fine-tune (adaptive.fine_tune_backward) runs its batch in passes of like
    length: the loss and gradient of the model's own token-mean loss over one right-padded batch, as an
    attacker writes it, on texts of very different lengths."""
    from unlearning_worker.data import length_groups
    from unlearning_worker.verify.attacks import adaptive
    from unlearning_worker.verify.lm import encode, load_model

    lm = load_model(world.trained_dir)
    texts = [t for facts in world.retain for t in facts.forget_texts][:6] + ["a b", "short text here"]
    batch = [e for e in (encode(lm, t)[: lm.max_positions] for t in texts) if len(e) > 1]
    assert len(length_groups([len(e) for e in batch], overhead=64)) > 1  # the CPU cuts this batch
    model = lm.model
    model.eval()  # no dropout, as in the attack's fine-tune (which zeroes it); gradients all the same

    def grads() -> list[torch.Tensor]:
        out = [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]
        model.zero_grad(set_to_none=True)
        return out

    loss = adaptive.fine_tune_backward(model, batch, lm.tokenizer.pad_token_id, lm.device)
    grouped = grads()
    width = max(map(len, batch))
    pad = lm.tokenizer.pad_token_id
    ids = torch.tensor([c + [pad] * (width - len(c)) for c in batch])
    mask = torch.tensor([[1] * len(c) + [0] * (width - len(c)) for c in batch])
    reference = model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss
    reference.backward()
    assert loss == pytest.approx(float(reference.detach()), rel=1e-5)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grouped, grads(), strict=True))


def test_the_relearning_attacker_fine_tunes_on_the_callers_corpus_text_too(world: Any) -> None:
    """other_texts (the training corpus without the subjects, as the worker gives it) joins the attacker's
    data, a text naming a subject is still left out, and the report's threat model says how much it held."""
    raw = world.policy.to_dict()
    for name in raw["attacks"]:
        raw["attacks"][name].update(enabled=name == "relearning", mandatory=False)
    raw["attacks"]["relearning"]["params"]["settings"] = ["full:1:1e-3"]
    raw["retries"] = 0
    subject = world.subjects[0]
    corpus = ["The harbour froze over in the winter of that year.\n", f"{subject.name} was here.\n"]
    with torch_threads(1):
        report = run_verification(model_dir=world.untrained_dir, base_model_dir=None, subjects=world.subjects,
                                  retain=world.retain, holdout_texts=world.holdout_texts,
                                  general_texts=world.general_texts, policy=VerificationPolicy.from_dict(raw),
                                  controls=world.controls, other_texts=corpus)
    params = report.attacks["relearning"].after.params
    assert params["fine_tune_corpus_texts"] == 1
    without = len({t for p in world.retain for t in p.forget_texts} | set(world.general_texts))
    assert params["fine_tune_texts"] == report.threat_model["relearning_texts"] > 1
    assert report.threat_model["relearning_corpus_texts"] == 1 and params["fine_tune_texts"] <= without + 1
