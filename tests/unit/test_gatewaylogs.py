"""The logs as COSEM objects (core/gatewaylogs.py) and the store's log queries behind them."""

from __future__ import annotations

import datetime as _dt
import sqlite3

from smgw_emu.core import gatewaylogs
from smgw_emu.core.cosem import default_definitions
from smgw_emu.store import StateStore

UTC = _dt.timezone.utc


def test_event_id_is_crc16_ccitt_false():
    assert gatewaylogs.event_id("123456789") == 0x29B1  # the standard check value
    assert gatewaylogs.event_id("gateway-started") == gatewaylogs.event_id("gateway-started")
    assert gatewaylogs.event_id("gateway-started") != gatewaylogs.event_id("gateway-stopped")


def test_role_rules_of_the_logs():
    logs = gatewaylogs.LOGS
    assert logs["system"].buffer_access["gwa"] == "r" and logs["system"].buffer_access["consumer"] == ""
    assert logs["consumer"].buffer_access["gwa"] == "" and logs["consumer"].buffer_access["consumer"] == "r"
    assert logs["calibration"].buffer_access["gwa"] == "r" == logs["calibration"].buffer_access["consumer"]
    assert len({spec.obis for spec in logs.values()}) == 3


def test_a_row_fits_the_log_entry_type():
    row = gatewaylogs.log_row(gatewaylogs.LOGS["calibration"], record=7, parent=3, level=3, outcome=1,
                              ts="2026-11-25T08:00:00.000001Z", event="clock-adjusted", message="a\x00b",
                              details={"deviation-ms": 12, "ünïcode": "x"})
    value = default_definitions().types["log_entry"].build(row)
    fields = value.value
    assert fields[0].value == _dt.datetime(2026, 11, 25, 8, 0, 0, 1, tzinfo=UTC)
    assert [f.value for f in fields[1:6]] == [7, 3, 0, 3, 1]
    assert [f.value for f in fields[6].value] == [0, 1, 3, gatewaylogs.event_id("clock-adjusted"), 0]
    assert fields[7].value == "a\ufffdb"  # not an XML character: replaced
    names = [ext.value[0].value for ext in fields[8].value]
    assert names == ["event", "deviation-ms", "?n?code"]  # names printable ASCII


def test_store_time_compares_as_text():
    a = gatewaylogs.store_time(_dt.datetime(2026, 1, 1, 0, 0, tzinfo=_dt.timezone(_dt.timedelta(hours=1))))
    assert a == "2025-12-31T23:00:00.000000Z"
    assert gatewaylogs.store_time(_dt.datetime(2026, 1, 1, tzinfo=UTC)) > a


def _store_with_entries(tmp_path, n=5) -> StateStore:
    store = StateStore(tmp_path)
    with store.transaction() as tx:
        for i in range(n):
            tx.append_log("system", level=1, outcome=0, ts=f"2026-01-01T00:00:0{i}.000000Z", event="e", message=str(i))
            tx.append_log("consumer", level=1, outcome=0, ts=f"2026-01-01T00:00:0{i}.000000Z", event="c", message=str(i))
    return store


def test_store_log_queries(tmp_path):
    store = _store_with_entries(tmp_path)
    try:
        assert store.log_count("system") == 5 and store.log_count("calibration") == 0
        assert [e.message for e in store.log_page("system", 1, 2)] == ["1", "2"]
        assert store.log_page("system", 9, 2) == []
        between = store.log_between("system", "2026-01-01T00:00:01.000000Z", "2026-01-01T00:00:03.000000Z", 10)
        assert [e.message for e in between] == ["1", "2"]  # from inclusive, to exclusive
        assert [e.message for e in store.log_between("system", None, None, 2)] == ["0", "1"]  # at most the limit
        assert store.integrity_check() == ["ok"]
    finally:
        store.close()


def test_integrity_check_finds_an_index_that_does_not_fit_its_table(tmp_path):
    _store_with_entries(tmp_path, 9).close()
    with sqlite3.connect(tmp_path / StateStore.FILE_NAME) as db:
        pages = dict(db.execute("SELECT name, rootpage FROM sqlite_master WHERE type='index'"))
        other = next(page for name, page in pages.items() if name != "log_by_log_ts")
        db.execute("PRAGMA writable_schema=ON")
        db.execute("UPDATE sqlite_master SET rootpage=? WHERE name='log_by_log_ts'", (other,))
    store = StateStore(tmp_path)
    try:
        problems = store.integrity_check()
        assert problems != ["ok"] and problems
    finally:
        store.close()
