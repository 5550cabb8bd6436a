"""Clocks for the sans-IO core.

The core never reads the time itself: it is handed a `Clock` (or a `datetime`). Two kinds:

* `RealClock`: wall time (UTC) and the OS monotonic clock.
* `VirtualClock`: time that only moves when told to. Tests and the control plane advance it, so a
  48 h TLS session limit or a 42-day TAF 6 history is reached in microseconds.

Timers are sans-IO too: `Clock.call_at(deadline, callback)` registers a callback that fires when
the clock passes the deadline. A real clock needs an adapter that wakes up on time (see
`smgw_emu.net.timers`); a virtual clock fires its timers inside `advance()`.
"""

from __future__ import annotations

import datetime as _dt
import heapq
import itertools
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

UTC = _dt.timezone.utc


def utc(dt: _dt.datetime) -> _dt.datetime:
    """Return `dt` as an aware UTC datetime; naive values are taken to be UTC already."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


class Clock(Protocol):
    def now(self) -> _dt.datetime:
        """Current time, timezone-aware UTC."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (for timeouts and rates)."""


class RealClock:
    """Wall-clock time. Timers are driven by an asyncio adapter, not by this class.

    `set()` (a time synchronisation, 5.13) does not touch the host's clock: it keeps the
    difference as `offset`, which `now()` adds. The monotonic clock is never adjusted.
    """

    virtual = False

    def __init__(self, offset: _dt.timedelta = _dt.timedelta(0)) -> None:
        self.offset = offset

    def now(self) -> _dt.datetime:
        return _dt.datetime.now(UTC) + self.offset

    def set(self, when: _dt.datetime) -> None:
        """Set the gateway's wall time to `when` (the host clock stays as it is)."""
        self.offset = utc(when) - _dt.datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


@dataclass(order=True)
class _Timer:
    deadline: float
    seq: int
    callback: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class VirtualClock:
    """A clock that stands still until `advance()` or `set()` moves it.

    `monotonic()` counts seconds since the clock was made, so it moves exactly as `now()` does
    (except that `set()` to an earlier time moves `now()` back but never `monotonic()`).
    """

    virtual = True

    def __init__(self, start: _dt.datetime | None = None) -> None:
        self._now = utc(start) if start else _dt.datetime(2026, 1, 1, tzinfo=UTC)
        self._mono = 0.0
        # Wall time is derived from one anchor (`_anchor_now` at `_anchor_mono`), not accumulated
        # step by step: adding a microsecond-rounded timedelta per step made now() drift away
        # from monotonic() (1 ms after 3000 steps of 1/3 s).
        self._anchor_now = self._now
        self._anchor_mono = 0.0
        self._timers: list[_Timer] = []
        self._seq = itertools.count()
        self.listeners: list[Callable[[], None]] = []

    def now(self) -> _dt.datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def call_at(self, deadline: float, callback: Callable[[], None]) -> _Timer:
        """Run `callback` once `monotonic()` reaches `deadline`."""
        timer = _Timer(deadline, next(self._seq), callback)
        heapq.heappush(self._timers, timer)
        return timer

    def call_later(self, delay: float, callback: Callable[[], None]) -> _Timer:
        return self.call_at(self._mono + max(0.0, delay), callback)

    def advance(self, seconds: float) -> None:
        """Move time forward, firing every timer due on the way at its own deadline, in order."""
        if not seconds >= 0 or math.isinf(seconds):  # also refuses NaN and infinity
            raise ValueError("a virtual clock only advances by a finite amount; use set() to jump back in wall time")
        self._run_until(self._mono + seconds)
        self._notify()

    def set(self, when: _dt.datetime) -> None:
        """Set wall time (e.g. a time sync); moves forward through timers, never back on monotonic."""
        when = utc(when)
        delta = (when - self._now).total_seconds()
        if delta >= 0:
            self._run_until(self._mono + delta)
        # Land exactly on `when` (float seconds may be a microsecond off) and re-anchor there.
        self._now = when
        self._anchor_now, self._anchor_mono = when, self._mono
        self._notify()

    def _run_until(self, target: float) -> None:
        while self._timers and self._timers[0].deadline <= target:
            timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self._step_to(timer.deadline)
            timer.callback()
        self._step_to(target)

    def _notify(self) -> None:
        for listener in list(self.listeners):
            listener()

    def _step_to(self, mono: float) -> None:
        if mono > self._mono:
            self._mono = mono
            self._now = self._anchor_now + _dt.timedelta(seconds=mono - self._anchor_mono)


def make_clock(mode: str, start: _dt.datetime | None = None) -> RealClock | VirtualClock:
    if mode == "real":
        return RealClock()
    if mode == "virtual":
        # Without a start time a virtual clock starts at the real time, so that signed wake-ups
        # and certificates made now are valid for it.
        return VirtualClock(start or _dt.datetime.now(UTC))
    raise ValueError(f"unknown clock mode {mode!r} (real or virtual)")
