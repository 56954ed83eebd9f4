"""The portal's health page: every periodic task with its last run, recorded by the Celery signal as the
task runs (here in-process, as the embedded beat runs it); a task that never ran is flagged late."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from compliance.common.models import PeriodicRun
from compliance.common.tasks import send_now
from tests import factories

pytestmark = pytest.mark.django_db


def test_runs_are_recorded_and_shown_and_a_task_that_never_ran_is_late(client: Client, settings: Any) -> None:
    settings.CELERY_TASK_ALWAYS_EAGER = True
    client.force_login(factories.user("reviewer"))
    page = client.get(reverse("portal:health"))
    assert page.status_code == 200 and b"health-late" in page.content  # nothing ran yet
    send_now("erasure.purge_due")
    send_now("erasure.purge_due")
    run = PeriodicRun.objects.get(task="erasure.purge_due")
    assert run.runs == 2 and run.last_state == "SUCCESS" and run.last_summary == "0"
    html = client.get(reverse("portal:health")).content.decode()
    row = html[html.index('data-task="erasure.purge_due"'):]
    row = row[:row.index("</tr>")]
    assert "never" not in row and "late" not in row and ">2<" in row
    assert 'data-task="erasure.deadline_reminders"' in html  # listed, never run: late


def test_only_scheduled_tasks_are_recorded(settings: Any) -> None:
    settings.CELERY_TASK_ALWAYS_EAGER = True
    request = factories.request_in("verified")
    send_now("erasure.scan_request", request_id=str(request.id))
    assert not PeriodicRun.objects.filter(task="erasure.scan_request").exists()


def test_the_health_page_needs_a_portal_role(client: Client) -> None:
    client.force_login(factories.user(None, username="norole"))
    assert client.get(reverse("portal:health")).status_code == 403
