"""Faults on real components while a job runs on a real Celery worker: the broker and result backend
(Redis) restarted, the worker's PostgreSQL connections dropped (mid-run and inside a state
transition), and a full disk under the model versions.

Whatever happens, afterwards: the job ended in a definite state (succeeded, or failed with a cause),
its requests are not lost, no model version exists for a partial directory (and no directory exists
for an unregistered version), the base version's tree still hashes to its registered digest and the
audit log verifies. Every test here uses a private redis-server (see `broker_url` below), so it can
be killed without touching the machine-wide one other tests share.
"""

from __future__ import annotations

import gc
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from compliance.audit.models import AuditLeaf
from compliance.audit.services import leaf_document
from compliance.audit.verify import audit_verify
from compliance.demo.registration import register_demo
from compliance.erasure.models import ErasureRequest, Status
from compliance.jobs import dispatch as job_dispatch
from compliance.jobs.models import JobStatus, UnlearningJob
from compliance.registry import artifacts
from compliance.registry.models import AIModel, ModelVersion
from tests import factories
from tests.integration.conftest import DEMO_CONFIG, Worker, beat_until, wait_for
from tests.integration.test_worker import (
    LONG_RUN,
    approve_person,
    dispatch_now,
    ensure_roles,
    finished,
    job_row,
)

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

DEMO_MODEL = "demo-model"  # register_demo's default name
# 60 steps that cannot stop early: long enough for a fault injected at step 10 to land mid-run. The job
# row shows a step at most once a second (runtime._PROGRESS_MIN_INTERVAL_S) and, with one torch thread, a
# step of this model takes well under 0.1 s on an idle core: 30 steps let a job finish before the fault.
FAULT_RUN = LONG_RUN | {"max_steps": 60, "min_steps": 60}


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


# --- a private Redis -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class RedisServer:
    """A redis-server of our own, without persistence (a restart loses every message, as a crashed
    broker without AOF would), on a fixed port so that a restart is reachable at the same URL."""

    workdir: Path
    port: int = field(default_factory=_free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--logfile", str(self.workdir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        wait_for(lambda: _pings(client), timeout=10, what=f"redis-server on port {self.port}")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no save, connections reset."""
        # Collect this process's garbage AsyncResults first, while the server is still up: their
        # finalisers unsubscribe from the result backend and would fail noisily against a dead one.
        gc.collect()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None


def _pings(client: Any) -> bool:
    try:
        return bool(client.ping())
    except Exception:  # noqa: BLE001  (not up yet)
        return False


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (the fault tests start a private one)")
    server = RedisServer(workdir=tmp_path)
    server.start()
    yield server
    server.kill()


@pytest.fixture
def broker_url(redis_server: RedisServer) -> str:
    """Overrides conftest.broker_url: this module's broker and result backend are the private server."""
    return redis_server.url


# --- the demo model under a per-test artifact root -------------------------------------------------


@pytest.fixture
def artifact_root(settings: Any, tmp_path: Path) -> Path:
    """A fresh ARTIFACT_ROOT per test (set before the worker starts: it inherits it), so that the
    model directory holds exactly this test's versions."""
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    return Path(settings.ARTIFACT_ROOT)


def register(demo_model_dir: Path) -> tuple[ModelVersion, Any, Any]:
    """(base version, corpus version, demo corpus): the tiny demo model, registered."""
    from unlearning_worker.demo.trainer import DemoModelConfig

    ensure_roles()
    config = DemoModelConfig(**DEMO_CONFIG)
    registration = register_demo(config=config, model_name=DEMO_MODEL, cache_dir=demo_model_dir.parent, retain_people=4)
    return registration.model_version, registration.corpus_version, config.corpus()


# --- invariants ------------------------------------------------------------------------------------


def assert_invariants(base: ModelVersion, requests: Iterable[ErasureRequest]) -> None:
    """What must hold after any fault (see module doc)."""
    model = AIModel.objects.get(pk=base.model_id)
    versions = list(ModelVersion.objects.filter(model=model))
    on_disk = {p.name for p in (artifacts.artifact_root() / "models" / model.name).iterdir()}
    assert on_disk == {Path(v.path).name for v in versions}, "a partial or unregistered model directory was left"
    for version in versions:
        artifacts.verify_tree(Path(version.path), version.sha256)  # every registered version is complete
    base.refresh_from_db()
    artifacts.verify_tree(Path(base.path), base.sha256)  # the base was never written to
    for request in requests:
        request.refresh_from_db()
        jobs = list(request.jobs.all())
        # Not lost: still being worked on by an active job, awaiting sign-off after a succeeded one,
        # or waiting for the officer's decision after a job that failed for good.
        assert jobs, "the request lost its job"
        if any(j.status in (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.VERIFYING) for j in jobs):
            assert request.status == Status.UNLEARNING
        elif any(j.status == JobStatus.SUCCEEDED for j in jobs):
            assert request.status == Status.VERIFYING
        elif any(j.escalated for j in jobs):
            assert request.status == Status.NEEDS_DECISION
        else:  # cancelled
            assert request.status == Status.APPROVED
    report = audit_verify()
    assert report.ok and report.leaves > 0, report.problems[:5]


def job_past_step_10(
    settings: Any, demo_model_dir: Path, start_worker: Callable[..., Worker], *, person: int
) -> tuple[ModelVersion, ErasureRequest, UnlearningJob, Worker]:
    """A registered demo model, one approved person, their job running on a fresh worker past step 10."""
    settings.UNLEARNING_SPEC_DEFAULTS = FAULT_RUN
    base, corpus_version, corpus = register(demo_model_dir)
    worker = start_worker()
    request = approve_person(corpus.people[person], corpus, corpus_version, factories.user("officer"))
    job = dispatch_now()[0]
    wait_for(lambda: job_row(job).step >= 10, timeout=400, stall=120, what="the job to pass step 10", worker=worker)
    return base, request, job, worker


def audit_events() -> list[str]:
    return [leaf_document(leaf)["type"] for leaf in AuditLeaf.objects.order_by("seq")]


# --- 1. Redis ----------------------------------------------------------------------------------------


def test_a_broker_restart_mid_job_loses_no_job_and_no_request(
    artifact_root: Path, demo_model_dir: Path, start_worker: Any, redis_server: RedisServer, settings: Any
) -> None:
    """Redis (broker and result backend) is killed at step 10 and stays down until the unlearning
    phase has ended, so the hand-over to verification (a new task message) meets a dead broker; it
    comes back empty (no persistence). The job must still finish: the worker reconnects, the lost
    verification message is re-sent by reconcile."""
    base, request, job, worker = job_past_step_10(settings, demo_model_dir, start_worker, person=0)

    redis_server.kill()
    try:
        wait_for(lambda: job_row(job).status != JobStatus.RUNNING, timeout=120,
                 what="the unlearning phase to end while the broker is down", worker=worker)
        time.sleep(3.0)  # longer than kombu's publish retries (3 x 0.2 s): the hand-over's send fails
    finally:
        redis_server.start()  # same port, empty

    done = beat_until(lambda: finished(job), timeout=180, what="the job to finish after the restart", worker=worker)
    assert done.status == JobStatus.SUCCEEDED, (done.error, worker.tail())
    assert done.result_version.status == ModelVersion.Status.ACTIVE and done.reports.count() == 1
    assert ModelVersion.objects.filter(model=base.model).count() == 2
    assert_invariants(base, [request])
    assert request.status == Status.VERIFYING
    # The hand-over met the dead broker: the verification message was lost and re-sent by reconcile.
    assert "job.requeued" in audit_events()


# --- 2. PostgreSQL -------------------------------------------------------------------------------------


def terminate_backends(*, keep: Iterable[int] = ()) -> int:
    """pg_terminate_backend on every client connection to the test database but this process's own
    (and `keep`): the worker's main thread and heartbeat thread lose theirs. Returns how many."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database()"
            " AND backend_type = 'client backend' AND pid <> pg_backend_pid() AND NOT (pid = ANY(%s))",
            [list(keep)],
        )
        return int(cursor.fetchone()[0])


def lock_waiters(table: str, *, keep: Iterable[int]) -> list[int]:
    """Backends of the test database waiting for a row lock in a query on `table`."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            " AND pid <> pg_backend_pid() AND NOT (pid = ANY(%s)) AND position(%s in query) > 0",
            [list(keep), table],
        )
        return [int(row[0]) for row in cursor.fetchall()]


def test_dropped_database_connections_mid_run_and_mid_transition_do_not_lose_the_job(
    artifact_root: Path, demo_model_dir: Path, start_worker: Any, settings: Any
) -> None:
    """First every worker connection is terminated mid-run (step 10); then, when the worker registers
    the candidate version (job row locked, model row awaited: inside the running -> verifying
    transition), its connections are terminated again, which rolls that transaction back. The worker
    must reconnect and carry on by itself: the job succeeds without a requeue."""
    import psycopg
    import psycopg.sql

    base, request, job, worker = job_past_step_10(settings, demo_model_dir, start_worker, person=1)

    assert terminate_backends() >= 2  # the task's connection and the heartbeat thread's

    # Hold the model row from a side connection: the worker's transition blocks on it, holding the job row.
    db = connection.settings_dict
    locker = psycopg.connect(dbname=db["NAME"], user=db["USER"], host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432)
    try:
        table = psycopg.sql.Identifier(AIModel._meta.db_table)
        locker.execute(psycopg.sql.SQL("SELECT id FROM {} WHERE id = %s FOR UPDATE").format(table), [base.model_id])
        keep = [locker.info.backend_pid]

        def waiting() -> list[int]:
            row = job_row(job)
            assert row.status == JobStatus.RUNNING, f"the job left running without its transition: {row.status} {row.error}"
            return lock_waiters(AIModel._meta.db_table, keep=keep)

        # the 20 steps left run first: on a loaded CI machine they took over 120 s (5 s a step), so
        # wait while the job makes progress, as job_past_step_10 does
        beat_until(waiting, timeout=400, stall=120, what="the worker to wait inside the transition", worker=worker)
        assert terminate_backends(keep=keep) >= 1
    finally:
        locker.rollback()
        locker.close()

    done = beat_until(lambda: finished(job), timeout=180, what="the job to finish", worker=worker)
    assert done.status == JobStatus.SUCCEEDED, (done.error, worker.tail())
    events = audit_events()
    assert "job.requeued" not in events, "the worker did not recover: reconcile had to requeue the job"
    assert events.count("job.claimed") == 2  # unlearning once, verification once
    assert events.count("registry.model_candidate") == 1  # the rolled-back registration left no trace
    assert ModelVersion.objects.filter(model=base.model).count() == 2
    assert_invariants(base, [request])
    assert "hand-over to verification: database connection lost" in worker.log.read_text(errors="replace")


# --- 3. full disk ----------------------------------------------------------------------------------------


@pytest.fixture
def small_models_fs(artifact_root: Path, demo_model_dir: Path) -> Iterator[Path]:
    """A tmpfs mounted as the models folder of the demo model, big enough for the base version and a
    quarter more: the new version cannot be written. Unmounted in teardown, whatever happened."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    mount_point = artifact_root / "models" / DEMO_MODEL
    mount_point.mkdir(parents=True)
    pages = (artifacts.tree_bytes(demo_model_dir) * 5 // 4) // 4096 + 16  # + a page per file and the directories
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={pages * 4}k", "tmpfs", str(mount_point)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"mount is not permitted here: {mounted.stderr.strip()[:200]}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, check=False)  # still busy: detach


def test_a_full_disk_while_writing_the_new_version_fails_the_job_with_the_cause_and_keeps_the_request(
    small_models_fs: Path, demo_model_dir: Path, start_worker: Any, settings: Any
) -> None:
    settings.UNLEARNING_SPEC_DEFAULTS = LONG_RUN | {"max_steps": 10, "min_steps": 10}
    base, corpus_version, corpus = register(demo_model_dir)
    assert Path(base.path).parent == small_models_fs
    worker = start_worker()
    officer = factories.user("officer")
    person = corpus.people[2]
    request = approve_person(person, corpus, corpus_version, officer)
    job = dispatch_now()[0]

    done = wait_for(lambda: finished(job), timeout=600, stall=120, what="the job to fail", worker=worker)
    assert done.status == JobStatus.FAILED and done.escalated, (done.status, done.error)
    assert done.step == 10  # every step ran: the fault hit the writing of the new version
    assert "ENOSPC" in done.error and "no space" in done.error.lower(), done.error
    for value in (person.name, person.email, person.phone):
        assert value not in done.error and value not in done.log_tail
    assert done.result_version is None and ModelVersion.objects.filter(model=base.model).count() == 1
    checkpoints = artifacts.artifact_root() / "checkpoints" / str(job.id)
    wait_for(lambda: not checkpoints.exists(), timeout=10, what="the failed job's checkpoints to be removed", worker=worker)
    assert_invariants(base, [request])
    assert request.status == Status.NEEDS_DECISION

    # Not lost: once there is room again, an officer's retry finishes the request.
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_models_fs)], check=True)
    retry = job_dispatch.job_retry(job=done, officer=officer)
    finished_retry = wait_for(lambda: finished(retry), timeout=600, stall=120, what="the retry to finish", worker=worker)
    assert finished_retry.status == JobStatus.SUCCEEDED, (finished_retry.error, worker.tail())
    assert_invariants(base, [request])
