"""RealClock / VirtualClock and the sans-IO timers."""

from __future__ import annotations

import datetime as dt

import pytest

from smgw_emu.core.clock import UTC, RealClock, VirtualClock, make_clock, utc

START = dt.datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_default_start_is_aware_utc():
    c = VirtualClock()
    assert c.now() == dt.datetime(2026, 1, 1, tzinfo=UTC)
    assert c.now().utcoffset() == dt.timedelta(0)
    assert c.monotonic() == 0.0


def test_start_is_normalised_to_utc():
    cest = dt.timezone(dt.timedelta(hours=2))
    c = VirtualClock(dt.datetime(2026, 6, 1, 14, 0, tzinfo=cest))
    assert c.now() == dt.datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    assert c.now().tzinfo is UTC
    naive = VirtualClock(dt.datetime(2026, 6, 1, 12, 0))
    assert naive.now() == dt.datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def test_utc_helper():
    assert utc(dt.datetime(2026, 1, 1)).tzinfo is UTC
    assert utc(dt.datetime(2026, 1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1)))) == dt.datetime(2026, 1, 1, tzinfo=UTC)


def test_now_and_monotonic_move_together():
    c = VirtualClock(START)
    c.advance(10)
    assert c.monotonic() == 10.0
    assert c.now() == START + dt.timedelta(seconds=10)
    c.advance(0.5)
    c.advance(0)
    assert c.monotonic() == 10.5
    assert c.now() == START + dt.timedelta(seconds=10.5)
    c.advance(48 * 3600)
    assert c.now() == START + dt.timedelta(hours=48, seconds=10.5)


def test_many_small_steps_do_not_drift():
    c = VirtualClock(START)
    for _ in range(3000):
        c.advance(1 / 3)
    assert c.monotonic() == pytest.approx(1000.0)
    assert abs((c.now() - START).total_seconds() - c.monotonic()) <= 1e-6


def test_timer_chain_with_fractional_period_does_not_drift():
    c = VirtualClock(START)
    seen = []

    def tick():
        seen.append((c.monotonic(), c.now()))
        if len(seen) < 3000:
            c.call_later(1 / 3, tick)

    c.call_later(1 / 3, tick)
    c.advance(2000)
    assert len(seen) == 3000
    for mono, now in seen:
        assert abs((now - START).total_seconds() - mono) <= 1e-6


@pytest.mark.parametrize("bad", [-1, -1e-9, float("nan"), float("inf")])
def test_advance_negative_or_non_finite_raises_and_changes_nothing(bad):
    c = VirtualClock(START)
    fired = []
    c.call_later(1, lambda: fired.append(1))
    with pytest.raises(ValueError):
        c.advance(bad)
    assert c.monotonic() == 0.0 and c.now() == START and fired == []
    c.advance(1)
    assert fired == [1]


def test_timers_fire_in_deadline_order_at_their_own_time():
    c = VirtualClock(START)
    fired = []

    def cb(name, deadline):
        def f():
            fired.append((name, c.monotonic(), c.now()))
            assert c.monotonic() == deadline
            assert c.now() == START + dt.timedelta(seconds=deadline)
        return f

    c.call_at(30, cb("c", 30))
    c.call_at(10, cb("a", 10))
    c.call_later(20, cb("b", 20))
    c.call_at(10, cb("a2", 10))  # same deadline: scheduling order
    c.call_at(100, cb("late", 100))
    c.advance(50)
    assert [f[0] for f in fired] == ["a", "a2", "b", "c"]
    assert [f[1] for f in fired] == [10, 10, 20, 30]
    assert c.monotonic() == 50 and c.now() == START + dt.timedelta(seconds=50)
    c.advance(49.999)
    assert len(fired) == 4
    c.advance(0.001)
    assert [f[0] for f in fired][-1] == "late"


def test_timer_exactly_at_target_fires():
    c = VirtualClock(START)
    fired = []
    c.call_later(5, lambda: fired.append(c.monotonic()))
    c.advance(5)
    assert fired == [5]


def test_cancelled_timers_do_not_fire():
    c = VirtualClock(START)
    fired = []
    t1 = c.call_later(1, lambda: fired.append(1))
    c.call_later(2, lambda: fired.append(2))
    t1.cancel()
    c.advance(5)
    assert fired == [2]
    c.advance(5)
    assert fired == [2]


def test_callback_can_cancel_a_later_timer_in_the_same_advance():
    c = VirtualClock(START)
    fired = []
    later = c.call_later(2, lambda: fired.append("later"))
    c.call_later(1, lambda: (fired.append("first"), later.cancel()))
    c.advance(10)
    assert fired == ["first"]


def test_timers_scheduled_by_callback_fire_if_due():
    c = VirtualClock(START)
    fired = []

    def first():
        fired.append(("first", c.monotonic()))
        c.call_later(3, lambda: fired.append(("due", c.monotonic())))
        c.call_later(100, lambda: fired.append(("not due", c.monotonic())))
        c.call_later(0, lambda: fired.append(("now", c.monotonic())))

    c.call_later(2, first)
    c.call_later(4, lambda: fired.append(("other", c.monotonic())))
    c.advance(10)
    assert fired == [("first", 2), ("now", 2), ("other", 4), ("due", 5)]
    assert c.monotonic() == 10
    c.advance(100)
    assert fired[-1] == ("not due", 102)


def test_call_later_negative_delay_fires_on_next_advance():
    c = VirtualClock(START)
    c.advance(10)
    fired = []
    c.call_later(-5, lambda: fired.append(c.monotonic()))
    assert fired == []  # never synchronously
    c.advance(0)
    assert fired == [10]


def test_listeners_called_after_advance_and_set():
    c = VirtualClock(START)
    seen = []
    c.listeners.append(lambda: seen.append((c.monotonic(), c.now())))
    c.advance(3)
    c.advance(0)
    assert seen == [(3, START + dt.timedelta(seconds=3))] * 2
    fwd = START + dt.timedelta(seconds=10, microseconds=7)
    c.set(fwd)
    assert seen[-1][1] == fwd  # listeners see the exact new wall time
    back = START - dt.timedelta(hours=1)
    c.set(back)
    assert seen[-1] == (seen[-2][0], back)
    assert len(seen) == 4


def test_set_forward_fires_timers():
    c = VirtualClock(START)
    fired = []
    c.call_later(60, lambda: fired.append(c.now()))
    c.call_later(7200, lambda: fired.append(c.now()))
    target = START + dt.timedelta(hours=1, microseconds=1)
    c.set(target)
    assert fired == [START + dt.timedelta(seconds=60)]
    assert c.now() == target
    assert c.monotonic() == pytest.approx(3600.000001)


def test_set_backward_moves_now_but_not_monotonic():
    c = VirtualClock(START)
    c.advance(100)
    fired = []
    c.call_later(50, lambda: fired.append((c.monotonic(), c.now())))
    back = START - dt.timedelta(days=1)
    c.set(back)
    assert c.now() == back
    assert c.monotonic() == 100
    assert fired == []
    # monotonic timers still fire on monotonic time; wall time continues from the new value
    c.advance(50)
    assert fired == [(150, back + dt.timedelta(seconds=50))]
    assert c.now() == back + dt.timedelta(seconds=50)


def test_set_accepts_other_timezones():
    c = VirtualClock(START)
    cet = dt.timezone(dt.timedelta(hours=1))
    c.set(dt.datetime(2026, 3, 1, 14, 0, tzinfo=cet))  # 13:00 UTC
    assert c.now() == START + dt.timedelta(hours=1)
    assert c.now().tzinfo is UTC
    assert c.monotonic() == 3600


def test_real_clock_is_aware_utc_and_monotonic():
    c = RealClock()
    assert c.virtual is False
    now = c.now()
    assert now.tzinfo is not None and now.utcoffset() == dt.timedelta(0)
    assert abs((dt.datetime.now(dt.timezone.utc) - now).total_seconds()) < 5
    a = c.monotonic()
    b = c.monotonic()
    assert b >= a


def test_make_clock():
    assert isinstance(make_clock("real"), RealClock)
    v = make_clock("virtual", START)
    assert isinstance(v, VirtualClock) and v.virtual is True and v.now() == START
    with pytest.raises(ValueError, match="bogus"):
        make_clock("bogus")
