from __future__ import annotations

from celery import shared_task


@shared_task(name="audit.checkpoint", soft_time_limit=300, time_limit=360)
def audit_checkpoint(**kwargs: object) -> int | None:
    """Beat (and after each certificate): sign a checkpoint when the log has grown, then send every
    checkpoint a witness has not cosigned yet to the configured witnesses. Returns the signed size."""
    from compliance.audit.services import checkpoint_create
    from compliance.audit.witnessing import witness_submit_pending

    created = checkpoint_create()
    witness_submit_pending()
    return created.size if created else None
