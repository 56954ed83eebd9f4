"""The Celery application. Workers: `celery -A compliance worker -Q default` (CPU) and
`celery -A compliance worker -Q gpu --concurrency 1 --prefetch-multiplier 1` (one per GPU)."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "compliance.settings")

app = Celery("compliance")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["compliance.erasure", "compliance.audit", "compliance.jobs", "compliance.certificates"])
app.conf.imports = ("unlearning_worker.tasks", "unlearning_worker.sharding")
