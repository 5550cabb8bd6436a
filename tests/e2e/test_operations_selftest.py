"""5.15 self test (fig. 15) on the GWA's request and on the gateway's schedule, and 6.5.3 "SMGW
gestartet" (fig. 46): the start-up event carries the result of the self test run at start-up.
Failures are real: a key that does not fit its certificate, certificates expired at the gateway's
time, a firmware digest that does not match, a corrupted database index."""

from __future__ import annotations

import datetime as _dt
import shutil
import sqlite3

from smgw_emu.app.gateway import Gateway
from smgw_emu.core.clock import VirtualClock
from smgw_emu.core.selftest import firmware_digest
from smgw_emu.pki import PkiDir, generate_key
from smgw_emu.reference.gwa import ReferenceGwa

from .conftest import assert_transcript, gateway_config, started, wait_for
from .cosem_flow import error_of, open_channel, provision, settled
from .operations_flow import method_result, object_path, values


def _events(gateway: Gateway, name: str, log: str = "system") -> list:
    return [e for e in gateway.store.logs(log, limit=10**6) if e.event == name]


async def _fresh_start(gateway: Gateway, gwa: ReferenceGwa):
    """Start a gateway whose whole start-up is the transcript (as figs. 6 and 7 do)."""
    gwa.transcript.mark()
    await gateway.start()
    gateway.transcript_mark = 0
    [event] = await gwa.wait_event("gateway-started")
    await wait_for(lambda: gateway.info_report.idle.is_set() and _events(gateway, "info-report-channel-closed"))
    return event


async def test_fig15_self_test_on_the_gwas_request(gateway, gwa):
    time_sync = object_path(gateway, "time-sync") + "/methods/1"
    await provision(gateway, gwa, ("POST", time_sync, b""))  # a synchronised clock: every check passes
    channel = await open_channel(gateway, gwa)
    response = await channel.request("POST", object_path(gateway, "self-test") + "/methods/1", step="post-self-test")
    assert response.status == 200, response.text
    result, checks = method_result(response.body).value
    assert result.value == 0  # passed
    assert [(c.value[0].value, c.value[1].value) for c in checks.value] == [
        ("firmware", 0), ("keys", 0), ("time", 0), ("storage", 0)]
    [event] = await gwa.wait_event("self-test-result")
    assert {k: event.details[k] for k in ("result", "trigger", "firmware", "keys", "time", "storage")} == {
        "result": "passed", "trigger": "gwa", "firmware": "passed", "keys": "passed", "time": "passed", "storage": "passed"}
    await settled(gateway)
    assert_transcript(15, gateway, gwa)
    shown = values((await channel.request("GET", object_path(gateway, "self-test"))).body)
    assert (shown["result"], shown["trigger"]) == (0, "gwa")
    assert [e.details["result"] for e in _events(gateway, "self-test-run")] == ["warning", "passed"]  # start-up, GWA


async def test_fig46_gateway_started_carries_the_start_up_self_test(pki, gwa, tmp_path):
    gateway = Gateway(gateway_config(pki, gwa, tmp_path / "state"))
    try:
        event = await _fresh_start(gateway, gwa)
        assert event.details["firmware"] == gateway.firmware.active_version
        assert {k: event.details[k] for k in ("self-test", "self-test-firmware", "self-test-keys", "self-test-time",
                                              "self-test-storage")} == {
            "self-test": "warning", "self-test-firmware": "passed", "self-test-keys": "passed",
            "self-test-time": "warning", "self-test-storage": "passed"}  # the clock was never synchronised
        assert "never synchronised" in event.details["self-test-problems"]
        assert (event.details["wan-address"], event.details["wan-port"]) == tuple(map(str, gateway.wakeup_address))
        [run] = _events(gateway, "self-test-run")
        [started_entry] = _events(gateway, "gateway-started")
        assert run.record < started_entry.record and run.details["trigger"] == "start-up"
        assert gwa.events("self-test-result") == []  # at start-up the result rides in gateway-started
        assert_transcript(46, gateway, gwa)
    finally:
        await gateway.stop()


async def test_start_up_self_test_fails_on_a_key_that_does_not_fit_its_certificate(pki, gwa, tmp_path):
    from cryptography.hazmat.primitives import serialization

    broken = PkiDir.open(shutil.copytree(pki.root, tmp_path / "pki"))
    (broken.root / "gateway-sig.key").write_bytes(generate_key(pki.curve).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    config = gateway_config(broken, gwa, tmp_path / "state")
    gateway = Gateway(config)
    try:
        event = await _fresh_start(gateway, gwa)
        assert (event.details["self-test"], event.details["self-test-keys"]) == ("failed", "failed")
        assert "gateway-sig: private key does not belong to the certificate" in event.details["self-test-problems"]
        [run] = _events(gateway, "self-test-run")
        assert (run.level, run.outcome) == (4, 1)  # fatal
        [calibration] = gateway.store.logs("calibration", limit=10**6)
        assert (calibration.event, calibration.parent, calibration.details["check"]) == ("self-test-failed", run.record, "keys")
        channel = await open_channel(gateway, gwa)
        data = values((await channel.request("GET", object_path(gateway, "device-data"))).body)
        assert int.from_bytes(data["status_word"], "big") & 0x1  # fatal error
    finally:
        await gateway.stop()


async def test_start_up_self_test_fails_on_expired_certificates_and_a_wrong_firmware_digest(pki, gwa, tmp_path):
    later = _dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(days=800)  # after the 730 days of the PKI
    config = gateway_config(pki, gwa, tmp_path / "state", clock={"mode": "virtual"},
                            operations={"firmware_digest": "0" * 64})
    gateway = Gateway(config, clock=VirtualClock(later))
    try:
        event = await _fresh_start(gateway, gwa)
        assert (event.details["self-test"], event.details["self-test-keys"], event.details["self-test-firmware"]) == (
            "failed", "failed", "failed")
        assert "certificate expired" in event.details["self-test-problems"]
        assert "recorded 0000000000000000" in event.details["self-test-problems"]
        assert sorted(e.details["check"] for e in gateway.store.logs("calibration", limit=10**6)) == ["firmware", "keys"]
    finally:
        await gateway.stop()


async def test_self_test_finds_a_corrupted_database_after_a_restart(pki, gwa, tmp_path):
    config = gateway_config(pki, gwa, tmp_path / "state")
    gateway = await started(Gateway(config), gwa)
    await gateway.stop()
    # point the log table's time-stamp index at another index's pages: the table and its index disagree
    path = tmp_path / "state" / "state.sqlite3"
    with sqlite3.connect(path) as db:
        pages = dict(db.execute("SELECT name, rootpage FROM sqlite_master WHERE type='index'"))
        other = next(page for name, page in pages.items() if name != "log_by_log_ts")
        db.execute("PRAGMA writable_schema=ON")
        db.execute("UPDATE sqlite_master SET rootpage=? WHERE name='log_by_log_ts'", (other,))
    restarted = Gateway(config)
    try:
        gwa.transcript.mark()
        await restarted.start()
        events = await gwa.wait_event("gateway-started", count=2)
        assert (events[-1].details["self-test"], events[-1].details["self-test-storage"]) == ("failed", "failed")
        assert "integrity check" in events[-1].details["self-test-problems"]
    finally:
        await restarted.stop()


async def test_scheduled_self_test_reports_each_run(pki, gwa, tmp_path):
    clock = VirtualClock(_dt.datetime.now(_dt.timezone.utc))
    config = gateway_config(pki, gwa, tmp_path / "state", clock={"mode": "virtual"},
                            operations={"self_test_interval_s": 86400})
    gateway = await started(Gateway(config, clock=clock), gwa)
    try:
        clock.advance(86400)
        clock.advance(86400)
        events = await gwa.wait_event("self-test-result", count=2)
        assert [e.details["trigger"] for e in events] == ["schedule", "schedule"]
        assert [e.details["result"] for e in _events(gateway, "self-test-run")] == ["warning"] * 3
    finally:
        await gateway.stop()


async def test_self_test_refuses_an_argument_and_survives_a_restart(pki, gwa, tmp_path):
    config = gateway_config(pki, gwa, tmp_path / "state")
    gateway = await started(Gateway(config), gwa)
    try:
        channel = await open_channel(gateway, gwa)
        before = gateway.store.count("log")
        bad = await channel.request("POST", object_path(gateway, "self-test") + "/methods/1",
                                    b"<enum xmlns='urn:smgw-emu:cosem:1'>1</enum>")
        assert (bad.status, error_of(bad.body).code) == (400, "type-mismatch")
        assert gateway.store.count("log") == before + 1  # only the request-failed entry
        assert _events(gateway, "request-failed")[-1].details["code"] == "type-mismatch"
        ok = await channel.request("POST", object_path(gateway, "self-test") + "/methods/1")
        assert ok.status == 200
        await channel.close()
        await settled(gateway)
    finally:
        await gateway.stop()
    restarted = Gateway(config)
    await restarted.start()
    try:
        shown = restarted.operations.self_test
        assert shown is not None and shown.trigger == "start-up"  # the new start-up run replaced it
        assert [e.details["trigger"] for e in _events(restarted, "self-test-run")] == ["start-up", "gwa", "start-up"]
        # the firmware digest recorded at the first start is the one checked after the restart
        assert restarted.operations.firmware_record["digest"] == firmware_digest(restarted.operations.firmware_files())
    finally:
        await restarted.stop()
