"""DLMS data types as typed Python values.

A :class:`DlmsValue` is a DLMS type name (the XML element name, e.g. ``"double-long-unsigned"``)
plus a Python value, validated on construction:

=====================  ===========================================================
type name              Python value
=====================  ===========================================================
null-data              ``None``
boolean                ``bool``
bit-string             ``str`` of ``"0"``/``"1"`` (first character = first bit)
integer, long,         ``int`` in the signed range of 8, 16, 32, 64 bits
double-long, long64
unsigned,              ``int`` in the unsigned range of 8, 16, 32, 64 bits
long-unsigned,
double-long-unsigned,
long64-unsigned, enum
octet-string           ``bytes`` (hex in XML)
visible-string         ``str`` of printable ASCII (0x20..0x7E)
utf8-string            ``str`` of characters XML 1.0 can carry
float32                ``float``, rounded to single precision on construction
float64                ``float``
date-time              timezone-aware ``datetime.datetime``
array                  ``tuple`` of DlmsValue, all of the same type name
structure              ``tuple`` of DlmsValue
=====================  ===========================================================

[ours] date-time: DLMS encodes it as a 12-byte octet-string (with "not specified" wildcards and a
deviation field). This layer holds a timezone-aware ``datetime`` and the XML codec writes ISO 8601
with a UTC offset (``2026-11-25T12:00:00+00:00``); naive datetimes are refused because a gateway
time stamp without offset is ambiguous. Wildcard date-times are not representable.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .errors import CosemTypeError

__all__ = ["DlmsValue", "DLMS_TYPE_NAMES", "DLMS_TAGS", "INTEGER_RANGES", "CosemTypeError"]

INTEGER_RANGES: dict[str, tuple[int, int]] = {
    "integer": (-(2**7), 2**7 - 1),
    "long": (-(2**15), 2**15 - 1),
    "double-long": (-(2**31), 2**31 - 1),
    "long64": (-(2**63), 2**63 - 1),
    "unsigned": (0, 2**8 - 1),
    "long-unsigned": (0, 2**16 - 1),
    "double-long-unsigned": (0, 2**32 - 1),
    "long64-unsigned": (0, 2**64 - 1),
    "enum": (0, 2**8 - 1),
}

# A-XDR tags from IEC 62056-6-2, kept for reference and a future binary codec.
DLMS_TAGS: dict[str, int] = {
    "null-data": 0,
    "array": 1,
    "structure": 2,
    "boolean": 3,
    "bit-string": 4,
    "double-long": 5,
    "double-long-unsigned": 6,
    "octet-string": 9,
    "visible-string": 10,
    "utf8-string": 12,
    "integer": 15,
    "long": 16,
    "unsigned": 17,
    "long-unsigned": 18,
    "long64": 20,
    "long64-unsigned": 21,
    "enum": 22,
    "float32": 23,
    "float64": 24,
    "date-time": 25,
}

DLMS_TYPE_NAMES: frozenset[str] = frozenset(DLMS_TAGS)


def _is_xml_char(ch: str) -> bool:
    cp = ord(ch)
    return (
        cp in (0x9, 0xA, 0xD)
        or 0x20 <= cp <= 0xD7FF
        or 0xE000 <= cp <= 0xFFFD
        or 0x10000 <= cp <= 0x10FFFF
    )


def _normalize(type_name: str, value: Any) -> Any:
    """Return the canonical Python value for ``type_name`` or raise CosemTypeError."""

    def bad(reason: str = "") -> CosemTypeError:
        return CosemTypeError(type_name, value, reason=reason)

    if type_name in INTEGER_RANGES:
        if not isinstance(value, int) or isinstance(value, bool):
            raise bad("not an integer")
        low, high = INTEGER_RANGES[type_name]
        if not low <= value <= high:
            raise bad(f"outside {low}..{high}")
        return value
    if type_name == "null-data":
        if value is not None:
            raise bad("null-data holds no value")
        return None
    if type_name == "boolean":
        if not isinstance(value, bool):
            raise bad("not a bool")
        return value
    if type_name == "bit-string":
        if not isinstance(value, str) or value.strip("01"):
            raise bad("not a string of 0 and 1")
        return value
    if type_name == "octet-string":
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise bad("not bytes")
        return bytes(value)
    if type_name == "visible-string":
        if not isinstance(value, str) or not all(" " <= ch <= "~" for ch in value):
            raise bad("not printable ASCII")
        return value
    if type_name == "utf8-string":
        if not isinstance(value, str) or not all(map(_is_xml_char, value)):
            raise bad("not a string of XML-representable characters")
        return value
    if type_name in ("float32", "float64"):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise bad("not a number")
        value = float(value)
        if type_name == "float32":
            try:
                # Round to single precision so the value equals what a float32 can hold.
                value = struct.unpack(">f", struct.pack(">f", value))[0]
            except OverflowError:
                raise bad("outside the float32 range") from None
        return value
    if type_name == "date-time":
        if not isinstance(value, datetime):
            raise bad("not a datetime")
        if value.tzinfo is None or value.utcoffset() is None:
            raise bad("naive datetime, a UTC offset is required")
        return value
    if type_name in ("array", "structure"):
        if not isinstance(value, (list, tuple)):
            raise bad("not a list")
        items = tuple(value)
        for item in items:
            if not isinstance(item, DlmsValue):
                raise CosemTypeError(f"{type_name} element", item, reason="not a DlmsValue")
        if type_name == "array" and len({item.type_name for item in items}) > 1:
            raise bad("array elements of different types")
        return items
    raise CosemTypeError("a DLMS type name", type_name, reason="unknown type")


@dataclass(frozen=True, slots=True)
class DlmsValue:
    """A typed DLMS value. Immutable; arrays and structures hold tuples of DlmsValue."""

    type_name: str
    value: Any = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", _normalize(self.type_name, self.value))

    @classmethod
    def null(cls) -> DlmsValue:
        return cls("null-data", None)

    @property
    def is_null(self) -> bool:
        return self.type_name == "null-data"

    @property
    def items(self) -> tuple[DlmsValue, ...]:
        """The elements of an array or structure."""
        if self.type_name not in ("array", "structure"):
            raise CosemTypeError("array or structure", self)
        return self.value

    def to_python(self) -> Any:
        """Plain Python: lists for arrays and structures, the bare value otherwise."""
        if self.type_name in ("array", "structure"):
            return [item.to_python() for item in self.value]
        return self.value

    def same_as(self, other: DlmsValue) -> bool:
        """Equality that also treats NaN floats as equal (for round-trip checks)."""
        if self.type_name != other.type_name:
            return False
        if self.type_name in ("array", "structure"):
            return len(self.value) == len(other.value) and all(
                a.same_as(b) for a, b in zip(self.value, other.value)
            )
        if self.type_name in ("float32", "float64") and math.isnan(self.value):
            return math.isnan(other.value)
        if self.type_name == "date-time":
            return self.value == other.value and self.value.utcoffset() == other.value.utcoffset()
        return self.value == other.value

    def __repr__(self) -> str:
        return f"DlmsValue({self.type_name!r}, {self.value!r})"
