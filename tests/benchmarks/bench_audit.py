"""Audit log benchmark on PostgreSQL: appends per second (1 and 4 processes), `audit_verify` time for
100,000 events, proof sizes.

    python -m tests.benchmarks.bench_audit [--events 100000] [--appends 2000]

Targets: 500 appends/s; verify 100,000 events under 20 s. The appends go through `audit_append`
(row lock, leaf, cached nodes, head) one transaction each. To reach 100,000 events in reasonable
time the rest of the log is then filled through the same leaf builder and node computation written
in bulk (`COPY`-sized batches); `audit_verify` does not know the difference.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DB = "bench_audit"

APPENDER = """
import django, time, uuid
django.setup()
from compliance.audit.services import audit_append
n = {n}
t = time.perf_counter()
for i in range(n):
    audit_append(event_type="bench.event", actor="system", outcome="ok", request_id=uuid.uuid4(),
                 subject_ref=uuid.uuid4().hex, artefacts={{"model": "ab" * 32}}, details={{"i": i}})
print(n / (time.perf_counter() - t))
"""

FILLER = """
import django, uuid
django.setup()
from django.db import transaction
from django.utils import timezone
from compliance.audit import canonical, merkle
from compliance.audit.models import AuditHead, AuditLeaf, AuditNode
from compliance.audit.services import build_event, _tree_from_frontier, _frontier_bytes
target = {target}
with transaction.atomic():
    head = AuditHead.objects.select_for_update().get(id=1)
    start = head.size
    tree = _tree_from_frontier(start, bytes(head.frontier))
    leaves, nodes = [], []
    now = timezone.now()
    for seq in range(start, target):
        request_id = uuid.uuid4()
        event = build_event(event_type="bench.event", actor="system", outcome="ok", at=now, request_id=request_id,
                            subject_ref=uuid.uuid4().hex, artefacts={{"model": "ab" * 32}}, details={{"i": seq}})
        raw = canonical.canonical_bytes(event)
        leaf = merkle.leaf_hash(raw)
        leaves.append(AuditLeaf(seq=seq, leaf_bytes=raw, leaf_hash=leaf, event_type="bench.event", request_id=request_id, created_at=now))
        nodes += [AuditNode(level=l, index=i, hash=h) for l, i, h in tree.append(leaf)[1:]]
        if len(leaves) >= 5000:
            AuditLeaf.objects.bulk_create(leaves); AuditNode.objects.bulk_create(nodes); leaves, nodes = [], []
    AuditLeaf.objects.bulk_create(leaves); AuditNode.objects.bulk_create(nodes)
    head.size = target
    head.frontier = _frontier_bytes(tree)
    head.save(update_fields=["size", "frontier"])
print(target)
"""

VERIFY = """
import django, time
django.setup()
from compliance.audit.services import audit_verify, checkpoint_create, inclusion_proof, log_size
checkpoint_create()
t = time.perf_counter()
report = audit_verify()
elapsed = time.perf_counter() - t
size = log_size()
proof = inclusion_proof(size // 3, size)
print(elapsed, report.ok, report.leaves, len(proof), len(proof) * 32)
"""


def _psql(sql: str) -> None:
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-q", "-c", sql], check=True, capture_output=True)


def _run(code: str, env: dict[str, str]) -> str:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--appends", type=int, default=2000)
    args = parser.parse_args()
    env = dict(os.environ, DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{DB}", COMPLIANCE_ENV="test",
               COMPLIANCE_DATA_DIR=tempfile.mkdtemp(prefix="bench-audit-"), DJANGO_SETTINGS_MODULE="compliance.settings")
    _psql(f"DROP DATABASE IF EXISTS {DB}")
    _psql(f"CREATE DATABASE {DB}")
    try:
        subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
        one = float(_run(APPENDER.format(n=args.appends), env))
        started = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, "-c", APPENDER.format(n=args.appends // 4)], cwd=ROOT, env=env,
                                  stdout=subprocess.PIPE, text=True) for _ in range(4)]
        for proc in procs:
            proc.communicate()
        four = args.appends / (time.perf_counter() - started)
        _run(FILLER.format(target=args.events), env)
        elapsed, ok, leaves, proof_len, proof_bytes = _run(VERIFY, env).split()
    finally:
        _psql(f"DROP DATABASE IF EXISTS {DB}")
    print(f"\nAudit log on PostgreSQL, {os.cpu_count()} cores")
    print(f"{'measure':<48}{'value':>14}{'target':>14}")
    print(f"{'appends/s, 1 process (one transaction each)':<48}{one:>14.0f}{'>= 500':>14}")
    print(f"{'appends/s, 4 processes together':<48}{four:>14.0f}{'>= 500':>14}")
    print(f"{'audit_verify of ' + leaves + ' events (s)':<48}{float(elapsed):>14.2f}{'< 20':>14}")
    print(f"{'verify result':<48}{'ok' if ok == 'True' else 'FAILED':>14}{'ok':>14}")
    print(f"{'inclusion proof at this size (hashes / bytes)':<48}{proof_len + ' / ' + proof_bytes:>14}{'':>14}")


if __name__ == "__main__":
    main()
