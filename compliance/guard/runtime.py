"""The process-wide guard: one GuardCache per process, refreshed when the rules version changes.

Serving paths (the REST endpoint, the transformers hook) call `guard_texts`. Every call checks
whether `GUARD_REFRESH_INTERVAL_S` (default 5 s) has passed since the last look at the database;
if so it reads the one-row GuardRulesVersion and rebuilds the index only when the version moved.
A database that is briefly unreachable does not stop the guard: the last good index stays in
force and `guard_health()` says `stale`, with the error class and since when.

The cache is per process: gunicorn and Celery workers each hold their own, at a few MB per
10,000 subjects (digests only). An approval in this process invalidates the local copy after
commit, so the officer's own process protects the subject at once; others follow within the
interval.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction

from compliance.guard.models import GuardRulesVersion, SuppressionRule
from pii.guard import GuardCache, GuardPolicy, GuardResult, guard_text
from pii.matcher import GuardIndex

DEFAULT_REFRESH_INTERVAL_S = 5.0


def _load_rules() -> tuple[str, Iterable[tuple[str, str, str]]]:
    """(version, active rules) as one read. Version first: a rule committed between the two reads
    arrives early and the next check rebuilds again, which is harmless; the other order could
    pin an index that misses rules under a version that already counts them."""
    with transaction.atomic():  # a failure rolls back to a savepoint, never poisons the caller
        row = GuardRulesVersion.objects.filter(id=1).values_list("version", flat=True).first()
        rules = list(
            SuppressionRule.objects.filter(active=True)
            .order_by("id")
            .values_list("subject_ref", "kind", "digest")
            .iterator(chunk_size=5000)
        )
    return str(row or 0), rules


@dataclass(frozen=True)
class GuardHealthReport:
    status: str  # "ok" | "stale" (filtering with older rules) | "unavailable" (no rules ever loaded)
    version: str | None
    rule_count: int
    subject_count: int
    loaded_at: float | None
    last_check_at: float | None
    last_ok_at: float | None
    last_error: str | None  # exception class only: driver messages can quote SQL
    stale_since: float | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class GuardRuntime:
    def __init__(
        self,
        *,
        key: bytes,
        interval_s: float,
        loader: Callable[[], tuple[str, Iterable[tuple[str, str, str]]]] = _load_rules,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cache = GuardCache(key=key, clock=clock)
        self._interval_s = interval_s
        self._loader = loader
        self._clock = clock
        self._lock = threading.Lock()
        self._next_check_at = 0.0
        self._last_ok_at: float | None = None
        self._stale_since: float | None = None

    def invalidate(self) -> None:
        """Look at the database on the next call, whatever the interval says."""
        self._next_check_at = 0.0

    def ensure_fresh(self) -> None:
        now = self._clock()
        if now < self._next_check_at:
            return
        with self._lock:
            if self._clock() < self._next_check_at:  # another thread just checked
                return
            self.cache.refresh(self._loader)
            checked = self._clock()
            self._next_check_at = checked + self._interval_s
            if self.cache.health().last_error is None:
                self._last_ok_at = checked
                self._stale_since = None
            elif self._stale_since is None:
                self._stale_since = checked

    def guard_texts(self, texts: Sequence[str], policy: GuardPolicy | None = None) -> list[GuardResult]:
        self.ensure_fresh()
        index = self.cache.index  # one immutable index for the whole batch: no half-old, half-new answers
        return [guard_text(text, index, policy) for text in texts]

    def health(self) -> GuardHealthReport:
        """Checks the database (if the interval has passed), then reports."""
        self.ensure_fresh()
        return self.current_health()

    def current_health(self) -> GuardHealthReport:
        """Reports what is in force now, without touching the database."""
        info = self.cache.health()
        if info.version is None:
            status = "unavailable"
        elif info.last_error is not None:
            status = "stale"
        else:
            status = "ok"
        error_class = info.last_error.split(":", 1)[0] if info.last_error else None
        return GuardHealthReport(
            status=status,
            version=info.version,
            rule_count=info.rule_count,
            subject_count=info.subject_count,
            loaded_at=info.loaded_at,
            last_check_at=info.last_refresh_at,
            last_ok_at=self._last_ok_at,
            last_error=error_class,
            stale_since=self._stale_since if status != "ok" else None,
        )


_runtime: GuardRuntime | None = None
_runtime_lock = threading.Lock()


def guard_key() -> bytes:
    """The HMAC key as bytes. Rotating it invalidates every stored rule (they must be re-derived)."""
    return str(settings.GUARD_HMAC_KEY).encode("utf-8")


def get_runtime() -> GuardRuntime:
    global _runtime
    if _runtime is None:
        with _runtime_lock:
            if _runtime is None:
                interval = float(getattr(settings, "GUARD_REFRESH_INTERVAL_S", DEFAULT_REFRESH_INTERVAL_S))
                _runtime = GuardRuntime(key=guard_key(), interval_s=interval)
    return _runtime


def reset_runtime() -> None:
    """Drop the process's guard (tests, or after a key rotation); the next call builds a new one."""
    global _runtime
    with _runtime_lock:
        _runtime = None


def invalidate() -> None:
    if _runtime is not None:
        _runtime.invalidate()


def guard_texts(texts: Sequence[str], policy: GuardPolicy | None = None) -> list[GuardResult]:
    """Filter model outputs through the current suppression rules (see matcher.guard_text)."""
    return get_runtime().guard_texts(texts, policy)


def current_index() -> GuardIndex:
    """The index in force (refreshed if due): what the transformers hooks in hf.py take."""
    runtime = get_runtime()
    runtime.ensure_fresh()
    return runtime.cache.index


def guard_health() -> GuardHealthReport:
    return get_runtime().health()
