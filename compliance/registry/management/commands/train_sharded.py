"""Fine-tune a registered model on a registered corpus as K shard adapters (exact erasure by design)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from compliance.common.tasks import enqueue
from compliance.registry.models import AIModel, Corpus


class Command(BaseCommand):
    help = (
        "Fine-tune the model's active version on the corpus's current version as K LoRA shard adapters, each "
        "trained in S slices with a checkpoint after each (SISA). The merged model becomes the active version; "
        "an erasure request whose records sit in this corpus is then erased exactly, by retraining only the "
        "shards that held them."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("model", help="model slug")
        parser.add_argument("corpus", help="corpus slug (JSON lines with an id field)")
        parser.add_argument("--shards", type=int, default=8)
        parser.add_argument("--slices", type=int, default=4)
        parser.add_argument("--epochs", type=int, default=8, help="passes over the data seen so far, per slice")
        parser.add_argument("--lr", type=float, default=3e-3)
        parser.add_argument("--rank", type=int, default=16, help="LoRA rank (alpha = 2 x rank)")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--group-field", default="",
                            help="corpus field that places records together, e.g. the person or conversation id: "
                                 "one subject's records then sit in one shard and slice (default: by record id)")
        parser.add_argument("--async", dest="run_async", action="store_true",
                            help="queue it for a GPU worker (task unlearning.train_sharded) instead of running here")

    def handle(self, *args: Any, **options: Any) -> None:
        from compliance.registry.sharding import ShardedTrainingError, sharded_train
        from unlearning_worker.sharded.recipe import ShardRecipe

        model = AIModel.objects.filter(name=options["model"]).first()
        corpus = Corpus.objects.filter(name=options["corpus"]).first()
        if model is None:
            raise CommandError(f"unknown model {options['model']!r}; register it first")
        if corpus is None or corpus.current_version() is None:
            raise CommandError(f"unknown corpus {options['corpus']!r}; register it first")
        version = corpus.current_version()
        assert version is not None
        try:
            recipe = ShardRecipe.fresh(shards=options["shards"], slices=options["slices"], epochs_per_slice=options["epochs"],
                                       lr=options["lr"], lora_rank=options["rank"], lora_alpha=2 * options["rank"],
                                       seed=options["seed"], group_field=options["group_field"])
        except ValueError as exc:
            raise CommandError(f"invalid recipe: {exc}") from exc
        if options["run_async"]:
            enqueue("unlearning.train_sharded", model=model.name, corpus_version_id=version.id, shards=recipe.shards,
                    slices=recipe.slices, epochs=recipe.epochs_per_slice, seed=recipe.seed, group_field=recipe.group_field)
            self.stdout.write("queued for a GPU worker (task unlearning.train_sharded)")
            return
        try:
            trained = sharded_train(model=model, corpus_version=version, recipe=recipe, actor="system",
                                    progress=lambda e: self.stdout.write(f"  shard {e['shard']} slice {e['slice']}: loss {e['loss']:.3f}"))
        except (ShardedTrainingError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"{trained} active: {recipe.shards} shards x {recipe.slices} slices, recipe {recipe.sha256()[:16]}, "
                          f"sha256 {trained.sha256}")
