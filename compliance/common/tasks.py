"""Enqueueing Celery tasks by name, after the surrounding transaction commits.

The domain never imports worker code: it names the task. With a broker configured the task is
sent to its queue; in the embedded set-up (no broker) it runs in-process right after commit.
Arguments are ids only, never personal data.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import transaction

logger = logging.getLogger(__name__)

_QUEUES = {"unlearning": "gpu", "verification": "gpu"}


def queue_for(task_name: str) -> str:
    return _QUEUES.get(task_name.split(".", 1)[0], "default")


def send_now(task_name: str, **kwargs: Any) -> str | None:
    from compliance.celery import app

    for value in kwargs.values():
        if not isinstance(value, str | int | bool | type(None)):
            raise TypeError(f"task {task_name} takes ids and flags only")
    if settings.CELERY_TASK_ALWAYS_EAGER:
        app.loader.import_default_modules()
        result = app.tasks[task_name].apply(kwargs=kwargs, throw=True)
        return str(result.id)
    result = app.send_task(task_name, kwargs=kwargs, queue=queue_for(task_name))
    return str(result.id)


def enqueue(task_name: str, **kwargs: Any) -> None:
    """Send `task_name(**kwargs)` once the current transaction commits (at once outside one)."""
    transaction.on_commit(lambda: send_now(task_name, **kwargs))
