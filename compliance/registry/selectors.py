"""Reads of the registry for services, faces and the worker."""

from __future__ import annotations

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


def forget_items_for(*, request_ids: list[object], corpus_ids: set[int] | None) -> QuerySet[ForgetItem]:
    """Located records of these requests in these corpora (all corpora when `corpus_ids` is None)."""
    qs = ForgetItem.objects.filter(request_id__in=request_ids).select_related("request__data_key", "corpus_version__corpus")
    if corpus_ids is not None:
        qs = qs.filter(corpus_version__corpus_id__in=corpus_ids)
    return qs.order_by("request_id", "corpus_version__corpus_id", "line_number")
