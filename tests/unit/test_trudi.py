"""The consumer's AR 2418-6 export (core/trudi.py): every document validates against the schema
set of TRuDI, carries what TRuDI's own checks demand, and gives back exactly the stored values."""

from __future__ import annotations

import datetime as _dt
import re
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from smgw_emu.core import trudi
from smgw_emu.reference.trudi_client import read_export
from tests.trudi_schema import assert_valid, schema

UTC = _dt.timezone.utc
T0 = _dt.datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
METER = "1XXX0098765432"
NS = {"ar": trudi.AR_NS, "espi": trudi.ESPI_NS}


def data(**changes) -> trudi.ExportData:
    base = dict(gateway_id="EXXX0012345678", customer_id="LV-0001", usage_point_id="DE0001", tariff_name="HT/NT",
                invoicing_party="EMT-TEST-0001", meters=(METER,), certificate_der=b"\x30\x03\x02\x01\x01",
                system_time=T0, manufacturer="smgw-emu", firmware_version="1.0.0")
    base.update(changes)
    return trudi.ExportData(**base)


def series(count: int, start: _dt.datetime = T0, first: str = "63910.8", step: str = "1.0",
           status: str = "0000000000100504") -> list[trudi.Reading]:
    return [trudi.Reading(start + _dt.timedelta(minutes=15 * i), str(Decimal(first) + i * Decimal(step)), status)
            for i in range(count)]


# -- the schema set itself ------------------------------------------------------------------------

def test_the_packaged_schema_set_is_the_one_its_notice_names():
    """The package carries the schema set the tests use; its NOTICE accounts for every file."""
    notice = (trudi.XSD_DIR / "NOTICE.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`([\w.-]+\.(?:xsd|xml))`", notice))
    files = {p.name for p in trudi.XSD_DIR.iterdir() if p.name != "NOTICE.md"}
    assert files == named
    assert "MIT" in notice


def test_the_example_of_the_schema_set_validates_and_a_broken_document_does_not():
    schema().validate(str(trudi.EXAMPLE_FILE))
    broken = trudi.EXAMPLE_FILE.read_bytes().replace(b"<espi:value>639108</espi:value>", b"<espi:value>x</espi:value>")
    assert not schema().is_valid(etree.fromstring(broken))  # the oracle does see an error


# -- documents ------------------------------------------------------------------------------------

def test_an_empty_export_validates():
    result = trudi.build_export(trudi.ExportData("EXXX0012345678", "LV-0001", "LV-0001", "no tariff profile"))
    assert_valid(result.document)
    assert result.values == 0 and result.skipped == ()


def test_an_export_with_empty_value_lists_validates_without_interval_blocks():
    lists = [trudi.ValueList(METER, "0100010800ff"), trudi.ValueList(METER, "0100020800ff", (), 900)]
    result = trudi.build_export(data(value_lists=lists, period=(T0, T0 + _dt.timedelta(days=1))))
    assert_valid(result.document)
    root = etree.fromstring(result.document)
    assert len(root.findall(".//ar:MeterReading", NS)) == 2
    assert root.findall(".//ar:IntervalBlock", NS) == []  # TRuDI refuses a block without readings


def test_a_filled_export_validates_and_reads_back_exactly():
    readings = series(4)
    log = [trudi.LogRecord(7, T0, "han-export-read", "consumer read", details={"consumer": "LV-0001"}),
           trudi.LogRecord(8, T0 + _dt.timedelta(seconds=1), "time-deviation-exceeded", "clock off", level=2, outcome=1,
                           parent=7)]
    lists = [trudi.ValueList(METER, "0100010800ff", readings, 900)]
    result = trudi.build_export(data(value_lists=lists, log_entries=log, period=(T0, T0 + _dt.timedelta(hours=1))))
    assert_valid(result.document)
    view = read_export(result.document)
    name = f"0100010800ff.{METER}.sm"
    assert [(v.time, v.value, v.status_fnn, v.status_ptb) for v in view.lists[name]] == [
        (r.time, Decimal(r.value), r.status.upper(), 0) for r in readings]
    assert view.meters[name] == METER
    assert (view.customer_id, view.smgw_id, view.usage_point_id, view.tariff_name, view.service_kind) == (
        "LV-0001", "EXXX0012345678", "DE0001", "HT/NT", 0)
    assert view.certificate_der == b"\x30\x03\x02\x01\x01"
    assert [(e.record, e.level, e.outcome) for e in view.log] == [(7, 1, 0), (8, 2, 1)]
    assert "event=han-export-read" in view.log[0].extensions
    root = etree.fromstring(result.document)
    assert root.findtext(".//ar:ReadingType/ar:scaler", namespaces=NS) == "-1"
    assert root.findtext(".//ar:ReadingType/espi:uom", namespaces=NS) == "72"  # Wh
    assert root.findtext(".//ar:ReadingType/ar:measurementPeriod", namespaces=NS) == "900"
    assert root.findtext(".//ar:IntervalBlock/ar:interval/ar:duration", namespaces=NS) == "3600"


def test_what_trudi_checks_beyond_the_schema_is_present():
    """TRuDI's ModelValidation (after the schema) refuses a document without these."""
    result = trudi.build_export(data(value_lists=[trudi.ValueList(METER, "0100010800ff", series(1))]))
    point = etree.fromstring(result.document).find("ar:UsagePoint", NS)
    for path in ("ar:usagePointId", "ar:tariffName", "ar:InvoicingParty", "ar:SMGW/ar:smgwId", "ar:SMGW/ar:certId",
                 "espi:ServiceCategory/espi:kind", "ar:Customer/ar:customerId", "ar:Certificate/ar:certType",
                 "ar:Certificate/ar:certContent", "ar:MeterReading/ar:meterReadingId", "ar:MeterReading/ar:Meter",
                 "ar:MeterReading/ar:ReadingType/ar:obisCode", "ar:MeterReading/ar:ReadingType/ar:qualifiedLogicalName",
                 "ar:MeterReading/ar:ReadingType/espi:powerOfTenMultiplier", "ar:MeterReading/ar:ReadingType/espi:uom",
                 "ar:MeterReading/ar:IntervalBlock/ar:interval/ar:duration",
                 "ar:MeterReading/ar:IntervalBlock/ar:interval/ar:start",
                 "ar:MeterReading/ar:IntervalBlock/ar:IntervalReading/ar:timePeriod/ar:start",
                 "ar:MeterReading/ar:IntervalBlock/ar:IntervalReading/espi:value",
                 "ar:MeterReading/ar:IntervalBlock/ar:IntervalReading/ar:statusPTB"):
        element = point.find(path, NS)
        assert element is not None and (len(element) or (element.text or "").strip()), path


def test_values_that_cannot_be_written_exactly_are_left_out_and_reported():
    readings = [trudi.Reading(T0, "12.5", "0" * 16), trudi.Reading(T0 + _dt.timedelta(minutes=15), "NaN", "0" * 16),
                trudi.Reading(T0 + _dt.timedelta(minutes=30), "abc", "0" * 16),
                trudi.Reading(T0 + _dt.timedelta(minutes=45), "1e99", "0" * 16),
                trudi.Reading(T0 + _dt.timedelta(minutes=60), "123456789012345678", "0" * 16)]
    result = trudi.build_export(data(value_lists=[trudi.ValueList(METER, "0100010800ff", readings)]))
    assert_valid(result.document)
    assert result.values == 1
    assert [(s.value, s.reason) for s in result.skipped] == [
        ("NaN", "not-a-number"), ("abc", "not-a-number"), ("1e99", "out-of-range"), ("123456789012345678", "out-of-range")]
    view = read_export(result.document)
    assert [v.value for v in view.lists[f"0100010800ff.{METER}.sm"]] == [Decimal("12.5")]


def test_one_scaler_per_list_is_the_finest_that_keeps_every_value_exact():
    assert trudi.split_value(["63910.8", "63911", "63911.25"]) == (-2, [6391080, 6391100, 6391125])
    assert trudi.split_value(["5000", "7000"]) == (3, [5, 7])
    assert trudi.split_value(["0", "0.000"]) == (0, [0, 0])
    assert trudi.split_value(["-1.5", "0"]) == (-1, [-15, 0])
    assert trudi.split_value([str(trudi.INT48_MAX), str(-trudi.INT48_MAX)]) == (0, [trudi.INT48_MAX, -trudi.INT48_MAX])
    # the largest value decides: a finer one it cannot share a scaler with is left out, never rounded
    assert trudi.split_value(["140737488355328", "0.1"]) == (0, [140737488355328, "precision"])
    assert trudi.split_value(["inf", "-Infinity", "", "1_0"]) == (0, ["not-a-number"] * 4)


@pytest.mark.parametrize("status, ptb", [
    ("0000000000100504", 0), ("0000000400000000", 1), ("0000000800000000", 2), ("0000000200000000", 2),
    ("0000000100000000", 4), ("0000000d00000000", 4), ("0000001000000000", 1), ("", 3), ("zz", 3),
    ("00000000000000000", 3),
])
def test_ptb_status_from_the_gateway_half_of_the_status_word(status, ptb):
    assert trudi.ptb_status(status) == ptb


def test_a_malformed_status_word_is_not_copied_and_marks_the_value_unusable():
    result = trudi.build_export(data(value_lists=[trudi.ValueList(METER, "0100010800ff", series(1, status="<&>"))]))
    assert_valid(result.document)
    value = read_export(result.document).lists[f"0100010800ff.{METER}.sm"][0]
    assert (value.status_fnn, value.status_ptb) == (None, 3)


def test_log_entries_out_of_range_stay_valid():
    log = [trudi.LogRecord(2**40, T0, "x", "bad \x00 char \ud800 and a long text " * 400, level=9, outcome=7,
                           parent=-1, details={"k\x01": "v" * 500}),
           trudi.LogRecord(1, _dt.datetime(2026, 1, 1), "", "", level=0)]
    result = trudi.build_export(data(log_entries=log))
    assert_valid(result.document)
    view = read_export(result.document)
    assert [(e.record, e.level, e.outcome) for e in view.log] == [(None, 5, 2), (1, 5, 0)]
    assert len(view.log[0].text) == 8192 and len(view.log[0].extensions) == 256


def test_service_kind_follows_the_medium_of_the_first_meter():
    for meter, kind, uom in (("7XXX0000000001", 1, "42"), ("8XXX0000000001", 2, "42"), ("6XXX0000000001", 4, "72")):
        obis = {"7": "0700030000ff", "8": "0800010000ff", "6": "0600010000ff"}[meter[0]]
        result = trudi.build_export(data(meters=(meter,), value_lists=[trudi.ValueList(meter, obis, series(1))]))
        assert_valid(result.document)
        root = etree.fromstring(result.document)
        assert root.findtext(".//espi:ServiceCategory/espi:kind", namespaces=NS) == str(kind)
        assert root.findtext(".//ar:ReadingType/espi:uom", namespaces=NS) == uom


# -- properties -----------------------------------------------------------------------------------

moments = st.datetimes(min_value=_dt.datetime(1970, 1, 1), max_value=_dt.datetime(2200, 12, 31),
                       timezones=st.sampled_from([UTC, _dt.timezone(_dt.timedelta(hours=2)),
                                                  _dt.timezone(_dt.timedelta(hours=-11, minutes=-30))]))
exact_values = st.builds(lambda m, e: Decimal(m).scaleb(e), st.integers(-trudi.INT48_MAX, trudi.INT48_MAX),
                         st.integers(-6, 3))
status_words = st.one_of(st.from_regex(r"[0-9a-fA-F]{16}", fullmatch=True), st.text(max_size=20))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(moments, st.integers(-trudi.INT48_MAX, trudi.INT48_MAX), status_words), max_size=30),
       st.integers(-6, 3))
def test_any_exact_values_and_times_give_a_valid_document_that_reads_back(entries, exponent):
    readings = [trudi.Reading(t, str(Decimal(m).scaleb(exponent)), s) for t, m, s in entries]
    start = min((t for t, _, _ in entries), default=T0)
    result = trudi.build_export(data(value_lists=[trudi.ValueList(METER, "0100010800ff", readings, 900)],
                                     period=(start, start + _dt.timedelta(days=2))))
    assert_valid(result.document)
    assert result.skipped == ()
    read = read_export(result.document).lists[f"0100010800ff.{METER}.sm"]
    expected = sorted(((r.time.replace(microsecond=0), Decimal(r.value)) for r in readings), key=lambda x: x[0])
    assert sorted((v.time, v.value) for v in read) == sorted(expected)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(moments, st.one_of(exact_values.map(str), st.text(max_size=30),
                                             st.decimals(allow_nan=True).map(str)), status_words), max_size=20),
       st.text(max_size=300), st.text(max_size=80))
def test_any_stored_text_still_gives_a_valid_document(entries, message, customer):
    readings = [trudi.Reading(t, v, s) for t, v, s in entries]
    log = [trudi.LogRecord(i, t, message, message) for i, (t, _, _) in enumerate(entries[:5])]
    result = trudi.build_export(data(customer_id=customer, tariff_name=message,
                                     value_lists=[trudi.ValueList(METER, "0100010800ff", readings)], log_entries=log))
    assert_valid(result.document)
    assert result.values + len(result.skipped) == len(readings)
