"""The worker's side of a running job: its database writes, heartbeat, progress and error reports.

Everything a task needs around the engine, and nothing about what the job computes:
    db_retry        retry a safe-to-repeat write whose connection was dropped
    Heartbeat       beats the job's heartbeat from a side thread; notices a lost claim or a cancel
    ProgressSink    engine progress -> the job row (throttled) and a progress bar in the log
    safe_error      what may be stored about a failure (no PII)
Django and the ORM are used here; torch is not.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, is_dataclass
from typing import Any, TypeVar

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection

from compliance.jobs import services as job_services
from compliance.jobs.models import UnlearningJob
from compliance.registry import artifacts

logger = logging.getLogger(__name__)

_PROGRESS_MIN_INTERVAL_S = 1.0
_CANCEL_POLL_S = 0.25
_EVAL_PHASES = ("before", "eval", "repair_eval", "done")

# Waits between attempts of a worker-side database write whose connection was dropped: about 3.5 s
# in all, enough for a connection killed by an administrator or a quick restart; a longer outage
# fails the write (the task fails, or reconcile requeues the job once the database is back).
DB_RETRY_WAITS_S = (0.5, 1.0, 2.0)

T = TypeVar("T")


def db_retry(fn: Callable[[], T], *, what: str, waits: Sequence[float] = DB_RETRY_WAITS_S) -> T:
    """Run `fn`; when the database connection was dropped or refused, drop this thread's connection
    and try again after each of `waits`, then raise.

    Django never reconnects by itself inside a task (the health check runs once per task), so
    without this a connection killed mid-run fails a job that ran for hours. Only calls that are
    safe to repeat are wrapped: worker-side writes are conditional on the claim token (a write
    whose commit did land makes the repeat a no-op), reads are reads. Never inside a transaction:
    a transaction cannot survive its connection, so the whole call is retried instead.
    """
    for wait in (*waits, None):
        try:
            return fn()
        except (OperationalError, InterfaceError) as exc:
            if connection.in_atomic_block:
                raise
            with contextlib.suppress(Exception):
                connection.close()  # the next query opens a new connection
            if wait is None:
                raise
            logger.warning("%s: database connection lost (%s); retrying in %.1fs", what, type(exc).__name__, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


def worker_name() -> str:
    return socket.gethostname()


def device() -> str:
    from compliance.registry.sharding import training_device

    return training_device()


def safe_error(exc: BaseException) -> str:
    """What may be stored about a failure: our own exceptions' messages hold no PII by convention;
    anything else (a tokenizer or model error could quote its input) is reduced to its class name,
    plus, for an operating-system error, its errno name and text (fixed strings, never a path)."""
    own = (job_services.JobError, artifacts.ArtifactError)
    if isinstance(exc, SoftTimeLimitExceeded):
        return "time limit exceeded (JOB_SOFT_TIME_LIMIT_S)"
    if disk_full(exc):
        # The one failure an operator must act on outside the product: say so plainly.
        return f"ENOSPC: no space left on device while writing artifacts ({type(exc).__name__})"
    if isinstance(exc, own):
        return f"{type(exc).__name__}: {exc}"[:500]
    code = exc.errno if isinstance(exc, OSError) else None
    if code is not None and code in errno.errorcode:
        return f"{type(exc).__name__}: {errno.errorcode[code]} ({os.strerror(code)})"
    return type(exc).__name__


_NO_SPACE_MARKERS = (f"os error {errno.ENOSPC}", os.strerror(errno.ENOSPC))


def disk_full(exc: BaseException) -> bool:
    """A full disk anywhere in the exception chain: an OSError with ENOSPC, or a library error that
    wraps one in its message (safetensors: "I/O error: No space left on device (os error 28)").
    The message is only searched for those markers, never stored."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno == errno.ENOSPC:
            return True
        text = str(current)
        if any(marker in text for marker in _NO_SPACE_MARKERS):
            return True
        current = current.__cause__ or current.__context__
    return False


class Heartbeat(threading.Thread):
    """Beats the job's heartbeat from a side thread, so a long step or evaluation never looks like a
    dead worker; remembers whether the claim was lost or a cancellation requested."""

    def __init__(self, claim: job_services.Claim, interval_s: float) -> None:
        super().__init__(name=f"heartbeat-{claim.job_id}", daemon=True)
        self.claim = claim
        self.interval_s = interval_s
        self.stopped = threading.Event()
        self.lost = False
        self.cancel = False

    def run(self) -> None:
        try:
            while not self.stopped.wait(self.interval_s):
                try:
                    signal = job_services.job_heartbeat(claim=self.claim)
                except Exception as exc:  # noqa: BLE001  (a database hiccup: try again next beat)
                    logger.warning("job %s: heartbeat failed (%s)", self.claim.job_id, type(exc).__name__)
                    # A dropped connection stays broken until closed: reconnect on the next beat,
                    # or the job would look dead (and be requeued) while the worker runs on.
                    with contextlib.suppress(Exception):
                        connection.close()
                    continue
                self.lost = self.lost or not signal.held
                self.cancel = self.cancel or signal.cancel
        finally:
            connection.close()

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=5)


def heartbeat_interval() -> float:
    return max(1.0, min(30.0, settings.JOB_HEARTBEAT_TIMEOUT_S / 5))


def _event_dict(event: Any) -> dict[str, Any]:
    if isinstance(event, dict):
        return dict(event)
    if is_dataclass(event) and not isinstance(event, type):
        return asdict(event)
    return {k: v for k, v in vars(event).items() if not k.startswith("_")} if hasattr(event, "__dict__") else {}


class ProgressSink:
    """Engine progress -> job row (throttled; every evaluation is written) and a tqdm bar in the log."""

    def __init__(self, claim: job_services.Claim, heartbeat: Heartbeat, device: str, *, label: str = "") -> None:
        self.claim = claim
        self.heartbeat = heartbeat
        self.device = device
        self.label = label or f"job {str(claim.job_id)[:8]}"
        self.cancel = False
        self.lost = False
        self._last_write = 0.0
        self._last_poll = 0.0
        self.last_step: int | None = None
        self._bar: Any = None

    def __call__(self, event: Any) -> None:
        data = _event_dict(event)
        step = data.get("step")
        total = data.get("total_steps") or data.get("max_steps")
        if self._bar is None and total:
            from tqdm import tqdm

            self._bar = tqdm(total=int(total), desc=self.label, file=sys.__stderr__, mininterval=2.0)
        if step is not None:
            self.last_step = int(step)
        if self._bar is not None and step is not None:
            self._bar.update(max(0, int(step) - self._bar.n))
        forget = _float(data.get("forget_extraction"))
        # The engine measures evidence before the first step, every eval_every steps and at the end;
        # "step" events repeat the latest measured value. Evaluations are always written (the
        # history and the live rate), steps at most once per _PROGRESS_MIN_INTERVAL_S.
        phase = str(data.get("phase") or "step")
        evaluation = phase in _EVAL_PHASES and forget is not None
        now = time.monotonic()
        if not evaluation and phase not in ("prepare", "saving", "backoff") and now - self._last_write < _PROGRESS_MIN_INTERVAL_S:
            return
        self._last_write = now
        losses = data.get("losses")
        if losses is None and data.get("loss") is not None:
            losses = {"loss": data["loss"]}
        # retain_exact (share of retain values the model still gives verbatim) is the utility side of
        # the trade-off; it is what the job row and the plots call the retain extraction rate.
        retain = data.get("retain_extraction", data.get("retain_exact"))
        history = None
        line = ""
        if phase == "backoff":  # before the evaluation branch: it carries the rolled-back-to point's figures
            line = (f"backoff at step {int(step or 0)}: utility below the floor; rolled back to step "
                    f"{int(data.get('rolled_back_to') or 0)}, learning rate now {float(data.get('lr') or 0.0):.3g}")
        elif evaluation and forget is not None:
            history = {
                "t": round(time.time(), 3),  # wall clock: lets the portal (and tests) time evaluation intervals
                "step": int(step or 0),
                "forget_extraction": forget,
                "retain_extraction": _float(retain),
                "retain_ppl": _float(data.get("retain_ppl")),
            }
            line = f"{phase} step {int(step or 0)}: forget extraction {forget:.3f}"
            if retain is not None:
                line += f", retain exact {float(retain):.3f}"
            if data.get("retain_ppl") is not None:
                line += f", retain ppl {float(data['retain_ppl']):.2f}"
        elif phase in ("prepare", "saving"):
            line = phase
            seconds = data.get("phase_seconds") or {}
            if seconds:  # where the run's time went (the engine's PhaseClock)
                line += " · seconds by phase: " + ", ".join(
                    f"{name} {float(s):.1f}" for name, s in seconds.items() if isinstance(s, int | float))
        try:
            # Best effort: an evaluation (a history point) is retried, a mere step is not; a write
            # that still fails is skipped (the heartbeat thread, not progress, tells liveness).
            signal = db_retry(
                lambda: job_services.job_progress_record(
                    claim=self.claim,
                    phase=phase,
                    step=int(step) if step is not None else None,
                    total_steps=int(total) if total else None,
                    losses={k: float(v) for k, v in (losses or {}).items() if isinstance(v, int | float)} or None,
                    forget_extraction=forget,
                    retain_extraction=_float(retain),
                    history_point=history,
                    log_line=line,
                    device=self.device,
                ),
                what=f"job {self.claim.job_id}: progress",
                waits=DB_RETRY_WAITS_S if evaluation else (),
            )
        except (OperationalError, InterfaceError):
            logger.warning("job %s: progress not recorded (database unavailable)", self.claim.job_id)
            return
        self.cancel = self.cancel or signal.cancel
        self.lost = self.lost or not signal.held

    def should_cancel(self) -> bool:
        """Called by the engine between steps. Reads the row at most every _CANCEL_POLL_S, so a
        cancellation lands within a step or two, far inside one evaluation interval."""
        now = time.monotonic()
        if not (self.cancel or self.lost) and now - self._last_poll >= _CANCEL_POLL_S:
            self._last_poll = now
            try:
                row = db_retry(
                    lambda: UnlearningJob.objects.filter(pk=self.claim.job_id)
                    .values_list("claim_token", "cancel_requested")
                    .first(),
                    what=f"job {self.claim.job_id}: cancellation poll",
                    waits=(),
                )
            except (OperationalError, InterfaceError):  # reconnects at the next poll
                logger.warning("job %s: cancellation poll failed (database unavailable)", self.claim.job_id)
            else:
                self.lost = row is None or row[0] != self.claim.token
                self.cancel = bool(row and row[1])
        return self.cancel or self.lost or self.heartbeat.cancel or self.heartbeat.lost

    def close(self) -> None:
        """End the progress bar (idempotent). Called when the engine is done, before the hand-over to
        verification: in-process, the verification (and a stronger retry) runs inside that hand-over,
        and an open bar would sit above theirs."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
