"""Tariff application (TAF) evaluation and the meter-data document for the EMT, sans-IO
(Lastenheft 6.5.6, 6.5.7, 6.5.9, 6.5.13, 6.5.14; docs/domain.md §5).

Pure functions: periods on the gateway's clock (time passed in), the derivation of a profile's
values from the stored meter readings (passed in as a lookup), and the XML document that the
gateway seals (core/cms.py) for the recipient EMT. Every [ours] choice of the data transfer is a
constant or function of this module (docs/decisions.md "Meter data to the EMT").
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from dataclasses import dataclass, field
from typing import Callable, Mapping

from lxml import etree

from smgw_emu.core.xmlsafe import parse_xml

UTC = _dt.timezone.utc

#: [ours] namespace of the meter-data document
NAMESPACE = "urn:smgw-emu:meterdata:1"
#: [ours] the derivation runs this long after a period's end, so the meter reading taken at the
#: boundary (app/meters.py) is in the store
SETTLE_S = 60
#: [ours] a gateway that was down catches up at most this many missed periods per profile
MAX_CATCH_UP = 1000
#: [ours] delivery backoff: the EMT profile's retry_interval_s, doubled per failure, at most this
RETRY_MAX_S = 3600
#: [ours] TAFs whose values are sent per capture period as a series (load profile); the others
#: send one value per register and billing period (TAF 1 and every other TAF until it is modelled)
SERIES_TAFS = frozenset({7})
#: [ours] TAFs that send only when asked (TAF 6: the readout of a past day, figs. 51/52), never per period
ON_DEMAND_TAFS = frozenset({6})
#: TAF 6 keeps daily values 42 days [fact]; [ours] a day is 00:00..24:00 UTC, its value the reading at its end
TAF6_RETENTION_DAYS = 42
#: [ours] what starts a transfer -> the document's kind attribute
KINDS = ("billing-period", "send-interval", "final", "on-demand", "taf6-day")
#: [ours] the send interval of a non-billing profile without a billing_period
NON_BILLING_DEFAULT_PERIOD = "P1D"

_DURATION = re.compile(r"P(?!\Z)(?:(\d{1,4})Y)?(?:(\d{1,4})M)?(?:(\d{1,4})W)?(?:(\d{1,5})D)?"
                       r"(?:T(?=\d)(?:(\d{1,6})H)?(?:(\d{1,6})M)?(?:(\d{1,8})S)?)?")


class TafError(ValueError):
    """A period or a document that cannot be used."""


@dataclass(frozen=True)
class Period:
    """A billing period ("P1M": calendar months, UTC) or a fixed one (seconds since the epoch)."""

    months: int = 0
    seconds: int = 0

    @classmethod
    def parse(cls, text: str, fallback_s: int = 0) -> "Period":
        """An ISO 8601 duration of the profile; empty text: ``fallback_s`` (the capture period)."""
        if not text:
            if fallback_s <= 0:
                raise TafError("no billing period and no capture period")
            return cls(seconds=fallback_s)
        m = _DURATION.fullmatch(text)
        if not m:
            raise TafError(f"billing period {text!r} is no ISO 8601 duration")
        y, mo, w, d, h, mi, s = (int(g or 0) for g in m.groups())
        months = 12 * y + mo
        seconds = ((7 * w + d) * 24 + h) * 3600 + mi * 60 + s
        if months and seconds:
            raise TafError(f"billing period {text!r} mixes calendar and fixed parts")
        return cls(months=months, seconds=seconds)

    def end_after(self, t: _dt.datetime) -> _dt.datetime:
        """The first period boundary strictly after ``t``.

        [ours] Fixed periods are aligned to the Unix epoch; calendar periods start at 00:00 UTC on
        the first of a month whose number since year 0 is a multiple of ``months``."""
        t = t.astimezone(UTC)
        if self.seconds:
            epoch = t.timestamp()
            return _dt.datetime.fromtimestamp((math.floor(epoch / self.seconds) + 1) * self.seconds, UTC)
        index = t.year * 12 + t.month - 1
        start = index - index % self.months
        return _month(start + self.months)

    def start_of(self, end: _dt.datetime) -> _dt.datetime:
        """The start of the period that ends at the boundary ``end``."""
        if self.seconds:
            return end - _dt.timedelta(seconds=self.seconds)
        return _month(end.year * 12 + end.month - 1 - self.months)


def _month(index: int) -> _dt.datetime:
    return _dt.datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def stamp(t: _dt.datetime) -> str:
    """The form of meter_values timestamps."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_stamp(text: str) -> _dt.datetime:
    return _dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


# ---------------------------------------------------------------------------------------------
# Derivation
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Value:
    time: str
    value: str | None          # None: missing
    status: str = ""


@dataclass(frozen=True)
class ProfileSpec:
    """What the derivation needs of an evaluation profile (class 28200)."""

    profile_id: str
    taf: int
    billing_relevant: bool
    tariff_id: str
    meters: tuple[str, ...]
    registers: tuple[str, ...]          # OBIS hex
    recipient: str
    billing_period: str
    capture_period_s: int

    @property
    def period(self) -> Period:
        return Period.parse(self.billing_period, self.capture_period_s)


@dataclass(frozen=True)
class MeterData:
    gateway: str
    profile: ProfileSpec
    kind: str
    start: _dt.datetime
    end: _dt.datetime
    values: Mapping[tuple[str, str], tuple[Value, ...]] = field(default_factory=dict)

    @property
    def missing(self) -> int:
        return sum(1 for series in self.values.values() for v in series if v.value is None)


#: (meter, obis hex, from stamp inclusive, to stamp exclusive) -> [(ts, value, status)]
Lookup = Callable[[str, str, str, str], list[tuple[str, str, str]]]


def derive(gateway: str, profile: ProfileSpec, kind: str, start: _dt.datetime, end: _dt.datetime,
           lookup: Lookup, *, series: bool | None = None) -> MeterData:
    """The values of ``profile`` for the period (start, end].

    [ours] TAF 7 (SERIES_TAFS): the reading at every capture-period boundary in (start, end].
    Every other TAF: one value per register, the latest reading in (start, end] (for TAF 1 the
    meter reading at the end of the billing period). A value the store lacks is sent as missing.
    ``series=False`` forces one value per register (an on-demand readout: the current values).
    """
    if series is None:
        series = profile.taf in SERIES_TAFS
    if end <= start:
        raise TafError("a period ends after it starts")
    values: dict[tuple[str, str], tuple[Value, ...]] = {}
    lo, hi = stamp(start + _dt.timedelta(seconds=1)), stamp(end + _dt.timedelta(seconds=1))
    for meter in profile.meters:
        for obis in profile.registers:
            rows = lookup(meter, obis, lo, hi)
            if series:
                by_time = {ts: (v, s) for ts, v, s in rows}
                found_values = []
                for at in boundaries(start, end, profile.capture_period_s):
                    ts = stamp(at)
                    found = by_time.get(ts)
                    found_values.append(Value(ts, found[0], found[1]) if found else Value(ts, None))
                values[(meter, obis)] = tuple(found_values)
            else:
                values[(meter, obis)] = (Value(*rows[-1]),) if rows else (Value(stamp(end), None),)
    return MeterData(gateway, profile, kind, start, end, values)


def boundaries(start: _dt.datetime, end: _dt.datetime, period_s: int) -> list[_dt.datetime]:
    """Capture-period boundaries (multiples of ``period_s`` since the epoch) in (start, end]."""
    first = math.floor(start.timestamp() / period_s) + 1
    last = math.floor(end.timestamp() / period_s)
    return [_dt.datetime.fromtimestamp(k * period_s, UTC) for k in range(first, last + 1)]


def due_periods(period: Period, next_end: _dt.datetime, now: _dt.datetime, limit: int = MAX_CATCH_UP
                ) -> list[tuple[_dt.datetime, _dt.datetime]]:
    """Periods (start, end) whose end ``next_end``, and each one after it, lies at or before
    ``now - SETTLE_S``: what a (restarted) gateway has to send now."""
    out = []
    end = next_end
    while end + _dt.timedelta(seconds=SETTLE_S) <= now and len(out) < limit:
        out.append((period.start_of(end), end))
        end = period.end_after(end)
    return out


# ---------------------------------------------------------------------------------------------
# The document
# ---------------------------------------------------------------------------------------------


def _q(tag: str) -> str:
    return f"{{{NAMESPACE}}}{tag}"


def to_xml(data: MeterData, transfer_id: str) -> bytes:
    """[ours] The meter-data document (one per transfer)."""
    p = data.profile
    root = etree.Element(_q("meter-data"), {
        "transfer-id": transfer_id, "gateway": data.gateway, "profile": p.profile_id, "taf": str(p.taf),
        "billing-relevant": "true" if p.billing_relevant else "false", "tariff-id": p.tariff_id,
        "kind": data.kind, "period-start": stamp(data.start), "period-end": stamp(data.end),
    }, nsmap={None: NAMESPACE})
    for meter in p.meters:
        m = etree.SubElement(root, _q("meter"), {"id": meter})
        for obis in p.registers:
            r = etree.SubElement(m, _q("register"), {"obis": obis})
            for v in data.values.get((meter, obis), ()):
                attrs = {"time": v.time}
                if v.value is None:
                    attrs["missing"] = "true"
                else:
                    attrs["status"] = v.status
                e = etree.SubElement(r, _q("value"), attrs)
                if v.value is not None:
                    e.text = v.value
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


@dataclass(frozen=True)
class ParsedData:
    attributes: Mapping[str, str]
    values: Mapping[tuple[str, str], tuple[Value, ...]]


def from_xml(body: bytes, *, max_bytes: int = 4 << 20) -> ParsedData:
    """Parse a meter-data document (what the EMT does after opening the container)."""
    try:
        root = parse_xml(body, max_bytes=max_bytes)
    except Exception as exc:
        raise TafError(f"meter-data document unreadable: {exc}") from None
    if root.tag != _q("meter-data"):
        raise TafError(f"not a meter-data document: {root.tag}")
    values: dict[tuple[str, str], tuple[Value, ...]] = {}
    for m in root.findall(_q("meter")):
        for r in m.findall(_q("register")):
            values[(m.get("id", ""), r.get("obis", ""))] = tuple(
                Value(v.get("time", ""), None if v.get("missing") == "true" else (v.text or ""), v.get("status", ""))
                for v in r.findall(_q("value")))
    return ParsedData(dict(root.attrib), values)


def parse_day(text: str, today: _dt.date) -> _dt.date:
    """A TAF 6 readout day (YYYY-MM-DD). TafError when it is malformed."""
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        raise TafError("the day is a calendar date YYYY-MM-DD")
    try:
        return _dt.date.fromisoformat(text)
    except ValueError:
        raise TafError(f"{text} is no calendar date") from None


def day_kept(day: _dt.date, today: _dt.date) -> str | None:
    """None when the daily values of ``day`` are over and still kept, else why not."""
    if day >= today:
        return f"{day.isoformat()} is not over yet"
    if (today - day).days > TAF6_RETENTION_DAYS:
        return f"{day.isoformat()} is older than {TAF6_RETENTION_DAYS} days"
    return None


def day_bounds(day: _dt.date) -> tuple[_dt.datetime, _dt.datetime]:
    start = _dt.datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + _dt.timedelta(days=1)


def summary(data: MeterData) -> Mapping[str, str]:
    return {"profile": data.profile.profile_id, "taf": str(data.profile.taf), "kind": data.kind,
            "period-start": stamp(data.start), "period-end": stamp(data.end),
            "values": str(sum(len(s) for s in data.values.values())), "missing": str(data.missing)}
