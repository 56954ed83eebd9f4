"""The GPU worker's sharded-training task: ids in, ids out; the work is compliance.registry.sharding.

    unlearning.train_sharded(model, corpus_version_id, ...)   the same as `manage.py train_sharded`
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from compliance.registry.models import AIModel, CorpusVersion
from compliance.registry.sharding import sharded_train


@shared_task(name="unlearning.train_sharded", acks_late=True)  # queue gpu: CELERY_TASK_ROUTES
def train_sharded_task(*, model: str, corpus_version_id: int, shards: int = 8, slices: int = 4, epochs: int = 8,
                       seed: int = 0, group_field: str = "", **kwargs: object) -> dict[str, Any]:
    """The same as `manage.py train_sharded`, on a GPU worker. Ids and numbers in, ids out."""
    from unlearning_worker.sharded.recipe import ShardRecipe

    recipe = ShardRecipe.fresh(shards=shards, slices=slices, epochs_per_slice=epochs, seed=seed, group_field=group_field)
    version = sharded_train(model=AIModel.objects.get(name=model),
                            corpus_version=CorpusVersion.objects.get(pk=corpus_version_id), recipe=recipe,
                            actor="worker")
    return {"model_version": str(version.id), "number": version.number}
