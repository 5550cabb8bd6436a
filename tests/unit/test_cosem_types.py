import math
from datetime import datetime, timedelta, timezone

import pytest

from smgw_emu.core.cosem.types import DLMS_TYPE_NAMES, INTEGER_RANGES, CosemTypeError, DlmsValue

UTC = timezone.utc


@pytest.mark.parametrize("type_name", sorted(INTEGER_RANGES))
def test_integer_ranges_are_enforced(type_name):
    low, high = INTEGER_RANGES[type_name]
    assert DlmsValue(type_name, low).value == low
    assert DlmsValue(type_name, high).value == high
    for outside in (low - 1, high + 1):
        with pytest.raises(CosemTypeError) as info:
            DlmsValue(type_name, outside)
        assert info.value.expected == type_name
        assert info.value.value == outside
        assert type_name in str(info.value) and str(outside) in str(info.value)


@pytest.mark.parametrize(
    "type_name,value",
    [
        ("unsigned", True),  # bool is not an integer here
        ("unsigned", 1.0),
        ("boolean", 1),
        ("null-data", 0),
        ("bit-string", "012"),
        ("octet-string", "00ff"),
        ("visible-string", "ä"),
        ("visible-string", "tab\t"),
        ("utf8-string", "nul\x00"),
        ("utf8-string", b"bytes"),
        ("float32", 1e39),
        ("float64", "1.5"),
        ("date-time", datetime(2026, 1, 1)),  # naive
        ("date-time", "2026-01-01T00:00:00Z"),
        ("array", [1, 2]),
        ("array", [DlmsValue("unsigned", 1), DlmsValue("long", 1)]),
        ("structure", DlmsValue("unsigned", 1)),
        ("no-such-type", 1),
    ],
)
def test_wrong_values_raise_cosem_type_error(type_name, value):
    with pytest.raises(CosemTypeError):
        DlmsValue(type_name, value)


def test_normalisation():
    assert DlmsValue("octet-string", bytearray(b"\x01")).value == b"\x01"
    assert DlmsValue("float64", 2).value == 2.0
    assert DlmsValue("float32", 0.1).value == pytest.approx(0.1, rel=1e-7)
    assert DlmsValue("float32", 0.1).value != 0.1  # rounded to single precision
    assert math.isinf(DlmsValue("float32", math.inf).value)
    assert DlmsValue("array", [DlmsValue("unsigned", 1)]).value == (DlmsValue("unsigned", 1),)


def test_values_are_immutable_and_hashable():
    v = DlmsValue("structure", [DlmsValue("unsigned", 1), DlmsValue("octet-string", b"x")])
    with pytest.raises(AttributeError):
        v.value = ()
    assert hash(v) == hash(DlmsValue("structure", [DlmsValue("unsigned", 1), DlmsValue("octet-string", b"x")]))


def test_to_python_and_items():
    t = datetime(2026, 11, 25, 12, tzinfo=UTC)
    v = DlmsValue("array", [DlmsValue("structure", [DlmsValue("date-time", t), DlmsValue("null-data")])])
    assert v.to_python() == [[t, None]]
    assert v.items[0].items[1].is_null
    with pytest.raises(CosemTypeError):
        DlmsValue("unsigned", 1).items


def test_same_as_treats_nan_as_equal_and_compares_offsets():
    assert DlmsValue("float64", math.nan).same_as(DlmsValue("float64", math.nan))
    t = datetime(2026, 1, 1, 12, tzinfo=UTC)
    shifted = t.astimezone(timezone(timedelta(hours=1)))
    assert DlmsValue("date-time", t) == DlmsValue("date-time", shifted)  # same instant
    assert not DlmsValue("date-time", t).same_as(DlmsValue("date-time", shifted))


def test_type_names_cover_the_brief():
    assert {
        "null-data", "boolean", "bit-string", "double-long", "double-long-unsigned", "octet-string",
        "visible-string", "utf8-string", "integer", "long", "unsigned", "long-unsigned", "long64",
        "long64-unsigned", "enum", "float32", "float64", "date-time", "array", "structure",
    } == DLMS_TYPE_NAMES
