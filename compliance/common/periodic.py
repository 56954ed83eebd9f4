"""Records each run of a periodic task (PeriodicRun) and says which ones are late, for the health page.

Connected to Celery's task_postrun signal, so it sees runs on a worker and in-process (the embedded
beat) alike. A failure to record never fails the task.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db.models import F
from django.utils import timezone

logger = logging.getLogger(__name__)


def _scheduled() -> dict[str, float]:
    from compliance.common.embedded_beat import interval_seconds

    return {str(entry["task"]): interval_seconds(entry) for entry in settings.CELERY_BEAT_SCHEDULE.values()}


def record_run(sender: Any = None, task: Any = None, retval: Any = None, state: str | None = None, **kwargs: Any) -> None:
    """celery.signals.task_postrun handler."""
    name = getattr(task, "name", None) or getattr(sender, "name", None)
    if not name or name not in _scheduled():
        return
    try:
        from compliance.common.models import PeriodicRun

        summary = "" if retval is None else str(retval)[:200]
        updated = PeriodicRun.objects.filter(task=name).update(
            last_run_at=timezone.now(), last_state=str(state or "")[:16], last_summary=summary, runs=F("runs") + 1
        )
        if not updated:
            PeriodicRun.objects.create(task=name, last_run_at=timezone.now(), last_state=str(state or "")[:16],
                                       last_summary=summary, runs=1)
    except Exception:  # noqa: BLE001 - bookkeeping must never fail the task
        logger.warning("could not record the run of %s", name, exc_info=True)


@dataclass(frozen=True)
class TaskHealth:
    task: str
    every_s: float
    last_run_at: datetime | None
    last_state: str
    last_summary: str
    runs: int

    @property
    def late(self) -> bool:
        """No run in three intervals (or never): beat or the workers are not running it."""
        if self.last_run_at is None:
            return True
        return (timezone.now() - self.last_run_at).total_seconds() > 3 * self.every_s + 60


def health() -> list[TaskHealth]:
    from compliance.common.models import PeriodicRun

    runs = {r.task: r for r in PeriodicRun.objects.all()}
    out = []
    for task, every in sorted(_scheduled().items()):
        run = runs.get(task)
        out.append(TaskHealth(task=task, every_s=every, last_run_at=run.last_run_at if run else None,
                              last_state=run.last_state if run else "", last_summary=run.last_summary if run else "",
                              runs=run.runs if run else 0))
    return out
