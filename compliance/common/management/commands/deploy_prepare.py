"""One-shot preparation of a deployment, run before web, workers and beat start (compose: `migrate`).

Idempotent: applies migrations, collects static files for the web process (served by WhiteNoise),
creates the audit signing key and key ring and the PDF signing key and certificate where they do not
exist yet (an operator's explicit step, so allowed in production), and with --app-role grants the
application's least-privilege database role its rows (run as the owner role). Every later start finds
them and changes nothing.
"""

from __future__ import annotations

from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Migrate, collect static files and create missing signing keys (idempotent; before the services start)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--app-role", help="then grant this least-privilege role its rows (manage.py db_app_role)")
        parser.add_argument("--app-role-password-file", help="the application role's password")

    def handle(self, *args: Any, **options: Any) -> None:
        verbosity = int(options.get("verbosity", 1))
        steps: list[tuple[str, list[str]]] = [
            ("migrate", ["--noinput"]),
            ("collectstatic", ["--noinput"]),
            ("audit_keygen", []),
            ("pdf_keygen", []),
        ]
        if options.get("app_role"):
            role = [options["app_role"]]
            if options.get("app_role_password_file"):
                role += ["--password-file", options["app_role_password_file"]]
            steps.append(("db_app_role", role))
        for name, arguments in steps:
            self.stdout.write(f"== {name}")
            call_command(name, *arguments, verbosity=verbosity, stdout=self.stdout, stderr=self.stderr)
        self.stdout.write(self.style.SUCCESS("deployment prepared"))
