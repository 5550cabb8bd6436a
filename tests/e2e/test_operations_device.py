"""6.5.11 technical device data (fig. 55), 6.5.4 / 6.5.5 the removal signal (figs. 47, 48) and
6.5.2 the WAN address change (fig. 45), over real sockets and TLS with the reference GWA."""

from __future__ import annotations

import dataclasses

from smgw_emu.app.gateway import Gateway
from smgw_emu.core.selftest import firmware_digest

from .conftest import assert_transcript, gateway_config, started, wait_for
from .cosem_flow import error_of, open_channel, provision, settled
from .operations_flow import method_result, object_path, values


async def test_fig55_query_technical_device_data(gateway, gwa, pki):
    channel = await open_channel(gateway, gwa)
    response = await channel.request("GET", object_path(gateway, "device-data"), step="get-device-data")
    assert response.status == 200, response.text
    data = values(response.body)
    assert (data["manufacturer"], data["model"], data["hardware_version"]) == ("smgw-emu", "virtual SMGW", "virtual-1")
    assert (data["gateway_id"], data["firmware_version"]) == (gateway.id, gateway.firmware.active_version)
    assert data["firmware_digest"].hex() == firmware_digest(gateway.operations.firmware_files())
    certificates = [dict(zip(("usage", "subject", "issuer", "serial", "not_before", "not_after", "valid"),
                             (v.value for v in item.value))) for item in data["certificates"]]
    assert [c["usage"] for c in certificates] == ["gateway-tls", "gateway-sig", "gateway-enc"]
    assert all(c["valid"] for c in certificates)
    tls = pki.cert("gateway-tls")
    assert (certificates[0]["serial"], certificates[0]["not_after"]) == (
        tls.serial_number.to_bytes((tls.serial_number.bit_length() + 7) // 8, "big"), tls.not_valid_after_utc)
    assert f"CN={gateway.id}" in certificates[0]["subject"]
    assert data["status_word"] == bytes.fromhex("00000002")  # system time invalid: never synchronised
    assert (data["wan_address"], data["wan_port"]) == gateway.wakeup_address
    assert data["started_at"] == gateway.operations.started_at
    assert_transcript(55, gateway, gwa)
    # read-only: a write is refused and changes nothing
    put = await channel.request("PUT", object_path(gateway, "device-data") + "/attributes/2",
                                b"<visible-string xmlns='urn:smgw-emu:cosem:1'>other</visible-string>")
    assert (put.status, error_of(put.body).code) == (405, "read-only-attribute"), put.text
    again = values((await channel.request("GET", object_path(gateway, "device-data"))).body)
    assert again["manufacturer"] == "smgw-emu"


async def test_device_data_come_from_the_configuration(pki, gwa, tmp_path):
    config = gateway_config(pki, gwa, tmp_path / "state", operations={"manufacturer": "ACME", "model": "GW-1",
                                                                       "hardware_version": "rev C"})
    gateway = await started(Gateway(config), gwa)
    try:
        channel = await open_channel(gateway, gwa)
        data = values((await channel.request("GET", object_path(gateway, "device-data"))).body)
        assert (data["manufacturer"], data["model"], data["hardware_version"]) == ("ACME", "GW-1", "rev C")
    finally:
        await gateway.stop()


async def test_fig47_set_removal_signal(gateway, gwa):
    channel = await open_channel(gateway, gwa)
    path = object_path(gateway, "deinstallation-signal")
    response = await channel.request("POST", path + "/methods/1", step="post-start-deinstallation-signal")
    assert response.status == 200, response.text
    assert method_result(response.body).value is True
    [event] = await gwa.wait_event("deinstallation-signal-set")
    assert (event.details["active"], event.details["gwa"]) == ("true", gateway.gwa.id)
    await settled(gateway)
    assert_transcript(47, gateway, gwa)
    shown = values((await channel.request("GET", path)).body)
    assert shown["active"] is True and shown["since"] is not None
    status = values((await channel.request("GET", object_path(gateway, "device-data"))).body)["status_word"]
    assert int.from_bytes(status, "big") & 0x10  # the removal signal bit
    assert [e.event for e in gateway.store.logs("consumer", limit=10)] == ["deinstallation-signal-set"]
    # set again: refused, nothing changes, no event
    before = gateway.store.get("operations/deinstallation-signal")
    again = await channel.request("POST", path + "/methods/1")
    assert (again.status, error_of(again.body).code) == (409, "state-conflict")
    assert gateway.store.get("operations/deinstallation-signal") == before
    await settled(gateway)
    assert len(gwa.events("deinstallation-signal-set")) == 1


async def test_fig48_end_removal_signal(gateway, gwa):
    path = object_path(gateway, "deinstallation-signal")
    await provision(gateway, gwa, ("POST", path + "/methods/1", b""))
    channel = await open_channel(gateway, gwa)
    response = await channel.request("POST", path + "/methods/2", step="post-stop-deinstallation-signal")
    assert response.status == 200, response.text
    assert method_result(response.body).value is False
    [event] = await gwa.wait_event("deinstallation-signal-ended")
    assert event.details["active"] == "false"
    await settled(gateway)
    assert_transcript(48, gateway, gwa)
    assert values((await channel.request("GET", path)).body)["active"] is False
    not_set = await channel.request("POST", path + "/methods/2")
    assert (not_set.status, error_of(not_set.body).code) == (409, "state-conflict")
    bad_argument = await channel.request("POST", path + "/methods/1", b"<boolean xmlns='urn:smgw-emu:cosem:1'>true</boolean>")
    assert (bad_argument.status, error_of(bad_argument.body).code) == (400, "type-mismatch")
    unknown = await channel.request("POST", path + "/methods/3")
    assert (unknown.status, error_of(unknown.body).code) == (404, "unknown-method")
    assert gateway.store.get("operations/deinstallation-signal")["active"] is False


async def test_removal_signal_survives_a_restart(pki, gwa, tmp_path):
    config = gateway_config(pki, gwa, tmp_path / "state")
    gateway = await started(Gateway(config), gwa)
    try:
        path = object_path(gateway, "deinstallation-signal")
        await provision(gateway, gwa, ("POST", path + "/methods/1", b""))
    finally:
        await gateway.stop()
    restarted = await started(Gateway(config), gwa)
    try:
        channel = await open_channel(restarted, gwa)
        assert values((await channel.request("GET", path)).body)["active"] is True
    finally:
        await restarted.stop()


async def test_fig45_wan_address_change_is_reported_and_the_gwa_reaches_the_new_address(gateway, gwa):
    old = gateway.wakeup_address
    new = await gateway.operations.change_wan_address("127.0.0.2")  # a new lease on the WAN side
    assert new[0] == "127.0.0.2" and gateway.wakeup_address == new
    [event] = await gwa.wait_event("ip-address-changed")
    assert (event.details["address"], event.details["port"]) == (new[0], str(new[1]))
    assert (event.details["previous-address"], event.details["previous-port"]) == (old[0], str(old[1]))
    await settled(gateway)
    channel = await gwa.wake((event.details["address"], int(event.details["port"])), gateway.id)  # what the GWA learnt
    await wait_for(lambda: gateway.management is not None and gateway.management.authenticated())
    assert channel.peer_id == gateway.id
    assert_transcript(45, gateway, gwa)
    data = values((await channel.request("GET", object_path(gateway, "device-data"))).body)
    assert (data["wan_address"], data["wan_port"]) == new


async def test_wan_address_changed_while_down_is_reported_at_start(pki, gwa, tmp_path):
    config = gateway_config(pki, gwa, tmp_path / "state")
    gateway = await started(Gateway(config), gwa)
    await gateway.stop()
    moved = dataclasses.replace(config, wakeup=dataclasses.replace(config.wakeup, host="127.0.0.3"))
    restarted = Gateway(moved)
    try:
        await restarted.start()
        [event] = await gwa.wait_event("ip-address-changed")
        assert (event.details["address"], event.details["previous-address"], event.details["trigger"]) == (
            "127.0.0.3", "127.0.0.1", "start-up")
        assert gwa.events("gateway-started")[-1].details["wan-address"] == "127.0.0.3"
    finally:
        await restarted.stop()
    again = Gateway(moved)  # same address as stored: nothing to report (the port of port 0 does not count)
    try:
        await again.start()
        await gwa.wait_event("gateway-started", count=3)
        await settled(again)
        assert len(gwa.events("ip-address-changed")) == 1
    finally:
        await again.stop()


async def test_a_wan_address_that_cannot_be_bound_keeps_the_old_one(gateway, gwa):
    old = gateway.wakeup_address
    try:
        await gateway.operations.change_wan_address("192.0.2.1")  # TEST-NET-1: not an address of this host
    except OSError:
        pass
    else:  # pragma: no cover - a host that owns 192.0.2.1
        return
    assert gateway.wakeup_address == old  # same host and port: the GWA still reaches it
    assert [e for e in gateway.store.logs("system", limit=10**6) if e.event == "wan-address-changed"] == []
    channel = await gwa.wake(gateway.wakeup_address, gateway.id)
    assert channel.peer_id == gateway.id
