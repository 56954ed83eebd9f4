"""Certificates on the default queue (beat): ids in, references out."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="certificates.issue_pending", soft_time_limit=300, time_limit=360)
def issue_pending(**kwargs: object) -> list[str]:
    """Issue the certificates that waited for a witness quorum (see certificates_issue_pending)."""
    from compliance.certificates.services import certificates_issue_pending

    return certificates_issue_pending()
