"""Registry services: the only code that creates models, corpora and their versions, or changes a
model version's status. Keyword-only and typed; every change is audited with hashes, never content.

Version numbers are allocated under a lock on the parent AIModel / Corpus row, so two workers
registering at once get distinct numbers. A registered artifact is copied (or moved) under
ARTIFACT_ROOT, written atomically and hashed (see compliance.registry.artifacts).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from datetime import date, timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from compliance.audit.services import audit_append
from compliance.registry import artifacts
from compliance.registry.models import AIModel, Corpus, CorpusVersion, ModelVersion


class RegistryError(Exception):
    """A registry operation that cannot be carried out as asked; the message is safe to show."""


def _copy_into(source: Path, final: Path) -> str:
    """Copy a file or directory to `final` atomically; return its tree digest."""
    source = Path(source)
    if not source.exists():
        raise RegistryError(f"{source} does not exist")
    with artifacts.atomic_directory(final) as tmp:
        if source.is_dir():
            shutil.copytree(source, tmp, dirs_exist_ok=True)
        else:
            shutil.copy2(source, tmp / source.name)
    return artifacts.tree_sha256(final)


def _count_records(path: Path) -> int:
    total = 0
    for _name, file in artifacts._files(path):
        with file.open("rb") as fh:
            total += sum(1 for line in fh if line.strip())
    return total


def model_register(
    *,
    name: str,
    source_dir: Path,
    description: str = "",
    trained_on: Iterable[CorpusVersion] = (),
    actor: str = "system",
) -> ModelVersion:
    """Register a new model (or a new root version of an existing one) from a Hugging Face model
    directory, copied under ARTIFACT_ROOT; the new version becomes active and any previous active
    version is superseded."""
    source_dir = Path(source_dir)
    if not (source_dir / "config.json").is_file():
        raise RegistryError(f"{source_dir} is not a model directory (no config.json)")
    with transaction.atomic():
        model, _ = AIModel.objects.get_or_create(name=name, defaults={"description": description})
        model = AIModel.objects.select_for_update().get(pk=model.pk)
        number = (model.versions.aggregate(n=Max("number"))["n"] or 0) + 1
        final = artifacts.model_version_dir(name, number)
        digest = _copy_into(source_dir, final)
        version = ModelVersion.objects.create(
            model=model, number=number, path=str(final), sha256=digest, status=ModelVersion.Status.CANDIDATE
        )
        version.trained_on.set(list(trained_on))
        audit_append(
            event_type="registry.model_registered",
            actor=actor,
            outcome="ok",
            artefacts={"weights_sha256": digest},
            details={"model": name, "version": number},
        )
        model_version_activate(version=version, actor=actor)
    version.refresh_from_db()
    return version


# The evaluation set a model's verification reads (retain people's facts, never-trained holdout texts,
# general texts, never-seen controls); written by the demo's registration or by the model's owner.
EVAL_SET_SCHEMA = "erasure-eval-set/1"


def model_eval_set_attach(*, model: AIModel, source: Path) -> AIModel:
    """Copy an evaluation set under ARTIFACT_ROOT (atomically) and point the model at it."""
    document = json.loads(Path(source).read_text(encoding="utf-8"))
    if document.get("schema") != EVAL_SET_SCHEMA:
        raise RegistryError(f"an evaluation set must have schema {EVAL_SET_SCHEMA}")
    final = artifacts.artifact_root() / "eval-sets" / f"{model.name}-{artifacts.tree_sha256(Path(source))[:16]}"
    if not final.exists():
        with artifacts.atomic_directory(final) as tmp:
            (tmp / "eval-set.json").write_bytes(Path(source).read_bytes())
    model.eval_set_path = str(final)
    model.eval_set_sha256 = artifacts.tree_sha256(final)
    model.save(update_fields=["eval_set_path", "eval_set_sha256"])
    return model


def model_version_register_candidate(
    *,
    model: AIModel,
    parent: ModelVersion,
    path: Path,
    sha256: str,
    created_by_job: object | None = None,
    trained_on: Iterable[CorpusVersion] = (),
    actor: str = "system",
) -> ModelVersion:
    """Record a version an unlearning job wrote (already published atomically under ARTIFACT_ROOT)."""
    path = artifacts.within_root(Path(path))
    artifacts.verify_tree(path, sha256)
    with transaction.atomic():
        locked = AIModel.objects.select_for_update().get(pk=model.pk)
        number = (locked.versions.aggregate(n=Max("number"))["n"] or 0) + 1
        version = ModelVersion.objects.create(
            model=locked,
            number=number,
            parent=parent,
            path=str(path),
            sha256=sha256,
            status=ModelVersion.Status.CANDIDATE,
            created_by_job=created_by_job,  # type: ignore[misc]
        )
        version.trained_on.set(list(trained_on))
        audit_append(
            event_type="registry.model_candidate",
            actor=actor,
            outcome="ok",
            artefacts={"weights_sha256": sha256, "parent_sha256": parent.sha256},
            details={"model": locked.name, "version": number, "parent": parent.number},
        )
    return version


def model_version_activate(
    *, version: ModelVersion, actor: str = "system", quarantine_previous: bool = False, today: date | None = None
) -> ModelVersion:
    """Make `version` the model's one active version.

    The previous active version becomes superseded, or quarantined until the retention date when it
    still holds erased data (after an unlearning job): it must not be served, and is kept only as
    long as the audit and a possible rollback need it.
    """
    today = today or timezone.localdate()
    with transaction.atomic():
        AIModel.objects.select_for_update().get(pk=version.model_id)
        locked = ModelVersion.objects.select_for_update().get(pk=version.pk)
        if locked.status not in (ModelVersion.Status.CANDIDATE, ModelVersion.Status.SUPERSEDED):
            raise RegistryError(f"{locked} is {locked.status}; only a candidate or superseded version can be activated")
        previous = list(
            ModelVersion.objects.select_for_update().filter(model_id=locked.model_id, status=ModelVersion.Status.ACTIVE)
        )
        for old in previous:
            if quarantine_previous:
                old.status = ModelVersion.Status.QUARANTINED
                old.quarantine_until = today + timedelta(days=settings.RETENTION_DAYS_AFTER_COMPLETION)
            else:
                old.status = ModelVersion.Status.SUPERSEDED
            old.save(update_fields=["status", "quarantine_until"])
            audit_append(
                event_type=f"registry.model_{old.status}",
                actor=actor,
                outcome="ok",
                artefacts={"weights_sha256": old.sha256},
                details={"model": locked.model.name, "version": old.number},
            )
        locked.status = ModelVersion.Status.ACTIVE
        locked.save(update_fields=["status"])
        audit_append(
            event_type="registry.model_activated",
            actor=actor,
            outcome="ok",
            artefacts={"weights_sha256": locked.sha256},
            details={"model": locked.model.name, "version": locked.number},
        )
    version.refresh_from_db()
    return locked


def model_version_reject(*, version: ModelVersion, actor: str = "system") -> ModelVersion:
    """A candidate that failed verification: kept for the report, never activated."""
    with transaction.atomic():
        locked = ModelVersion.objects.select_for_update().get(pk=version.pk)
        if locked.status != ModelVersion.Status.CANDIDATE:
            raise RegistryError(f"{locked} is {locked.status}; only a candidate can be rejected")
        locked.status = ModelVersion.Status.REJECTED
        locked.save(update_fields=["status"])
        audit_append(
            event_type="registry.model_rejected",
            actor=actor,
            outcome="ok",
            artefacts={"weights_sha256": locked.sha256},
            details={"model": locked.model.name, "version": locked.number},
        )
    return locked


def corpus_register(
    *,
    name: str,
    source: Path,
    format: str = Corpus.Format.JSONL,
    text_field: str = "text",
    id_field: str = "id",
    description: str = "",
    actor: str = "system",
) -> CorpusVersion:
    """Register a corpus (file or directory of files), copied atomically under ARTIFACT_ROOT as a new version."""
    Corpus.Format(format)
    with transaction.atomic():
        corpus, created = Corpus.objects.get_or_create(
            name=name,
            defaults={"format": format, "text_field": text_field, "id_field": id_field, "description": description},
        )
        if not created and (corpus.format, corpus.text_field, corpus.id_field) != (format, text_field, id_field):
            raise RegistryError(f"corpus {name} is registered with another format or fields")
        corpus = Corpus.objects.select_for_update().get(pk=corpus.pk)
        number = (corpus.versions.aggregate(n=Max("number"))["n"] or 0) + 1
        parent = corpus.versions.order_by("-number").first()
        final = artifacts.corpus_version_dir(name, number)
        digest = _copy_into(Path(source), final)
        version = CorpusVersion.objects.create(
            corpus=corpus,
            number=number,
            parent=parent,
            path=str(final),
            sha256=digest,
            records=_count_records(final),
            bytes=artifacts.tree_bytes(final),
        )
        audit_append(
            event_type="registry.corpus_registered",
            actor=actor,
            outcome="ok",
            artefacts={"corpus_sha256": digest},
            details={"corpus": name, "version": number, "records": version.records},
        )
    return version


def corpus_version_record(
    *, parent: CorpusVersion, path: Path, created_by_job: object | None = None, records_removed: int,
    records_anonymised: int = 0, actor: str = "system",
) -> CorpusVersion:
    """Record a corpus version an erasure wrote (already published atomically under ARTIFACT_ROOT)."""
    path = artifacts.within_root(Path(path))
    digest = artifacts.tree_sha256(path)
    with transaction.atomic():
        corpus = Corpus.objects.select_for_update().get(pk=parent.corpus_id)
        number = (corpus.versions.aggregate(n=Max("number"))["n"] or 0) + 1
        version = CorpusVersion.objects.create(
            corpus=corpus,
            number=number,
            parent=parent,
            path=str(path),
            sha256=digest,
            records=_count_records(path),
            bytes=artifacts.tree_bytes(path),
            created_by_job=created_by_job,  # type: ignore[misc]
        )
        audit_append(
            event_type="registry.corpus_erased",
            actor=actor,
            outcome="ok",
            artefacts={"corpus_sha256": digest, "parent_sha256": parent.sha256},
            details={
                "corpus": corpus.name,
                "version": number,
                "parent": parent.number,
                "removed": records_removed,
                "anonymised": records_anonymised,
            },
        )
    return version
