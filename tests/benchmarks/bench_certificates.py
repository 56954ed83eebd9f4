"""Certificate verification speed, proof sizes, and the cost of re-verifying the whole audit log.

    nice -n 10 .venv/bin/python -m tests.benchmarks.bench_certificates [--max-leaves 1000000]

Targets: one certificate verified in under 50 ms; audit_verify (recompute every leaf hash, every
cached node and the root) for 100,000 events in under 20 s. Pure Python, one core.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import time
from collections.abc import Callable
from typing import Any

from proofs import merkle
from proofs.canonical import canonical_bytes, parse_canonical, rfc3339_utc
from proofs.offline import verify_certificate
from proofs.pdf_render import render_certificate_pdf_bytes
from tests.certificates.factory import T0, issue


class LevelStore:
    """Complete-subtree hashes held as one list per level, built bottom-up (fast for big trees)."""

    def __init__(self, leaf_hashes: list[bytes]) -> None:
        self.levels = [leaf_hashes]
        node = merkle.node_hash
        while len(self.levels[-1]) > 1:
            below = self.levels[-1]
            self.levels.append([node(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)])
        self.reads = 0

    def get(self, level: int, index: int) -> bytes:
        self.reads += 1
        return self.levels[level][index]


def timed(fn: Callable[[], Any], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def bench_verification(repeat: int) -> None:
    print("== certificate verification: verify_certificate() on the JSON envelope and on the PDF")
    print(f"{'certificate':<34}{'median ms':>10}{'p95 ms':>10}{'target':>10}")
    for label, options in (
        ("4 leaves, tree size 25", {}),
        ("4 leaves, tree size ~100k", {"noise_before": 99_000, "noise_between": 250}),
    ):
        issued = issue(**options)
        assert verify_certificate(issued.envelope, issued.ring).ok
        pdf = render_certificate_pdf_bytes(issued.payload, issued.envelope)
        for kind, data in (("JSON", issued.envelope), ("PDF", pdf)):
            samples = sorted(timed(lambda d=data, r=issued.ring: verify_certificate(d, r), repeat))
            p95 = samples[int(len(samples) * 0.95) - 1]
            print(
                f"{label + ' ' + kind:<34}{statistics.median(samples) * 1e3:>10.2f}{p95 * 1e3:>10.2f}{'< 50':>10}"
            )


def bench_proof_sizes(max_leaves: int) -> None:
    print("\n== proof sizes (hashes x 32 bytes) and generation cost (store reads, time)")
    print(
        f"{'tree size':>10}{'build s':>9}{'incl max':>10}{'incl bytes':>11}{'reads':>7}{'consist.':>10}"
        f"{'bytes':>7}{'reads':>7}{'proof ms':>10}"
    )
    size = 1000
    while size <= max_leaves:
        start = time.perf_counter()
        store = LevelStore([hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(size)])
        built = time.perf_counter() - start
        root = merkle.tree_root(size, store)
        index = size - size // 3
        longest = max(merkle.inclusion_proof_length(i, size) for i in (0, index, size - 1))
        store.reads = 0
        start = time.perf_counter()
        proof = merkle.inclusion_proof(index, size, store)
        proof_ms = (time.perf_counter() - start) * 1e3
        inclusion_reads = store.reads
        merkle.verify_inclusion(store.levels[0][index], index, size, proof, root)
        old = size // 2 + 7
        store.reads = 0
        consistency = merkle.consistency_proof(old, size, store)
        consistency_reads = store.reads
        merkle.verify_consistency(old, size, consistency, merkle.tree_root(old, store), root)
        print(
            f"{size:>10,}{built:>9.2f}{longest:>10}{longest * 32:>11}{inclusion_reads:>7}"
            f"{len(consistency):>10}{len(consistency) * 32:>7}{consistency_reads:>7}{proof_ms:>10.3f}"
        )
        size *= 10


def bench_full_log(leaves: int) -> None:
    print(
        f"\n== audit_verify core: recompute {leaves:,} leaves (parse canonical JSON, leaf hash, every node, root)"
    )
    raw = [
        canonical_bytes(
            {
                "v": 1,
                "type": "request.received",
                "actor": "system",
                "outcome": "ok",
                "time": rfc3339_utc(T0),
                "request_id": f"00000000-0000-4000-8000-{i:012x}",
                "subject_ref": f"{i:032x}",
                "details": {"n": i},
            }
        )  # fmt: skip
        for i in range(leaves)
    ]
    # What the database holds: leaf hashes and every cached node.
    cached: dict[tuple[int, int], bytes] = {}
    builder = merkle.CompactRange()
    for leaf in raw:
        for level, index, value in builder.append(merkle.leaf_hash(leaf)):
            if level:
                cached[(level, index)] = value
    expected_root = builder.root()

    stages: dict[str, tuple[float, float]] = {}
    clock = time.perf_counter(), time.process_time()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter(), time.process_time()
        stages[name] = (now[0] - clock[0], now[1] - clock[1])
        clock = now

    for leaf in raw:
        parse_canonical(leaf)
    lap("parse + canonical check")
    hashes = [merkle.leaf_hash(leaf) for leaf in raw]
    lap("leaf hashes")
    compact = merkle.CompactRange()
    mismatches = 0
    for value in hashes:
        for level, index, node in compact.append(value):
            if level and cached[(level, index)] != node:
                mismatches += 1
    assert compact.root() == expected_root and mismatches == 0
    lap("nodes + root, compare cache")
    print(f"  {'stage':<30}{'wall s':>8}{'cpu s':>8}")
    for name, (wall, cpu) in stages.items():
        print(f"  {name:<30}{wall:>8.2f}{cpu:>8.2f}")
    wall, cpu = (sum(v[i] for v in stages.values()) for i in (0, 1))
    print(f"  {'total':<30}{wall:>8.2f}{cpu:>8.2f}   (target < 20 s; the database reads come on top)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-leaves", type=int, default=1_000_000)
    parser.add_argument("--log-leaves", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    bench_verification(args.repeat)
    bench_proof_sizes(args.max_leaves)
    bench_full_log(args.log_leaves)


if __name__ == "__main__":
    main()
