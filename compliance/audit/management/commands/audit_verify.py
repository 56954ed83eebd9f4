from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from compliance.audit.services import audit_verify


class Command(BaseCommand):
    help = "Recompute every leaf hash, cached node and root; check every checkpoint signature and consistency."

    def handle(self, *args: Any, **options: Any) -> None:
        started = time.perf_counter()
        report = audit_verify()
        elapsed = time.perf_counter() - started
        self.stdout.write(
            f"leaves {report.leaves}, cached nodes {report.nodes}, checkpoints {report.checkpoints}, {elapsed:.2f} s"
        )
        if report.ok:
            self.stdout.write("audit log OK")
            return
        for problem in report.problems[:50]:
            self.stderr.write(problem)
        raise CommandError(f"audit log FAILED verification; first bad sequence number: {report.first_bad_seq}")
