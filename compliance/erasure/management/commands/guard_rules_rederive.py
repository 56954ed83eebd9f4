"""Derive the guard's suppression rules again with the current matcher (after an upgrade)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from compliance.erasure.services import erasure_guard_rules_rederive


class Command(BaseCommand):
    help = (
        "Re-derive the suppression rules of every request with active rules (adds new kinds such as "
        "any-case rules for distinctive names, retires rules the current derivation no longer gives)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="count what would change, change nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        result = erasure_guard_rules_rederive(actor="system", dry_run=options["dry_run"])
        prefix = "would add" if options["dry_run"] else "added"
        self.stdout.write(
            f"{result.requests} request(s): {prefix} {result.added} rule(s), "
            f"{'would retire' if options['dry_run'] else 'retired'} {result.retired}, "
            f"{result.skipped} skipped (identifiers no longer readable)"
        )
