"""Retrain shards of a sharded model version from its recipe and check that they reproduce the published bits."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from compliance.registry.models import ModelVersion


class Command(BaseCommand):
    help = (
        "Replay: retrain one shard (or all) of a sharded model version from its recorded recipe, on its training "
        "corpus version, and compare every slice checkpoint with the published one, bit for bit. Exit status 1 "
        "when any differs."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("model", help="model slug")
        parser.add_argument("version", type=int, help="version number")
        parser.add_argument("--shard", type=int, action="append", help="shard index (repeatable; default: all)")

    def handle(self, *args: Any, **options: Any) -> None:
        from compliance.registry.sharding import ShardedTrainingError, shard_replay

        version = ModelVersion.objects.filter(model__name=options["model"], number=options["version"]).first()
        if version is None:
            raise CommandError(f"no version {options['version']} of model {options['model']!r}")
        shards = options["shard"] or list(range(int((version.training or {}).get("shards", 0) or 0)))
        if not shards:
            raise CommandError(f"{version} is not a sharded fine-tune")
        differ = 0
        for shard in shards:
            try:
                result = shard_replay(version=version, shard=shard)
            except ShardedTrainingError as exc:
                raise CommandError(str(exc)) from exc
            verdict = "identical" if result.identical else "DIFFERS"
            differ += not result.identical
            self.stdout.write(f"shard {shard}: {verdict} ({len(result.actual)} slice checkpoints, {result.seconds:.1f}s); "
                              f"adapter {result.actual[-1][:16]} vs published {result.expected[-1][:16]}")
        if differ:
            raise CommandError(f"{differ} shard(s) did not reproduce their published adapters")
