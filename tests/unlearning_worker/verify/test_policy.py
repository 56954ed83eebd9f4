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


def test_a_policy_written_before_the_lens_used_its_controls_still_loads() -> None:
    raw = default_raw()
    raw["attacks"]["logit_lens"]["params"]["z"] = 1.96  # the lens's old noise band, now unused
    assert VerificationPolicy.from_dict(raw).attacks["logit_lens"].params["z"] == 1.96
