"""The spec the worker hands the engine: the job's, with the device resolved and the judging policy's questions."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from tests.integration.conftest import POLICY
from unlearning_worker.execution import _engine_spec
from unlearning_worker.spec import UnlearningSpec
from unlearning_worker.verify import VerificationPolicy


def test_the_engine_asks_the_questions_of_the_policy_that_will_judge_the_job(settings: Any) -> None:
    settings.VERIFICATION_POLICY_FILE = str(POLICY)
    policy = VerificationPolicy.load(POLICY)
    job = SimpleNamespace(spec=UnlearningSpec(device="auto").to_dict())
    spec = _engine_spec(job, "cpu")  # type: ignore[arg-type]
    assert spec.device == "cpu"
    assert spec.question_templates == policy.questions() and spec.question_templates
    assert spec.question_labels == dict(policy.attribute_labels)
    # its utility floor reads retain facts with the question the policy's utility check asks: none in
    # this policy (its utility check is off), the trained question in the default one
    assert spec.retain_question == "" and not policy.attacks["utility"].enabled
    settings.VERIFICATION_POLICY_FILE = ""
    default = VerificationPolicy.load(None)
    assert _engine_spec(job, "cpu").retain_question == default.attacks["utility"].params["template"]  # type: ignore[arg-type]
    # a spec that names its own questions keeps them
    own = UnlearningSpec(question_templates=("Q: {name}'s {label}?\nA:",), question_labels={"phone": "phone"})
    assert _engine_spec(SimpleNamespace(spec=own.to_dict()), "cpu").question_templates == own.question_templates  # type: ignore[arg-type]


def test_the_in_loop_attacker_gets_the_verifiers_corpus_sample_only_where_the_run_has_one(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from compliance.jobs import inputs
    from unlearning_worker import execution

    calls: list[tuple[Any, list[Any], int]] = []
    monkeypatch.setattr(inputs, "corpus_texts", lambda job, subjects, limit: calls.append((job, subjects, limit)) or ["a", "b"])
    job, subjects = SimpleNamespace(id="j"), [SimpleNamespace(subject_key="s")]
    settings.VERIFICATION_CORPUS_TEXTS, settings.UNLEARNING_PROCESSES = 123, 1
    assert execution._attacker_texts(job, subjects, UnlearningSpec(adversary_every=5)) == ["a", "b"]  # type: ignore[arg-type]
    assert calls == [(job, subjects, 123)]  # the verifier's sample: the same function, job and cap
    # no in-loop attacker, or a run sharded over processes (which runs none): the corpus is not read
    assert execution._attacker_texts(job, subjects, UnlearningSpec(adversary_every=0)) == []  # type: ignore[arg-type]
    settings.UNLEARNING_PROCESSES = 2
    assert execution._attacker_texts(job, subjects, UnlearningSpec(adversary_every=5)) == []  # type: ignore[arg-type]
    assert len(calls) == 1


def test_the_retain_term_gets_a_corpus_sample_without_open_requests(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from compliance.jobs import inputs
    from unlearning_worker import execution

    calls: list[tuple[int, bool]] = []

    def sample(job: Any, subjects: Any, limit: int, *, leave_out_open: bool = False) -> list[str]:
        calls.append((limit, leave_out_open))
        return ["One record of somebody else entirely.", "Too short."]

    monkeypatch.setattr(inputs, "corpus_texts", sample)
    job = SimpleNamespace(id="j")
    settings.UNLEARNING_RETAIN_CORPUS_TEXTS = 50
    items = execution._retain_texts(job, [])  # type: ignore[arg-type]
    assert calls == [(50, True)]  # nobody with an open request is kept in place
    assert [i.prompt + i.completion for i in items] == ["One record of somebody else entirely."]
    settings.UNLEARNING_RETAIN_CORPUS_TEXTS = 0
    assert execution._retain_texts(job, []) == [] and len(calls) == 1  # type: ignore[arg-type]
