"""Token buckets, sans-IO: the caller passes a monotonic time in seconds.

Used in front of the wake-up signature check: each source gets its own bucket, so a flood from
one source empties only its own budget and cannot starve packets from another; an optional
overall bucket caps the total CPU spent on signatures, whatever the number of sources.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, Hashable, TypeVar

K = TypeVar("K", bound=Hashable)


class TokenBucket:
    """`rate` tokens per second, holding at most `burst`; starts full."""

    def __init__(self, rate: float, burst: float, now: float):
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._updated = now

    def tokens(self, now: float) -> float:
        self._refill(now)
        return self._tokens

    def try_take(self, now: float, cost: float = 1.0) -> bool:
        """Take `cost` tokens if there are enough; False (and nothing taken) otherwise."""
        self._refill(now)
        if self._tokens < cost:
            return False
        self._tokens -= cost
        return True

    def _refill(self, now: float) -> None:
        elapsed = now - self._updated
        if elapsed > 0:  # a clock that does not advance (or steps back) adds nothing
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
            self._updated = now


class PerSourceLimiter(Generic[K]):
    """One TokenBucket per source, for at most `max_sources` sources (least recently seen are
    forgotten), optionally behind one overall bucket shared by all sources.

    Forgetting a source hands it a full bucket when it returns; the overall bucket is what
    bounds the total when sources are many (UDP source addresses are cheap to vary).
    """

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        max_sources: int = 1024,
        overall_rate: float | None = None,
        overall_burst: float | None = None,
    ):
        if max_sources < 1:
            raise ValueError("max_sources must be >= 1")
        self.rate = rate
        self.burst = burst
        self.max_sources = max_sources
        self._overall_rate = overall_rate
        self._overall_burst = overall_burst if overall_burst is not None else overall_rate
        self._overall: TokenBucket | None = None
        self._buckets: OrderedDict[K, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def __contains__(self, source: object) -> bool:
        return source in self._buckets

    def allow(self, source: K, now: float) -> bool:
        """Charge one unit to `source` (and to the overall budget); False if either is empty."""
        bucket = self._bucket_for(source, now)
        if not bucket.try_take(now):
            return False
        overall = self._overall_bucket(now)
        return overall is None or overall.try_take(now)

    def _bucket_for(self, source: K, now: float) -> TokenBucket:
        bucket = self._buckets.get(source)
        if bucket is None:
            bucket = self._buckets[source] = TokenBucket(self.rate, self.burst, now)
            if len(self._buckets) > self.max_sources:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(source)
        return bucket

    def _overall_bucket(self, now: float) -> TokenBucket | None:
        if self._overall is None and self._overall_rate is not None:
            self._overall = TokenBucket(self._overall_rate, self._overall_burst or self._overall_rate, now)
        return self._overall
