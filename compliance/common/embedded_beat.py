"""The beat of the embedded set-up: one thread that runs CELERY_BEAT_SCHEDULE's tasks in-process.

With a broker, `celery beat` sends the periodic tasks (dispatch, reconcile, checkpoints, pending
certificates, reminders, retention) to the workers. The embedded default has no broker and no beat
process: tasks run in-process when they are enqueued, and nothing would ever run a periodic one. An
approved request then waits for its batch window to close and nobody looks again, so it stays
"approved" for ever. The served demo (`manage.py demo`) starts this thread before serving; another
embedded server must call `start_embedded_beat()` itself (a plain `runserver` does not).

Tasks run one after the other in this thread, in schedule order, each when its interval has passed
(the first round at start-up); a long task (an unlearning job started by a dispatch) delays the next
ticks, which is what a single embedded worker would do too. A task that raises is logged and retried
at its next interval; the thread never dies of it. Database connections are closed after each run
so the thread never holds one across a tick.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

logger = logging.getLogger(__name__)


def interval_seconds(entry: Mapping[str, Any]) -> float:
    """A beat entry's interval in seconds (a number or a timedelta-like schedule)."""
    schedule = entry["schedule"]
    seconds = schedule.total_seconds() if hasattr(schedule, "total_seconds") else float(schedule)
    if seconds <= 0:
        raise ValueError(f"beat entry {entry.get('task')!r}: the schedule must be a positive number of seconds")
    return seconds


class EmbeddedBeat:
    """Run each entry of `schedule` (name -> {"task": name, "schedule": seconds}) through `run`."""

    def __init__(self, schedule: Mapping[str, Mapping[str, Any]], run: Callable[[str], object], *, poll_s: float = 1.0) -> None:
        self._entries = [(name, str(entry["task"]), interval_seconds(entry)) for name, entry in schedule.items()]
        self._run = run
        self._poll_s = poll_s
        self._next: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.runs: dict[str, int] = {name: 0 for name, _task, _interval in self._entries}

    def tick(self, now: float) -> list[str]:
        """Run every entry that is due at `now`; return their names."""
        ran = []
        for name, task, interval in self._entries:
            if now < self._next.get(name, float("-inf")):
                continue
            self._next[name] = now + interval
            try:
                self._run(task)
            except Exception:  # noqa: BLE001 - one failing task must not stop the others or the thread
                logger.exception("embedded beat: %s failed; it runs again in %.0f s", task, interval)
            finally:
                _close_connections()
            self.runs[name] += 1
            ran.append(name)
        return ran

    def start(self) -> EmbeddedBeat:
        self._thread = threading.Thread(target=self._loop, name="embedded-beat", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.tick(time.monotonic())
            self._stop.wait(self._poll_s)


def _close_connections() -> None:
    from django.db import connections

    connections.close_all()


def start_embedded_beat() -> EmbeddedBeat | None:
    """Start the thread when tasks run in-process (no broker); with a broker, `celery beat` does this."""
    from django.conf import settings

    from compliance.common.tasks import send_now

    if not settings.CELERY_TASK_ALWAYS_EAGER:
        return None
    beat = EmbeddedBeat(settings.CELERY_BEAT_SCHEDULE, lambda task: send_now(task)).start()
    logger.info("embedded beat started: %s", ", ".join(str(e["task"]) for e in settings.CELERY_BEAT_SCHEDULE.values()))
    return beat
