"""The consumer's export in the AR 2418-6 XML format that PTB's TRuDI reads (docs/domain.md §7), sans-IO.

Everything is handed in (gateway id, meters, value lists, consumer-log entries, tariff names);
nothing is read from a store or a clock. :func:`build_export` returns the document as UTF-8 bytes.
The schema set lives beside this module (``trudi_xsd/``, :data:`SCHEMA_FILE`); the tests validate
every document against it with ``xmlschema`` (not a runtime dependency).

Shape, after ``trudi_xsd/example-TAF7.xml``: one ``UsagePoints`` root with one ``UsagePoint``
(ServiceCategory, usagePointId, Customer, InvoicingParty, SMGW, Certificate, tariffName, the
LogEntry elements, then one MeterReading per original value list). TRuDI checks more than the
schema after parsing (its ``ModelValidation``): UsagePointId, TariffName, InvoicingParty, SMGW
with a certId, ServiceCategory, Customer and a Certificate must be present; a MeterReading needs
meterReadingId, Meter, a ReadingType with obisCode, qualifiedLogicalName, powerOfTenMultiplier
and uom; an IntervalBlock needs its interval and at least one IntervalReading; every
IntervalReading a timePeriod, a value and statusFNN or statusPTB. The builder always writes them.

[ours] (docs/decisions.md "HAN consumer view"), all in this module:

* :data:`UNITS` / :data:`MEDIUM_UNITS`: the unit (ESPI UnitSymbolKind) of a register: the store
  keeps a value as a decimal string in the register's unit, not the unit itself;
* :data:`SERVICE_KINDS`: the ServiceCategory kind from the medium digit of the first meter id;
* :data:`PTB_STATUS_OF_GATEWAY_BIT`: statusPTB (0..4) from the gateway's half of the status word
  (the meter's bit positions are not public: they do not contribute); a status word that is not
  16 hex digits is not copied to statusFNN and gives statusPTB 3 (value unusable);
* one scaler per value list (ReadingType/scaler): the smallest power of ten at which every value
  is an exact integer (espi:value is an Int48). A value that cannot be written exactly (not a
  finite number, more than Int48 holds, or finer than a scaler that fits the list's largest
  value) is left out and reported in :attr:`ExportResult.skipped` (the caller logs it): a
  metrological value is never rounded;
* times in UTC, whole seconds, with ``Z``; meterReadingId = qualifiedLogicalName
  ``<OBIS hex>.<meter id>.sm`` (docs/domain.md §4); the gateway's HAN TLS certificate as the one
  Certificate (certType 3, "SMGW HAN Certificate", certId 1);
* log entries: event type vendor-less, device type 1 (gateway), module 2 (consumer log), event id
  = CRC-16 of the event name (``core/gatewaylogs.event_id``); messageExtensions ``event=...`` and
  the details; a level outside 1..4 is written as 5 (EXTENSION), an outcome outside 0..1 as 2.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Mapping, Sequence

from lxml import etree

from smgw_emu.core.gatewaylogs import event_id

__all__ = [
    "AR_NS", "ESPI_NS", "SCHEMA_FILE", "EXAMPLE_FILE", "INT48_MAX", "UNITS", "MEDIUM_UNITS", "SERVICE_KINDS",
    "PTB_STATUS_OF_GATEWAY_BIT", "Reading", "ValueList", "LogRecord", "ExportData", "ExportResult", "Skipped",
    "build_export", "ptb_status", "qualified_name", "split_value", "xml_time",
]

AR_NS = "http://vde.de/AR_2418-6.xsd"
ESPI_NS = "http://naesb.org/espi"
ATOM_NS = "http://www.w3.org/2005/Atom"
XSD_DIR = Path(__file__).resolve().parent / "trudi_xsd"
SCHEMA_FILE = XSD_DIR / "AR_2418-6.xsd"
EXAMPLE_FILE = XSD_DIR / "example-TAF7.xml"

#: espi:Int48 is -2**47 .. 2**47 (both inclusive in espi_derived.xsd).
INT48_MAX = 2**47
_UINT32_MAX = 2**32 - 1
#: A value whose decimal exponent lies outside this range is refused before any arithmetic.
_MAX_EXPONENT = 64

#: [ours] ESPI UnitSymbolKind per register (72 Wh, 42 m3).
UNITS: Mapping[str, int] = {
    "0100010800ff": 72,  # 1-0:1.8.0 active energy import
    "0100020800ff": 72,  # 1-0:2.8.0 active energy export
    "0600010000ff": 72,  # 6-0:1.0.0 heat energy
    "0700030000ff": 42,  # 7-0:3.0.0 gas volume
    "0800010000ff": 42,  # 8-0:1.0.0 water volume
}
#: [ours] Unit of a register not in UNITS, by the medium digit of the meter id.
MEDIUM_UNITS: Mapping[str, int] = {"1": 72, "6": 72, "7": 42, "8": 42}
#: [ours] ServiceCategory kind (ESPI ServiceKind: 0 electricity, 1 gas, 2 water, 4 heat) by medium digit.
SERVICE_KINDS: Mapping[str, int] = {"1": 0, "7": 1, "8": 2, "6": 4}
#: [ours] statusPTB of each gateway status bit (core/statusword.GATEWAY_BITS); the highest wins.
#: 1 warning (value valid), 2 temporary error (value invalid, usable as a substitute),
#: 3 temporary error (not usable), 4 fatal error.
PTB_STATUS_OF_GATEWAY_BIT: Mapping[int, int] = {
    0x0000_0001: 4,  # fatal-error
    0x0000_0002: 2,  # system-time-invalid: the value is right, its time stamp is not certain
    0x0000_0004: 1,  # ptb-warning
    0x0000_0008: 2,  # ptb-temporary-error
    0x0000_0010: 1,  # deinstallation-signal
}
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d{1,6})?\Z")
_STATUS_WORD = re.compile(r"[0-9a-fA-F]{16}\Z")
_NOT_XML_CHAR = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass(frozen=True)
class Reading:
    """One entry of a value list: capture time, value (decimal text in the register's unit),
    status word (16 hex digits, gateway half first)."""

    time: _dt.datetime
    value: str
    status: str


@dataclass(frozen=True)
class ValueList:
    """An original value list of one meter register (TAF 7: ``<OBIS>.<meter id>.sm``)."""

    meter_id: str
    obis: str                          # 12 hex digits, e.g. 0100010800ff
    readings: Sequence[Reading] = ()
    capture_period_s: int | None = None


@dataclass(frozen=True)
class LogRecord:
    """One consumer-log entry (store row or equivalent)."""

    record: int
    time: _dt.datetime
    event: str
    message: str
    level: int = 1
    outcome: int = 0
    parent: int | None = None
    details: Mapping[str, str] = field(default_factory=dict)
    module: int = 2                    # 2 = consumer log (core/gatewaylogs.LOGS)


@dataclass(frozen=True)
class ExportData:
    gateway_id: str
    customer_id: str
    usage_point_id: str
    tariff_name: str
    invoicing_party: str = ""
    meters: Sequence[str] = ()
    value_lists: Sequence[ValueList] = ()
    log_entries: Sequence[LogRecord] = ()
    #: The queried window; each value list's IntervalBlock covers it. None: first to last reading.
    period: tuple[_dt.datetime, _dt.datetime] | None = None
    certificate_der: bytes = b""       # the gateway's HAN TLS certificate (certType 3)
    system_time: _dt.datetime | None = None
    manufacturer: str = ""
    firmware_version: str = ""


@dataclass(frozen=True)
class Skipped:
    meter_id: str
    obis: str
    time: _dt.datetime
    value: str
    reason: str                        # not-a-number | out-of-range | precision


@dataclass(frozen=True)
class ExportResult:
    document: bytes
    values: int                        # IntervalReading elements written
    skipped: tuple[Skipped, ...] = ()


# -- small conversions -----------------------------------------------------------------------

def xml_time(moment: _dt.datetime) -> str:
    """xs:dateTime in UTC, whole seconds, ``Z`` (a naive time counts as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.timezone.utc)
    return moment.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def qualified_name(obis: str, meter_id: str) -> str:
    """docs/domain.md §4: ``<OBIS hex>.<ldev>.sm``, the original value list of a meter."""
    return f"{obis.lower()}.{meter_id}.sm"


def ptb_status(status_word: str) -> int:
    """statusPTB from the status word's gateway half (:data:`PTB_STATUS_OF_GATEWAY_BIT`);
    3 for a status word that is not 16 hex digits."""
    if not _STATUS_WORD.match(status_word or ""):
        return 3
    gateway = int(status_word[:8], 16)
    return max((ptb for bit, ptb in PTB_STATUS_OF_GATEWAY_BIT.items() if gateway & bit), default=0)


def _text(value: object, limit: int) -> str:
    return _NOT_XML_CHAR.sub("\ufffd", str(value))[:limit]


def _parts(text: str) -> tuple[int, int] | str:
    """(integer, exponent) with value = integer * 10**exponent and no trailing zeros in the
    integer, or the reason it is not a usable number."""
    text = str(text).strip()
    if not _NUMBER.match(text):  # plain decimal notation only (no NaN, Infinity, "1_000")
        return "not-a-number"
    try:
        number = Decimal(text)
    except (InvalidOperation, ValueError):
        return "not-a-number"
    sign, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)
    if len(digits) > 40 or not -_MAX_EXPONENT <= exponent <= _MAX_EXPONENT:
        return "out-of-range"
    mantissa = int("".join(map(str, digits))) if digits else 0
    if mantissa == 0:
        return 0, 0
    while mantissa % 10 == 0:
        mantissa //= 10
        exponent += 1
    if mantissa > INT48_MAX:
        return "out-of-range"
    return (-mantissa if sign else mantissa), exponent


def split_value(values: Sequence[str]) -> tuple[int, list[int | str]]:
    """The list's scaler and, per value, its espi:value at that scaler or the reason it is left
    out. The scaler is the smallest exponent at which every value is exact, raised as far as
    the largest value needs to fit an Int48; values finer than that are left out (precision)."""
    parts = [_parts(v) for v in values]
    exact = [p for p in parts if isinstance(p, tuple) and p[0] != 0]  # a zero fits any scaler
    if not exact:
        return 0, [p if isinstance(p, str) else 0 for p in parts]
    scaler = min(exponent for _, exponent in exact)
    while any(abs(m) * 10 ** max(e - scaler, 0) > INT48_MAX for m, e in exact if e >= scaler):
        scaler += 1
    out: list[int | str] = []
    for p in parts:
        if isinstance(p, str):
            out.append(p)
        elif p[0] == 0:
            out.append(0)
        elif p[1] < scaler:
            out.append("precision")
        else:
            out.append(p[0] * 10 ** (p[1] - scaler))
    return scaler, out


# -- the document ----------------------------------------------------------------------------

def _el(parent: etree._Element, name: str, text: object | None = None, ns: str = AR_NS) -> etree._Element:
    element = etree.SubElement(parent, f"{{{ns}}}{name}")
    if text is not None:
        element.text = str(text)
    return element


def _interval(parent: etree._Element, name: str, start: _dt.datetime, seconds: float) -> None:
    interval = _el(parent, name)
    _el(interval, "duration", min(max(int(seconds), 0), _UINT32_MAX))
    _el(interval, "start", xml_time(start))


def _log_entry(parent: etree._Element, entry: LogRecord) -> None:
    element = _el(parent, "LogEntry")
    if entry.parent is not None and 0 <= entry.parent <= _UINT32_MAX:
        _el(element, "parentRecordNumber", entry.parent)
    if 0 <= entry.record <= _UINT32_MAX:
        _el(element, "recordNumber", entry.record)
    _el(element, "repetitionCounter", 0)
    event = _el(element, "LogEvent")
    kind = _el(event, "type")
    _el(kind, "deviceType", 1)
    _el(kind, "eventId", event_id(entry.event))
    _el(kind, "eventSubId", 0)
    _el(kind, "module", entry.module if 0 <= entry.module <= 255 else 0)
    _el(event, "level", entry.level if entry.level in (1, 2, 3, 4) else 5)
    extensions = "; ".join([f"event={entry.event}"] + [f"{k}={v}" for k, v in sorted(entry.details.items())])
    _el(event, "messageExtensions", _text(extensions, 256))
    _el(event, "text", _text(entry.message, 8192))
    _el(event, "outcome", entry.outcome if entry.outcome in (0, 1) else 2)
    _el(event, "timestamp", xml_time(entry.time))


def _meter_reading(parent: etree._Element, values: ValueList, period, skipped: list[Skipped]) -> int:
    readings = sorted(values.readings, key=lambda r: r.time)
    scaler, converted = split_value([r.value for r in readings])
    element = _el(parent, "MeterReading")
    meter = _el(element, "Meter")
    _el(meter, "meterId", _text(values.meter_id, 64))
    name = _text(qualified_name(values.obis, values.meter_id), 256)
    _el(element, "meterReadingId", name)
    reading_type = _el(element, "ReadingType")
    _el(reading_type, "powerOfTenMultiplier", 0, ESPI_NS)
    _el(reading_type, "uom", UNITS.get(values.obis.lower(), MEDIUM_UNITS.get(values.meter_id[:1], 0)), ESPI_NS)
    _el(reading_type, "scaler", scaler)
    _el(reading_type, "obisCode", _text(values.obis.lower(), 32))
    _el(reading_type, "qualifiedLogicalName", name)
    if values.capture_period_s is not None and 0 < values.capture_period_s <= _UINT32_MAX:
        _el(reading_type, "measurementPeriod", values.capture_period_s)
    kept = []
    for reading, value in zip(readings, converted):
        if isinstance(value, str):
            skipped.append(Skipped(values.meter_id, values.obis, reading.time, reading.value, value))
        else:
            kept.append((reading, value))
    if not kept:
        return 0  # TRuDI refuses an IntervalBlock without IntervalReading: none at all
    block = _el(element, "IntervalBlock")
    if period is not None:
        start, end = period
    else:
        start, end = kept[0][0].time, kept[-1][0].time
    _interval(block, "interval", start, (end - start).total_seconds())
    for reading, value in kept:
        item = _el(block, "IntervalReading")
        _el(item, "value", value, ESPI_NS)
        _interval(item, "timePeriod", reading.time, 0)
        if _STATUS_WORD.match(reading.status or ""):
            _el(item, "statusFNN", reading.status.upper())
        _el(item, "statusPTB", ptb_status(reading.status))
    return len(kept)


def build_export(data: ExportData) -> ExportResult:
    """The AR 2418-6 document for one consumer (see the module doc for its shape)."""
    root = etree.Element(f"{{{AR_NS}}}UsagePoints", nsmap={None: AR_NS, "espi": ESPI_NS, "atom": ATOM_NS})
    point = _el(root, "UsagePoint")
    category = _el(point, "ServiceCategory", ns=ESPI_NS)
    first_meter = data.meters[0] if data.meters else (data.value_lists[0].meter_id if data.value_lists else "1")
    _el(category, "kind", SERVICE_KINDS.get(first_meter[:1], 0), ESPI_NS)
    _el(point, "usagePointId", _text(data.usage_point_id, 64))
    _el(_el(point, "Customer"), "customerId", _text(data.customer_id, 64))
    _el(_el(point, "InvoicingParty"), "invoicingPartyId", _text(data.invoicing_party, 64))
    smgw = _el(point, "SMGW")
    if data.certificate_der:
        _el(smgw, "certId", 1)
    _el(smgw, "smgwId", _text(data.gateway_id, 32))
    if data.manufacturer:
        _el(smgw, "Manufacturer", _text(data.manufacturer, 32))
    if data.firmware_version:
        _el(smgw, "FirmwareVersion", _text(data.firmware_version, 32))
    if data.system_time is not None:
        _el(smgw, "SystemTime", xml_time(data.system_time))
    if data.certificate_der:
        certificate = _el(point, "Certificate")
        _el(certificate, "certId", 1)
        _el(certificate, "certType", 3)
        _el(certificate, "certContent", data.certificate_der.hex().upper())
    _el(point, "tariffName", _text(data.tariff_name, 256))
    for entry in data.log_entries:
        _log_entry(point, entry)
    skipped: list[Skipped] = []
    written = sum(_meter_reading(point, values, data.period, skipped) for values in data.value_lists)
    document = etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
    return ExportResult(document, written, tuple(skipped))
