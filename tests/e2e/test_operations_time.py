"""5.13 time synchronisation (fig. 13): the GWA asks the gateway to synchronise; the gateway asks
the GWA's time service over ADMIN-SERVICE, corrects its clock, logs and reports it. PTB-A 50.8:
beyond 1 % of the capture period the values captured meanwhile are flagged and the calibration
log gets an entry. Real gateway, reference GWA, loopback, TLS with the test SM-PKI."""

from __future__ import annotations

import dataclasses
import datetime as _dt

from smgw_emu.app.gateway import Gateway

from .conftest import assert_transcript, gateway_config, started
from .cosem_flow import error_of, meter, open_channel, provision, settled
from .operations_flow import method_result, object_path, values

SECOND = _dt.timedelta(seconds=1)


async def test_fig13_time_sync_corrects_the_clock(virtual_gateway, gwa):
    gateway = virtual_gateway
    gwa.time_source = lambda: gateway.clock.now() - 5 * SECOND  # the gateway runs 5 s ahead of the GWA
    channel = await open_channel(gateway, gwa)
    before = gateway.clock.now()
    response = await channel.request("POST", object_path(gateway, "time-sync") + "/methods/1",
                                     step="post-synchronise-time")
    assert response.status == 200, response.text
    state, deviation_ms, limit_ms, round_trip_ms = (v.value for v in method_result(response.body).value)
    assert (state, deviation_ms, limit_ms, round_trip_ms) == (1, 5000, 9000, 0)  # synchronised; 1 % of 900 s
    assert gateway.clock.now() == before - 5 * SECOND  # the virtual clock moved back by exactly the deviation
    [event] = await gwa.wait_event("time-synchronised")
    assert (event.details["deviation-ms"], event.details["within-limit"], event.details["trigger"]) == ("5000", "true", "gwa")
    await settled(gateway)
    [entry] = [e for e in gateway.store.logs("system", limit=10**6) if e.event == "time-synchronised"]
    [adjusted] = gateway.store.logs("calibration", limit=10**6)
    assert (adjusted.event, adjusted.parent) == ("clock-adjusted", entry.record)  # linked to the system-log entry
    assert gwa.events("time-deviation-exceeded") == []
    assert_transcript(13, gateway, gwa)
    # the TimeSync object shows it
    shown = values((await channel.request("GET", object_path(gateway, "time-sync"))).body)
    assert (shown["state"], shown["last_deviation_ms"], shown["limit_ms"]) == (1, 5000, 9000)
    assert shown["source"] == gwa.admin_service_url + "time"


async def test_time_deviation_beyond_the_limit_flags_values_and_writes_the_calibration_log(virtual_gateway, gwa, pki):
    gateway = virtual_gateway
    await provision(gateway, gwa, meter(pki, capture_period_s=300))  # limit: 1 % of 300 s = 3 s
    meter_id = pki.identities.meter
    now = gateway.clock.now()
    with gateway.store.transaction() as tx:  # values the LMN captured while the clock drifted, and one before
        tx.put_meter_value(meter_id, "0100010800ff", (now - 3600 * SECOND).isoformat(), "100", "0000000000000000")
        tx.put_meter_value(meter_id, "0100010800ff", (now - 60 * SECOND).isoformat(), "101", "0000000000000001")
    gwa.time_source = lambda: gateway.clock.now() - 20 * SECOND
    channel = await open_channel(gateway, gwa)
    response = await channel.request("POST", object_path(gateway, "time-sync") + "/methods/1")
    assert response.status == 200, response.text
    assert [v.value for v in method_result(response.body).value][:3] == [2, 20000, 3000]  # deviation_exceeded
    [exceeded] = await gwa.wait_event("time-deviation-exceeded")
    assert (exceeded.details["within-limit"], exceeded.details["flagged-values"]) == ("false", "2")
    await gwa.wait_event("time-synchronised")
    # never synchronised before: every value so far is flagged "system time invalid" (gateway half, bit 0x2)
    statuses = [status for _, _, status in gateway.store.meter_values(meter_id, "0100010800ff")]
    assert statuses == ["0000000200000000", "0000000200000001"]
    calibration = [e.event for e in gateway.store.logs("calibration", limit=10**6)]
    assert calibration == ["clock-adjusted", "time-deviation-exceeded"]
    assert [e.event for e in gateway.store.logs("consumer", limit=10**6)] == ["time-deviation-exceeded"]
    # a second sync within the limit flags nothing more
    gwa.time_source = lambda: gateway.clock.now()
    gateway.clock.advance(60)
    with gateway.store.transaction() as tx:
        tx.put_meter_value(meter_id, "0100010800ff", gateway.clock.now().isoformat(), "102", "0000000000000000")
    again = await channel.request("POST", object_path(gateway, "time-sync") + "/methods/1")
    assert [v.value for v in method_result(again.body).value][:2] == [1, 0]
    assert gateway.store.meter_values(meter_id, "0100010800ff")[-1][2] == "0000000000000000"


async def test_time_sync_failures_keep_the_clock_and_are_reported(virtual_gateway, gwa):
    gateway = virtual_gateway
    channel = await open_channel(gateway, gwa)
    path = object_path(gateway, "time-sync") + "/methods/1"
    cases = [
        (b"<time xmlns='urn:smgw-emu:time:1' utc='yesterday'/>", "time-sync-bad-time-document"),
        (b"<!DOCTYPE x [<!ENTITY a 'b'>]><time/>", "time-sync-bad-time-document"),
        (b"<time xmlns='urn:smgw-emu:time:1' utc='1999-01-01T00:00:00Z'/>", "time-sync-implausible-time"),
    ]
    for body, code in cases:
        gwa.time_body = body
        before = gateway.clock.now()
        response = await channel.request("POST", path)
        assert (response.status, error_of(response.body).code) == (502, code), response.text
        assert gateway.clock.now() == before  # the clock stays
    gwa.time_body = None
    failed = await gwa.wait_event("time-sync-failed", count=3)
    assert [e.details["reason"] for e in failed] == ["bad-time-document", "bad-time-document", "implausible-time"]
    logged = [e for e in gateway.store.logs("system", limit=10**6) if e.event == "request-failed"]
    assert [e.details["code"] for e in logged][-3:] == [code for _, code in cases]
    assert gateway.store.logs("calibration", limit=10**6) == []
    assert values((await channel.request("GET", object_path(gateway, "time-sync"))).body)["state"] == 3  # failed
    # a wrong argument is refused before anything happens
    bad = await channel.request("POST", path, b"<unsigned xmlns='urn:smgw-emu:cosem:1'>1</unsigned>")
    assert (bad.status, error_of(bad.body).code) == (400, "type-mismatch")


async def test_time_service_unreachable_and_slow_answers_are_refused(pki, gwa, tmp_path):
    config = gateway_config(pki, gwa, tmp_path / "state", operations={"time_sync_max_round_trip_s": 0.2})
    gateway = await started(Gateway(config), gwa)  # a real clock: the round trip is measured
    try:
        channel = await open_channel(gateway, gwa)
        path = object_path(gateway, "time-sync") + "/methods/1"
        gwa.time_delay = 0.4
        slow = await channel.request("POST", path)
        assert (slow.status, error_of(slow.body).code) == (502, "time-sync-round-trip-too-long")
        gwa.time_delay = 0.0
        gateway.admin_service.base_url = "https://127.0.0.1:1/admin-service/"  # nobody listens there
        down = await channel.request("POST", path)
        assert (down.status, error_of(down.body).code) == (502, "time-sync-connect-failed")
    finally:
        await gateway.stop()


async def test_a_real_clock_keeps_its_correction_across_a_restart(pki, gwa, tmp_path):
    config = gateway_config(pki, gwa, tmp_path / "state")
    gateway = await started(Gateway(config), gwa)
    try:
        gwa.time_source = lambda: _dt.datetime.now(_dt.timezone.utc) + 30 * SECOND  # the GWA is 30 s ahead
        channel = await open_channel(gateway, gwa)
        response = await channel.request("POST", object_path(gateway, "time-sync") + "/methods/1")
        assert response.status == 200, response.text
        deviation_ms = method_result(response.body).value[1].value
        assert -30_500 < deviation_ms < -29_500  # the gateway was 30 s behind (within the round trip)
        assert abs((gateway.clock.now() - _dt.datetime.now(_dt.timezone.utc)).total_seconds() - 30) < 0.5
        await channel.close()
        await settled(gateway)
    finally:
        await gateway.stop()
    restarted = Gateway(config)
    await restarted.start()
    try:
        assert abs((restarted.clock.now() - _dt.datetime.now(_dt.timezone.utc)).total_seconds() - 30) < 0.5
        assert restarted.operations.time_state["state"] == "deviation_exceeded"  # 30 s > 9 s
    finally:
        await restarted.stop()


async def test_scheduled_time_sync_runs_on_the_gateway_clock(pki, gwa, tmp_path):
    from smgw_emu.core.clock import VirtualClock

    clock = VirtualClock(_dt.datetime.now(_dt.timezone.utc))
    config = gateway_config(pki, gwa, tmp_path / "state", clock={"mode": "virtual"},
                            operations={"time_sync_interval_s": 3600})
    gateway = await started(Gateway(config, clock=clock), gwa)
    try:
        gwa.time_source = lambda: clock.now() + 2 * SECOND
        clock.advance(3600)
        [event] = await gwa.wait_event("time-synchronised")
        assert (event.details["trigger"], event.details["deviation-ms"]) == ("schedule", "-2000")
        clock.advance(3600)
        await gwa.wait_event("time-synchronised", count=2)
    finally:
        await gateway.stop()


def test_operations_configuration_is_checked():
    import pytest

    from smgw_emu.app.config import ConfigError, load_config, parse_config, render_config

    base = load_config()
    for changes, field in (({"time_sync_interval_s": -1}, "operations.time_sync_interval_s"),
                           ({"time_sync_max_round_trip_s": 0}, "operations.time_sync_max_round_trip_s"),
                           ({"time_sync_max_age_s": 10}, "operations.time_sync_max_age_s"),
                           ({"firmware_digest": "abc"}, "operations.firmware_digest"),
                           ({"manufacturer": ""}, "operations.manufacturer")):
        bad = dataclasses.replace(base, operations=dataclasses.replace(base.operations, **changes))
        with pytest.raises(ConfigError, match=field):
            parse_config(render_config(bad))
