"""6.5.10 "Logs abfragen" (fig. 54): the system log, the consumer log and the calibration log as
COSEM Log objects in the gateway's LDEV, read with selective access by index and by time over
the whole log, in the TRuDI entry format; the GWA may not read the consumer log's entries."""

from __future__ import annotations

import datetime as _dt
from urllib.parse import quote

from smgw_emu.core.cosem import xmlcodec
from smgw_emu.core.gatewaylogs import event_id

from .conftest import assert_transcript
from .cosem_flow import error_of, open_channel, provision
from .operations_flow import buffer_rows, object_path, values

SECOND = _dt.timedelta(seconds=1)


async def _with_entries_in_every_log(gateway, gwa):
    """A time sync beyond the limit writes to all three logs (system, calibration, consumer)."""
    gwa.time_source = lambda: gateway.clock.now() - 20 * SECOND
    await provision(gateway, gwa, ("POST", object_path(gateway, "time-sync") + "/methods/1", b""))
    gwa.time_source = lambda: gateway.clock.now()


async def test_fig54_query_the_logs_by_index_and_time(virtual_gateway, gwa):
    gateway = virtual_gateway
    await _with_entries_in_every_log(gateway, gwa)
    system = gateway.store.logs("system", limit=10**6)
    channel = await open_channel(gateway, gwa)
    buffer = object_path(gateway, "log:system") + "/attributes/2"

    first = await channel.request("GET", buffer + "?q.fromidx=0&q.count=3", step="get-system-log")
    assert first.status == 200, first.text
    rows = buffer_rows(first.body)
    assert [r["record_number"] for r in rows] == [e.record for e in system[:3]]
    row, entry = rows[0], system[0]
    assert (row["event"], row["message"], row["level"], row["outcome"], row["repetition_counter"]) == (
        entry.event, entry.message, entry.level, entry.outcome, 0)
    assert row["event_type"] == [0, 1, 1, event_id(entry.event), 0]  # vendor, device type, module, event id, sub id
    assert row["timestamp"] == _dt.datetime.fromisoformat(entry.ts)

    synced = next(e for e in system if e.event == "time-synchronised")
    # the clock went back 20 s at the sync: a window around it holds entries from before and after
    at = _dt.datetime.fromisoformat(synced.ts)
    start, end = at - 25 * SECOND, at + SECOND
    window = f"?q.fromtime={quote(start.isoformat())}&q.totime={quote(end.isoformat())}"
    by_time = await channel.request("GET", buffer + window, step="get-system-log-by-time")
    assert by_time.status == 200, by_time.text
    expected = [e.record for e in gateway.store.logs("system", limit=10**6)
                if start <= _dt.datetime.fromisoformat(e.ts) < end]
    assert [r["record_number"] for r in buffer_rows(by_time.body)] == expected and synced.record in expected

    calibration = await channel.request("GET", object_path(gateway, "log:calibration") + "/attributes/2",
                                        step="get-calibration-log")
    assert calibration.status == 200, calibration.text
    rows = buffer_rows(calibration.body)
    assert [r["event"] for r in rows] == ["clock-adjusted", "time-deviation-exceeded"]
    assert {r["parent_record_number"] for r in rows} == {synced.record}  # both under the system-log entry
    assert rows[1]["event_type"][2] == 3 and rows[1]["level"] == 3 and rows[1]["outcome"] == 1
    assert_transcript(54, gateway, gwa)


async def test_the_gwa_may_not_read_the_consumer_log(virtual_gateway, gwa):
    gateway = virtual_gateway
    await _with_entries_in_every_log(gateway, gwa)
    channel = await open_channel(gateway, gwa)
    path = object_path(gateway, "log:consumer")
    denied = await channel.request("GET", path + "/attributes/2")
    assert (denied.status, error_of(denied.body).code, error_of(denied.body).field) == (403, "access-denied", "buffer")
    denied_by_index = await channel.request("GET", path + "/attributes/2?q.fromidx=0&q.count=1")
    assert denied_by_index.status == 403
    # the object itself shows what is no personal data: its kind and how many entries it has
    shown = values((await channel.request("GET", path)).body)
    assert "buffer" not in shown and (shown["kind"], shown["entries_in_use"]) == (2, 1)
    assert gateway.store.logs("consumer", limit=10)[0].event == "time-deviation-exceeded"
    failed = [e for e in gateway.store.logs("system", limit=10**6) if e.event == "request-failed"]
    assert [e.details["code"] for e in failed][-2:] == ["access-denied", "access-denied"]


async def test_selective_access_spans_the_whole_log_in_pages(gateway, gwa):
    now = gateway.clock.now()
    with gateway.store.transaction() as tx:  # an old gateway: more entries than one answer holds
        for n in range(1100):
            tx.append_log("system", level=1, outcome=0, ts=(now + n * 0.001 * SECOND).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                          event="filler", message=f"entry {n}")
    oldest = gateway.store.logs("system", limit=2)
    channel = await open_channel(gateway, gwa)
    path = object_path(gateway, "log:system")
    buffer = path + "/attributes/2"
    head = buffer_rows((await channel.request("GET", buffer + "?q.fromidx=0&q.count=2")).body)
    assert [r["record_number"] for r in head] == [e.record for e in oldest]  # beyond the latest 1,000
    tail = buffer_rows((await channel.request("GET", buffer)).body)
    assert len(tail) == 1000 and tail[-1]["record_number"] == gateway.store.log_tail("system", 1)[0].record
    total = gateway.store.log_count("system")  # now with the channel's entries
    page = buffer_rows((await channel.request("GET", buffer + "?q.fromidx=1000")).body)  # the rest, from index 1000
    assert [r["record_number"] for r in page] == [e.record for e in gateway.store.logs("system", limit=10**6)[1000:]]
    assert buffer_rows((await channel.request("GET", buffer + f"?q.fromidx={total + 50}")).body) == []
    empty = f"?q.fromtime={quote((now - 3600 * SECOND).isoformat())}&q.totime={quote((now - 3599 * SECOND).isoformat())}"
    assert buffer_rows((await channel.request("GET", buffer + empty)).body) == []
    in_use = xmlcodec.attribute_from_xml((await channel.request("GET", path + "/attributes/5")).body)[1].value
    assert in_use == gateway.store.log_count("system")
    before = gateway.store.objects()
    for query, code, field in (("?q.count=1001", "bad-selector", "q.count"),
                               ("?q.fromidx=-1", "bad-selector", "q.fromidx"),
                               ("?q.fromtime=2026-01-02T00:00:00Z&q.totime=2026-01-01T00:00:00Z", "bad-selector", "q.fromtime"),
                               ("?q.fromtime=noon", "bad-selector", "q.fromtime")):
        bad = await channel.request("GET", buffer + query)
        assert (bad.status, error_of(bad.body).code, error_of(bad.body).field) == (400, code, field), query
    assert gateway.store.objects() == before
    for attribute in (2, 6):  # the logs are read-only
        put = await channel.request("PUT", f"{path}/attributes/{attribute}", b"<double-long-unsigned xmlns='urn:smgw-emu:cosem:1'>5</double-long-unsigned>")
        assert (put.status, error_of(put.body).code) == (405, "read-only-attribute"), put.text


async def test_the_three_logs_are_listed_in_the_gateway_ldev(gateway, gwa):
    channel = await open_channel(gateway, gwa)
    _, refs = xmlcodec.object_list_from_xml((await channel.request("GET", f"/smgw/cosem/gateway/{gateway.id}")).body)
    logs = {r.obis.hex for r in refs if r.class_id == 28403}
    assert logs == {"0000636200ff", "0000636201ff", "0000636202ff"}
    kinds = [values((await channel.request("GET", object_path(gateway, f"log:{name}"))).body)["kind"]
             for name in ("system", "consumer", "calibration")]
    assert kinds == [1, 2, 3]
