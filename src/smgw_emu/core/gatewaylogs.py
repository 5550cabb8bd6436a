"""The gateway's three logs as COSEM Log objects (Lastenheft 6.5.10), sans-IO.

[fact] TRuDI's log entry: record number, parent record number, repetition counter, level (1 info
.. 4 fatal), outcome (0 success, 1 failure), timestamp, event type (vendor, device type, module,
event id, sub id), message with extensions. Logs: system log (for the GWA), consumer log
(Letztverbraucherlog), calibration log (eichtechnisches Log).

[ours] (docs/decisions.md "Logs as COSEM objects"), all in this module:
* :data:`LOGS`: OBIS code, kind and who may read each log's entries (attribute 2). The GWA reads
  the system log and the calibration log; the consumer log holds the consumer's personal data
  and is not readable by the GWA (403 access-denied), only by the consumer; the service
  technician reads the system and calibration logs;
* event type: vendor 0 (no vendor), device type 1 (gateway), module = the log (1 system,
  2 consumer, 3 calibration), event id = CRC-16/CCITT-FALSE of the event name (stable, no table
  to maintain; the name itself is the first extension), sub id 0;
* repetition counter: 0 (every occurrence is an entry of its own);
* selective access spans the whole log: ``q.fromidx`` 0 is the oldest entry; one answer holds at
  most :data:`PAGE` rows (``q.count`` above it is refused); a time window with more rows answers
  its first :data:`PAGE` and the GWA continues by index; without a selector the most recent
  :data:`PAGE` rows are answered.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

from smgw_emu.core.cosem.model import ObisCode

__all__ = ["LOGS", "PAGE", "LogSpec", "event_id", "log_row", "store_time"]

#: Most rows in one answer.
PAGE = 1000
_NOT_XML_CHAR = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass(frozen=True)
class LogSpec:
    name: str                         # the store's log name
    obis: ObisCode
    kind: str                         # log_kind enum name
    module: int                       # event type module
    buffer_access: Mapping[str, str]  # rights on attribute 2 (buffer) per role


LOGS: dict[str, LogSpec] = {
    "system": LogSpec("system", ObisCode(0, 0, 99, 98, 0), "system_log", 1,
                      MappingProxyType({"gwa": "r", "service": "r", "consumer": "", "emt": ""})),
    "consumer": LogSpec("consumer", ObisCode(0, 0, 99, 98, 1), "consumer_log", 2,
                        MappingProxyType({"gwa": "", "service": "", "consumer": "r", "emt": ""})),
    "calibration": LogSpec("calibration", ObisCode(0, 0, 99, 98, 2), "calibration_log", 3,
                           MappingProxyType({"gwa": "r", "service": "r", "consumer": "r", "emt": ""})),
}


def event_id(name: str) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) of the event name's UTF-8 bytes."""
    crc = 0xFFFF
    for byte in name.encode("utf-8"):
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def store_time(moment: _dt.datetime) -> str:
    """A time in the store's log time stamp form (UTC, microseconds, Z): comparable as text."""
    return moment.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _printable(text: str) -> str:
    return "".join(ch if " " <= ch <= "~" else "?" for ch in text)[:64]


def _xml_text(text: str) -> str:
    return _NOT_XML_CHAR.sub("\ufffd", text)


def log_row(spec: LogSpec, *, record: int, parent: int | None, level: int, outcome: int, ts: str, event: str,
            message: str, details: Mapping[str, object]) -> dict:
    """Plain values for the COSEM type ``log_entry`` (definitions.toml) of one stored entry."""
    extensions = [{"name": "event", "value": _xml_text(event)}] + [
        {"name": _printable(str(k)), "value": _xml_text(str(v))} for k, v in sorted(details.items())
    ]
    return {
        "timestamp": _dt.datetime.fromisoformat(ts.replace("Z", "+00:00")), "record_number": record,
        "parent_record_number": parent or 0, "repetition_counter": 0, "level": level, "outcome": outcome,
        "event_type": {"vendor": 0, "device_type": 1, "module": spec.module, "event_id": event_id(event), "sub_id": 0},
        "message": _xml_text(message), "extensions": extensions,
    }
