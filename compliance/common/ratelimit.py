"""Fixed-window rate limits counted in the cache (Redis in production, so all web workers share them)."""

from __future__ import annotations

import hashlib
import time

from django.core.cache import cache


class RateLimited(Exception):
    def __init__(self, scope: str, retry_after_s: int) -> None:
        super().__init__(f"too many requests ({scope}); try again in {retry_after_s} s")
        self.scope = scope
        self.retry_after_s = retry_after_s


def hit(scope: str, key: str, *, limit: int, window_s: int) -> None:
    """Count one event for (scope, key); raise RateLimited once `limit` is exceeded in the window.

    The key is hashed so that e-mail addresses never appear in cache keys.
    """
    window = int(time.time() // window_s)
    digest = hashlib.sha256(f"{scope}:{key}".encode()).hexdigest()[:32]
    cache_key = f"rl:{scope}:{digest}:{window}"
    added = cache.add(cache_key, 1, timeout=window_s + 5)
    count = 1 if added else cache.incr(cache_key)
    if count > limit:
        raise RateLimited(scope, window_s - int(time.time() % window_s))
