"""The sliding-window limiter: a burst that straddles a window boundary is still one burst."""

from __future__ import annotations

import pytest

from compliance.common.ratelimit import RateLimited, hit, sliding_count

pytestmark = pytest.mark.django_db


def test_limit_holds_within_one_window() -> None:
    for i in range(3):
        hit("t", "k", limit=3, window_s=100, now=1000.0 + i)
    with pytest.raises(RateLimited):
        hit("t", "k", limit=3, window_s=100, now=1004.0)


def test_burst_straddling_a_boundary_is_refused() -> None:
    # Two events just before the boundary at 1100 and two just after: a fixed window would allow all four.
    hit("t", "k", limit=3, window_s=100, now=1099.0)
    hit("t", "k", limit=3, window_s=100, now=1099.5)
    hit("t", "k", limit=3, window_s=100, now=1100.0)
    with pytest.raises(RateLimited) as caught:
        hit("t", "k", limit=3, window_s=100, now=1100.5)
    assert 1 <= caught.value.retry_after_s <= 100


def test_the_gate_reopens_once_the_old_events_slide_out() -> None:
    waits = []
    for key in ("early", "on-time"):
        for i in range(3):
            hit("t", key, limit=3, window_s=100, now=1090.0 + i)
        with pytest.raises(RateLimited) as caught:
            hit("t", key, limit=3, window_s=100, now=1110.0)
        waits.append(caught.value.retry_after_s)
    assert waits[0] == waits[1]
    # The refused event counts too; at the suggested time one more event is allowed, two seconds before not.
    with pytest.raises(RateLimited):
        hit("t", "early", limit=3, window_s=100, now=1110.0 + waits[0] - 2)
    hit("t", "on-time", limit=3, window_s=100, now=1110.0 + waits[1])


def test_retry_after_is_exact_at_the_boundary() -> None:
    from compliance.common.ratelimit import retry_after

    # previous 3, current 1 (refused) at 10 % of the window, limit 3: one more needs 3(1-e)+2 <= 3, e >= 2/3.
    assert retry_after(3, 1, 0.1, limit=3, window_s=100) == 57
    # current alone over the limit: next window, where 5(1-e)+1 <= 3 needs e >= 0.6.
    assert retry_after(0, 5, 0.5, limit=3, window_s=100) == 110


def test_keys_and_scopes_are_independent() -> None:
    for i in range(3):
        hit("t", "a", limit=3, window_s=100, now=1000.0 + i)
    hit("t", "b", limit=3, window_s=100, now=1003.0)
    hit("u", "a", limit=3, window_s=100, now=1003.0)


def test_cache_keys_hold_no_plaintext() -> None:
    from compliance.common.ratelimit import _cache_key

    key = _cache_key("submit-email", "ada@example.org", 10)
    assert "ada" not in key and "example" not in key and key.startswith("rl:submit-email:")


@pytest.mark.parametrize(
    ("previous", "current", "elapsed", "expected"),
    [(0, 1, 0.5, 1.0), (4, 0, 0.0, 4.0), (4, 1, 0.75, 2.0), (10, 2, 1.0, 2.0)],
)
def test_sliding_count(previous: int, current: int, elapsed: float, expected: float) -> None:
    assert sliding_count(previous, current, elapsed) == pytest.approx(expected)
