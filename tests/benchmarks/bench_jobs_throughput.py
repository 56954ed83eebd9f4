"""Throughput: erasure requests unlearned and verified per hour on one CPU worker, with batching.

    nice -n 10 .venv/bin/python -m tests.benchmarks.bench_jobs_throughput [--people 40] [--batches 1,4,12]

Embedded set-up (SQLite in a temporary data dir, tasks run in-process exactly as one worker would run
them): the demo model is trained once (cached under /tmp), registered, and for each batch size k that
many approved requests (demo people, their located records sealed) are dispatched as one job, which
runs unlearning, corpus erasure and verification with the default policy. Prints one row per batch
size: wall seconds for the job and the resulting requests per hour.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--people", type=int, default=40)
    parser.add_argument("--batches", default="1,4,12")
    parser.add_argument("--max-steps", type=int, default=200)
    args = parser.parse_args()
    sizes = [int(x) for x in args.batches.split(",")]
    if sum(sizes) > args.people:
        sys.exit("the batches need more people than --people")

    data = Path(tempfile.mkdtemp(prefix="bench-jobs-"))
    os.environ.update(COMPLIANCE_DATA_DIR=str(data), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", LOG_LEVEL="WARNING")
    os.environ.pop("CELERY_BROKER_URL", None)
    os.environ.pop("DATABASE_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "compliance.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.utils import timezone

    call_command("migrate", verbosity=0)
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.UNLEARNING_SPEC_DEFAULTS = {"max_steps": args.max_steps, "device": "cpu"}

    from compliance.demo.registration import register_demo
    from compliance.erasure import services as erasure_services
    from compliance.jobs import dispatch as job_dispatch
    from compliance.jobs.models import JobStatus
    from compliance.registry.models import ForgetItem
    from tests import factories
    from unlearning_worker.demo.trainer import DemoModelConfig

    entity = {"name": "PERSON", "phone": "PHONE_NUMBER", "email": "EMAIL_ADDRESS", "ssn": "US_SSN",
              "date_of_birth": "DATE_OF_BIRTH", "address": "STREET_ADDRESS", "zip_code": "ZIP_CODE", "region": "LOCATION"}
    config = DemoModelConfig(n_people=args.people, n_holdout=10)
    t0 = time.perf_counter()
    registration = register_demo(config=config, cache_dir=Path(tempfile.gettempdir()) / "erasure-bench-demo-cache")
    print(f"demo model ready in {time.perf_counter() - t0:.0f}s ({args.people} people)", flush=True)
    corpus = config.corpus()
    officer = factories.user("officer")
    people = iter(corpus.people)

    print(f"{'batch':>5} {'job s':>8} {'unlearn steps':>13} {'verdict':>8} {'requests/hour':>14}")
    for size in sizes:
        for _ in range(size):
            person = next(people)
            request = factories.request_in(
                "triaged", person=erasure_services.SubjectInput(full_name=person.name, email=person.email, phone=person.phone)
            )
            for record in corpus.records_of([person.person_id]):
                item = ForgetItem(request=request, corpus_version=registration.corpus_version, record_id=record.record_id,
                                  line_number=1, matched=["name"], pri_score=0.4,
                                  entities=[{"type": entity[a], "start": s, "end": e, "score": 1.0} for s, e, a in record.pii_spans])
                item.seal_text(record.text)
                item.save()
            erasure_services.erasure_request_approve(request=request, officer=officer, reason="benchmark")
        started = time.perf_counter()
        jobs = job_dispatch.jobs_dispatch(now=timezone.now() + timedelta(hours=1)).created  # runs in-process (eager)
        wall = time.perf_counter() - started
        job = jobs[0]
        job.refresh_from_db()
        while job.retries.exists():  # a failed verdict's stronger retry ran too: count it in the time
            job = job.retries.get()
        print(f"{size:>5} {wall:>8.1f} {job.step:>13} {job.verdict or job.status:>8} {size / wall * 3600:>14.0f}", flush=True)
        if job.status not in (JobStatus.SUCCEEDED, JobStatus.FAILED):
            print(f"      job ended {job.status}: {job.error}")


if __name__ == "__main__":
    main()
