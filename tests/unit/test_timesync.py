"""The time-synchronisation rule (core/timesync.py), the real clock's offset, and the status word."""

from __future__ import annotations

import datetime as _dt

import pytest

from smgw_emu.core import statusword, timesync
from smgw_emu.core.clock import RealClock, VirtualClock

UTC = _dt.timezone.utc
T0 = _dt.datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
S = _dt.timedelta(seconds=1)


def sample(gateway_ahead_s: float, rtt_s: float = 0.0, reference: _dt.datetime = T0) -> timesync.TimeSample:
    """The GWA answered `reference`; the answer arrived rtt/2 later, when the gateway read
    reference + rtt/2 + gateway_ahead."""
    return timesync.TimeSample(reference, 100.0, 100.0 + rtt_s, reference + (rtt_s / 2 + gateway_ahead_s) * S)


@pytest.mark.parametrize("periods, limit_s", [([], 9), ([900], 9), ([900, 300], 3), ([60], 0.6), ([0, -5], 9)])
def test_limit_is_one_percent_of_the_shortest_capture_period(periods, limit_s):
    assert timesync.deviation_limit(periods) == limit_s * S


def test_within_and_beyond_the_limit():
    limit = timesync.deviation_limit([900])
    ok = timesync.decide(sample(5), limit)
    assert (ok.accepted, ok.within_limit, ok.deviation_ms, ok.limit_ms) == (True, True, 5000, 9000)
    assert ok.corrected == T0
    edge = timesync.decide(sample(9), limit)
    assert edge.within_limit  # exactly at the limit is allowed
    behind = timesync.decide(sample(-9.001), limit)
    assert (behind.within_limit, behind.deviation_ms) == (False, -9001)


def test_half_the_round_trip_is_added():
    decision = timesync.decide(sample(0, rtt_s=1.0), timesync.deviation_limit([]))
    assert decision.corrected == T0 + 0.5 * S and decision.deviation_ms == 0 and decision.round_trip_ms == 1000


@pytest.mark.parametrize("the_sample, reason", [
    (sample(0, rtt_s=2.5), "round-trip-too-long"),
    (timesync.TimeSample(T0, 100.0, 99.0, T0), "clock-went-backwards"),
    (sample(0, reference=_dt.datetime(2019, 12, 31, tzinfo=UTC)), "implausible-time"),
])
def test_refused_samples_leave_the_clock(the_sample, reason):
    decision = timesync.decide(the_sample, timesync.deviation_limit([]))
    assert (decision.accepted, decision.reason, decision.corrected) == (False, reason, None)


def test_policy_sets_the_round_trip_bound():
    strict = timesync.TimeSyncPolicy(max_round_trip_s=0.1)
    assert timesync.decide(sample(0, rtt_s=0.2), timesync.deviation_limit([]), strict).reason == "round-trip-too-long"


def test_time_document_round_trip():
    moment = _dt.datetime(2026, 11, 25, 8, 0, 0, 123456, tzinfo=UTC)
    assert timesync.parse_time_document(timesync.time_document(moment)) == moment
    other_zone = moment.astimezone(_dt.timezone(_dt.timedelta(hours=1)))
    assert b'utc="2026-11-25T08:00:00.123456Z"' in timesync.time_document(other_zone)


@pytest.mark.parametrize("body", [
    b"", b"not xml", b"<time utc='2026-01-01T00:00:00Z'/>",  # no namespace
    b"<time xmlns='urn:smgw-emu:time:1'/>", b"<time xmlns='urn:smgw-emu:time:1' utc='2026-01-01T00:00:00'/>",
    b"<time xmlns='urn:smgw-emu:time:1' utc='2026-13-01T00:00:00Z'/>",
    b"<!DOCTYPE t [<!ENTITY e 'x'>]><time xmlns='urn:smgw-emu:time:1' utc='&e;'/>",
    b"<time xmlns='urn:smgw-emu:time:1' utc='2026-01-01T00:00:00Z'>" + b"x" * 5000 + b"</time>",
])
def test_bad_time_documents_are_refused(body):
    with pytest.raises(timesync.TimeSyncError) as caught:
        timesync.parse_time_document(body)
    assert caught.value.reason == "bad-time-document"


def test_real_clock_keeps_an_offset_and_never_touches_monotonic():
    clock = RealClock()
    mono = clock.monotonic()
    clock.set(_dt.datetime.now(UTC) + 3600 * S)
    assert abs((clock.now() - _dt.datetime.now(UTC)).total_seconds() - 3600) < 1
    assert abs(clock.offset.total_seconds() - 3600) < 1
    assert clock.monotonic() - mono < 1
    clock.set(_dt.datetime.now(UTC) - 5 * S)
    assert abs(clock.offset.total_seconds() + 5) < 1


def test_virtual_clock_set_back_keeps_monotonic():
    clock = VirtualClock(T0)
    clock.advance(10)
    clock.set(T0)
    assert clock.now() == T0 and clock.monotonic() == 10


def test_status_word_bits():
    assert statusword.gateway_status_hex([]) == "00000000"
    assert statusword.gateway_status_hex(["fatal-error", "system-time-invalid"]) == "00000003"
    assert statusword.with_gateway_bits("0000000100000007", ["system-time-invalid"]) == "0000000300000007"
    assert statusword.with_gateway_bits("garbage", ["fatal-error"]) == "0000000100000000"
    with pytest.raises(KeyError):
        statusword.gateway_status(["no-such-bit"])
