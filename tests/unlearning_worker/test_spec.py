"""UnlearningSpec validation, round trip and hashing."""

from __future__ import annotations

import json

import pytest

from unlearning_worker.spec import METHODS, UnlearningSpec


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"method": "fine_tune"}, "method must be one of"),
        ({"lr": 0.0}, "lr must be"),
        ({"lr": float("nan")}, "lr must be"),
        ({"max_steps": 0}, "max_steps must be >= 1"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"forget_coverage": 0.0}, "forget_coverage"),
        ({"gap_plateau": -0.01}, "gap_plateau"),
        ({"plateau_checks": 0}, "plateau_checks"),
        ({"forget_coverage": 1.5}, "forget_coverage"),
        ({"forget_coverage": float("nan")}, "forget_coverage"),
        ({"eval_every": 0}, "eval_every must be >= 1"),
        ({"forget_target": 1.0}, "forget_target"),
        ({"utility_floor": 1.5}, "utility_floor"),
        ({"utility_target": 1.5}, "utility_target"),
        ({"utility_target": -0.1}, "utility_target"),
        ({"utility_target": float("nan")}, "utility_target"),
        ({"ppl_ceiling": 0.9}, "ppl_ceiling"),
        ({"leak_threshold": 0.0}, "leak_threshold"),
        ({"min_steps": 500, "max_steps": 10}, "min_steps"),
        ({"device": "tpu"}, "device"),
        ({"dtype": "int8"}, "dtype"),
        ({"checkpoint_every": -1}, "checkpoint_every"),
        ({"retain_weight": -1.0}, "retain_weight"),
        ({"lora_dropout": 1.0}, "lora_dropout"),
        ({"rmu_layer": -2}, "rmu_layer"),
        ({"idk_text": "  "}, "idk_text"),
    ],
)
def test_invalid_values_raise_value_error(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        UnlearningSpec(**changes)


def test_from_dict_rejects_unknown_fields() -> None:
    with pytest.raises(ValueError, match="unknown spec field"):
        UnlearningSpec.from_dict({"method": "npo", "learning_rate": 1e-4})


@pytest.mark.parametrize(
    ("field", "value"), [("max_steps", "10"), ("max_steps", 2.5), ("span_only", 1), ("lr", "0.1"), ("max_steps", True)]
)
def test_from_dict_rejects_wrong_types(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        UnlearningSpec.from_dict({field: value})


def test_round_trip_and_hash_stability() -> None:
    spec = UnlearningSpec(method="npo", lr=1e-4, lora=True, lora_target_modules=("c_attn",), extra={"job": 7})
    again = UnlearningSpec.from_dict(spec.to_dict())
    assert again == spec
    assert again.spec_hash() == spec.spec_hash()
    assert len(spec.spec_hash()) == 64
    assert isinstance(UnlearningSpec.from_dict({"retain_weight": 2}).retain_weight, float)


def test_hash_changes_with_any_field() -> None:
    base = UnlearningSpec()
    assert base.replace(seed=1).spec_hash() != base.spec_hash()
    assert base.replace(method="ga").spec_hash() != base.spec_hash()


def test_every_method_is_registered() -> None:
    from unlearning_worker.methods import REGISTRY

    assert set(REGISTRY) == set(METHODS)


@pytest.mark.parametrize(
    "bad",
    [{"attributes": "phone"}, {"attributes": [""]}, {"retain_focus": 1.5}, {"saliency": 0.0}, {"target_checks": 0},
     {"utility_patience": -1}, {"floor_weight": -1.0}, {"hidden_weight": -1.0}, {"noise_scale": -0.1},
     {"gap_target": float("nan")}, {"adversary_lr": 0.0}, {"adversary_lr": 1.5}, {"adversary_steps": -1},
     {"adversary_every": -2}, {"adversary_weight": -1.0}, {"rank_candidates": 5}, {"rank_candidates": -1},
     {"rank_prompts": 0}, {"rank_controls": 1}, {"rank_alpha": 0.0}, {"rank_alpha": 1.0},
     {"rank_tolerance": -0.1}, {"rank_tolerance": 1.5}, {"rank_tolerance": float("nan")}, {"rank_batch_size": -1}, {"eval_batch_size": -1},
     {"forget_micro_batch": -1}, {"retain_per_forget": -0.1}, {"retain_per_forget": float("inf")},
     {"rank_focus": -0.5}, {"rank_focus": 11.0}, {"rank_focus": float("inf")}, {"adversary_modes": []},
     {"adversary_modes": ["full", "full"]}, {"adversary_modes": ["qlora"]}, {"adversary_modes": "full"},
     {"adversary_modes": [1]}],
)
def test_new_fields_reject_bad_values(bad: dict) -> None:
    with pytest.raises(ValueError):
        UnlearningSpec.from_dict(bad)


def test_the_rank_check_can_be_switched_off_whatever_its_other_settings() -> None:
    assert UnlearningSpec(rank_candidates=0, rank_prompts=0, rank_controls=0).rank_candidates == 0


def test_attributes_round_trip_through_json() -> None:
    spec = UnlearningSpec(attributes=("phone", "email"), adversary_modes=("lora", "full"))
    assert UnlearningSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_attributes_have_one_spelling_and_one_hash() -> None:
    a = UnlearningSpec(attributes=("phone", "email", "phone"))
    b = UnlearningSpec(attributes=("email", "phone"))
    assert a.attributes == ("email", "phone") and a.spec_hash() == b.spec_hash()


@pytest.mark.parametrize("bad", [{"relabel_weight": float("nan")}, {"floor_weight": float("inf")},
                                 {"method": "floor", "floor_weight": 0.0, "unlikelihood_weight": 0.0},
                                 {"method": "relabel", "relabel_weight": 0.0, "unlikelihood_weight": 0.0}])
def test_non_finite_or_all_zero_forget_weights_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        UnlearningSpec(**bad)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"question_templates": ["What is the phone number?"]}, "question_templates"),  # no {name}
        ({"question_templates": ["{name}'s {label} {other}"]}, "placeholder"),
        ({"question_templates": "{name}'s {label}"}, "question_templates must be a list"),
        ({"question_labels": {"phone": " "}}, "question_labels"),
        ({"question_labels": ["phone"]}, "question_labels"),
        ({"question_templates": ["Q: {name}'s {label}?"]}, "need question_labels"),  # would ask nothing
        ({"retain_question": "Q: {name}'s phone?"}, "retain_question must be a template"),  # no {label}
        ({"retain_question": "{name}'s {label} {x}", "question_labels": {"phone": "phone"}}, "placeholder"),
        ({"retain_question": ["{name}'s {label}"]}, "retain_question"),
        ({"retain_question": "Q: {name}'s {label}?"}, "need question_labels"),
    ],
)
def test_bad_questions_are_refused(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        UnlearningSpec.from_dict({"method": "counterfactual", **changes})


def test_questions_round_trip_and_count_in_the_hash() -> None:
    spec = UnlearningSpec.from_dict({"question_templates": ["Q: {name}'s {label}?\nA:"],
                                     "question_labels": {"phone": "phone number"}})
    assert spec.question_templates == ("Q: {name}'s {label}?\nA:",)
    assert UnlearningSpec.from_dict(spec.to_dict()) == spec
    assert spec.spec_hash() != UnlearningSpec().spec_hash()
