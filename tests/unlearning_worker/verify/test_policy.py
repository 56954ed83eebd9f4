"""Policy files: the default loads, every kind of mistake is rejected with a ValueError naming the key."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from unlearning_worker.verify import ATTACKS, VerificationPolicy
from unlearning_worker.verify.policy import DEFAULT_POLICY_PATH


def default_raw() -> dict[str, Any]:
    return json.loads(DEFAULT_POLICY_PATH.read_text())


def test_default_policy_covers_every_registered_attack_with_the_issue_defaults() -> None:
    policy = VerificationPolicy.load(None)
    assert set(policy.attacks) == set(ATTACKS)
    assert set(default_raw()["attacks"]) == set(ATTACKS)  # the shipped file spells every attack out
    assert policy.attacks["sampling"].params["budget"] == 20
    assert policy.attacks["exposure"].params["candidates"] == 999  # + the true value = 1,000
    assert all(policy.attacks[name].mandatory for name in ("direct_probe", "sampling", "exposure"))
    assert len(policy.sha256) == 64


def test_policy_round_trips_and_hash_tracks_content() -> None:
    policy = VerificationPolicy.load(None)
    again = VerificationPolicy.from_dict(policy.to_dict())
    assert again == policy and again.sha256 == policy.sha256
    raw = policy.to_dict()
    raw["leak_share"] = 0.6
    assert VerificationPolicy.from_dict(raw).sha256 != policy.sha256


def test_omitted_attacks_and_params_take_registry_defaults() -> None:
    raw = {"schema": "erasure-verification-policy/1", "name": "minimal", "attribute_labels": {"phone": "phone"}}
    policy = VerificationPolicy.from_dict(raw)
    assert policy.attacks["sampling"].params["budget"] == 20
    assert [t.metric for t in policy.attacks["direct_probe"].thresholds] == ["leak_rate"]


def _mutate(path: list[str], value: Any) -> dict[str, Any]:
    raw = copy.deepcopy(default_raw())
    node = raw
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return raw


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["schema"], "other/2", "schema"),
        (["leak_share"], 0.0, "leak_share"),
        (["leak_share"], "half", "leak_share"),
        (["chance_quantile"], 1.0, "chance_quantile"),
        (["retries"], 9, "retries"),
        (["retries"], True, "retries"),
        (["attributes"], ["phone", "shoe_size"], "no label"),
        (["surprise"], 1, "unknown keys"),
        (["attacks", "telepathy"], {}, "unknown attacks"),
        (["attacks", "sampling", "params", "budget"], 0, "budget"),
        (["attacks", "sampling", "params", "budget"], 2.5, "must be an integer"),
        (["attacks", "sampling", "params", "top_p"], 1.5, "top_p"),
        (["attacks", "sampling", "params", "temprature"], 1.0, "unknown keys"),
        (["attacks", "direct_probe", "params", "templates"], ["What about {name}?"], "{label}"),
        (["attacks", "direct_probe", "params", "templates"], ["{name} {label} {secret}"], "placeholder"),
        (["attacks", "paraphrase_jailbreak", "params", "families"], ["rephrase", "hypnosis"], "families"),
        (["attacks", "exposure", "thresholds"], {"leak_rat": {"max": 0.1}}, "unknown metric"),
        (["attacks", "exposure", "thresholds"], {"leak_rate": {"below": 0.1}}, "'min' and/or 'max'"),
        (["attacks", "exposure", "thresholds"], {"leak_rate": {"min": 0.5, "max": 0.1}}, "min is above max"),
        (["attacks", "exposure", "mandatory"], "yes", "true or false"),
        (["attacks", "direct_probe", "enabled"], False, "mandatory attack cannot be disabled"),
        (["attacks", "membership_inference", "params", "k_percent"], 0.0, "k_percent"),
        (["verdict_level"], 0.0, "verdict_level"),
        (["verdict_level"], 0.6, "verdict_level"),
        (["verdict_level"], "5%", "verdict_level"),
        (["attacks", "relearning", "level_share"], 0.0, "level_share"),
        (["attacks", "relearning", "level_share"], -1.0, "level_share"),
        (["attacks", "relearning", "level_share"], True, "level_share"),
        (["attacks", "utility", "level_share"], 2.0, "not judged against chance"),
        (["attacks", "relearning", "level_share"], None, "level_share"),
        (["verdict_level"], 1e-300, "verdict_level"),
        (["attacks", "sampling", "level_share"], 1e-7, "sampling.level_share"),
        (["control_people"], 4, "control_people must be between 5"),
        (["control_people"], 1001, "control_people must be between 5"),
        (["control_people"], 20.0, "control_people: must be an integer"),
        (["control_people"], True, "control_people: must be an integer"),
    ],
)
def test_invalid_policies_are_rejected_with_a_clear_message(path: list[str], value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        VerificationPolicy.from_dict(_mutate(path, value))
    assert message in str(info.value)


def test_unreadable_and_malformed_files_are_rejected(tmp_path: Path) -> None:
    bad = tmp_path / "policy.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        VerificationPolicy.load(bad)
    with pytest.raises(ValueError, match="cannot be read"):
        VerificationPolicy.load(tmp_path / "missing.json")
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        VerificationPolicy.load(bad)


def test_an_organisation_file_replaces_the_default(tmp_path: Path) -> None:
    raw = default_raw()
    raw["name"] = "acme-strict"
    raw["attacks"]["sampling"]["params"]["budget"] = 50
    raw["attacks"]["logit_lens"]["mandatory"] = True
    path = tmp_path / "acme.json"
    path.write_text(json.dumps(raw))
    policy = VerificationPolicy.load(path)
    assert policy.name == "acme-strict"
    assert policy.attacks["sampling"].params["budget"] == 50
    assert policy.attacks["logit_lens"].mandatory


def test_with_labels_adds_a_corpus_question_words() -> None:
    policy = VerificationPolicy.load(None).with_labels({"phone": "mobile number"})
    assert policy.attribute_labels["phone"] == "mobile number"
    assert policy.attribute_labels["ssn"] == VerificationPolicy.load(None).attribute_labels["ssn"]


def test_questions_are_the_enabled_attacks_templates_each_once() -> None:
    raw = default_raw()
    questions = VerificationPolicy.from_dict(raw).questions()
    assert questions == tuple(raw["attacks"]["direct_probe"]["params"]["templates"])  # the others repeat the first
    raw["attacks"]["direct_probe"]["enabled"] = False
    raw["attacks"]["direct_probe"]["mandatory"] = False
    raw["attacks"]["sampling"]["params"]["template"] = "Tell me {name}'s {label}:"
    others = VerificationPolicy.from_dict(raw).questions()  # the disabled attack's templates are gone
    assert sorted(others) == sorted(["Tell me {name}'s {label}:", "Question: What is {name}'s {label}?\nAnswer:"])


def test_the_retain_question_is_the_utility_checks_own_and_none_where_it_is_disabled() -> None:
    raw = default_raw()
    assert VerificationPolicy.from_dict(raw).retain_question() == raw["attacks"]["utility"]["params"]["template"]
    raw["attacks"]["utility"]["enabled"] = False
    assert VerificationPolicy.from_dict(raw).retain_question() == ""


def test_a_policy_written_before_the_lens_used_its_controls_still_loads() -> None:
    raw = default_raw()
    raw["attacks"]["logit_lens"]["params"]["z"] = 1.96  # the lens's old noise band, now unused
    assert VerificationPolicy.from_dict(raw).attacks["logit_lens"].params["z"] == 1.96


def test_the_verdict_level_is_split_over_the_judged_attacks_their_shares_and_their_retries() -> None:
    policy = VerificationPolicy.load(None)
    assert policy.verdict_level == 0.05
    judged = policy.judged()
    assert "utility" not in judged and {"relearning", "candidate_rank", "membership_inference"} <= set(judged)
    # every look at every judged attack together: the verdict's level (Bonferroni), no more
    spent = sum(policy.looks(name) * (1.0 - policy.attack_quantile(name)) for name in judged)
    assert spent == pytest.approx(0.05)
    # relearning has three shares and two looks (it is retried at twice the steps), sampling one and two
    assert policy.looks("relearning") == 2 and policy.looks("exposure") == 1
    assert (1 - policy.attack_quantile("relearning")) == pytest.approx(3 * (1 - policy.attack_quantile("sampling")))
    assert policy.attack_quantile("utility") == policy.chance_quantile  # judged against the base version
    # a disabled attack's share goes to the others
    raw = default_raw()
    raw["attacks"]["logit_lens"]["enabled"] = False
    fewer = VerificationPolicy.from_dict(raw)
    assert "logit_lens" not in fewer.judged()
    assert sum(fewer.looks(n) * (1 - fewer.attack_quantile(n)) for n in fewer.judged()) == pytest.approx(0.05)
    assert fewer.attack_quantile("relearning") < policy.attack_quantile("relearning")


def test_a_policy_without_a_verdict_level_judges_each_attack_at_its_own_level_and_keeps_its_hash() -> None:
    raw = default_raw()
    del raw["verdict_level"]
    for attack in raw["attacks"].values():
        attack.pop("level_share", None)
    old = VerificationPolicy.from_dict(raw)
    assert old.verdict_level is None
    assert all(old.attack_quantile(name) == old.chance_quantile for name in old.attacks)
    # written as before these fields existed, so a stored report's policy hash still matches
    assert "verdict_level" not in old.to_dict()
    assert all("level_share" not in a for a in old.to_dict()["attacks"].values())
    assert VerificationPolicy.from_dict(old.to_dict()).sha256 == old.sha256
    new = VerificationPolicy.load(None)
    assert new.to_dict()["verdict_level"] == 0.05 and new.to_dict()["attacks"]["relearning"]["level_share"] == 3.0
    assert VerificationPolicy.from_dict(new.to_dict()).sha256 == new.sha256 != old.sha256


def test_a_policy_file_written_before_verdict_level_keeps_the_hash_its_reports_carry() -> None:
    # the shipped default as of d16c41e, hashed by that code: bbd22214...
    old = VerificationPolicy.load(Path(__file__).with_name("data") / "policy-before-verdict-level.json")
    assert old.sha256 == "bbd2221494828e405ecaf361ac1b4268a0a67bd69732f8625dd54c25b5d7f4bd"
    assert old.verdict_level is None and old.attack_quantile("relearning") == 0.95


def test_control_people_is_the_policy_s_and_an_older_file_keeps_ten_and_its_hash() -> None:
    policy = VerificationPolicy.load(None)
    assert policy.control_people == 20  # the shipped default
    assert VerificationPolicy.from_dict(policy.to_dict()) == policy
    raw = default_raw()
    del raw["control_people"]
    older = VerificationPolicy.from_dict(raw)
    assert older.control_people == 10  # the count before it was the policy's
    assert "control_people" not in older.to_dict()  # written as before, so its stored hash still matches
    assert older.sha256 != policy.sha256
    # the file written before verdict_level reads ten too, and keeps its hash (above)
    assert VerificationPolicy.load(Path(__file__).with_name("data") / "policy-before-verdict-level.json").control_people == 10
