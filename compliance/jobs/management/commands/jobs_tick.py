"""What beat does for jobs, for set-ups without beat: batch approved requests and requeue stuck jobs."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from compliance.jobs.dispatch import jobs_dispatch
from compliance.jobs.services import jobs_reconcile


class Command(BaseCommand):
    help = "Dispatch approved requests into unlearning jobs and requeue jobs whose worker stopped beating."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--loop", type=float, default=0.0, metavar="SECONDS", help="repeat every SECONDS (0: once)")

    def handle(self, *args: Any, **options: Any) -> None:
        while True:
            requeued = jobs_reconcile()
            result = jobs_dispatch()
            self.stdout.write(
                f"created {len(result.created)} job(s), {result.waiting} request(s) waiting for their batch, "
                f"requeued {len(requeued)}"
            )
            if not options["loop"]:
                return
            time.sleep(options["loop"])
