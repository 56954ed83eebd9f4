"""Batching approved requests into jobs (jobs_dispatch)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from compliance.erasure.models import Status
from compliance.jobs.dispatch import jobs_dispatch
from compliance.jobs.models import JobStatus, UnlearningJob
from compliance.registry import services as registry_services
from compliance.registry.models import ModelVersion
from tests import factories

pytestmark = pytest.mark.django_db


def later(seconds: float = 3600) -> Any:
    return timezone.now() + timedelta(seconds=seconds)


def test_two_requests_approved_together_end_up_in_one_job(model_version: ModelVersion, approved: Any, settings: Any) -> None:
    settings.JOB_BATCH_WAIT_S = 30
    first, second = approved(1), approved(2)

    assert jobs_dispatch().created == []  # the batch window is still open
    result = jobs_dispatch(now=later())

    assert len(result.created) == 1
    job = result.created[0]
    assert set(job.requests.all()) == {first, second}
    assert job.base_version == model_version and job.status == JobStatus.QUEUED
    for request in (first, second):
        request.refresh_from_db()
        assert request.status == Status.UNLEARNING


def test_request_arriving_after_the_job_started_waits_for_the_next_job_and_its_new_base(
    model_version: ModelVersion, approved: Any, tmp_path: Any
) -> None:
    from tests.jobs.conftest import write_model_dir

    approved(1)
    job = jobs_dispatch(now=later()).created[0]
    third = approved(3)

    assert jobs_dispatch(now=later(7200)).created == []  # one active job per model
    third.refresh_from_db()
    assert third.status == Status.APPROVED

    # The first job's result becomes the active version; then the next batch starts from it.
    new_dir = registry_services.artifacts.model_version_dir("assistant", 99)
    with registry_services.artifacts.atomic_directory(new_dir) as tmp:
        write_model_dir(tmp, seed=7)
    candidate = registry_services.model_version_register_candidate(
        model=model_version.model, parent=model_version, path=new_dir, sha256=registry_services.artifacts.tree_sha256(new_dir)
    )
    registry_services.model_version_activate(version=candidate, quarantine_previous=True)
    UnlearningJob.objects.filter(pk=job.pk).update(status=JobStatus.SUCCEEDED)

    next_job = jobs_dispatch(now=later(7200)).created[0]
    assert list(next_job.requests.all()) == [third]
    assert next_job.base_version == candidate


def test_a_full_batch_starts_without_waiting_and_the_rest_wait(model_version: ModelVersion, approved: Any, settings: Any) -> None:
    settings.JOB_BATCH_MAX_REQUESTS = 2
    requests = [approved(i) for i in range(3)]

    job = jobs_dispatch().created[0]

    assert job.requests.count() == 2
    assert set(job.requests.all()) == set(requests[:2])  # oldest decisions first


def test_requests_without_located_records_or_out_of_scope_are_not_batched(
    model_version: ModelVersion, officer: Any
) -> None:
    factories.request_in("approved", officer=officer)  # nothing located

    assert jobs_dispatch(now=later()).created == []
    assert UnlearningJob.objects.count() == 0


def test_dispatch_never_batches_a_request_twice_for_one_model(model_version: ModelVersion, approved: Any) -> None:
    approved(1)
    job = jobs_dispatch(now=later()).created[0]
    UnlearningJob.objects.filter(pk=job.pk).update(status=JobStatus.FAILED)

    assert jobs_dispatch(now=later(7200)).created == []
