"""The embedded set-up's beat: periodic tasks run in-process, so an approved request is dispatched
without a broker or a beat process."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest

from compliance.common.embedded_beat import EmbeddedBeat, start_embedded_beat


def test_each_entry_runs_at_start_and_then_at_its_interval() -> None:
    ran: list[str] = []
    beat = EmbeddedBeat({"a": {"task": "t.a", "schedule": 10}, "b": {"task": "t.b", "schedule": timedelta(seconds=30)}}, ran.append)
    assert beat.tick(100.0) == ["a", "b"]
    assert beat.tick(105.0) == []
    assert beat.tick(110.0) == ["a"]
    assert beat.tick(131.0) == ["a", "b"]
    assert ran == ["t.a", "t.b", "t.a", "t.a", "t.b"]


def test_a_failing_task_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    ran: list[str] = []

    def run(task: str) -> None:
        if task == "t.bad":
            raise RuntimeError("boom")
        ran.append(task)

    beat = EmbeddedBeat({"bad": {"task": "t.bad", "schedule": 5}, "good": {"task": "t.good", "schedule": 5}}, run)
    assert beat.tick(0.0) == ["bad", "good"] and ran == ["t.good"]
    assert "t.bad failed" in caplog.text


def test_a_non_positive_schedule_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        EmbeddedBeat({"x": {"task": "t.x", "schedule": 0}}, print)


def test_with_a_broker_the_thread_is_not_started(settings: Any) -> None:
    settings.CELERY_TASK_ALWAYS_EAGER = False
    assert start_embedded_beat() is None


@pytest.mark.django_db(transaction=True)
def test_an_approved_request_is_dispatched_with_no_manual_tick(settings: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The served demo's stall: approval nudges dispatch while the batch window is open, and only a
    tick after the window closes creates the job. The embedded beat is that tick."""
    import json

    from compliance.erasure.models import Status
    from compliance.jobs.models import UnlearningJob
    from compliance.registry import services as registry_services
    from tests import factories
    from tests.jobs.conftest import corpus_rows, locate, write_model_dir

    settings.CELERY_TASK_ALWAYS_EAGER = True
    settings.JOB_BATCH_WAIT_S = 1
    settings.CELERY_BEAT_SCHEDULE = {"jobs-dispatch": {"task": "jobs.dispatch", "schedule": 0.5}}
    # The job itself is not run here (the model is fake): the unlearning task is recorded, not sent.
    from compliance.common import tasks

    real_send_now = tasks.send_now
    started: list[str] = []
    monkeypatch.setattr(tasks, "send_now", lambda name, **kw: started.append(name) if name.startswith("unlearning.") else real_send_now(name, **kw))
    source = tmp_path / "corpus.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in corpus_rows(3)))
    corpus = registry_services.corpus_register(name="tickets", source=source, id_field="record_id")
    registry_services.model_register(name="assistant", source_dir=write_model_dir(tmp_path / "m"), trained_on=[corpus])
    request = factories.request_in(Status.APPROVED, person=factories.subject(1))
    locate(request, corpus, 1)
    assert not UnlearningJob.objects.exists()  # the window is open: the approval's nudge created nothing

    beat = start_embedded_beat()
    assert beat is not None
    try:
        deadline = time.monotonic() + 20
        while not UnlearningJob.objects.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        beat.stop()
    assert UnlearningJob.objects.filter(requests=request).exists(), beat.runs
    request.refresh_from_db()
    assert request.status == Status.UNLEARNING and "unlearning.run_job" in started
