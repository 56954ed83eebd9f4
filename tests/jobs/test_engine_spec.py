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


MARKED = "Ann Veld's social security number is 204-65-6122 and her e-mail is ann.veld@example.org."


@pytest.fixture()
def sampled(settings: Any, monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, Any, int, int]]:
    """inputs.corpus_samples replaced by a recorder: the calls (job, subjects, attackers cap, retain cap)."""
    from compliance.jobs import inputs

    calls: list[tuple[Any, Any, int, int]] = []

    def samples(job: Any, subjects: Any, *, attackers: int, retain: int) -> Any:
        calls.append((job, subjects, attackers, retain))
        return inputs.CorpusSamples(["a", "b"][: attackers], [
            "One record of somebody else entirely.", "Too short.", MARKED][: retain])

    monkeypatch.setattr(inputs, "corpus_samples", samples)
    settings.VERIFICATION_CORPUS_TEXTS, settings.UNLEARNING_PROCESSES, settings.UNLEARNING_RETAIN_CORPUS_TEXTS = 123, 1, 50
    return calls


def test_the_in_loop_attacker_gets_the_verifiers_corpus_sample_only_where_the_run_has_one(
    settings: Any, sampled: list[tuple[Any, Any, int, int]]
) -> None:
    from unlearning_worker import execution

    job, subjects = SimpleNamespace(id="j"), [SimpleNamespace(subject_key="s")]
    _retain, texts = execution._corpus_inputs(job, subjects, UnlearningSpec(adversary_every=5))  # type: ignore[arg-type]
    assert texts == ["a", "b"]
    # the verifier's sample (the same function, job and cap) and the retain sample, in one read
    assert sampled == [(job, subjects, 123, 50)]
    # no in-loop attacker, or a run sharded over processes (which runs none): no attacker sample is drawn
    assert execution._corpus_inputs(job, subjects, UnlearningSpec(adversary_every=0))[1] == []  # type: ignore[arg-type]
    settings.UNLEARNING_PROCESSES = 2
    assert execution._corpus_inputs(job, subjects, UnlearningSpec(adversary_every=5))[1] == []  # type: ignore[arg-type]
    assert [c[2] for c in sampled] == [123, 0, 0]


def test_the_retain_term_gets_a_marked_corpus_sample_without_open_requests(
    settings: Any, sampled: list[tuple[Any, Any, int, int]]
) -> None:
    from unlearning_worker import execution

    job, spec = SimpleNamespace(id="j"), UnlearningSpec(adversary_every=0)
    items, _texts = execution._corpus_inputs(job, [], spec)  # type: ignore[arg-type]
    assert [c[3] for c in sampled] == [50]  # the retain sample (corpus_samples leaves out open requests)
    assert [i.prompt + i.completion for i in items] == ["One record of somebody else entirely.", MARKED]
    # the project's analyzer marks the values of a text that holds some, and the text is cut before the
    # first one, as a located record is: it joins the retain focus when those attributes are forgotten
    plain, values = items
    assert plain.pii_spans == []
    assert values.prompt == "Ann Veld's social security number is"
    assert [(values.completion[s:e], a) for s, e, a in values.pii_spans] == [
        ("204-65-6122", "ssn"), ("ann.veld@example.org", "email")]
    settings.UNLEARNING_RETAIN_CORPUS_TEXTS = 0
    assert execution._corpus_inputs(job, [], spec) == ([], [])  # type: ignore[arg-type]
    assert [c[3] for c in sampled] == [50, 0]


def test_the_run_reads_the_lines_first_version_while_it_is_kept_and_trusted(
    settings: Any, tmp_path: Any
) -> None:
    """execution._line_reference: the version the base's chain of parents starts from (the run's utility
    reference, engine.run_unlearning), None where the base is that version, its files are gone, or they
    cannot be trusted (a tampered version, a path outside the artifact root): the job runs on its base."""
    import shutil

    from compliance.registry import artifacts
    from unlearning_worker.execution import _line_reference

    settings.ARTIFACT_ROOT = str(tmp_path)
    first_dir = tmp_path / "models" / "v1"
    first_dir.mkdir(parents=True)
    (first_dir / "config.json").write_text("{}")
    (first_dir / "model.safetensors").write_bytes(b"weights")
    v1 = SimpleNamespace(id=1, number=1, parent=None, path=str(first_dir), sha256=artifacts.tree_sha256(first_dir))
    v2 = SimpleNamespace(id=2, number=2, parent=v1, path=str(tmp_path / "models" / "v2"), sha256="")
    v3 = SimpleNamespace(id=3, number=3, parent=v2, path=str(tmp_path / "models" / "v3"), sha256="")
    job = SimpleNamespace(id="j", base_version=v3, base_version_id=3)
    assert _line_reference(job) == first_dir.resolve()  # type: ignore[arg-type]
    assert _line_reference(SimpleNamespace(id="j", base_version=v1, base_version_id=1)) is None  # type: ignore[arg-type]
    (first_dir / "model.safetensors").write_bytes(b"changed")  # tampered: not trusted, the job runs on its base
    assert _line_reference(job) is None  # type: ignore[arg-type]
    outside = SimpleNamespace(id=0, number=1, parent=None, path="/elsewhere", sha256="")
    later = SimpleNamespace(id=5, number=5, parent=outside, path="", sha256="")
    assert _line_reference(SimpleNamespace(id="j", base_version=later, base_version_id=5)) is None  # type: ignore[arg-type]
    shutil.rmtree(first_dir)  # a quarantined version past its date: its files are gone
    assert _line_reference(job) is None  # type: ignore[arg-type]
