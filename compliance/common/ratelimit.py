"""Sliding-window rate limits counted in the cache (Redis in production, so all web workers share them).

Each (scope, key) has one counter per fixed window; an event is judged against the current window's
count plus the previous window's count weighted by how much of the previous window still lies inside
the sliding window (the "sliding window counter" approximation). A plain fixed window would reset at
each boundary and let a client send twice the limit in a burst straddling it.
"""

from __future__ import annotations

import hashlib
import math
import time

from django.core.cache import cache


class RateLimited(Exception):
    def __init__(self, scope: str, retry_after_s: int) -> None:
        super().__init__(f"too many requests ({scope}); try again in {retry_after_s} s")
        self.scope = scope
        self.retry_after_s = retry_after_s


def _cache_key(scope: str, key: str, window: int) -> str:
    # The key is hashed so that e-mail addresses and IP addresses never appear in cache keys.
    digest = hashlib.sha256(f"{scope}:{key}".encode()).hexdigest()[:32]
    return f"rl:{scope}:{digest}:{window}"


def sliding_count(previous: int, current: int, elapsed_fraction: float) -> float:
    """The estimated number of events in the last window: the current window's count plus the share
    of the previous window's count that still falls inside it."""
    return previous * (1.0 - elapsed_fraction) + current


def hit(scope: str, key: str, *, limit: int, window_s: int, now: float | None = None) -> None:
    """Count one event for (scope, key); raise RateLimited once more than `limit` events fall in the
    last `window_s` seconds. A refused event is counted too, so hammering does not reopen the gate."""
    now = time.time() if now is None else now
    window = int(now // window_s)
    elapsed = (now % window_s) / window_s
    current_key = _cache_key(scope, key, window)
    added = cache.add(current_key, 1, timeout=2 * window_s + 5)
    current = 1 if added else cache.incr(current_key)
    previous = int(cache.get(_cache_key(scope, key, window - 1)) or 0)
    if sliding_count(previous, current, elapsed) > limit:
        raise RateLimited(scope, retry_after(previous, current, elapsed, limit=limit, window_s=window_s))


def retry_after(previous: int, current: int, elapsed: float, *, limit: int, window_s: int) -> int:
    """Seconds until one more event would be allowed, counting the refused events already recorded."""
    following = current + 1
    if following <= limit:
        # Within this window, once enough of the previous window has slid out.
        fraction = 1.0 - (limit - following) / previous if previous else elapsed
        return max(1, math.ceil((fraction - elapsed) * window_s - 1e-9))
    # In the next window, where this window's count becomes the weighted previous one.
    fraction = 1.0 - (limit - 1) / current
    return max(1, math.ceil((1.0 - elapsed + fraction) * window_s - 1e-9))
