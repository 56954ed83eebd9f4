"""One-shot preparation of a deployment, run before web, workers and beat start (compose: `migrate`).

Idempotent: applies migrations, collects static files for the web process (served by WhiteNoise),
creates the audit signing key and key ring and the PDF signing key and certificate where they do not
exist yet (an operator's explicit step, so allowed in production). Every later start finds them and
changes nothing.
"""

from __future__ import annotations

from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Migrate, collect static files and create missing signing keys (idempotent; before the services start)."

    def handle(self, *args: Any, **options: Any) -> None:
        verbosity = int(options.get("verbosity", 1))
        for name, arguments in (
            ("migrate", ["--noinput"]),
            ("collectstatic", ["--noinput"]),
            ("audit_keygen", []),
            ("pdf_keygen", []),
        ):
            self.stdout.write(f"== {name}")
            call_command(name, *arguments, verbosity=verbosity, stdout=self.stdout, stderr=self.stderr)
        self.stdout.write(self.style.SUCCESS("deployment prepared"))
