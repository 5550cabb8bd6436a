"""Token buckets and the per-source limiter in front of the wake-up signature check."""

from __future__ import annotations

import pytest

from smgw_emu.core.ratelimit import PerSourceLimiter, TokenBucket


def test_bucket_starts_full_and_empties():
    bucket = TokenBucket(rate=1, burst=3, now=0)
    assert [bucket.try_take(0) for _ in range(4)] == [True, True, True, False]


def test_bucket_refills_at_rate_up_to_burst():
    bucket = TokenBucket(rate=2, burst=3, now=0)
    for _ in range(3):
        bucket.try_take(0)
    assert not bucket.try_take(0.4)
    assert bucket.try_take(0.5)  # 1 token after 0.5 s at 2/s
    assert bucket.tokens(100) == 3


def test_failed_take_costs_nothing():
    bucket = TokenBucket(rate=1, burst=2, now=0)
    assert not bucket.try_take(0, cost=3)
    assert bucket.tokens(0) == 2


def test_clock_stepping_back_adds_nothing():
    bucket = TokenBucket(rate=1, burst=1, now=10)
    assert bucket.try_take(10)
    assert not bucket.try_take(5)
    assert not bucket.try_take(10.5)
    assert bucket.try_take(11)


@pytest.mark.parametrize("rate, burst", [(0, 1), (-1, 1), (1, 0)])
def test_bucket_rejects_nonsense(rate, burst):
    with pytest.raises(ValueError):
        TokenBucket(rate, burst, now=0)


def test_sources_have_separate_budgets():
    limiter = PerSourceLimiter(rate=1, burst=2)
    assert [limiter.allow("flooder", 0) for _ in range(5)] == [True, True, False, False, False]
    assert limiter.allow("gwa", 0)


def test_least_recently_seen_source_is_forgotten():
    limiter = PerSourceLimiter(rate=1, burst=1, max_sources=2)
    limiter.allow("a", 0)
    limiter.allow("b", 0)
    limiter.allow("a", 0)  # a is now the most recent
    limiter.allow("c", 0)
    assert len(limiter) == 2
    assert "b" not in limiter and "a" in limiter and "c" in limiter
    assert not limiter.allow("a", 0)  # a kept its empty bucket
    assert limiter.allow("b", 0)  # b comes back with a full one


def test_overall_budget_caps_all_sources_together():
    limiter = PerSourceLimiter(rate=10, burst=10, overall_rate=1, overall_burst=3)
    allowed = [limiter.allow(f"source-{i}", 0) for i in range(6)]
    assert allowed == [True, True, True, False, False, False]
    assert limiter.allow("source-0", 1.0)


def test_limiter_rejects_nonsense():
    with pytest.raises(ValueError):
        PerSourceLimiter(rate=1, burst=1, max_sources=0)
