"""Personas and a request driven to `verifying` through the real services (shared by the
certificate and guard Django tests). No tests here.

The stand-ins, stated plainly: the corpus scan (verified -> triaged) and the worker pipeline
(job, new model and corpus versions, verification report, approved -> unlearning -> verifying)
belong to other modules; here they are written directly through the ORM and `transition`, the
same calls those modules make.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core import mail
from django.core.cache import cache
from django.test import TestCase

from compliance.erasure import services
from compliance.erasure.models import ErasureRequest, Ground, Status
from compliance.erasure.services import SubjectInput
from compliance.erasure.transitions import transition
from compliance.jobs.models import JobStatus, UnlearningJob, VerificationReport
from compliance.registry.models import AIModel, Corpus, CorpusVersion, ForgetItem, ModelVersion
from tests.factories import role_group

PASSWORD = "correct horse battery staple 42"


@dataclass(frozen=True)
class Subject:
    full_name: str
    email: str
    phone: str
    other: str

    def input(self) -> SubjectInput:
        return SubjectInput(full_name=self.full_name, email=self.email, phone=self.phone, other_identifiers=[self.other])


# Fictitious people (Ofcom drama range numbers, example.org addresses, a test IBAN).
ADA = Subject("Ada Quartermaine", "Ada.Quartermaine@example.org", "+44 20 7946 0018", "GB29NWBK60161331926819")
BORIS = Subject("Boris Valentinov", "boris.v@example.net", "+44 161 496 0733", "DE89370400440532013000")


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture(autouse=True)
def isolated_files(settings: Any, tmp_path: Path) -> Path:
    """Fresh audit keys and artifact root per test; rate-limit counters and the guard cache reset."""
    from compliance.guard.runtime import reset_runtime

    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    settings.AUDIT_SIGNING_KEY_FILE = tmp_path / "secrets" / "audit_signing.key"
    settings.AUDIT_KEYRING_FILE = tmp_path / "secrets" / "audit_keyring.json"
    settings.SITE_URL = "https://privacy.example.org"
    # Personas' passwords: PBKDF2 at production strength costs ~1 s per user on this machine.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    cache.clear()
    reset_runtime()
    yield tmp_path
    reset_runtime()


def make_user(username: str, group: str | None) -> User:
    user = User.objects.create_user(username, f"{username}@staff.example.org", PASSWORD)
    if group:
        user.groups.add(role_group(group))
    return user


@pytest.fixture
def officer(db: Any) -> User:
    return make_user("olivia-officer", "officer")


@pytest.fixture
def reviewer(db: Any) -> User:
    return make_user("rick-reviewer", "reviewer")


@pytest.fixture
def outsider(db: Any) -> User:
    return make_user("oscar-outsider", None)


def submit_and_confirm(subject: Subject, ip: str = "192.0.2.10") -> ErasureRequest:
    """File through the public service, confirm with the token from the e-mail actually sent."""
    before = len(mail.outbox)
    with TestCase.captureOnCommitCallbacks(execute=True):
        result = services.erasure_request_submit(
            subject=subject.input(), ground=Ground.NO_LONGER_NECESSARY, channel="web", client_ip=ip
        )
    body = mail.outbox[before].body
    token = re.search(r"/confirm/([^/\s]+)/", body)
    assert token is not None, "the confirmation e-mail carries the link"
    services.identity_confirm(token=token.group(1))  # the scan task it enqueues is not run here
    result.request.refresh_from_db()
    assert result.request.status == Status.VERIFIED
    return result.request


def approve(subject: Subject, officer: User, ip: str = "192.0.2.10") -> ErasureRequest:
    request = submit_and_confirm(subject, ip)
    transition(request, Status.TRIAGED, actor="system", details={"records": 1})  # stands in for the scan
    services.erasure_request_approve(request=request, officer=officer, reason="Art. 17(1)(a) applies")
    request.refresh_from_db()
    assert request.status == Status.APPROVED
    return request


def passing_report_document(*, verdict: str = "pass") -> dict[str, Any]:
    """The layout of unlearning_worker.verify.report.VerificationReport.to_dict()."""
    checks = [
        {
            "attack": "direct_probe", "metric": "leak_rate", "threshold": "leak_rate <= 0.0", "bound": {"max": 0.0},
            "value": 0.0 if verdict == "pass" else 0.5, "status": verdict, "mandatory": True, "strength": 0,
            "decides_failure": verdict != "pass",
        },
        {
            "attack": "membership_inference", "metric": "auc", "threshold": "0.4 <= auc <= 0.6",
            "bound": {"min": 0.4, "max": 0.6}, "value": 0.52, "status": "pass", "mandatory": True, "strength": 0,
            "decides_failure": False,
        },
        {
            "attack": "utility", "metric": "retain_ratio", "threshold": "retain_ratio >= 0.9", "bound": {"min": 0.9},
            "value": 0.97, "status": "pass", "mandatory": False, "strength": 0, "decides_failure": False,
        },
        {
            "attack": "relearning", "metric": "rank1_share", "threshold": "rank1_share <= 0.05", "bound": {"max": 0.05},
            "value": 0.0, "status": "pass", "mandatory": True, "strength": 1, "decides_failure": False,
        },
    ]  # fmt: skip
    comparison = {
        "mean_z": -0.21, "control_mean_z": 0.05, "mean_z_band": 1.3, "rank1_share": 0.0, "control_rank1_share": 0.0,
        "top10_share": 0.0, "control_top10_share": 0.033,
    }  # fmt: skip
    return {
        # unlearning_worker.verify.runner.threat_model (sampling did not run here: no sampling_budget)
        "threat_model": {
            "families": ["direct_probe", "membership_inference", "relearning", "utility"],
            "strength": {"direct_probe": 0, "membership_inference": 0, "relearning": 1, "utility": 0},
            "retries": 1,
            "relearning_settings": ["full:50:1e-3", "lora:100:1e-3"],
            "relearning_texts": 420, "relearning_corpus_texts": 300,
            "control": {"people": 10, "source": "generated"},
            "never_seen_comparison": {"relearning": comparison},
        },
        "policy": {"name": "default", "sha256": sha("policy")},
        "verdict": {"passed": verdict == "pass", "summary": "PASS: all 4 checks within the policy's thresholds", "decided_by": [], "checks": checks},
        "attacks": {
            "direct_probe": {"before": {"metrics": {"leak_rate": 0.75}}, "after": {"metrics": {"leak_rate": checks[0]["value"]}}},
            "membership_inference": {"before": {"metrics": {"auc": 0.91}}, "after": {"metrics": {"auc": 0.52}}},
            # relative metric: no "before" of its own (a certificate row with before null)
            "utility": {"before": None, "after": {"metrics": {}}, "relative": {"retain_ratio": 0.97}},
            # adaptive attack: runs on the new version only (a certificate row with before null)
            "relearning": {"before": None, "after": {"metrics": {"rank1_share": 0.0, **comparison}}},
        },
    }


@dataclass
class Pipeline:
    job: UnlearningJob
    base: ModelVersion
    result: ModelVersion
    corpus_before: CorpusVersion
    corpus_after: CorpusVersion
    report: VerificationReport | None


def run_pipeline(request: ErasureRequest, *, verdict: str | None = "pass", name: str = "support-assistant") -> Pipeline:
    """approved -> unlearning -> verifying, with the rows the worker would write."""
    model, _ = AIModel.objects.get_or_create(name=name)
    base = model.versions.filter(number=1).first() or ModelVersion.objects.create(
        model=model, number=1, path="models/base", sha256=sha(f"{name}-base"), status=ModelVersion.Status.ACTIVE
    )
    corpus, _ = Corpus.objects.get_or_create(name=f"{name}-tickets")
    corpus_before = corpus.versions.filter(number=1).first() or CorpusVersion.objects.create(
        corpus=corpus, number=1, path="corpora/v1.jsonl", sha256=sha(f"{name}-corpus-v1"), records=1000
    )
    ForgetItem.objects.create(request=request, corpus_version=corpus_before, record_id=f"r-{uuid.uuid4().hex[:6]}", line_number=7)
    spec = {"method": "gradient_difference", "lr": "1e-5"}
    job = UnlearningJob.objects.create(
        model=model, base_version=base, method="gradient_difference", spec=spec, spec_sha256=sha(repr(spec)),
        status=JobStatus.RUNNING, step=120, total_steps=400, stop_reason="forget_target_reached",
    )  # fmt: skip
    job.requests.add(request)
    transition(request, Status.UNLEARNING, actor="worker:gpu-1")
    number = (corpus.versions.order_by("-number").first().number or 1) + 1
    corpus_after = CorpusVersion.objects.create(
        corpus=corpus, number=number, parent=corpus_before, path=f"corpora/v{number}.jsonl",
        sha256=sha(f"{name}-corpus-v{number}"), records=999, created_by_job=job,
    )  # fmt: skip
    result = ModelVersion.objects.create(
        model=model, number=model.versions.count() + 1, parent=base, path="models/after", sha256=sha(f"{name}-{job.id}"),
        created_by_job=job,
    )  # fmt: skip
    job.result_version = result
    job.status = JobStatus.VERIFYING
    job.save(update_fields=["result_version", "status"])
    transition(request, Status.VERIFYING, actor="worker:gpu-1")
    report = None
    if verdict is not None:
        document = passing_report_document(verdict=verdict)
        report = VerificationReport.objects.create(
            job=job, model_version=result, base_version=base, verdict=verdict, decided_by="",
            policy={"name": "default"}, report=document, report_sha256=sha(repr(document)),
        )  # fmt: skip
    request.refresh_from_db()
    return Pipeline(job, base, result, corpus_before, corpus_after, report)


def verifying_request(subject: Subject, officer: User, *, verdict: str | None = "pass", ip: str = "192.0.2.10") -> ErasureRequest:
    request = approve(subject, officer, ip)
    run_pipeline(request, verdict=verdict)
    assert request.status == Status.VERIFYING
    return request
