"""Registering models and corpora, version numbering, activation and corpus erasure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from compliance.registry import artifacts, services
from compliance.registry.erasure import corpus_erase
from compliance.registry.models import ModelVersion
from tests import factories
from tests.jobs.conftest import corpus_rows, locate, write_model_dir

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def test_model_register_copies_hashes_and_activates_superseding_the_previous(tmp_path: Path) -> None:
    v1 = services.model_register(name="m", source_dir=write_model_dir(tmp_path / "a", 1))
    v2 = services.model_register(name="m", source_dir=write_model_dir(tmp_path / "b", 2))

    v1.refresh_from_db()
    assert (v1.number, v2.number) == (1, 2)
    assert v1.status == ModelVersion.Status.SUPERSEDED and v2.status == ModelVersion.Status.ACTIVE
    assert Path(v2.path).is_relative_to(artifacts.artifact_root())
    artifacts.verify_tree(Path(v2.path), v2.sha256)
    assert v2.model.active_version() == v2


def test_model_register_refuses_a_folder_that_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    with pytest.raises(services.RegistryError, match="config.json"):
        services.model_register(name="m", source_dir=tmp_path / "x")
    assert not ModelVersion.objects.exists()


def test_a_rejected_or_quarantined_version_cannot_be_activated(tmp_path: Path) -> None:
    base = services.model_register(name="m", source_dir=write_model_dir(tmp_path / "a"))
    final = artifacts.model_version_dir("m", 2)
    with artifacts.atomic_directory(final) as tmp:
        write_model_dir(tmp, 5)
    candidate = services.model_version_register_candidate(
        model=base.model, parent=base, path=final, sha256=artifacts.tree_sha256(final)
    )
    services.model_version_reject(version=candidate)

    with pytest.raises(services.RegistryError, match="rejected"):
        services.model_version_activate(version=candidate)
    base.refresh_from_db()
    assert base.status == ModelVersion.Status.ACTIVE


def test_a_candidate_whose_files_do_not_match_its_hash_is_refused(tmp_path: Path) -> None:
    base = services.model_register(name="m", source_dir=write_model_dir(tmp_path / "a"))
    with pytest.raises(artifacts.ArtifactCorrupted):
        services.model_version_register_candidate(model=base.model, parent=base, path=Path(base.path), sha256="0" * 64)


def _corpus(tmp_path: Path) -> Any:
    source = tmp_path / "c.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in corpus_rows(5)))
    return services.corpus_register(name="tickets", source=source, id_field="record_id")


@pytest.mark.parametrize("mode", ["remove", "anonymise"])
def test_corpus_erasure_writes_a_new_version_without_the_subjects_records(tmp_path: Path, mode: str) -> None:
    v1 = _corpus(tmp_path)
    request = factories.request_in("approved", person=factories.subject(2))
    item = locate(request, v1, 2)

    v2 = corpus_erase(corpus=v1.corpus, items=[item], mode=mode)

    assert v2 is not None and v2.number == 2 and v2.parent == v1
    text = "".join(p.read_text() for p in sorted(Path(v2.path).rglob("*.jsonl")))
    assert "555 1002" not in text and "Test Person2" not in text
    assert "555 1003" in text  # other people stay
    if mode == "remove":
        assert v2.records == 4
    else:
        assert v2.records == 5 and "<PHONE_NUMBER>" in text
    artifacts.verify_tree(Path(v1.path), v1.sha256)  # the old version is untouched
    assert corpus_erase(corpus=v1.corpus, items=[item], mode=mode) is None  # nothing left to erase: no new version
