"""Audit log benchmark on PostgreSQL: appends per second (1 and 4 processes) with checkpointing on,
the delay from an append to the signed checkpoint that covers it and to the first one a witness
cosigned, `audit_verify` time for 100,000 events, proof sizes.

    python -m tests.benchmarks.bench_audit [--events 100000] [--appends 2000] [--checkpoint-every 1.0]

Targets: 500 appends/s with checkpointing and a witness on; verify 100,000 events under 20 s; append to
cosigned checkpoint within 60 s (in production the beat interval, AUDIT_CHECKPOINT_INTERVAL_S = 30 s,
bounds it, plus the witness round trip measured here).

Appends go through `audit_append`, each in its own `transaction.atomic()` (a caller's transaction:
BEGIN, the append, COMMIT). Each appender process connects and appends a few events before the clock
starts, and all of them start together, so interpreter and Django start-up are not counted. While they
run, a side process calls `checkpoint_create` every `--checkpoint-every` seconds, as beat would (it
takes the same head lock), and signs a last checkpoint when they are done. The delay of each appended
event is its first covering checkpoint's `created_at` minus the event's `created_at`.

To reach 100,000 events in reasonable time the rest of the log is then filled through the same leaf
builder and node computation written in bulk (`COPY`-sized batches); `audit_verify` does not know the
difference. The machine's load average is printed: numbers taken while something else runs are noisy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DB = "bench_audit"

APPENDER = """
import django, sys, time, uuid
django.setup()
from django.db import transaction
from compliance.audit.services import audit_append
def append(i):
    with transaction.atomic():  # the caller's transaction
        audit_append(event_type="bench.event", actor="system", outcome="ok", request_id=uuid.uuid4(),
                     subject_ref=uuid.uuid4().hex, artefacts={{"model": "ab" * 32}}, details={{"i": i}})
for i in range(5):  # connect, first use
    append(i)
print("ready", flush=True)
sys.stdin.readline()
n = {n}
start = time.time()
for i in range(n):
    append(i)
print(n, start, time.time(), flush=True)
"""

CHECKPOINTER = """
import django, sys, threading, time
django.setup()
from compliance.audit.services import checkpoint_create
from compliance.audit.witnessing import witness_submit_pending
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
every, signed = {every}, 0
print("ready", flush=True)
while True:
    started = time.monotonic()
    signed += checkpoint_create() is not None
    witness_submit_pending()  # as the audit.checkpoint task does
    if stop.wait(max(0.0, every - (time.monotonic() - started))):
        break
signed += checkpoint_create() is not None  # the tail appended since the last beat
witness_submit_pending()
print(signed, flush=True)
"""

DELAYS = """
import bisect, django
django.setup()
from compliance.audit.models import AuditCheckpoint, AuditCosignature, AuditLeaf
checkpoints = list(AuditCheckpoint.objects.order_by("size").values_list("size", "created_at"))
sizes = [size for size, _ in checkpoints]
cosigned = list(AuditCosignature.objects.order_by("checkpoint_size").values_list("checkpoint_size", "created_at"))
cosigned_sizes = [size for size, _ in cosigned]
for seq, created_at in AuditLeaf.objects.order_by("seq").values_list("seq", "created_at"):
    covering = bisect.bisect_right(sizes, seq)  # first checkpoint with size > seq
    witnessed = bisect.bisect_right(cosigned_sizes, seq)  # first cosigned checkpoint with size > seq
    signed = (checkpoints[covering][1] - created_at).total_seconds() if covering < len(sizes) else "none"
    cosign = (cosigned[witnessed][1] - created_at).total_seconds() if witnessed < len(cosigned) else "none"
    print(f"{signed},{cosign}")
"""

FILLER = """
import django, uuid
django.setup()
from django.db import transaction
from django.utils import timezone
from proofs import canonical, merkle
from compliance.audit.models import AuditHead, AuditLeaf, AuditNode
from compliance.audit.services import build_event, _tree_from_frontier, frontier_bytes
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
    head.frontier = frontier_bytes(tree)
    head.save(update_fields=["size", "frontier"])
print(target)
"""

VERIFY = """
import django, time
django.setup()
from compliance.audit.services import checkpoint_create, inclusion_proof, log_size
from compliance.audit.verify import audit_verify
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


def _start(code: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """A child that prints "ready" once set up, then waits for a line on stdin."""
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError(f"benchmark child failed to start (exit {proc.wait()})")
    return proc


def _release(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()


def _finish(proc: subprocess.Popen[str]) -> str:
    out, _ = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"benchmark child exited {proc.returncode}")
    return out.strip()


def _start_witness(env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A witness process trusting the bench log's key; its URL and vkey go into `env` (AUDIT_WITNESSES)."""
    import socket
    import time
    import urllib.request

    data = Path(env["COMPLIANCE_DATA_DIR"])
    _run("import django\ndjango.setup()\nfrom compliance.audit import signing\nsigning.ensure_keys()", env)
    key = data / "witness.key"
    vkey = subprocess.run([sys.executable, "-m", "proofs.witness", "keygen", "--name", "bench-witness.example.org/w1",
                           "--out", str(key)], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "proofs.witness", "serve", "--key", str(key), "--state",
                             str(data / "witness"), "--log-keyring", str(data / "secrets" / "audit_keyring.json"),
                             "--listen", f"127.0.0.1:{port}"], cwd=ROOT, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):  # noqa: S310
                break
        except OSError:
            time.sleep(0.1)
    env["AUDIT_WITNESSES"] = f"http://127.0.0.1:{port} {vkey}"
    return proc


def _appends_per_second(processes: int, total: int, env: dict[str, str]) -> float:
    """All appenders start on one signal; the rate is every append over first start to last end."""
    procs = [_start(APPENDER.format(n=total // processes), env) for _ in range(processes)]
    for proc in procs:
        _release(proc)
    rows = [_finish(proc).split() for proc in procs]
    appended = sum(int(n) for n, _, _ in rows)
    return appended / (max(float(end) for *_, end in rows) - min(float(start) for _, start, _ in rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--appends", type=int, default=2000)
    parser.add_argument("--checkpoint-every", type=float, default=1.0, help="seconds between checkpoints (beat)")
    args = parser.parse_args()
    env = dict(os.environ, DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{DB}", COMPLIANCE_ENV="test",
               COMPLIANCE_DATA_DIR=tempfile.mkdtemp(prefix="bench-audit-"), DJANGO_SETTINGS_MODULE="compliance.settings")
    load_before = os.getloadavg()[0]
    _psql(f"DROP DATABASE IF EXISTS {DB}")
    _psql(f"CREATE DATABASE {DB}")
    try:
        subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
        witness = _start_witness(env)
        checkpointer = _start(CHECKPOINTER.format(every=args.checkpoint_every), env)
        try:
            one = _appends_per_second(1, args.appends, env)
            four = _appends_per_second(4, args.appends, env)
        finally:
            _release(checkpointer)
            signed = int(_finish(checkpointer))
        witness.terminate()
        rows = [line.split(",") for line in _run(DELAYS, env).split()]
        delays = [float(signed) for signed, _ in rows if signed != "none"]
        cosign_delays = [float(cosign) for _, cosign in rows if cosign != "none"]
        uncovered = len(rows) - len(delays)
        uncosigned = len(rows) - len(cosign_delays)
        _run(FILLER.format(target=args.events), env)
        elapsed, ok, leaves, proof_len, proof_bytes = _run(VERIFY, env).split()
    finally:
        _psql(f"DROP DATABASE IF EXISTS {DB}")
    load_after = os.getloadavg()[0]
    quantiles = statistics.quantiles(delays, n=100)
    cosign_q = statistics.quantiles(cosign_delays, n=100)
    every = f"{args.checkpoint_every:g} s"
    print(f"\nAudit log on PostgreSQL, {os.cpu_count()} cores, load average {load_before:.2f} before, {load_after:.2f} after")
    print(f"checkpointing on: checkpoint_create every {every} in a side process ({signed} checkpoints signed), each sent "
          "to a witness process (python -m proofs.witness) over HTTP and cosigned")
    print(f"{'measure':<52}{'value':>14}{'target':>16}")
    print(f"{'appends/s, 1 process (one transaction each)':<52}{one:>14.0f}{'>= 500':>16}")
    print(f"{'appends/s, 4 processes together':<52}{four:>14.0f}{'>= 500':>16}")
    print(f"{'append to signed checkpoint, median (s)':<52}{statistics.median(delays):>14.2f}{'':>16}")
    print(f"{'append to signed checkpoint, p99 / max (s)':<52}{f'{quantiles[98]:.2f} / {max(delays):.2f}':>14}{'~ ' + every + ' (beat)':>16}")
    print(f"{'appended events under no checkpoint':<52}{uncovered:>14}{'0':>16}")
    print(f"{'append to witness-cosigned checkpoint, median (s)':<52}{statistics.median(cosign_delays):>14.2f}{'':>16}")
    print(f"{'append to witness-cosigned checkpoint, p99 / max (s)':<52}{f'{cosign_q[98]:.2f} / {max(cosign_delays):.2f}':>14}{'<= 60':>16}")
    print(f"{'appended events under no cosigned checkpoint':<52}{uncosigned:>14}{'0':>16}")
    print(f"{'audit_verify of ' + leaves + ' events (s)':<52}{float(elapsed):>14.2f}{'< 20':>16}")
    print(f"{'verify result':<52}{'ok' if ok == 'True' else 'FAILED':>14}{'ok':>16}")
    print(f"{'inclusion proof at this size (hashes / bytes)':<52}{proof_len + ' / ' + proof_bytes:>14}{'':>16}")


if __name__ == "__main__":
    main()
