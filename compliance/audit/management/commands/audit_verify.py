from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from compliance.audit.services import checkpoint_parse_trusted
from compliance.audit.verify import audit_verify
from proofs.checkpoint import CheckpointError

MAX_NOTE_BYTES = 64 * 1024  # a checkpoint is a few hundred bytes; anything far larger is not one


class Command(BaseCommand):
    help = (
        "Recompute the audit log's tree from its leaves; check every cached node, the head, every checkpoint "
        "signature and the checkpoint chain, the signed head kept outside the database and, with --against, "
        "a checkpoint obtained from outside (e.g. a previously published one)."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--against",
            metavar="FILE",
            help="a signed checkpoint note of this log obtained from outside; the log must contain it",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        against = None
        if options.get("against"):
            against = self._read_checkpoint(Path(options["against"]))
        started = time.perf_counter()
        report = audit_verify(against=against)
        elapsed = time.perf_counter() - started
        self.stdout.write(
            f"leaves {report.leaves}, cached nodes {report.nodes}, checkpoints {report.checkpoints}, {elapsed:.2f} s"
        )
        for note in report.notes:
            self.stdout.write(f"note: {note}")
        if report.ok:
            if against is not None:
                self.stdout.write(f"the log contains the supplied checkpoint (size {against.size})")
            self.stdout.write("audit log OK")
            return
        for problem in report.problems[:50]:
            self.stderr.write(problem)
        if len(report.problems) > 50:
            self.stderr.write(f"... and {len(report.problems) - 50} more problems")
        where = []
        if report.first_bad_seq is not None:
            where.append(f"first bad sequence number: {report.first_bad_seq}")
        if report.first_bad_checkpoint is not None:
            where.append(f"first bad checkpoint: {report.first_bad_checkpoint}")
        raise CommandError(f"audit log FAILED verification; {'; '.join(where) or report.problems[0]}")

    def _read_checkpoint(self, path: Path) -> Any:
        try:
            with path.open("rb") as handle:
                raw = handle.read(MAX_NOTE_BYTES + 1)
        except OSError as exc:
            raise CommandError(f"--against {path}: cannot read the file ({exc.strerror or exc})") from None
        if len(raw) > MAX_NOTE_BYTES:
            raise CommandError(f"--against {path}: not a checkpoint (larger than {MAX_NOTE_BYTES} bytes)")
        try:
            return checkpoint_parse_trusted(raw)
        except CheckpointError as exc:
            raise CommandError(f"--against {path}: not a valid signed checkpoint of this log: {exc}") from None
