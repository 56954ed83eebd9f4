from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from compliance.audit.services import checkpoint_create, latest_checkpoint


class Command(BaseCommand):
    help = "Sign a checkpoint of the audit log now (after checking consistency with the previous one)."

    def handle(self, *args: Any, **options: Any) -> None:
        created = checkpoint_create()
        current = created or latest_checkpoint()
        if created is None:
            self.stdout.write("log has not grown since the last checkpoint")
        if current is not None:
            self.stdout.write(current.note)
