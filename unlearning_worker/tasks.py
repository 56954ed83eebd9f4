"""Celery tasks of the GPU workers: the only worker-side module that touches Django and the ORM.

    unlearning.run_job(job_id)    claim -> forget set (decrypted here only) -> run_unlearning ->
                                  corpus erasure -> candidate version -> hand over to verification
    verification.run_job(job_id)  claim -> attacks on the candidate and its base -> plots -> verdict

Both are routed to the `gpu` queue (settings.CELERY_TASK_ROUTES, by name prefix), take ids only and
return ids and codes only: no personal data ever enters a message or the result backend. Both are
`acks_late`: a message redelivered after a crash reruns the task, which is safe because the claim is a
conditional UPDATE (a job already held, finished or cancelled claims nothing), the engine writes its
output directory atomically and resumes from its checkpoints, and a finished output is registered
rather than recomputed. A worker killed outright is caught by `jobs.reconcile` (stale heartbeat).
A dropped database connection (a restart, a failover, pg_terminate_backend) does not fail the job:
the worker's writes reconnect and retry (`_db_retry`; each is conditional on the claim, so safe to
repeat), progress is best effort, and the heartbeat thread reconnects on its next beat.
torch and transformers are imported inside the task bodies, so the web process never loads them.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connection

from compliance.jobs import services as job_services
from compliance.jobs.models import UnlearningJob
from compliance.registry import artifacts
from compliance.registry.erasure import corpus_erase
from compliance.registry.models import CorpusVersion, ForgetItem
from compliance.registry.selectors import EXACT_METHOD

logger = logging.getLogger(__name__)

# Presidio entity types (and the scanner's subject kinds) -> the attribute names the engine and the
# verifier use for values ("phone", "ssn", ...). Unknown types keep their own lower-cased name.
ENTITY_ATTRIBUTE = {
    "PERSON": "name",
    "EMAIL_ADDRESS": "email",
    "PHONE_NUMBER": "phone",
    "US_SSN": "ssn",
    "DATE_OF_BIRTH": "date_of_birth",
    "ZIP_CODE": "zip_code",
    "STREET_ADDRESS": "address",
    "PASSPORT": "passport",
    "US_PASSPORT": "passport",
    "DRIVER_LICENSE": "driver_licence",
    "US_DRIVER_LICENSE": "driver_licence",
    "MEDICAL_RECORD_NUMBER": "medical_record",
    "CREDIT_CARD": "credit_card",
    "IBAN_CODE": "bank_account",
    "US_BANK_NUMBER": "bank_account",
    "GENDER": "gender",
    "SUBJECT_IDENTIFIER": "identifier",
    "LOCATION": "region",
}
_PROGRESS_MIN_INTERVAL_S = 1.0
_CANCEL_POLL_S = 0.25
_EVAL_PHASES = ("before", "eval", "repair_eval", "done")

# Waits between attempts of a worker-side database write whose connection was dropped: about 3.5 s
# in all, enough for a connection killed by an administrator or a quick restart; a longer outage
# fails the write (the task fails, or reconcile requeues the job once the database is back).
_DB_RETRY_WAITS_S = (0.5, 1.0, 2.0)

# job id -> claim token held by this process, so that on_failure fails only a job it still holds.
_held_claims: dict[str, job_services.Claim] = {}

T = TypeVar("T")


def _db_retry(fn: Callable[[], T], *, what: str, waits: Sequence[float] = _DB_RETRY_WAITS_S) -> T:
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


def _worker_name() -> str:
    return socket.gethostname()


def _device() -> str:
    from unlearning_worker.sharding import training_device

    return training_device()


def _safe_error(exc: BaseException) -> str:
    """What may be stored about a failure: our own exceptions' messages hold no PII by convention;
    anything else (a tokenizer or model error could quote its input) is reduced to its class name,
    plus, for an operating-system error, its errno name and text (fixed strings, never a path)."""
    own = (job_services.JobError, artifacts.ArtifactError)
    if isinstance(exc, SoftTimeLimitExceeded):
        return "time limit exceeded (JOB_SOFT_TIME_LIMIT_S)"
    if _disk_full(exc):
        # The one failure an operator must act on outside the product: say so plainly.
        return f"ENOSPC: no space left on device while writing artifacts ({type(exc).__name__})"
    if isinstance(exc, own):
        return f"{type(exc).__name__}: {exc}"[:500]
    code = exc.errno if isinstance(exc, OSError) else None
    if code is not None and code in errno.errorcode:
        return f"{type(exc).__name__}: {errno.errorcode[code]} ({os.strerror(code)})"
    return type(exc).__name__


_NO_SPACE_MARKERS = (f"os error {errno.ENOSPC}", os.strerror(errno.ENOSPC))


def _disk_full(exc: BaseException) -> bool:
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


class JobTask(Task):
    """Marks the job failed when the task raises (the error recorded without PII)."""

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        job_id = str((kwargs or {}).get("job_id", ""))
        claim = _held_claims.pop(job_id, None)
        if not job_id or claim is None:
            return
        try:
            # The failure may be the dropped connection itself: reconnect before recording it.
            failed = _db_retry(
                lambda: job_services.job_fail(job_id=job_id, error=_safe_error(exc), claim_token=claim.token),
                what=f"job {job_id}: recording the failure",
            )
        except Exception:  # noqa: BLE001  (reconcile catches what this misses)
            logger.exception("job %s: could not record the failure", job_id)
            return
        if failed is not None:
            # Failed for good (a retry is a new job with its own checkpoints): free the disk now,
            # which matters most when the failure was a full disk.
            shutil.rmtree(artifacts.artifact_root() / "checkpoints" / job_id, ignore_errors=True)


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


def _heartbeat_interval() -> float:
    return max(1.0, min(30.0, settings.JOB_HEARTBEAT_TIMEOUT_S / 5))


class ClaimLost(Exception):
    """Another worker holds the job now: stop without writing anything."""


# --- data for the engine and the verifier (plaintext lives only in this process's memory) ---------


@dataclass
class SubjectData:
    subject_key: str
    name: str
    values: dict[str, str]
    texts: list[str]


def split_record(text: str, entities: list[dict[str, Any]]) -> tuple[str, str, list[tuple[int, int, str]]]:
    """(prompt, completion, spans in completion) for a located record: the prompt is the context up
    to the first PII value that is not a name (so "Jane Roe's phone is" -> " 555..."), the spans are
    the PII values after it."""
    spans = sorted(
        (int(e["start"]), int(e["end"]), ENTITY_ATTRIBUTE.get(str(e["type"]), str(e["type"]).lower()))
        for e in entities
        if 0 <= int(e["start"]) < int(e["end"]) <= len(text)
    )
    values = [s for s in spans if s[2] != "name"]
    if values:
        cut = values[0][0]
    elif spans:
        cut = spans[0][1]
    else:
        cut = 0
    if cut > 0 and text[cut - 1] == " ":
        cut -= 1  # the space belongs to the value's first token, as in training
    completion_spans = [(s - cut, e - cut, a) for s, e, a in spans if s >= cut]
    return text[:cut], text[cut:], completion_spans


def _subjects_and_items(
    job: UnlearningJob, *, except_corpus: int | None = None
) -> tuple[list[SubjectData], list[Any], list[ForgetItem]]:
    """Decrypt the job's located records and the subjects' identifiers into engine ForgetItems
    (`except_corpus`: leave out the records of that corpus, which the exact path has handled)."""
    from compliance.registry import selectors as registry_selectors
    from unlearning_worker.data import ForgetItem as EngineForgetItem

    corpus_ids = registry_selectors.corpora_of(version=job.base_version) or None
    requests = list(job.requests.select_related("data_key").order_by("received_at"))
    rows = list(registry_selectors.forget_items_for(request_ids=[r.id for r in requests], corpus_ids=corpus_ids))
    if except_corpus is not None:
        rows = [row for row in rows if row.corpus_version.corpus_id != except_corpus]
    by_request: dict[Any, list[ForgetItem]] = {}
    for row in rows:
        by_request.setdefault(row.request_id, []).append(row)
    subjects: list[SubjectData] = []
    forget: list[Any] = []
    for request in requests:
        identifiers = request.identifiers()
        values: dict[str, str] = {}
        texts: list[str] = []
        for row in by_request.get(request.id, []):
            text = row.text()
            if not text:
                continue
            texts.append(text)
            prompt, completion, spans = split_record(text, list(row.entities or []))
            for start, end, attribute in spans:
                if attribute != "name":
                    values.setdefault(attribute, completion[start:end])
            forget.append(
                EngineForgetItem(
                    subject_key=request.subject_ref,
                    prompt=prompt,
                    completion=completion,
                    pii_spans=[(s, e, a) for s, e, a in spans],
                    values={a: completion[s:e] for s, e, a in spans if a != "name"},
                    pri=min(1.0, max(0.0, float(row.pri_score or 0.0))),
                    subject_name=str(identifiers.get("full_name", "")),
                )
            )
        for attribute in ("email", "phone"):
            if identifiers.get(attribute) and attribute not in values:
                values[attribute] = str(identifiers[attribute])
        subjects.append(SubjectData(request.subject_ref, str(identifiers.get("full_name", "")), values, texts))
    return subjects, forget, rows


@dataclass
class EvalSet:
    retain: list[SubjectData]
    holdout_texts: list[str]
    general_texts: list[str]
    # people the model never saw (the never-seen control of the adaptive attacks); None: generated
    controls: list[SubjectData] | None = None


def _eval_set(job: UnlearningJob, subjects: list[SubjectData]) -> EvalSet:
    model = job.model
    if not model.eval_set_path:
        return EvalSet([], [], [])
    path = artifacts.within_root(Path(model.eval_set_path))
    artifacts.verify_tree(path, model.eval_set_sha256)
    document = json.loads((path / "eval-set.json").read_text(encoding="utf-8"))
    forgotten = {s.name.casefold() for s in subjects}
    retain = [
        SubjectData(str(r["key"]), str(r["name"]), {k: str(v) for k, v in r["values"].items()}, list(r.get("texts", [])))
        for r in document.get("retain", [])
        if str(r["name"]).casefold() not in forgotten  # a subject is never part of the retain set
    ]
    controls = [
        SubjectData(str(c["key"]), str(c["name"]), {k: str(v) for k, v in c["values"].items()}, [])
        for c in document.get("controls", [])
        if str(c["name"]).casefold() not in forgotten
    ]
    return EvalSet(retain, list(document.get("holdout_texts", [])), list(document.get("general_texts", [])),
                   controls or None)


def _retain_items(eval_set: EvalSet) -> list[Any]:
    """Retain records for the engine: each retain text split before its first known value."""
    from unlearning_worker.data import RetainItem

    items = []
    for person in eval_set.retain:
        for text in person.texts:
            found = sorted(
                (text.find(value), text.find(value) + len(value), attribute)
                for attribute, value in person.values.items()
                if value and text.find(value) > 0
            )
            if not found:
                continue
            cut = found[0][0]
            if text[cut - 1] == " ":
                cut -= 1
            spans = [(s - cut, e - cut, a) for s, e, a in found if s >= cut]
            items.append(RetainItem(prompt=text[:cut], completion=text[cut:], pii_spans=spans))
    for text in eval_set.general_texts:
        words = text.split(" ")
        if len(words) >= 4:
            head = " ".join(words[: len(words) // 2])
            items.append(RetainItem(prompt=head, completion=text[len(head) :], pii_spans=[]))
    return items


# --- progress ------------------------------------------------------------------------------------


def _event_dict(event: Any) -> dict[str, Any]:
    if isinstance(event, dict):
        return dict(event)
    if is_dataclass(event) and not isinstance(event, type):
        return asdict(event)
    return {k: v for k, v in vars(event).items() if not k.startswith("_")} if hasattr(event, "__dict__") else {}


class ProgressSink:
    """Engine progress -> job row (throttled; every evaluation is written) and a tqdm bar in the log."""

    def __init__(self, claim: job_services.Claim, heartbeat: Heartbeat, device: str) -> None:
        self.claim = claim
        self.heartbeat = heartbeat
        self.device = device
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

            self._bar = tqdm(total=int(total), desc=f"job {str(self.claim.job_id)[:8]}", file=sys.__stderr__, mininterval=2.0)
        if step is not None:
            self.last_step = int(step)
        if self._bar is not None and step is not None:
            self._bar.update(max(0, int(step) - self._bar.n))
        forget = data.get("forget_extraction")
        # The engine measures evidence before the first step, every eval_every steps and at the end;
        # "step" events repeat the latest measured value. Evaluations are always written (the
        # history and the live rate), steps at most once per _PROGRESS_MIN_INTERVAL_S.
        phase = str(data.get("phase") or "step")
        evaluation = phase in _EVAL_PHASES and forget is not None
        now = time.monotonic()
        if not evaluation and phase not in ("prepare", "saving") and now - self._last_write < _PROGRESS_MIN_INTERVAL_S:
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
        if evaluation:
            history = {
                "t": round(time.time(), 3),  # wall clock: lets the portal (and tests) time evaluation intervals
                "step": int(step or 0),
                "forget_extraction": float(forget),
                "retain_extraction": _float(retain),
                "retain_ppl": _float(data.get("retain_ppl")),
            }
            line = f"{phase} step {int(step or 0)}: forget extraction {float(forget):.3f}"
            if retain is not None:
                line += f", retain exact {float(retain):.3f}"
            if data.get("retain_ppl") is not None:
                line += f", retain ppl {float(data['retain_ppl']):.2f}"
        elif phase in ("prepare", "saving"):
            line = phase
        try:
            # Best effort: an evaluation (a history point) is retried, a mere step is not; a write
            # that still fails is skipped (the heartbeat thread, not progress, tells liveness).
            signal = _db_retry(
                lambda: job_services.job_progress_record(
                    claim=self.claim,
                    phase=phase,
                    step=int(step) if step is not None else None,
                    total_steps=int(total) if total else None,
                    losses={k: float(v) for k, v in (losses or {}).items() if isinstance(v, int | float)} or None,
                    forget_extraction=_float(forget),
                    retain_extraction=_float(retain),
                    history_point=history,
                    log_line=line,
                    device=self.device,
                ),
                what=f"job {self.claim.job_id}: progress",
                waits=_DB_RETRY_WAITS_S if evaluation else (),
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
                row = _db_retry(
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
        if self._bar is not None:
            self._bar.close()


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


# --- unlearning ----------------------------------------------------------------------------------


def _candidate_dir(job: UnlearningJob) -> Path:
    return artifacts.artifact_root() / "models" / job.model.name / f"job-{job.id}"


def _checkpoint_dir(job: UnlearningJob) -> Path:
    return artifacts.artifact_root() / "checkpoints" / str(job.id)


def _erase_corpora(job: UnlearningJob, rows: list[ForgetItem]) -> list[CorpusVersion]:
    """One new version per corpus holding the job's records (reused on a rerun of the same job)."""
    existing = {cv.corpus_id: cv for cv in CorpusVersion.objects.filter(created_by_job=job)}
    by_corpus: dict[int, list[ForgetItem]] = {}
    for row in rows:
        by_corpus.setdefault(row.corpus_version.corpus_id, []).append(row)
    out: list[CorpusVersion] = []
    for corpus_id, items in by_corpus.items():
        if corpus_id in existing:
            out.append(existing[corpus_id])
            continue
        version = corpus_erase(corpus=items[0].corpus_version.corpus, items=items, created_by_job=job,
                               actor=f"worker:{_worker_name()}")
        if version is not None:
            out.append(version)
    return out


@shared_task(
    bind=True,
    base=JobTask,
    name="unlearning.run_job",
    queue="gpu",
    acks_late=True,
    soft_time_limit=settings.JOB_SOFT_TIME_LIMIT_S,
    time_limit=settings.JOB_SOFT_TIME_LIMIT_S + 300,
)
def run_unlearning_job(self: Task, *, job_id: str, **kwargs: Any) -> dict[str, Any]:
    """Unlearn the job's subjects from its base version (see module doc). Returns ids and codes only."""
    claim = job_services.job_claim(job_id=job_id, worker=_worker_name(), phase="unlearning", task_id=self.request.id or "")
    if claim is None:
        return {"job_id": job_id, "outcome": "not_claimed"}
    return _run_claimed(job_id, claim, _unlearn)


def _run_claimed(job_id: str, claim: job_services.Claim, body: Callable[[job_services.Claim, Heartbeat], str]) -> dict[str, Any]:
    """Run `body` under a heartbeat. On an exception the claim stays registered for on_failure,
    which fails the job it still holds."""
    _held_claims[job_id] = claim
    heartbeat = Heartbeat(claim, _heartbeat_interval())
    heartbeat.start()
    try:
        outcome = body(claim, heartbeat)
    finally:
        heartbeat.stop()
        close_old_connections()
    _held_claims.pop(job_id, None)
    return {"job_id": job_id, "outcome": outcome}


def _unlearn(claim: job_services.Claim, heartbeat: Heartbeat) -> str:

    job = UnlearningJob.objects.select_related("model", "base_version").get(pk=claim.job_id)
    device = _device()
    sink = ProgressSink(claim, heartbeat, device)
    try:
        return _unlearn_with(job, claim, heartbeat, sink, device)
    finally:
        sink.close()


def _unlearn_with(job: UnlearningJob, claim: job_services.Claim, heartbeat: Heartbeat, sink: ProgressSink, device: str) -> str:
    from unlearning_worker.engine import UnlearningCancelled, run_unlearning
    from unlearning_worker.spec import UnlearningSpec

    sink({"phase": "prepare", "step": 0})
    base_dir = artifacts.within_root(Path(job.base_version.path))
    artifacts.verify_tree(base_dir, job.base_version.sha256)  # never unlearn from a tampered base

    subjects, forget, rows = _subjects_and_items(job)
    if not forget:
        raise job_services.JobError("none of the job's requests has a located record for this model")
    if job.method.startswith(EXACT_METHOD):
        return _exact_with(job, claim, heartbeat, sink, rows, base_dir)
    eval_set = _eval_set(job, subjects)
    retain = _retain_items(eval_set)
    spec = UnlearningSpec.from_dict(job.spec)
    if spec.device == "auto":
        spec = spec.replace(device=device)
    out_dir = _candidate_dir(job)
    checkpoints = _checkpoint_dir(job)
    artifacts.sweep_temporaries(out_dir.parent, older_than_s=0 if not out_dir.exists() else 3600)
    started = time.monotonic()
    if out_dir.exists():
        # A previous attempt finished the engine (its rename is atomic) but died before registering.
        logger.info("job %s: reusing the finished output of an earlier attempt", job.id)
        steps, stop_reason = job.step, job.stop_reason or "resumed"
    else:
        try:
            result = run_unlearning(
                model_dir=base_dir,
                out_dir=out_dir,
                forget=forget,
                retain=retain,
                spec=spec,
                progress=sink,
                should_cancel=sink.should_cancel,
                checkpoint_dir=checkpoints,
            )
        except UnlearningCancelled:
            if sink.lost or heartbeat.lost:
                return "claim_lost"
            _db_retry(lambda: job_services.job_cancelled(claim=claim, step=sink.last_step), what=f"job {job.id}: cancel")
            shutil.rmtree(checkpoints, ignore_errors=True)
            return "cancelled"
        steps = int(getattr(result, "steps", 0) or 0)
        stop_reason = str(getattr(result, "stop_reason", "") or "")
    if sink.lost or heartbeat.lost:
        return "claim_lost"
    sha256 = artifacts.tree_sha256(out_dir)
    # Both safe to repeat: an erased corpus version is reused, the hand-over is conditional on the claim.
    corpus_versions = _db_retry(lambda: _erase_corpora(job, rows), what=f"job {job.id}: corpus erasure")
    finished = _db_retry(
        lambda: job_services.job_unlearning_finished(
            claim=claim, version_path=str(out_dir), sha256=sha256, corpus_versions=corpus_versions,
            stop_reason=stop_reason, steps=steps,
        ),
        what=f"job {job.id}: hand-over to verification",
    )
    if finished is None:
        return "claim_lost"
    shutil.rmtree(checkpoints, ignore_errors=True)
    logger.info("job %s: unlearned in %.1fs (%d steps, %s)", job.id, time.monotonic() - started, steps, stop_reason)
    return "unlearned"


def _exact_with(
    job: UnlearningJob, claim: job_services.Claim, heartbeat: Heartbeat, sink: ProgressSink, rows: list[ForgetItem],
    base_dir: Path,
) -> str:
    """Exact erasure (unlearning_worker.sharding): erase the corpus, retrain the shard adapters that held
    the records, and, where records also sit in other training data ("both"), unlearn those from the
    exact result with the job's approximate spec. The proof is kept beside the output until handed over."""
    from compliance.registry import selectors as registry_selectors
    from unlearning_worker.sharding import exact_erase

    started = time.monotonic()
    out_dir = _candidate_dir(job)
    proof_file = out_dir.parent / f"job-{job.id}.exact-proof.json"
    corpus_versions = _db_retry(lambda: _erase_corpora(job, rows), what=f"job {job.id}: corpus erasure")
    training = registry_selectors.sharded_training(version=job.base_version) or {}
    _, others, _ = _subjects_and_items(job, except_corpus=int(training.get("corpus", 0) or 0))
    if others and training.get("combine") == "route":
        raise job_services.JobError(
            "records also sit in training data outside the sharded fine-tune, and a routed sharded model cannot be "
            "unlearnt approximately: retrain the model without them, or erase them from a merged version"
        )
    exact_dir = out_dir.parent / f"job-{job.id}-exact" if others else out_dir
    if out_dir.exists() and proof_file.exists():
        logger.info("job %s: reusing the finished output of an earlier attempt", job.id)
        saved = json.loads(proof_file.read_text())
        new_training, proof, steps = saved["training"], saved["proof"], int(saved["steps"])
    else:
        for stale in {exact_dir, out_dir}:  # an attempt that died before its proof was saved: redo it
            shutil.rmtree(stale, ignore_errors=True)
        sink({"phase": "exact shard retraining", "step": 0})
        result = exact_erase(base=job.base_version, rows=rows, corpus_versions=corpus_versions, out_dir=exact_dir)
        new_training, proof, steps = result.training, result.proof, result.retrained_slices
        if others:
            steps += _approximate_on(job, claim, sink, exact_dir, out_dir, others)
            shutil.rmtree(exact_dir, ignore_errors=True)
            new_training = {}  # weights moved off the sharded fine-tune: later requests go the approximate way
        artifacts.write_json_atomic(proof_file, {"training": new_training, "proof": proof, "steps": steps})
    if sink.lost or heartbeat.lost:
        return "claim_lost"
    sha256 = artifacts.tree_sha256(out_dir)
    finished = _db_retry(
        lambda: job_services.job_unlearning_finished(
            claim=claim, version_path=str(out_dir), sha256=sha256, corpus_versions=corpus_versions,
            stop_reason=EXACT_METHOD, steps=steps, training=new_training, exact_proof=proof,
        ),
        what=f"job {job.id}: hand-over to verification",
    )
    if finished is None:
        return "claim_lost"
    proof_file.unlink(missing_ok=True)
    logger.info("job %s: exact erasure in %.1fs (%d slices retrained)", job.id, time.monotonic() - started, steps)
    return "unlearned"


def _approximate_on(
    job: UnlearningJob, claim: job_services.Claim, sink: ProgressSink, model_dir: Path, out_dir: Path, forget: list[Any]
) -> int:
    """Approximate unlearning of `forget` from model_dir into out_dir with the job's spec; returns its steps."""
    from unlearning_worker.engine import run_unlearning
    from unlearning_worker.spec import UnlearningSpec

    subjects, _, _ = _subjects_and_items(job)
    spec = UnlearningSpec.from_dict(job.spec)
    if spec.device == "auto":
        spec = spec.replace(device=_device())
    result = run_unlearning(model_dir=model_dir, out_dir=out_dir, forget=forget,
                            retain=_retain_items(_eval_set(job, subjects)), spec=spec, progress=sink,
                            should_cancel=sink.should_cancel, checkpoint_dir=_checkpoint_dir(job))
    shutil.rmtree(_checkpoint_dir(job), ignore_errors=True)
    return int(getattr(result, "steps", 0) or 0)


# --- verification --------------------------------------------------------------------------------


class _Abort(Exception):
    pass


@shared_task(
    bind=True,
    base=JobTask,
    name="verification.run_job",
    queue="gpu",
    acks_late=True,
    soft_time_limit=settings.JOB_SOFT_TIME_LIMIT_S,
    time_limit=settings.JOB_SOFT_TIME_LIMIT_S + 300,
)
def run_verification_job(self: Task, *, job_id: str, **kwargs: Any) -> dict[str, Any]:
    """Attack the job's candidate version and its base; record the report and act on the verdict."""
    claim = job_services.job_claim(job_id=job_id, worker=_worker_name(), phase="verification", task_id=self.request.id or "")
    if claim is None:
        return {"job_id": job_id, "outcome": "not_claimed"}
    return _run_claimed(job_id, claim, _verify)


def _verify(claim: job_services.Claim, heartbeat: Heartbeat) -> str:
    from unlearning_worker.verify import SubjectFacts, VerificationPolicy, render_plots, run_verification

    job = UnlearningJob.objects.select_related("model", "base_version", "result_version").get(pk=claim.job_id)
    if job.result_version is None:
        raise job_services.JobError("the job has no candidate version to verify")
    device = _device()
    candidate = artifacts.within_root(Path(job.result_version.path))
    base = artifacts.within_root(Path(job.base_version.path))
    artifacts.verify_tree(candidate, job.result_version.sha256)
    artifacts.verify_tree(base, job.base_version.sha256)
    subjects, _forget, _rows = _subjects_and_items(job)
    eval_set = _eval_set(job, subjects)
    policy = VerificationPolicy.load(Path(settings.VERIFICATION_POLICY_FILE) if settings.VERIFICATION_POLICY_FILE else None)

    def facts(person: SubjectData) -> Any:
        return SubjectFacts(subject_key=person.subject_key, name=person.name, values=dict(person.values),
                            forget_texts=list(person.texts))

    def progress(stage: str, fraction: float) -> None:
        signal = _db_retry(
            lambda: job_services.job_progress_record(
                claim=claim, phase="verifying", step=int(round(fraction * 100)), total_steps=100,
                log_line=f"verification {stage} done", device=device,
            ),
            what=f"job {job.id}: verification progress",
        )
        if not signal.held or signal.cancel or heartbeat.lost or heartbeat.cancel:
            raise _Abort("lost" if not signal.held or heartbeat.lost else "cancel")

    job_services.job_progress_record(claim=claim, phase="verifying", step=0, total_steps=100,
                                     log_line="verification started", device=device)
    started = time.monotonic()
    try:
        report = run_verification(
            model_dir=candidate, base_model_dir=base,
            subjects=[facts(s) for s in subjects if s.values and s.name],
            retain=[facts(r) for r in eval_set.retain],
            holdout_texts=eval_set.holdout_texts, general_texts=eval_set.general_texts,
            controls=[facts(c) for c in eval_set.controls] if eval_set.controls else None,
            policy=policy, device=device, progress=progress,
        )
    except _Abort as abort:
        if str(abort) == "lost":
            return "claim_lost"
        _db_retry(lambda: job_services.job_cancelled(claim=claim), what=f"job {job.id}: cancel")
        return "cancelled"
    wall_s = time.monotonic() - started
    document = report.to_dict()
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str).encode("utf-8")
    plots_final = artifacts.artifact_root() / "reports" / f"{job.id}-{hashlib.sha256(canonical).hexdigest()[:12]}"
    if not plots_final.exists():
        with artifacts.atomic_directory(plots_final) as tmp:
            render_plots(report, list(job.history or []), tmp)
            (tmp / "report.json").write_bytes(canonical)
    verdict = report.verdict
    recorded = _db_retry(
        lambda: job_services.job_verification_record(
            claim=claim,
            passed=bool(verdict.passed),
            report=json.loads(canonical),
            report_sha256=hashlib.sha256(canonical).hexdigest(),
            policy={"name": policy.name, "sha256": policy.sha256},
            decided_by=list(verdict.decided_by),
            plots_dir=str(plots_final),
            wall_s=wall_s,
        ),
        what=f"job {job.id}: verdict",
    )
    if recorded is None:
        return "claim_lost"
    return "pass" if verdict.passed else "fail"
