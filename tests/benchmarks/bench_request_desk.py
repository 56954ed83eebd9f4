"""Request-desk benchmark: public form submissions (throughput, latency) and the officer queue page.

Two submission runs: closed loop (20 submitters sending as fast as answers come: the saturation
throughput; latency there is concurrency / throughput by Little's law) and paced (the same 20
submitters sharing --rate submissions per second: latency below saturation).

    python -m tests.benchmarks.bench_request_desk [--submissions 400] [--concurrency 20] [--queue-size 10000]

Runs gunicorn on loopback against a fresh PostgreSQL database (127.0.0.1:5432, user postgres) with
Redis (127.0.0.1:6379/7) for rate-limit counters, exactly as in production except that the rate limits
are raised so the load generator is not refused. Targets: p95 < 150 ms at 20 concurrent submitters;
queue page < 300 ms with 10,000 requests.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
DB = "bench_request_desk"


def _env(data_dir: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{DB}",
        REDIS_URL="redis://127.0.0.1:6379/7",
        COMPLIANCE_ENV="test",
        COMPLIANCE_DATA_DIR=data_dir,
        RATE_LIMIT_SUBMIT_PER_IP="1000000",
        RATE_LIMIT_SUBMIT_PER_EMAIL="1000000",
        RATE_LIMIT_LOGIN_PER_IP="1000000",
        DJANGO_SETTINGS_MODULE="compliance.settings",
    )
    env.pop("CELERY_BROKER_URL", None)
    return env


def _psql(sql: str) -> None:
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-q", "-c", sql], check=True, capture_output=True)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


SEED_QUEUE = """
import django, random, datetime
django.setup()
from django.utils import timezone
from compliance.common.models import DataKey
from compliance.erasure.models import ErasureRequest, Status
from compliance.erasure.services import email_digest
from django.contrib.auth.models import User, Group
n = {n}
rng = random.Random(7)
statuses = [Status.RECEIVED, Status.VERIFIED, Status.TRIAGED, Status.APPROVED, Status.COMPLETED, Status.REFUSED]
today = timezone.localdate()
batch = []
for i in range(n):
    key = DataKey.create()
    received = today - datetime.timedelta(days=rng.randint(0, 60))
    r = ErasureRequest(reference=f"ER-1999-{{i:06d}}", channel="web", ground="17(1)(a)", status=rng.choice(statuses),
        clock_started_at=received, due_at=received + datetime.timedelta(days=30), data_key=key, email_digest=email_digest(f"q{{i}}@example.com"))
    r.seal_identifiers({{"full_name": f"Queue Person{{i}}", "email": f"q{{i}}@example.com", "phone": "", "other_identifiers": [], "details": ""}})
    batch.append(r)
    if len(batch) == 1000:
        ErasureRequest.objects.bulk_create(batch); batch = []
ErasureRequest.objects.bulk_create(batch)
u = User.objects.create_user("bench.officer", password="bench password 123")
u.groups.add(Group.objects.get(name="officer"))
print(ErasureRequest.objects.count())
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--submissions", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--queue-size", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=4, help="gunicorn worker processes")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--rate", type=float, default=10.0,
        help="offered load of the paced run, submissions/s shared by the submitters (0: skip the paced run)",
    )
    args = parser.parse_args()

    data_dir = tempfile.mkdtemp(prefix="bench-desk-")
    env = _env(data_dir)
    _psql(f"DROP DATABASE IF EXISTS {DB}")
    _psql(f"CREATE DATABASE {DB}")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
    subprocess.run(["redis-cli", "-n", "7", "FLUSHDB"], check=True, capture_output=True)
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "compliance.wsgi:application", "--bind", f"127.0.0.1:{args.port}",
         "--workers", str(args.workers), "--log-level", "warning"],
        cwd=ROOT, env=env,
    )
    base = f"http://127.0.0.1:{args.port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{base}/", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        latencies: list[float] = []
        errors: list[int] = []
        lock = threading.Lock()
        per_client = max(1, args.submissions // args.concurrency)

        def submitter(client_no: int, interval: float = 0.0) -> None:
            with httpx.Client(base_url=base, timeout=30) as client:
                client.get("/request/")
                # Paced submitters start at staggered offsets: people do not press "send" in unison.
                next_at = time.perf_counter() + (client_no % args.concurrency) * interval / args.concurrency
                for i in range(per_client):
                    if interval:
                        next_at += interval
                        time.sleep(max(0.0, next_at - time.perf_counter()))
                    token = client.cookies.get("csrftoken")
                    data = {
                        "csrfmiddlewaretoken": token, "full_name": f"Bench Person{client_no}x{i}",
                        "email": f"bench{client_no}x{i}@example.com", "phone": "+44 20 7946 0018",
                        "ground": "17(1)(b)", "confirm": "on", "details": "", "other_identifiers": "",
                    }
                    started = time.perf_counter()
                    response = client.post("/request/", data=data, headers={"Referer": f"{base}/request/"})
                    elapsed = time.perf_counter() - started
                    with lock:
                        latencies.append(elapsed)
                        if response.status_code != 302:
                            errors.append(response.status_code)

        # warm-up: one submission per worker so imports and connections are made
        submitter(999)
        latencies.clear()
        threads = [threading.Thread(target=submitter, args=(n,)) for n in range(args.concurrency)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
        closed = (list(latencies), wall)

        # Paced (open-loop) run: the same submitters, each sending one form every
        # concurrency/rate seconds, as people do; latency is measured below saturation.
        paced: list[float] = []
        if args.rate > 0:
            latencies.clear()
            interval = args.concurrency / args.rate
            threads = [threading.Thread(target=submitter, args=(100 + n, interval)) for n in range(args.concurrency)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            paced = list(latencies)
        latencies, wall = closed

        seed = subprocess.run(
            [sys.executable, "-c", SEED_QUEUE.format(n=args.queue_size)], cwd=ROOT, env=env, check=True, capture_output=True, text=True
        )
        total_requests = int(seed.stdout.strip().splitlines()[-1])
        queue_times: dict[str, list[float]] = {}
        with httpx.Client(base_url=base, timeout=30) as client:
            page = client.get("/portal/login/")
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
            client.post("/portal/login/", data={"csrfmiddlewaretoken": token, "username": "bench.officer", "password": "bench password 123"},
                        headers={"Referer": f"{base}/portal/login/"})
            for label, query in [("first page", ""), ("page 200", "?page=200"), ("status=triaged", "?status=triaged"),
                                 ("overdue", "?overdue=on"), ("due in 7 days", "?due_soon=on")]:
                client.get(f"/portal/{query}")
                times = []
                for _ in range(15):
                    t0 = time.perf_counter()
                    response = client.get(f"/portal/{query}")
                    times.append(time.perf_counter() - t0)
                    assert response.status_code == 200, response.status_code
                queue_times[label] = times
    finally:
        server.terminate()
        server.wait(timeout=20)
        _psql(f"DROP DATABASE IF EXISTS {DB}")

    print(f"\nRequest desk on loopback, PostgreSQL, gunicorn x{args.workers}, {os.cpu_count()} cores")
    print(f"{'measure':<44}{'value':>14}{'target':>16}")
    print(f"{'submissions':<44}{len(latencies):>14}{'':>16}")
    print(f"{'errors (non-302)':<44}{len(errors):>14}{'0':>16}")
    print(f"{'submissions per second':<44}{len(latencies) / wall:>14.1f}{'':>16}")
    print(f"{'submit latency p50 (ms)':<44}{1000 * statistics.median(latencies):>14.1f}{'':>16}")
    print(f"{'submit latency p95 (ms) at ' + str(args.concurrency) + ' concurrent':<44}{1000 * _percentile(latencies, 0.95):>14.1f}{'< 150':>16}")
    print(f"{'submit latency p99 (ms)':<44}{1000 * _percentile(latencies, 0.99):>14.1f}{'':>16}")
    if paced:
        print(f"\nPaced run: {args.concurrency} submitters sharing {args.rate:g} submissions/s ({len(paced)} submissions)")
        print(f"{'submit latency p50 (ms)':<44}{1000 * statistics.median(paced):>14.1f}{'':>16}")
        print(f"{'submit latency p95 (ms)':<44}{1000 * _percentile(paced, 0.95):>14.1f}{'< 150':>16}")
        print(f"{'submit latency p99 (ms)':<44}{1000 * _percentile(paced, 0.99):>14.1f}{'':>16}")
    print(f"\nOfficer queue page with {total_requests} requests (median / p95 of 15 loads, ms; target < 300)")
    for label, times in queue_times.items():
        print(f"  {label:<40}{1000 * statistics.median(times):>10.1f}{1000 * _percentile(times, 0.95):>10.1f}")


if __name__ == "__main__":
    main()
