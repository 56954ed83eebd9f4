"""Health checks for processes that serve no HTTP (compose `healthcheck`), without Django.

    python -m compliance.common.health beat SCHEDULE_FILE --max-age 600

`beat`: celery beat rewrites its schedule file (a shelve: one or more files named SCHEDULE_FILE*)
as it runs; a beat that stopped ticking leaves it older than --max-age seconds. Exit 0 healthy, 1 not,
with one line saying why.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def beat_age(schedule: Path, now: float | None = None) -> float | None:
    """Seconds since any file of the schedule shelve was written, or None when there is none."""
    files = [p for p in schedule.parent.glob(schedule.name + "*") if p.is_file()]
    if not files:
        return None
    return (time.time() if now is None else now) - max(p.stat().st_mtime for p in files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m compliance.common.health")
    sub = parser.add_subparsers(dest="check", required=True)
    beat = sub.add_parser("beat", help="celery beat's schedule file is fresh")
    beat.add_argument("schedule", type=Path)
    beat.add_argument("--max-age", type=float, default=600.0)
    args = parser.parse_args(argv)
    age = beat_age(args.schedule)
    if age is None:
        print(f"unhealthy: no schedule file {args.schedule}*")
        return 1
    if age > args.max_age:
        print(f"unhealthy: the schedule was last written {age:.0f} s ago (more than {args.max_age:.0f} s)")
        return 1
    print(f"healthy: schedule written {age:.0f} s ago")
    return 0


if __name__ == "__main__":
    sys.exit(main())
