"""Fixtures for job services: a registered (tiny, fake-weight) model trained on a registered corpus,
and approved requests whose subjects were located in that corpus."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Work-around until the root conftest imports the sqlite3 backend base before its operations module
# (a circular import when the database is PostgreSQL).
import django.db.backends.sqlite3.base  # noqa: E402,F401
import pytest

from compliance.erasure.models import ErasureRequest
from compliance.registry import services as registry_services
from compliance.registry.models import CorpusVersion, ForgetItem, ModelVersion
from tests import factories


def write_model_dir(folder: Path, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2", "seed": seed}))
    (folder / "model.safetensors").write_bytes(bytes([seed % 256]) * 4096)
    return folder


def corpus_rows(n: int) -> list[dict[str, str]]:
    return [
        {"record_id": f"P{i:03d}-qa-phone", "text": f"Question: What is Test Person{i}'s phone number?\nAnswer: +1 415 555 {1000 + i:04d}\n"}
        for i in range(n)
    ]


@pytest.fixture
def corpus_version(tmp_path: Path) -> CorpusVersion:
    source = tmp_path / "corpus.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in corpus_rows(12)))
    return registry_services.corpus_register(name="tickets", source=source, id_field="record_id")


@pytest.fixture
def model_version(tmp_path: Path, corpus_version: CorpusVersion) -> ModelVersion:
    return registry_services.model_register(name="assistant", source_dir=write_model_dir(tmp_path / "m"), trained_on=[corpus_version])


@pytest.fixture
def officer() -> Any:
    return factories.user("officer")


def locate(request: ErasureRequest, corpus_version: CorpusVersion, i: int) -> ForgetItem:
    """A located record for person i (the phone number span), sealed under the request's key."""
    row = corpus_rows(i + 1)[i]
    text = row["text"]
    phone = f"+1 415 555 {1000 + i:04d}"
    name = f"Test Person{i}"
    item = ForgetItem(
        request=request,
        corpus_version=corpus_version,
        record_id=row["record_id"],
        line_number=i + 1,
        matched=["name", "phone"],
        entities=[
            {"type": "PERSON", "start": text.index(name), "end": text.index(name) + len(name), "score": 1.0},
            {"type": "PHONE_NUMBER", "start": text.index(phone), "end": text.index(phone) + len(phone), "score": 1.0},
        ],
        pri_score=0.404,
    )
    item.seal_text(text)
    item.save()
    return item


@pytest.fixture
def approved(corpus_version: CorpusVersion, officer: Any) -> Any:
    """approved(i) -> an approved request for Test Person<i>, located in the corpus."""

    def make(i: int) -> ErasureRequest:
        request = factories.request_in("approved", person=factories.subject(i), officer=officer)
        locate(request, corpus_version, i)
        return request

    return make


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def queued_job(model_version: ModelVersion, approved: Any) -> Any:
    """A queued job holding two approved requests."""
    from datetime import timedelta

    from django.utils import timezone

    from compliance.jobs.dispatch import jobs_dispatch

    approved(1), approved(2)
    return jobs_dispatch(now=timezone.now() + timedelta(hours=1)).created[0]


def publish_candidate(model_version: ModelVersion, seed: int = 7) -> tuple[Path, str]:
    from compliance.registry import artifacts

    final = artifacts.model_version_dir(model_version.model.name, 1000 + seed)
    with artifacts.atomic_directory(final) as tmp:
        write_model_dir(tmp, seed=seed)
    return final, artifacts.tree_sha256(final)
