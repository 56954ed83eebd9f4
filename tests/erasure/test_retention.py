"""Retention runs on its own: the beat schedule's purge task, run by a beat (the embedded one here),
purges a closed request past its retention period; afterwards nothing in the database rows, the log
output, the mail spool or the status link gives the person back. Status links expire."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from compliance.common.embedded_beat import start_embedded_beat
from compliance.erasure import services
from compliance.erasure.models import ErasureRequest, Status
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)


def _all_rows_text() -> str:
    """Every row of every application table, as text (bytes as hex too), for searching."""
    out = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608 - names from introspection
            for row in cursor.fetchall():
                for value in row:
                    if isinstance(value, bytes | memoryview):
                        value = bytes(value)
                        out.append(value.hex())
                        out.append(value.decode("latin-1"))
                    else:
                        out.append(str(value))
    return "\n".join(out).lower()


def test_the_beat_purges_and_nothing_gives_the_person_back(settings: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings.EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    settings.EMAIL_FILE_PATH = tmp_path / "mail"
    caplog.set_level(logging.DEBUG)
    person = factories.ADA
    request = factories.request_in(Status.REFUSED, person=person)
    # The notices (confirmation, refusal) were spooled as each transaction committed.
    assert any(person.email.encode() in p.read_bytes() for p in (tmp_path / "mail").glob("*"))
    digest = ErasureRequest.objects.get(pk=request.pk).email_digest
    status_url = f"/status/{services.status_token(request)}/"
    settings.RETENTION_DAYS_AFTER_COMPLETION = 0
    settings.CELERY_BEAT_SCHEDULE = {"erasure-purge-due": {"task": "erasure.purge_due", "schedule": 0.5}}

    beat = start_embedded_beat()
    assert beat is not None
    try:
        deadline = time.monotonic() + 30
        while ErasureRequest.objects.get(pk=request.pk).status != Status.PURGED and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        beat.stop()
    assert ErasureRequest.objects.get(pk=request.pk).status == Status.PURGED, "the beat did not purge"

    identifiers = [person.email, person.full_name, person.phone, person.phone.replace(" ", ""), digest,
                   person.full_name.split()[-1], "pending litigation"]
    rows = _all_rows_text()
    logs = caplog.text.lower()
    spool = b"".join(p.read_bytes() for p in (tmp_path / "mail").glob("*")).decode("utf-8", "replace").lower()
    for value in identifiers:
        needle = value.lower()
        assert needle not in rows, f"{value!r} is still in the database"
        assert needle not in logs, f"{value!r} is in the log output"
        assert needle not in spool, f"{value!r} is still in the mail spool"
    page = Client().get(status_url)
    assert page.status_code == 200 and b"Request closed" in page.content
    assert request.reference.encode() not in page.content and person.email.encode() not in page.content


def test_status_links_expire(settings: Any, client: Client) -> None:
    from unittest import mock

    request = factories.submit()
    token = services.status_token(request)
    assert client.get(f"/status/{token}/").status_code == 200
    settings.STATUS_LINK_TTL_DAYS = 30
    later = time.time() + timedelta(days=31).total_seconds()
    with mock.patch("django.core.signing.time.time", return_value=later):
        expired = client.get(f"/status/{token}/")
    assert expired.status_code == 404 and b"has expired" in expired.content


def test_retention_counts_from_the_close_not_from_the_last_edit(settings: Any) -> None:
    from django.utils import timezone

    settings.RETENTION_DAYS_AFTER_COMPLETION = 90
    old = factories.request_in(Status.REFUSED)
    recent = factories.request_in(Status.REFUSED)
    long_ago = timezone.now() - timedelta(days=91)
    ErasureRequest.objects.filter(pk=old.pk).update(status_changed_at=long_ago)  # updated_at stays today
    ErasureRequest.objects.filter(pk=recent.pk).update(updated_at=long_ago)  # closed today
    assert services.purge_due_requests() == 1
    assert ErasureRequest.objects.get(pk=old.pk).status == Status.PURGED
    assert ErasureRequest.objects.get(pk=recent.pk).status == Status.REFUSED
    with pytest.raises(services.ErasureError, match="closed request cannot be assigned"):
        services.erasure_request_assign(request=recent, officer=factories.user("officer", "o9"), assignee=None)


def test_a_purged_withdrawn_request_leaves_no_guard_digests(settings: Any) -> None:
    from compliance.guard.models import SuppressionRule

    withdrawn = factories.request_in(Status.APPROVED, person=factories.subject(5))
    assert SuppressionRule.objects.filter(request=withdrawn).exists()
    from compliance.erasure.transitions import transition

    transition(withdrawn, Status.WITHDRAWN, actor="subject")
    services.erasure_request_purge(request=withdrawn)
    assert not SuppressionRule.objects.filter(request=withdrawn).exists()
