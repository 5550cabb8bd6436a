"""core/taf.py: periods on the gateway's clock, the derivation of TAF 1 / TAF 7 values, the
meter-data document."""

from __future__ import annotations

import datetime as _dt

import pytest
from hypothesis import given, strategies as st

from smgw_emu.core import taf

UTC = _dt.timezone.utc
T0 = _dt.datetime(2026, 3, 1, tzinfo=UTC)


def spec(taf_no: int = 1, period: str = "PT1H") -> taf.ProfileSpec:
    return taf.ProfileSpec("P", taf_no, taf_no == 1, "T", ("1ABC0012345678",), ("0100010800ff",), "EMT", period, 900)


def test_periods_fixed_and_calendar():
    assert taf.Period.parse("PT1H").end_after(T0) == T0 + _dt.timedelta(hours=1)
    assert taf.Period.parse("P1M").end_after(_dt.datetime(2026, 1, 31, 23, tzinfo=UTC)) == _dt.datetime(2026, 2, 1, tzinfo=UTC)
    assert taf.Period.parse("P1Y").end_after(T0) == _dt.datetime(2027, 1, 1, tzinfo=UTC)
    assert taf.Period.parse("P1M").start_of(T0) == _dt.datetime(2026, 2, 1, tzinfo=UTC)
    assert taf.Period.parse("", 900) == taf.Period(seconds=900)


@pytest.mark.parametrize("text", ["1H", "P", "PT", "P1M1D", "junk", "P1MT1H"])
def test_bad_periods_are_refused(text):
    with pytest.raises(taf.TafError):
        taf.Period.parse(text)


@given(st.datetimes(min_value=_dt.datetime(2000, 1, 1), max_value=_dt.datetime(2100, 1, 1)).map(lambda d: d.replace(tzinfo=UTC)),
       st.sampled_from(["PT15M", "PT1H", "P1D", "P1M", "P3M", "P1Y"]))
def test_period_boundaries(t, text):
    period = taf.Period.parse(text)
    end = period.end_after(t)
    assert end > t and period.start_of(end) <= t  # t lies in exactly the period (start, end]
    assert period.end_after(end - _dt.timedelta(microseconds=1)) == end  # a boundary is its own period's end
    assert period.end_after(end) > end


def test_taf1_takes_the_reading_at_the_period_end_and_flags_missing():
    rows = {("1ABC0012345678", "0100010800ff"): [("2026-03-01T00:30:00Z", "5.0", "s"), ("2026-03-01T01:00:00Z", "7.5", "s")]}

    def lookup(m, o, lo, hi):
        return [r for r in rows.get((m, o), []) if lo <= r[0] < hi]

    data = taf.derive("GW", spec(), "billing-period", T0, T0 + _dt.timedelta(hours=1), lookup)
    assert data.values[("1ABC0012345678", "0100010800ff")] == (taf.Value("2026-03-01T01:00:00Z", "7.5", "s"),)
    empty = taf.derive("GW", spec(), "billing-period", T0, T0 + _dt.timedelta(hours=1), lambda *a: [])
    assert empty.missing == 1


def test_taf7_series_and_document_round_trip():
    def lookup(m, o, lo, hi):
        return [("2026-03-01T00:15:00Z", "1", "s"), ("2026-03-01T00:45:00Z", "3", "s")]

    data = taf.derive("GW", spec(7), "send-interval", T0, T0 + _dt.timedelta(hours=1), lookup)
    series = data.values[("1ABC0012345678", "0100010800ff")]
    assert [v.value for v in series] == ["1", None, "3", None] and data.missing == 2
    parsed = taf.from_xml(taf.to_xml(data, "id-1"))
    assert parsed.attributes["transfer-id"] == "id-1" and parsed.values == data.values


def test_bad_documents_are_refused():
    for body in (b"<x/>", b"not xml", b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e "x">]><a>&e;</a>'):
        with pytest.raises(taf.TafError):
            taf.from_xml(body)


def test_due_periods_catch_up_after_downtime():
    period = taf.Period.parse("PT1H")
    now = T0 + _dt.timedelta(hours=3, seconds=taf.SETTLE_S)
    due = taf.due_periods(period, T0 + _dt.timedelta(hours=1), now)
    assert [e for _, e in due] == [T0 + _dt.timedelta(hours=h) for h in (1, 2, 3)]
    assert taf.due_periods(period, T0 + _dt.timedelta(hours=1), T0 + _dt.timedelta(hours=1)) == []


def test_taf6_days():
    today = _dt.date(2026, 3, 10)
    assert taf.parse_day("2026-03-09", today) == _dt.date(2026, 3, 9)
    for bad in ("2026-02-30", "9.3.2026", "2026-3-9", ""):
        with pytest.raises(taf.TafError):
            taf.parse_day(bad, today)
    assert taf.day_kept(_dt.date(2026, 3, 9), today) is None
    assert taf.day_kept(today - _dt.timedelta(days=42), today) is None
    assert "older" in taf.day_kept(today - _dt.timedelta(days=43), today)
    assert "not over" in taf.day_kept(today, today)
    assert taf.day_bounds(_dt.date(2026, 3, 9)) == (_dt.datetime(2026, 3, 9, tzinfo=UTC), _dt.datetime(2026, 3, 10, tzinfo=UTC))
