"""certificate_issue: preconditions, all-or-nothing, idempotence, and what the certificate holds."""

# Fixtures are imported from tests.certificates.test_issue_helpers and named as test arguments.
# ruff: noqa: F811

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core import mail
from django.core.management import call_command
from django.test import TestCase

from compliance.audit import signing
from compliance.audit.models import AuditCheckpoint, AuditLeaf
from compliance.audit.services import leaf_document
from compliance.audit.verify import audit_verify
from compliance.certificates import services
from compliance.certificates.models import Certificate
from compliance.erasure.models import Status
from compliance.erasure.services import PermissionDenied
from compliance.jobs.models import VerificationReport
from compliance.registry.models import ModelVersion
from proofs.envelope import SCHEMA_V5
from proofs.offline import verify_certificate
from tests.certificates.factory import THREAT_MODEL_NOT_RECORDED, issue
from tests.certificates.test_issue_helpers import (  # noqa: F401 - fixtures
    ADA,
    BORIS,
    isolated_files,
    officer,
    outsider,
    reviewer,
    verifying_request,
)

pytestmark = pytest.mark.django_db


def _payload(certificate: Certificate) -> dict[str, Any]:
    return json.loads(bytes(certificate.payload))


def test_issue_completes_request_and_signs_verifiable_certificate(officer: Any) -> None:
    request = verifying_request(ADA, officer)
    with TestCase.captureOnCommitCallbacks(execute=True):
        certificate = services.certificate_issue(request=request, officer=officer)
    request.refresh_from_db()
    assert request.status == Status.COMPLETED
    assert request.completed_at is not None

    result = verify_certificate(bytes(certificate.envelope), signing.keyring())
    assert result.ok, result.reason
    payload = _payload(certificate)
    assert payload["request"] == {
        "reference": request.reference,
        "request_id": str(request.id),
        "subject_ref": request.subject_ref,
        "ground": "17(1)(a)",
        "decision": "approved",
        "legal_code": None,
    }
    assert payload["certificate_id"] == str(certificate.certificate_id)
    # Every leaf the log holds about this request up to the checkpoint is in the certificate.
    in_log = set(AuditLeaf.objects.filter(request_id=request.id, seq__lt=certificate.checkpoint_size).values_list("seq", flat=True))
    assert {leaf["index"] for leaf in payload["audit"]["leaves"]} == in_log
    types = {json.loads(base64.b64decode(leaf["leaf_b64"]))["type"] for leaf in payload["audit"]["leaves"]}
    assert {"request.received", "request.verified", "request.approved", "guard.rules_created", "request.completed"} <= types
    assert all(payload["timeline"][key] for key in ("received", "verified", "approved", "completed"))
    # Model and corpus versions before/after, method and spec hash, verification rows.
    model = payload["models"][0]
    assert model["before"]["sha256"] != model["after"]["sha256"]
    assert ModelVersion.objects.get(sha256=model["after"]["sha256"]).number == 2
    assert payload["corpora"][0]["records_removed"] == 1
    assert payload["unlearning"]["method"] == "gradient_difference"
    assert payload["verification"]["verdict"] == "pass"
    rows = {row["attack"].split(" ")[0]: row for row in payload["verification"]["summary"]}
    assert rows["direct_probe.leak_rate"] == {
        "attack": "direct_probe.leak_rate (leak_rate <= 0.0)", "before": "0.75", "after": "0.0", "threshold": "0.0", "passed": True,
    }  # fmt: skip
    # v2: checks without a base-model value are listed with before null, not left out.
    assert rows["utility.retain_ratio"]["before"] is None and rows["utility.retain_ratio"]["after"] == "0.97"
    assert rows["relearning.rank1_share"] == {
        "attack": "relearning.rank1_share (rank1_share <= 0.05)", "before": None, "after": "0.0", "threshold": "0.05",
        "passed": True,
    }  # fmt: skip
    # The threat model the report recorded, in the certificate's shape (sampling did not run: null).
    assert payload["schema"] == SCHEMA_V5
    assert payload["unlearning"]["exact"] is None  # an approximate job
    assert payload["verification"]["threat_model"] == {
        "families": ["direct_probe", "membership_inference", "relearning", "utility"],
        "retries": 1, "sampling_budget": None, "rank_candidates": None,
        "relearning_settings": ["full:50:1e-3", "lora:100:1e-3"], "quantization_levels": [],
        "relearning_data": {"texts": 420, "corpus_texts": 300},
        "control": {"people": 10, "source": "generated"},
        "never_seen_comparison": [
            {
                "attack": "relearning", "mean_z": "-0.21", "control_mean_z": "0.05", "mean_z_band": "1.3",
                "rank1_share": "0.0", "control_rank1_share": "0.0", "top10_share": "0.0", "control_top10_share": "0.033",
            }
        ],
    }  # fmt: skip

    # The stored hashes are the hashes of the stored bytes and of the PDF on disk.
    assert hashlib.sha256(bytes(certificate.envelope)).hexdigest() == certificate.envelope_sha256
    assert hashlib.sha256(certificate.pdf_file.read_bytes()).hexdigest() == certificate.pdf_sha256
    assert certificate.pdf_file.is_relative_to(Path(settings.ARTIFACT_ROOT) / "certificates")

    # The log binds the completion to the verification report and the final file to the certificate.
    completed = leaf_document(AuditLeaf.objects.get(request_id=request.id, event_type="request.completed"))
    assert completed["actor"] == f"user:{officer.pk}"
    assert completed["artefacts"]["verification_report_sha256"] == request.jobs.get().reports.get().report_sha256
    issued = leaf_document(AuditLeaf.objects.get(request_id=request.id, event_type="certificate.issued"))
    assert issued["artefacts"] == {
        "certificate_sha256": certificate.envelope_sha256,
        "payload_sha256": certificate.payload_sha256,
        "pdf_sha256": certificate.pdf_sha256,
    }
    assert audit_verify().ok

    # The subject is told, with the private status link.
    assert len(mail.outbox) == 1 + 1  # confirmation e-mail + completion notice
    notice = mail.outbox[-1]
    assert notice.to == [ADA.email]
    assert request.reference in notice.subject
    assert "https://privacy.example.org/status/" in notice.body


def test_corpora_erased_by_an_earlier_job_of_the_request_are_certified(officer: Any) -> None:
    """A job that erased the corpora and then failed verification leaves nothing for its retry to erase:
    the certificate still lists the corpus version written for this request (it listed none)."""
    from compliance.jobs.models import JobStatus, UnlearningJob
    from compliance.registry.models import CorpusVersion
    from tests.certificates.test_issue_helpers import approve, run_pipeline

    request = approve(ADA, officer)
    pipeline = run_pipeline(request)
    failed = UnlearningJob.objects.create(
        model=pipeline.job.model, base_version=pipeline.base, method="gradient_difference", spec={}, spec_sha256="0" * 64,
        status=JobStatus.FAILED,
    )
    failed.requests.add(request)
    from datetime import timedelta

    UnlearningJob.objects.filter(pk=failed.pk).update(created_at=pipeline.job.created_at - timedelta(hours=1))
    CorpusVersion.objects.filter(pk=pipeline.corpus_after.pk).update(created_by_job=failed)
    # A version another request's job wrote in a corpus this request has no record in is not listed.
    other = CorpusVersion.objects.create(corpus=pipeline.corpus_before.corpus.__class__.objects.create(name="unrelated"),
                                         number=1, path="x", sha256="1" * 64, records=1)
    CorpusVersion.objects.create(corpus=other.corpus, number=2, parent=other, path="y", sha256="2" * 64, records=0,
                                 created_by_job=failed)
    with TestCase.captureOnCommitCallbacks(execute=True):
        certificate = services.certificate_issue(request=request, officer=officer)
    corpora = _payload(certificate)["corpora"]
    assert [(c["corpus"], c["after"]["sha256"]) for c in corpora] == [(pipeline.corpus_after.corpus.name, pipeline.corpus_after.sha256)]
    assert corpora[0]["records_removed"] == 1


def test_the_verdict_sentence_counts_the_checks_the_certificate_lists(officer: Any) -> None:
    """The report's summary counted every check ("all 12 checks") above a table of those with a value."""
    request = verifying_request(ADA, officer)
    report = VerificationReport.objects.get(job__requests=request)
    document = dict(report.report)
    document["verdict"] = dict(document["verdict"], summary="PASS: all 5 checks within the policy's thresholds")
    document["verdict"]["checks"] = [*document["verdict"]["checks"], {
        "attack": "logit_lens", "metric": "leak_rate", "threshold": "leak_rate <= 0.0", "bound": {"max": 0.0},
        "value": None, "status": "not_evaluated", "mandatory": False, "decides_failure": False,
    }]  # fmt: skip
    VerificationReport.objects.filter(pk=report.pk).update(report=document)
    with TestCase.captureOnCommitCallbacks(execute=True):
        certificate = services.certificate_issue(request=request, officer=officer)
    verification = _payload(certificate)["verification"]
    assert len(verification["summary"]) == 4
    assert "4 checks listed" in verification["decided_by"]
    assert "1 not listed" in verification["decided_by"] and "logit_lens.leak_rate (not_evaluated)" in verification["decided_by"]
    assert "5 checks" not in verification["decided_by"]


def test_report_stored_without_threat_model_certifies_that_none_was_recorded(officer: Any) -> None:
    request = verifying_request(ADA, officer)
    report = VerificationReport.objects.get(job__requests=request)
    document = dict(report.report)
    del document["threat_model"]  # a report written before the worker recorded it
    VerificationReport.objects.filter(pk=report.pk).update(report=document)
    certificate = services.certificate_issue(request=request, officer=officer)
    assert verify_certificate(bytes(certificate.envelope), signing.keyring()).ok
    assert _payload(certificate)["verification"]["threat_model"] == THREAT_MODEL_NOT_RECORDED


@pytest.mark.parametrize(
    "stored",
    [
        None,
        "relearning",
        ["families"],
        {
            "families": "relearning", "retries": -1, "sampling_budget": 20.5, "rank_candidates": True,
            "relearning_settings": [1, None, {"mode": "full"}], "quantization_levels": "int8",
            "control": {"people": "10", "source": "elsewhere"}, "never_seen_comparison": [["relearning"]],
        },
        {"control": None, "never_seen_comparison": {"relearning": None, "": {"mean_z": 0.1}}},
    ],
)  # fmt: skip
def test_damaged_threat_model_in_a_report_gives_the_empty_one(stored: Any) -> None:
    report = VerificationReport(verdict="pass", report={"threat_model": stored}, policy={}, decided_by="")
    assert services.verification_part(report)["threat_model"] == THREAT_MODEL_NOT_RECORDED


def test_threat_model_keeps_what_is_sound_in_a_partly_damaged_report() -> None:
    stored = {
        "families": ["relearning", "", 3, "quanti\x00zation\n", "relearning"],
        "retries": 2, "rank_candidates": 999, "quantization_levels": ["int8", 4],
        "control": {"people": 3, "source": "held-out"},
        "never_seen_comparison": {
            "relearning": {"mean_z": float("nan"), "rank1_share": 0.5, "top10_share": "0.2", "extra": 1.0},
            "quantization": "not figures",
        },
    }  # fmt: skip
    report = VerificationReport(verdict="pass", report={"threat_model": stored}, policy={}, decided_by="")
    threat_model = services.verification_part(report)["threat_model"]
    assert threat_model == {
        **THREAT_MODEL_NOT_RECORDED,
        "families": ["quantization", "relearning"], "retries": 2, "rank_candidates": 999,
        "quantization_levels": ["int8"], "control": {"people": 3, "source": "held-out"},
        "never_seen_comparison": [
            {
                "attack": "relearning", "mean_z": None, "control_mean_z": None, "mean_z_band": None,
                "rank1_share": "0.5", "control_rank1_share": None, "top10_share": None, "control_top10_share": None,
            }
        ],
    }  # fmt: skip
    issue(threat_model=threat_model)  # a valid, signable v2 threat model


def test_second_issue_returns_the_existing_certificate(officer: Any) -> None:
    request = verifying_request(ADA, officer)
    first = services.certificate_issue(request=request, officer=officer)
    leaves = AuditLeaf.objects.count()
    checkpoints = AuditCheckpoint.objects.count()
    second = services.certificate_issue(request=request, officer=officer)
    assert second.pk == first.pk
    assert bytes(second.envelope) == bytes(first.envelope)
    assert (AuditLeaf.objects.count(), AuditCheckpoint.objects.count()) == (leaves, checkpoints)
    assert Certificate.objects.count() == 1


def _state(request: Any) -> tuple[Any, ...]:
    request.refresh_from_db()
    return (
        request.status,
        AuditLeaf.objects.count(),
        AuditCheckpoint.objects.count(),
        Certificate.objects.count(),
        sorted(p.name for p in Path(settings.ARTIFACT_ROOT).rglob("*.pdf")),
    )


def test_failing_verdict_refuses_and_changes_nothing(officer: Any) -> None:
    request = verifying_request(ADA, officer, verdict="fail")
    before = _state(request)
    with pytest.raises(services.CertificateNotReady, match="passing verdict"):
        services.certificate_issue(request=request, officer=officer)
    assert _state(request) == before
    assert before[0] == Status.VERIFYING


def test_missing_report_refuses(officer: Any) -> None:
    request = verifying_request(ADA, officer, verdict=None)
    before = _state(request)
    with pytest.raises(services.CertificateNotReady, match="no verification report"):
        services.certificate_issue(request=request, officer=officer)
    assert _state(request) == before


def test_request_not_verifying_refuses(officer: Any) -> None:
    from tests.certificates.test_issue_helpers import approve

    request = approve(ADA, officer)
    before = _state(request)
    with pytest.raises(services.CertificateNotReady, match="approved"):
        services.certificate_issue(request=request, officer=officer)
    assert _state(request) == before


@pytest.mark.parametrize("persona", ["reviewer", "outsider"])
def test_only_officers_can_issue(persona: str, officer: Any, request: Any) -> None:
    erasure_request = verifying_request(ADA, officer)
    user = request.getfixturevalue(persona)
    before = _state(erasure_request)
    with pytest.raises(PermissionDenied):
        services.certificate_issue(request=erasure_request, officer=user)
    assert _state(erasure_request) == before


def test_failure_after_rendering_rolls_back_the_certificate_and_the_next_sign_off_resumes(officer: Any, monkeypatch: Any) -> None:
    """The last write (the audit event) fails: the completion and its checkpoint stay (a witness may
    have seen that checkpoint), but no certificate row, file or notice; signing off again issues the
    certificate whose id the completion leaf committed to."""
    request = verifying_request(ADA, officer)
    pdfs_before = _state(request)[4]
    real_append = services.audit_services.audit_append

    def failing_append(**kwargs: Any) -> Any:
        if kwargs.get("event_type") == "certificate.issued":
            raise RuntimeError("disk full")
        return real_append(**kwargs)

    monkeypatch.setattr(services.audit_services, "audit_append", failing_append)
    with TestCase.captureOnCommitCallbacks(execute=True), pytest.raises(RuntimeError, match="disk full"):
        services.certificate_issue(request=request, officer=officer)
    status, _leaves, checkpoints, certificates, pdfs = _state(request)
    assert (status, certificates, pdfs) == (Status.COMPLETED, 0, pdfs_before) and checkpoints >= 1
    assert len(mail.outbox) == 1  # only the confirmation e-mail; no completion notice
    committed = services._completion_leaf(request)
    assert committed is not None

    monkeypatch.setattr(services.audit_services, "audit_append", real_append)
    with TestCase.captureOnCommitCallbacks(execute=True):
        certificate = services.certificate_issue(request=request, officer=officer)
    assert str(certificate.certificate_id) == committed["details"]["certificate_id"]
    assert _payload(certificate)["timeline"]["completed"] == committed["time"]
    assert len(mail.outbox) == 2


def test_a_completed_request_whose_facts_changed_is_not_certified(officer: Any, monkeypatch: Any) -> None:
    """Resuming recomputes what the certificate states; it must hash to what the completion leaf
    committed to, or nothing is issued."""
    request = verifying_request(ADA, officer)
    monkeypatch.setattr(services, "_witnessed_checkpoint", lambda request: (_ for _ in ()).throw(
        services.CertificateAwaitingWitness("no witness")))
    with pytest.raises(services.CertificateAwaitingWitness):
        services.certificate_issue(request=request, officer=officer)
    monkeypatch.undo()
    ModelVersion.objects.filter(number=2).update(sha256="f" * 64)
    with pytest.raises(services.CertificateBuildError, match="changed since its completion"):
        services.certificate_issue(request=request, officer=officer)
    assert Certificate.objects.count() == 0


def test_version_without_sha256_is_refused_before_anything_is_written(officer: Any) -> None:
    request = verifying_request(ADA, officer)
    ModelVersion.objects.filter(number=2).update(sha256="")
    before = _state(request)
    with pytest.raises(services.CertificateBuildError, match="SHA-256"):
        services.certificate_issue(request=request, officer=officer)
    assert _state(request) == before


def test_certificate_holds_only_this_request_and_no_plaintext_identifier(officer: Any) -> None:
    other = verifying_request(BORIS, officer, ip="192.0.2.11")
    request = verifying_request(ADA, officer)
    certificate = services.certificate_issue(request=request, officer=officer)
    services.certificate_issue(request=other, officer=officer)
    payload = _payload(certificate)
    for leaf in payload["audit"]["leaves"]:
        assert json.loads(base64.b64decode(leaf["leaf_b64"]))["request_id"] == str(request.id)
    texts = [bytes(certificate.envelope).decode(), bytes(certificate.payload).decode()]
    texts += [base64.b64decode(leaf["leaf_b64"]).decode() for leaf in payload["audit"]["leaves"]]
    from pypdf import PdfReader

    texts += [page.extract_text() for page in PdfReader(certificate.pdf_file).pages]
    blob = "\n".join(texts).lower()
    assert request.reference.lower() in blob and "certificate of erasure" in blob  # the scan reads real text
    digits = "".join(ch for ch in blob if ch.isdigit())
    for subject in (ADA, BORIS):
        for value in (subject.full_name, subject.email, subject.other, *subject.full_name.split()):
            # word boundaries: a short first name ("ada") can occur inside a hex hash by chance
            assert not re.search(rf"(?<![0-9a-z]){re.escape(value.lower())}(?![0-9a-z])", blob)
        assert "".join(ch for ch in subject.phone if ch.isdigit())[-9:] not in digits


def test_export_command_writes_json_pdf_and_keyring(officer: Any, tmp_path: Path) -> None:
    from io import StringIO

    request = verifying_request(ADA, officer)
    certificate = services.certificate_issue(request=request, officer=officer)
    out = StringIO()
    call_command("certificate_export", request.reference, "--out", str(tmp_path / "export"), "--keyring", stdout=out)
    paths = [Path(line) for line in out.getvalue().split()]
    assert [p.name for p in paths] == [f"certificate-{request.reference}.json", f"certificate-{request.reference}.pdf", "keys.json"]
    assert paths[0].read_bytes() == bytes(certificate.envelope)
    assert hashlib.sha256(paths[1].read_bytes()).hexdigest() == certificate.pdf_sha256
    assert json.loads(paths[2].read_text()) == signing.keyring().to_json()


def test_export_command_refuses_a_request_without_certificate(officer: Any, tmp_path: Path) -> None:
    from django.core.management.base import CommandError

    request = verifying_request(ADA, officer)
    with pytest.raises(CommandError, match="has no certificate"):
        call_command("certificate_export", request.reference, "--out", str(tmp_path))
    assert not any(tmp_path.iterdir())


def test_the_certificate_states_when_no_copy_of_the_data_is_readable(officer: Any, settings: Any) -> None:
    settings.RETENTION_DAYS_AFTER_COMPLETION = 90
    settings.KEYSTORE_BACKUP_RETENTION_DAYS = 35
    request = verifying_request(ADA, officer)
    with TestCase.captureOnCommitCallbacks(execute=True):
        certificate = services.certificate_issue(request=request, officer=officer)
    payload = _payload(certificate)
    issued = payload["issued_at"][:10]
    from datetime import date, timedelta

    purge_by = date.fromisoformat(issued) + timedelta(days=91)
    assert payload["retention"] == {
        "purge_by": purge_by.isoformat(),
        "no_copy_decryptable_after": (purge_by + timedelta(days=35)).isoformat(),
        "key_store": "local",
    }
