"""6.2 transfer into normal operation (fig. 20) on the wire: the GWA reads the operating state, the
gateway checks its personalisation and its last self test, switches and reports it."""

from __future__ import annotations

import datetime as _dt
import hashlib

from smgw_emu.app.gateway import Gateway
from smgw_emu.core.clock import VirtualClock
from smgw_emu.core.cosem import xmlcodec
from smgw_emu.reference.firmware import download_argument, firmware_method_path

from .conftest import assert_transcript, gateway_config, started, wait_for
from .cosem_flow import attributes, error_of, last_record, open_channel, settled, system_events
from .test_firmware import CHUNK, NAME, image, open_channel_now

OBJECT = "28710-0000600500ff"


def path(gateway) -> str:
    return f"/smgw/cosem/gateway/{gateway.id}/{OBJECT}"


def enter(gateway) -> str:
    return path(gateway) + "/methods/1"


def stored_state(gateway) -> dict:
    return gateway.store.get("operating-state") or {"state": "delivery"}


async def test_fig20_transfer_into_normal_operation(gateway, gwa):
    channel = await open_channel(gateway, gwa)
    response = await channel.request("GET", path(gateway), step="get-operating-state")
    assert response.status == 200, response.text
    values = attributes(response.body)
    assert values["state"].value == 0 and values["since"].is_null  # delivery
    response = await channel.request("POST", enter(gateway), step="post-normal-operation")
    assert response.status == 200, response.text
    assert xmlcodec.method_result_from_xml(response.body)[1].value == 1  # normal
    [event] = await gwa.wait_event("normal-operation")
    assert (event.details["previous-state"], event.details["state"]) == ("delivery", "normal")
    assert event.details["self-test"] in ("passed", "warning")
    await settled(gateway)
    assert stored_state(gateway)["state"] == "normal"
    assert_transcript(20, gateway, gwa)
    # once is enough: a second call changes nothing
    before, outbox = last_record(gateway), gateway.store.count("outbox")
    again = await channel.request("POST", enter(gateway))
    assert again.status == 409 and error_of(again.body).code == "state-conflict"
    assert gateway.store.count("outbox") == outbox
    assert [e.details["code"] for e in system_events(gateway, before) if e.event == "request-failed"] == ["state-conflict"]
    # the object is read-only
    write = await channel.request("PUT", path(gateway) + "/attributes/2", b'<enum xmlns="urn:smgw-emu:cosem:1">0</enum>')
    assert write.status == 405 and error_of(write.body).code == "read-only-attribute"
    bad = await channel.request("POST", enter(gateway), b'<unsigned xmlns="urn:smgw-emu:cosem:1">1</unsigned>')
    assert bad.status == 400 and error_of(bad.body).code == "type-mismatch"


async def test_normal_operation_survives_a_restart(pki, gwa, tmp_path):
    config = gateway_config(pki, gwa, tmp_path / "state")
    first = await started(Gateway(config), gwa)
    try:
        channel = await open_channel(first, gwa)
        assert (await channel.request("POST", enter(first))).status == 200
        await gwa.wait_event("normal-operation")
    finally:
        await first.stop()
    second = await started(Gateway(config), gwa)
    try:
        channel = await open_channel(second, gwa)
        values = attributes((await channel.request("GET", path(second))).body)
        assert values["state"].value == 1 and not values["since"].is_null
    finally:
        await second.stop()


async def test_a_failed_self_test_keeps_the_gateway_in_delivery(pki, gwa, tmp_path):
    """The last self test fails because the active firmware image was damaged after its
    activation (6.1): the gateway stays in delivery, nothing is stored, the refusal is logged."""
    config = gateway_config(pki, gwa, tmp_path / "state", firmware={"chunk_bytes": CHUNK})
    container = image(pki)
    first = await started(Gateway(config), gwa)
    try:
        gwa.downloads[NAME] = container
        channel = await open_channel(first, gwa)
        await channel.request("POST", firmware_method_path(first.id, "download"), download_argument(NAME, container))
        await gwa.wait_event("firmware-downloaded")
        assert (await channel.request("POST", firmware_method_path(first.id, "activate"))).status == 200
        await gwa.wait_event("firmware-activated")
    finally:
        await first.stop()
    stored = tmp_path / "state" / "firmware" / f"{hashlib.sha256(container).hexdigest()}.img"
    stored.write_bytes(stored.read_bytes()[:-1] + b"\0")
    second = await started(Gateway(config), gwa)
    try:
        assert second.operations.self_test.result == "failed"
        before, outbox = last_record(second), second.store.count("outbox")
        channel = await open_channel(second, gwa)
        response = await channel.request("POST", enter(second))
        assert response.status == 409 and error_of(response.body).code == "self-test-failed"
        assert stored_state(second)["state"] == "delivery" and second.store.count("outbox") == outbox
        failed = [e for e in system_events(second, before) if e.event == "request-failed"]
        assert failed[-1].details["code"] == "self-test-failed"
    finally:
        await second.stop()


async def test_expired_personalisation_keeps_the_gateway_in_delivery(pki, gwa, tmp_path):
    """Three years on, the gateway's certificates (two years) are no longer valid."""
    clock = VirtualClock(_dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(days=3 * 365))
    config = gateway_config(pki, gwa, tmp_path / "state", clock={"mode": "virtual"})
    gateway = await started(Gateway(config, clock=clock), gwa)
    try:
        channel = await open_channel_now(gateway, gwa)
        before = last_record(gateway)
        response = await channel.request("POST", enter(gateway))
        assert response.status == 409, response.text
        error = error_of(response.body)
        assert (error.code, error.field) == ("personalisation-incomplete", "gateway-tls")
        assert "not valid" in error.message
        assert stored_state(gateway)["state"] == "delivery"
        await wait_for(lambda: any(e.event == "request-failed" for e in system_events(gateway, before)))
    finally:
        await gateway.stop()
