"""Register a corpus file or directory as a new corpus version (copied under ARTIFACT_ROOT, hashed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from compliance.registry import services
from compliance.registry.models import Corpus


class Command(BaseCommand):
    help = "Register a JSONL or text corpus (file or directory) as the next version of a corpus."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("path", type=Path)
        parser.add_argument("--format", choices=Corpus.Format.values, default=Corpus.Format.JSONL)
        parser.add_argument("--text-field", default="text")
        parser.add_argument("--id-field", default="id")
        parser.add_argument("--description", default="")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            version = services.corpus_register(
                name=options["name"], source=options["path"], format=options["format"],
                text_field=options["text_field"], id_field=options["id_field"], description=options["description"],
            )
        except services.RegistryError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"{version}: {version.records} records, sha256 {version.sha256}")
