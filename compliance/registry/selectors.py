"""Reads of the registry for services, faces and the worker."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet

from compliance.registry.models import AIModel, Corpus, CorpusVersion, ForgetItem, ModelVersion


def active_version(*, model: AIModel) -> ModelVersion | None:
    return model.versions.filter(status=ModelVersion.Status.ACTIVE).order_by("-number").first()


def models_with_active_version() -> QuerySet[AIModel]:
    return AIModel.objects.filter(versions__status=ModelVersion.Status.ACTIVE).distinct().order_by("name")


def current_corpus_version(*, corpus: Corpus) -> CorpusVersion | None:
    return corpus.versions.order_by("-number").first()


def corpora_of(*, version: ModelVersion) -> set[int]:
    """Ids of the corpora (not versions) a model version was trained on: an erased corpus keeps its
    identity across versions, and records located in any of its versions concern the model."""
    return set(version.trained_on.values_list("corpus_id", flat=True))


def forget_items_for(*, request_ids: Iterable[uuid.UUID], corpus_ids: set[int] | None) -> QuerySet[ForgetItem]:
    """Located records of these requests in these corpora (all corpora when `corpus_ids` is None)."""
    qs = ForgetItem.objects.filter(request_id__in=request_ids).select_related("request__data_key", "corpus_version__corpus")
    if corpus_ids is not None:
        qs = qs.filter(corpus_version__corpus_id__in=corpus_ids)
    return qs.order_by("request_id", "corpus_version__corpus_id", "line_number")


SHARDED_KIND = "sharded-lora/v1"
EXACT_METHOD = "exact-shard-retrain"


def sharded_training(*, version: ModelVersion) -> dict[str, Any] | None:
    """The version's sharded fine-tune (corpus, recipe hash, K, S), or None if it was not trained so."""
    training = version.training or {}
    return training if training.get("kind") == SHARDED_KIND else None


@dataclass(frozen=True)
class ErasurePath:
    """How a request's records leave a model version: "exact" (retrain the affected shard adapters),
    "approximate" (unlearning), or "both" (exact for the sharded fine-tune, approximate for the rest)."""

    kind: str
    reason: str
    exact_records: int = 0
    other_records: int = 0

    def method(self, approximate: str) -> str:
        if self.kind == "exact":
            return EXACT_METHOD
        if self.kind == "both":
            return f"{EXACT_METHOD}+{approximate}"
        return approximate


def erasure_path(*, version: ModelVersion, items: Iterable[ForgetItem]) -> ErasurePath:
    """Which path the located records take out of `version` (shown to the officer before approval)."""
    training = sharded_training(version=version)
    rows = list(items)
    if training is None:
        return ErasurePath("approximate", f"{version} was not fine-tuned as sharded adapters", 0, len(rows))
    corpus_id = training.get("corpus")
    corpus = Corpus.objects.filter(pk=corpus_id).first() if corpus_id is not None else None
    if corpus is None or corpus.format != Corpus.Format.JSONL or not corpus.id_field:
        return ErasurePath("approximate", "the sharded corpus has no stable record ids", 0, len(rows))
    exact = [r for r in rows if r.corpus_version.corpus_id == corpus_id]
    other = len(rows) - len(exact)
    if not exact:
        return ErasurePath("approximate", f"no located record is in {corpus.name}, the sharded fine-tuning corpus", 0, other)
    if other:
        caveat = ("; not possible on a routed sharded model: the job will fail and ask for a decision"
                  if training.get("combine") == "route" else "")
        return ErasurePath("both", f"{len(exact)} record(s) sit in the sharded fine-tune of {corpus.name} (exact); "
                                   f"{other} in other training data (approximate unlearning){caveat}", len(exact), other)
    return ErasurePath("exact", f"every located record sits in the sharded fine-tune of {corpus.name}: only the "
                                f"shard adapters holding them are retrained", len(exact), 0)


def erasure_paths(*, request: object) -> list[tuple[AIModel, ErasurePath]]:
    """For each model in the request's scope with an active version: the path its located records
    would take out of that version (what the officer sees before approving)."""
    scope_all = bool(getattr(request, "scope_all_models", True))
    scoped = set() if scope_all else set(request.scope_models.values_list("id", flat=True))  # type: ignore[attr-defined]
    out: list[tuple[AIModel, ErasurePath]] = []
    for model in models_with_active_version():
        if not scope_all and model.id not in scoped:
            continue
        version = active_version(model=model)
        if version is None:
            continue
        items = forget_items_for(request_ids=[request.pk], corpus_ids=corpora_of(version=version) or None)  # type: ignore[attr-defined]
        if items.exists():
            out.append((model, erasure_path(version=version, items=items)))
    return out
