from datetime import datetime, timedelta, timezone

import pytest

from smgw_emu.core.cosem.errors import BadSelector, SelectiveAccessUnsupported
from smgw_emu.core.cosem.selective import (
    FROM_INDEX_BASE,
    IndexSelector,
    TimeSelector,
    apply_selector,
    parse_selector,
)
from smgw_emu.core.cosem.types import DlmsValue

UTC = timezone.utc
T0 = datetime(2026, 11, 25, tzinfo=UTC)


def row(minutes):
    return DlmsValue(
        "structure",
        [DlmsValue("date-time", T0 + timedelta(minutes=minutes)), DlmsValue("long64-unsigned", minutes)],
    )


BUFFER = DlmsValue("array", [row(m) for m in (0, 15, 30, 45, 60)])


def minutes_of(value):
    return [r.items[1].value for r in value.items]


def test_no_q_parameters_means_no_selector():
    assert parse_selector({}) is None
    assert parse_selector({"other": "1", "format": "xml"}) is None
    assert apply_selector(BUFFER, None) is BUFFER


def test_index_selection():
    assert FROM_INDEX_BASE == 0
    sel = parse_selector({"q.fromidx": "1", "q.count": "2"})
    assert sel == IndexSelector(1, 2)
    assert minutes_of(apply_selector(BUFFER, sel)) == [15, 30]
    assert minutes_of(apply_selector(BUFFER, parse_selector({"q.count": "1"}))) == [0]
    assert minutes_of(apply_selector(BUFFER, parse_selector({"q.fromidx": "3"}))) == [45, 60]
    assert minutes_of(apply_selector(BUFFER, IndexSelector(10, 5))) == []
    assert minutes_of(apply_selector(BUFFER, IndexSelector(0, 0))) == []


def test_time_selection_is_half_open():
    sel = parse_selector([("q.fromtime", "2026-11-25T00:15:00Z"), ("q.totime", "2026-11-25T00:45:00+00:00")])
    assert sel == TimeSelector(T0 + timedelta(minutes=15), T0 + timedelta(minutes=45))
    assert minutes_of(apply_selector(BUFFER, sel)) == [15, 30]
    assert minutes_of(apply_selector(BUFFER, parse_selector({"q.fromtime": "2026-11-25T01:30:00+01:00"}))) == [30, 45, 60]
    assert minutes_of(apply_selector(BUFFER, parse_selector({"q.totime": "2026-11-25T00:15:00Z"}))) == [0]


def test_unencoded_plus_in_offset_is_tolerated():
    sel = parse_selector({"q.fromtime": "2026-11-25T01:00:00 01:00"})
    assert sel.from_time == T0


@pytest.mark.parametrize(
    "query,field",
    [
        ({"q.fromidx": "-1"}, "q.fromidx"),
        ({"q.fromidx": "one"}, "q.fromidx"),
        ({"q.count": "1.5"}, "q.count"),
        ({"q.count": "9" * 50}, "q.count"),
        ({"q.fromtime": "yesterday"}, "q.fromtime"),
        ({"q.totime": "2026-11-25T00:00:00"}, "q.totime"),  # no offset
        ({"q.fromtime": "2026-11-26T00:00:00Z", "q.totime": "2026-11-25T00:00:00Z"}, "q.fromtime"),
        ({"q.fromidx": "1", "q.totime": "2026-11-25T00:00:00Z"}, "q.totime"),
        ({"q.limit": "1"}, "q.limit"),
        ([("q.count", "1"), ("q.count", "2")], "q.count"),
    ],
)
def test_bad_parameters(query, field):
    with pytest.raises(BadSelector) as info:
        parse_selector(query)
    assert info.value.code == "bad-selector"
    assert info.value.field == field


def test_selection_needs_an_array_of_time_stamped_rows():
    with pytest.raises(SelectiveAccessUnsupported) as info:
        apply_selector(DlmsValue("unsigned", 1), IndexSelector(), field="value")
    assert info.value.code == "selective-access-unsupported" and info.value.field == "value"
    plain = DlmsValue("array", [DlmsValue("unsigned", 1)])
    assert apply_selector(plain, IndexSelector(0, 1)) == plain
    with pytest.raises(SelectiveAccessUnsupported):
        apply_selector(plain, TimeSelector(T0, None))
    assert apply_selector(DlmsValue("array", []), TimeSelector(T0, None)).items == ()
