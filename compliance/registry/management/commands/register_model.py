"""Register a Hugging Face model directory as a model version (copied under ARTIFACT_ROOT, hashed, active)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from compliance.registry import services
from compliance.registry.models import Corpus, CorpusVersion


class Command(BaseCommand):
    help = "Register a local model directory (config.json + weights) as the active version of a model."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="model slug, e.g. support-assistant")
        parser.add_argument("path", type=Path, help="local Hugging Face model directory")
        parser.add_argument("--trained-on", action="append", default=[], metavar="CORPUS",
                            help="corpus slug the model was trained on (its current version); repeatable")
        parser.add_argument("--eval-set", type=Path, help="evaluation set JSON (schema erasure-eval-set/1)")
        parser.add_argument("--description", default="")

    def handle(self, *args: Any, **options: Any) -> None:
        versions: list[CorpusVersion] = []
        for name in options["trained_on"]:
            corpus = Corpus.objects.filter(name=name).first()
            current = corpus.current_version() if corpus is not None else None
            if current is None:
                raise CommandError(f"unknown corpus {name!r}; register it first")
            versions.append(current)
        try:
            version = services.model_register(
                name=options["name"], source_dir=options["path"], trained_on=versions, description=options["description"]
            )
            if options["eval_set"]:
                services.model_eval_set_attach(model=version.model, source=options["eval_set"])
        except services.RegistryError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"{version} active, sha256 {version.sha256}")
