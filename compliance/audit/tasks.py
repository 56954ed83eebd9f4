from __future__ import annotations

from celery import shared_task


@shared_task(name="audit.checkpoint", soft_time_limit=300, time_limit=360)
def audit_checkpoint(**kwargs: object) -> int | None:
    """Beat: sign a checkpoint when the log has grown. Returns the signed size."""
    from compliance.audit.services import checkpoint_create

    created = checkpoint_create()
    return created.size if created else None
