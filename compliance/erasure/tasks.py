from __future__ import annotations

from celery import shared_task


@shared_task(name="erasure.scan_request", soft_time_limit=3600, time_limit=3700, acks_late=True)
def scan_request(*, request_id: str, **kwargs: object) -> dict[str, int]:
    """Scan the registered corpora for a verified request's subject, score PRI, move it to triaged."""
    from compliance.erasure.scan import erasure_request_scan

    return erasure_request_scan(request_id=request_id)


@shared_task(name="erasure.deadline_reminders")
def deadline_reminders(**kwargs: object) -> int:
    from compliance.erasure.reminders import send_deadline_reminders

    return send_deadline_reminders()


@shared_task(name="erasure.purge_due")
def purge_due(**kwargs: object) -> int:
    from compliance.erasure.services import purge_due_requests

    return purge_due_requests()
