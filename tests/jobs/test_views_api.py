"""The portal pages and the REST API for jobs: thin faces over the services."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from compliance.jobs.models import JobStatus, UnlearningJob
from tests import factories

pytestmark = pytest.mark.django_db


def portal(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def api(user: Any) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


def test_job_list_and_detail_render_progress_without_javascript(queued_job: UnlearningJob, officer: Any) -> None:
    client = portal(officer)
    listing = client.get(reverse("portal:jobs"))
    detail = client.get(reverse("portal:job", args=[queued_job.id]))

    assert listing.status_code == 200 and str(queued_job.id)[:8] in listing.content.decode()
    body = detail.content.decode()
    assert detail.status_code == 200
    assert 'http-equiv="refresh"' in body and 'id="progress-bar"' in body and 'id="cancel-button"' in body
    progress = client.get(reverse("portal:job_progress", args=[queued_job.id])).json()
    assert progress["status"] == "queued" and progress["percent"] == 0


def test_job_page_states_what_the_verdict_was_measured_against(
    queued_job: UnlearningJob, officer: Any, model_version: Any
) -> None:
    from compliance.jobs.models import VerificationReport

    threat = {
        "families": ["candidate_rank", "relearning"], "retries": 1, "rank_candidates": 999,
        "relearning_settings": ["full:50:1e-3", "lora:100:1e-3"], "quantization_levels": ["int4"],
        "control": {"people": 10, "source": "held-out"}, "never_seen_comparison": {},
        "false_failure_level": {"verdict": 0.05, "attacks": {"candidate_rank": 0.025, "relearning": 0.0125}},
    }  # fmt: skip
    report = VerificationReport.objects.create(
        job=queued_job, model_version=model_version, verdict="pass", policy={"name": "default"},
        report={"threat_model": threat, "verdict": {"checks": []}, "attacks": {}}, report_sha256="0" * 64,
    )  # fmt: skip
    body = portal(officer).get(reverse("portal:job", args=[queued_job.id])).content.decode()
    section = body[body.index('id="threat-model"'):]
    assert "full:50:1e-3, lora:100:1e-3" in section and "int4" in section
    assert "10 people the model never saw, held out from training" in section
    assert "fails this verdict at most 5% of the time by design" in section
    # a report stored before the level was recorded (or a damaged one) shows what is known, no level
    threat.pop("false_failure_level")
    report.report = {"threat_model": threat}
    report.save(update_fields=["report"])
    body = portal(officer).get(reverse("portal:job", args=[queued_job.id])).content.decode()
    assert 'id="threat-model"' in body and "fails this verdict" not in body
    report.report = {"threat_model": "garbage"}
    report.save(update_fields=["report"])
    response = portal(officer).get(reverse("portal:job", args=[queued_job.id]))
    assert response.status_code == 200 and 'id="threat-model"' not in response.content.decode()  # nothing recorded


def test_portal_cancel_and_retry_with_a_bad_method_show_errors(queued_job: UnlearningJob, officer: Any) -> None:
    client = portal(officer)
    client.post(reverse("portal:job_cancel", args=[queued_job.id]))
    queued_job.refresh_from_db()
    assert queued_job.status == JobStatus.CANCELLED

    response = client.post(reverse("portal:job_retry", args=[queued_job.id]), {"method": "nonsense"}, follow=True)

    assert "unknown unlearning method" in response.content.decode()
    assert UnlearningJob.objects.count() == 1


def test_reviewers_see_jobs_but_cannot_cancel(queued_job: UnlearningJob) -> None:
    client = portal(factories.user("reviewer"))
    assert client.get(reverse("portal:job", args=[queued_job.id])).status_code == 200
    assert client.post(reverse("portal:job_cancel", args=[queued_job.id])).status_code == 403
    queued_job.refresh_from_db()
    assert queued_job.status == JobStatus.QUEUED


def test_outsiders_and_unknown_jobs(queued_job: UnlearningJob, officer: Any) -> None:
    assert portal(factories.user(None)).get(reverse("portal:jobs")).status_code == 403
    assert portal(officer).get(reverse("portal:job", args=[uuid.uuid4()])).status_code == 404
    assert portal(officer).get(reverse("portal:job_plot", args=[queued_job.id, "..%2F..%2Fetc%2Fpasswd"])).status_code == 404


def test_api_lists_and_shows_jobs(queued_job: UnlearningJob, officer: Any) -> None:
    client = api(officer)
    listing = client.get("/api/v1/jobs/")
    detail = client.get(f"/api/v1/jobs/{queued_job.id}/")

    assert listing.status_code == 200 and listing.json()["results"][0]["id"] == str(queued_job.id)
    assert detail.status_code == 200 and detail.json()["status"] == "queued" and detail.json()["report"] is None
    assert len(detail.json()["requests"]) == 2


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        ("/api/v1/jobs/{unknown}/cancel/", {}, 404),
        ("/api/v1/jobs/not-a-uuid/", None, 404),
        ("/api/v1/jobs/{job}/retry/", {"method": "npo"}, 409),  # still queued
        ("/api/v1/jobs/{job}/retry/", {"method": "npo", "extra": 1}, 400),  # unknown field
    ],
)
def test_api_bad_inputs_are_problems_and_change_nothing(
    queued_job: UnlearningJob, officer: Any, path: str, body: Any, code: int
) -> None:
    client = api(officer)
    url = path.format(job=queued_job.id, unknown=uuid.uuid4())
    response = client.get(url) if body is None else client.post(url, body, format="json")

    assert response.status_code == code
    assert response["Content-Type"] == "application/problem+json"
    queued_job.refresh_from_db()
    assert queued_job.status == JobStatus.QUEUED and UnlearningJob.objects.count() == 1


def test_api_cancel_twice_and_retry_unknown_method(queued_job: UnlearningJob, officer: Any) -> None:
    client = api(officer)
    assert client.post(f"/api/v1/jobs/{queued_job.id}/cancel/", {}, format="json").status_code == 202
    again = client.post(f"/api/v1/jobs/{queued_job.id}/cancel/", {}, format="json")
    bad = client.post(f"/api/v1/jobs/{queued_job.id}/retry/", {"method": "nope"}, format="json")
    good = client.post(f"/api/v1/jobs/{queued_job.id}/retry/", {"method": "grad_diff"}, format="json")

    assert again.status_code == 409 and again.json()["error"] == "conflict"
    assert bad.status_code == 400 and "unknown unlearning method" in bad.json()["detail"]
    assert good.status_code == 201 and good.json()["method"] == "grad_diff"


def test_api_reviewer_cannot_cancel(queued_job: UnlearningJob) -> None:
    response = api(factories.user("reviewer")).post(f"/api/v1/jobs/{queued_job.id}/cancel/", {}, format="json")
    assert response.status_code == 403
