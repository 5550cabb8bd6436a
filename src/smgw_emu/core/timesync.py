"""Time synchronisation (Lastenheft 5.13) as a rule, sans-IO.

The gateway asks the GWA's time service for the current time over the ADMIN-SERVICE channel (an
authenticated channel: TLS pinned to the GWA certificate of the communication profile), measures
the round trip on its monotonic clock and decides here what to do with the answer.

[fact] PTB-A 50.8: a capture time may deviate from the legal time by at most 1 % of the capture
period (9 s at 15 min). Beyond that, values captured meanwhile are flagged and a log entry is
written.

[ours] (docs/decisions.md "Time synchronisation"):
* the reference time is the GWA's time plus half the measured round trip (the answer is at most
  half a round trip old); the uncertainty is half the round trip;
* a sample whose round trip is longer than ``TimeSyncPolicy.max_round_trip_s`` (default 2 s, the
  PTB-A 50.8 latency bound for meter to gateway) is refused: the clock stays as it is;
* the limit is 1 % of the shortest capture period of the gateway's meters, 900 s when it has
  none (so 9 s);
* the clock is always set to the reference time, within the limit or not; beyond the limit the
  deviation is reported (event, calibration log) and values are flagged;
* a reference time before ``TimeSyncPolicy.earliest`` is refused as implausible;
* the time service answers ``<time xmlns="urn:smgw-emu:time:1" utc="2026-11-25T08:00:00.123456Z"/>``.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Iterable

from lxml import etree

from smgw_emu.core.xmlsafe import XmlInputError, parse_xml

__all__ = [
    "DEFAULT_CAPTURE_PERIOD_S",
    "LIMIT_FRACTION",
    "TIME_NS",
    "TimeSample",
    "TimeSyncDecision",
    "TimeSyncError",
    "TimeSyncPolicy",
    "decide",
    "deviation_limit",
    "parse_time_document",
    "time_document",
]

UTC = _dt.timezone.utc
TIME_NS = "urn:smgw-emu:time:1"
#: [fact] PTB-A 50.8: 1 % of the capture period.
LIMIT_FRACTION = 0.01
#: [ours] The capture period the limit is taken from when the gateway has no meter.
DEFAULT_CAPTURE_PERIOD_S = 900
_MAX_DOCUMENT_BYTES = 4096


class TimeSyncError(ValueError):
    """A time-service answer that cannot be used; ``reason`` is a stable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class TimeSyncPolicy:
    """[ours] The knobs of the rule; the gateway fills them from `[operations]`."""

    max_round_trip_s: float = 2.0
    earliest: _dt.datetime = _dt.datetime(2020, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class TimeSample:
    """One answer of the time service and when it was asked, on the gateway's clocks."""

    reference: _dt.datetime      # the GWA's time in its answer
    sent_mono: float             # gateway monotonic clock when the request left
    received_mono: float         # gateway monotonic clock when the answer arrived
    local_at_receive: _dt.datetime  # gateway wall clock when the answer arrived


@dataclass(frozen=True)
class TimeSyncDecision:
    accepted: bool
    reason: str                  # "" when accepted, else a stable code
    corrected: _dt.datetime | None  # the time to set the clock to (at receive time)
    deviation: _dt.timedelta     # gateway clock minus reference; positive = gateway ahead
    round_trip: _dt.timedelta
    limit: _dt.timedelta
    within_limit: bool

    @property
    def deviation_ms(self) -> int:
        return round(self.deviation / _dt.timedelta(milliseconds=1))

    @property
    def limit_ms(self) -> int:
        return round(self.limit / _dt.timedelta(milliseconds=1))

    @property
    def round_trip_ms(self) -> int:
        return round(self.round_trip / _dt.timedelta(milliseconds=1))


def deviation_limit(capture_periods_s: Iterable[int]) -> _dt.timedelta:
    """1 % of the shortest capture period (of the default one when there is none)."""
    periods = [p for p in capture_periods_s if p and p > 0]
    shortest = min(periods) if periods else DEFAULT_CAPTURE_PERIOD_S
    return _dt.timedelta(seconds=shortest * LIMIT_FRACTION)


def decide(sample: TimeSample, limit: _dt.timedelta, policy: TimeSyncPolicy = TimeSyncPolicy()) -> TimeSyncDecision:
    """What to do with one sample: the corrected time and whether the deviation was within the limit."""
    rtt_s = sample.received_mono - sample.sent_mono
    round_trip = _dt.timedelta(seconds=max(0.0, rtt_s))
    local = sample.local_at_receive.astimezone(UTC)

    def refused(reason: str) -> TimeSyncDecision:
        return TimeSyncDecision(False, reason, None, _dt.timedelta(0), round_trip, limit, True)

    if rtt_s < 0:
        return refused("clock-went-backwards")
    if rtt_s > policy.max_round_trip_s:
        return refused("round-trip-too-long")
    reference = sample.reference.astimezone(UTC)
    if reference < policy.earliest:
        return refused("implausible-time")
    corrected = reference + round_trip / 2
    deviation = local - corrected
    return TimeSyncDecision(True, "", corrected, deviation, round_trip, limit, abs(deviation) <= limit)


def time_document(now: _dt.datetime) -> bytes:
    """The time service's answer (the reference GWA serves it)."""
    root = etree.Element(f"{{{TIME_NS}}}time", nsmap={None: TIME_NS})
    root.set("utc", now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def parse_time_document(data: bytes) -> _dt.datetime:
    """The time in a time-service answer; TimeSyncError with a reason for anything else."""
    if len(data) > _MAX_DOCUMENT_BYTES:
        raise TimeSyncError("bad-time-document", f"time document of {len(data)} bytes (at most {_MAX_DOCUMENT_BYTES})")
    try:
        root = parse_xml(data, max_depth=4)
    except XmlInputError as exc:
        raise TimeSyncError("bad-time-document", f"time document: {exc}") from None
    if root.tag != f"{{{TIME_NS}}}time":
        raise TimeSyncError("bad-time-document", f"expected <time xmlns=\"{TIME_NS}\">, got {str(root.tag)[:80]}")
    text = root.get("utc", "")
    if not text.endswith("Z"):
        raise TimeSyncError("bad-time-document", f"utc must be ISO 8601 UTC ending in Z, got {text[:40]!r}")
    try:
        moment = _dt.datetime.fromisoformat(text[:-1] + "+00:00")
    except ValueError:
        raise TimeSyncError("bad-time-document", f"utc is no ISO 8601 time: {text[:40]!r}") from None
    return moment.astimezone(UTC)
