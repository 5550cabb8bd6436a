"""6.1 firmware update on the wire: download (fig. 17), pause (18), activate (19); resumption with
Range requests, broken images, bad method calls, restarts and a SIGKILL in the middle of a download.

The GWA calls the methods of the gateway's FirmwareUpdate object (class 28700 at 0-0:44.0.0) on the
MANAGEMENT channel; the gateway fetches the signed image from the reference GWA's ADMIN-SERVICE
endpoint range by range, over real TLS, and reports on INFO-REPORT.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as _dt
import hashlib
import math
import os
import random
import re
import signal
import sys
from pathlib import Path

import pytest

from smgw_emu import __version__
from smgw_emu.app.config import render_config
from smgw_emu.app.gateway import Gateway
from smgw_emu.core.clock import VirtualClock
from smgw_emu.reference.firmware import (
    activate_argument,
    build_firmware_image,
    content_with_manifest,
    download_argument,
    firmware_method_path,
    firmware_object_path,
    state_name,
)
from smgw_emu.store import StateStore

from .conftest import assert_transcript, gateway_config, mark, started, wait_for
from .cosem_flow import attributes, error_of, last_record, open_channel, settled, system_events
from tests.ports import free_port

CHUNK = 1024
NAME = "fw/smgw-2.0.0.bin"


def image(pki, version: str = "2.0.0", *, chunks: int = 3, signer: str = "gwa-sig") -> bytes:
    """A signed image whose container spans exactly `chunks` Range requests of CHUNK bytes."""
    overhead = len(build_firmware_image(pki, version, b"", signer=signer))
    payload = bytes((i * 7 + len(version)) % 251 for i in range(chunks * CHUNK - CHUNK // 2 - overhead))
    container = build_firmware_image(pki, version, payload, signer=signer)
    assert math.ceil(len(container) / CHUNK) == chunks
    return container


def update_slot(gateway: Gateway) -> tuple[str, str, dict]:
    return gateway.store.firmware().get("update", ("", "idle", {}))


def firmware_state(gateway: Gateway) -> str:
    return update_slot(gateway)[1]


def image_files(gateway: Gateway) -> list[str]:
    return sorted(p.name for p in gateway.firmware.dir.iterdir())


async def call(channel, gateway, method: str, body: bytes = b"", step: str | None = None):
    return await channel.request("POST", firmware_method_path(gateway.id, method), body, step=step)


def result_state(response) -> str:
    from smgw_emu.core.cosem import xmlcodec

    assert response.status == 200, response.text
    return state_name(xmlcodec.method_result_from_xml(response.body)[1])


async def read_object(channel, gateway) -> dict:
    response = await channel.request("GET", firmware_object_path(gateway.id))
    assert response.status == 200, response.text
    return {name: value.value for name, value in attributes(response.body).items()}


@pytest.fixture
async def fw_gateway(pki, gwa, tmp_path):
    gw = Gateway(gateway_config(pki, gwa, tmp_path / "state", firmware={"chunk_bytes": CHUNK}))
    yield await started(gw, gwa)
    await gw.stop()


@pytest.fixture
async def paced_gateway(pki, gwa, tmp_path):
    """A gateway on a virtual clock that fetches one range per minute of its clock: the test moves
    the download range by range with clock.advance()."""
    clock = VirtualClock(_dt.datetime.now(_dt.timezone.utc))
    config = gateway_config(pki, gwa, tmp_path / "state", clock={"mode": "virtual"},
                            firmware={"chunk_bytes": CHUNK, "chunk_interval_s": 60})
    gw = Gateway(config, clock=clock)
    yield await started(gw, gwa)
    await gw.stop()


async def open_channel_now(gateway, gwa):
    """A MANAGEMENT channel by a wake-up made at the gateway's (possibly virtual) time."""
    gwa.send_wakeup(gateway.wakeup_address, gateway.id, packet=gwa.build_wakeup(gateway.id, created_at=gateway.clock.now()))
    channel = await gwa.wait_channel()
    await wait_for(lambda: gateway.management is not None and gateway.management.authenticated())
    return channel


async def downloaded(gateway, gwa, container: bytes, name: str = NAME) -> None:
    """Set-up on a channel of its own: publish, download, wait until verified, then mark."""
    gwa.downloads[name] = container
    channel = await open_channel_now(gateway, gwa)
    assert result_state(await call(channel, gateway, "download", download_argument(name, container))) == "downloading"
    await channel.close()
    await wait_for(lambda: not gateway.management.is_open)
    await wait_for(lambda: firmware_state(gateway) == "verified")
    await settled(gateway)
    mark(gateway, gwa)


# -- fig. 17: download ------------------------------------------------------------------------------
async def test_fig17_download_firmware(fw_gateway, gwa, pki):
    gateway = fw_gateway
    container = image(pki)
    gwa.downloads[NAME] = container
    channel = await open_channel(gateway, gwa)
    response = await call(channel, gateway, "download", download_argument(NAME, container), step="post-firmware-download")
    assert result_state(response) == "downloading"
    [event] = await gwa.wait_event("firmware-downloaded")
    assert (event.details["version"], event.details["image"], event.details["size"]) == ("2.0.0", NAME, str(len(container)))
    assert event.details["sha256"] == hashlib.sha256(container).hexdigest()
    await settled(gateway)
    # three Range requests, each answered 206 with its part of the image
    gets = [e.detail for e in gwa.transcript.since_mark() if e.step == "admin-service-get"]
    assert [re.search(r"bytes=(\d+)-(\d+)", g).groups() for g in gets] == [
        ("0", "1023"), ("1024", "2047"), ("2048", str(len(container) - 1))]
    version, state, detail = update_slot(gateway)
    assert (version, state, detail["offset"]) == ("2.0.0", "verified", len(container))
    sha = hashlib.sha256(container).hexdigest()
    assert image_files(gateway) == [f"{sha}.img"]
    assert (gateway.firmware.dir / f"{sha}.img").read_bytes() == container
    assert_transcript(17, gateway, gwa)
    values = await read_object(channel, gateway)
    assert (state_name(values["state"]), values["image_version"], values["bytes_received"]) == ("verified", "2.0.0", len(container))
    assert values["active_version"] == __version__  # downloaded is not active


# -- fig. 18: pause, then resume where it stopped ----------------------------------------------------
async def test_fig18_pause_firmware_download_and_resume_with_range(paced_gateway, gwa, pki):
    gateway = paced_gateway
    container = image(pki, chunks=3)
    gwa.downloads[NAME] = container
    channel = await open_channel_now(gateway, gwa)
    assert result_state(await call(channel, gateway, "download", download_argument(NAME, container))) == "downloading"
    await channel.close()
    await wait_for(lambda: not gateway.management.is_open)
    await wait_for(lambda: update_slot(gateway)[2].get("offset") == CHUNK)  # first range stored; next one in a minute
    await settled(gateway)
    mark(gateway, gwa)

    channel = await open_channel_now(gateway, gwa)
    response = await call(channel, gateway, "pause", step="post-firmware-download-pause")
    assert result_state(response) == "paused"
    [event] = await gwa.wait_event("firmware-download-paused")
    assert event.details["offset"] == str(CHUNK)
    await settled(gateway)
    assert firmware_state(gateway) == "paused" and update_slot(gateway)[2]["offset"] == CHUNK
    assert (gateway.firmware.dir / "update.part").stat().st_size == CHUNK  # the received part is kept
    assert_transcript(18, gateway, gwa)

    # paused means paused: time passes, nothing is fetched
    gateway.clock.advance(600)
    await asyncio.sleep(0.1)
    assert not [e for e in gwa.transcript.since_mark() if e.channel == "admin-service"]
    # a second pause has nothing to pause
    channel = await open_channel_now(gateway, gwa)
    again = await call(channel, gateway, "pause")
    assert again.status == 409 and error_of(again.body).code == "state-conflict"

    # the same download call resumes at the received offset, with a Range request
    response = await call(channel, gateway, "download", download_argument(NAME, container))
    assert result_state(response) == "downloading"
    await wait_for(lambda: update_slot(gateway)[2].get("offset") == 2 * CHUNK)
    gateway.clock.advance(60)
    [event] = await gwa.wait_event("firmware-downloaded")
    gets = [e.detail for e in gwa.transcript.entries if e.step == "admin-service-get"]
    assert [re.search(r"bytes=(\d+)-", g).group(1) for g in gets] == ["0", "1024", "2048"]  # nothing fetched twice
    resumed = [e for e in system_events(gateway) if e.event == "firmware-download-resumed"]
    assert resumed[-1].details["offset"] == str(CHUNK) and resumed[-1].details["trigger"] == "gwa"
    assert (gateway.firmware.dir / f"{hashlib.sha256(container).hexdigest()}.img").read_bytes() == container


async def test_a_paused_download_survives_a_restart(pki, gwa, tmp_path):
    clock = VirtualClock(_dt.datetime.now(_dt.timezone.utc))
    config = gateway_config(pki, gwa, tmp_path / "state", clock={"mode": "virtual"},
                            firmware={"chunk_bytes": CHUNK, "chunk_interval_s": 60})
    container = image(pki)
    gwa.downloads[NAME] = container
    first = await started(Gateway(config, clock=clock), gwa)
    try:
        channel = await open_channel_now(first, gwa)
        await call(channel, first, "download", download_argument(NAME, container))
        await wait_for(lambda: update_slot(first)[2].get("offset") == CHUNK)
        assert result_state(await call(channel, first, "pause")) == "paused"
    finally:
        await first.stop()
    second = await started(Gateway(config, clock=clock), gwa)
    try:
        assert firmware_state(second) == "paused" and update_slot(second)[2]["offset"] == CHUNK
        channel = await open_channel_now(second, gwa)
        values = await read_object(channel, second)
        assert (state_name(values["state"]), values["bytes_received"], values["image_name"]) == ("paused", CHUNK, NAME)
        await call(channel, second, "download", download_argument(NAME, container))
        await wait_for(lambda: update_slot(second)[2].get("offset") == 2 * CHUNK)  # resumed: second range at once
        second.clock.advance(60)  # the third a minute later
        await wait_for(lambda: firmware_state(second) == "verified")
    finally:
        await second.stop()


# -- fig. 19: activate ------------------------------------------------------------------------------
async def test_fig19_activate_firmware(fw_gateway, gwa, pki):
    gateway = fw_gateway
    container = image(pki)
    await downloaded(gateway, gwa, container)
    channel = await open_channel(gateway, gwa)
    response = await call(channel, gateway, "activate", activate_argument(), step="post-firmware-activate")
    assert result_state(response) == "active"
    [event] = await gwa.wait_event("firmware-activated")
    assert (event.details["version"], event.details["previous-version"]) == ("2.0.0", __version__)
    await settled(gateway)
    store = gateway.store.firmware()
    assert store["active"][:2] == ("2.0.0", "active") and store["previous"][:2] == (__version__, "standby")
    assert store["active"][2]["sha256"] == hashlib.sha256(container).hexdigest()
    # technical data: the firmware version object and the FirmwareUpdate object
    assert_transcript(19, gateway, gwa)
    version = await channel.request("GET", f"/smgw/cosem/gateway/{gateway.id}/1-0100000200ff/attributes/2")
    assert "<visible-string>2.0.0</visible-string>" in version.text
    device_data = await channel.request("GET", f"/smgw/cosem/gateway/{gateway.id}/28630-0000801403ff")  # fig. 55
    assert device_data.status == 200 and attributes(device_data.body)["firmware_version"].value == "2.0.0"
    values = await read_object(channel, gateway)
    assert (values["active_version"], values["previous_version"], state_name(values["state"])) == ("2.0.0", __version__, "active")


async def test_activated_firmware_survives_a_restart_and_rolls_back(pki, gwa, tmp_path):
    config = gateway_config(pki, gwa, tmp_path / "state", firmware={"chunk_bytes": CHUNK})
    container = image(pki)
    first = await started(Gateway(config), gwa)
    try:
        await downloaded(first, gwa, container)
        channel = await open_channel(first, gwa)
        assert result_state(await call(channel, first, "activate")) == "active"
        await gwa.wait_event("firmware-activated")
        await channel.close()
    finally:
        await first.stop()
    second = Gateway(config)
    await second.start()
    try:
        starts = await gwa.wait_event("gateway-started", count=2)
        assert starts[-1].details["firmware"] == "2.0.0"  # the start event reports the active firmware
        await settled(second)
        channel = await open_channel(second, gwa)
        assert (await read_object(channel, second))["active_version"] == "2.0.0"
        # rollback: the previous slot becomes active again, and back
        response = await call(channel, second, "rollback")
        assert response.status == 200, response.text
        [event] = await gwa.wait_event("firmware-rolled-back")
        assert (event.details["version"], event.details["previous-version"]) == (__version__, "2.0.0")
        assert second.store.firmware()["active"][0] == __version__
        assert (await read_object(channel, second))["previous_version"] == "2.0.0"
        assert image_files(second) == [f"{hashlib.sha256(container).hexdigest()}.img"]  # kept for the way back
        assert (await call(channel, second, "rollback")).status == 200
        await gwa.wait_event("firmware-rolled-back", count=2)
        assert second.store.firmware()["active"][0] == "2.0.0"
    finally:
        await second.stop()


async def test_activation_at_a_time_follows_the_virtual_clock(pki, gwa, tmp_path):
    clock = VirtualClock(_dt.datetime.now(_dt.timezone.utc))
    config = gateway_config(pki, gwa, tmp_path / "state", clock={"mode": "virtual"}, firmware={"chunk_bytes": CHUNK})
    gateway = await started(Gateway(config, clock=clock), gwa)
    try:
        await downloaded(gateway, gwa, image(pki))
        channel = await open_channel_now(gateway, gwa)
        at = clock.now() + _dt.timedelta(hours=1)
        response = await call(channel, gateway, "activate", activate_argument(at))
        assert result_state(response) == "verified"  # scheduled
        assert abs((await read_object(channel, gateway))["activation_time"] - at) < _dt.timedelta(seconds=1)
        clock.advance(3599)
        await asyncio.sleep(0.05)
        assert gateway.store.firmware().get("active", (__version__,))[0] == __version__
        clock.advance(1)
        [event] = await gwa.wait_event("firmware-activated")
        assert gateway.store.firmware()["active"][0] == "2.0.0"
        assert [e.event for e in system_events(gateway) if e.event.startswith("firmware-activ")] == [
            "firmware-activation-scheduled", "firmware-activation-started", "firmware-activated"]
    finally:
        await gateway.stop()


async def test_a_scheduled_activation_survives_a_restart(pki, gwa, tmp_path):
    clock = VirtualClock(_dt.datetime.now(_dt.timezone.utc))
    config = gateway_config(pki, gwa, tmp_path / "state", clock={"mode": "virtual"}, firmware={"chunk_bytes": CHUNK})
    first = await started(Gateway(config, clock=clock), gwa)
    try:
        await downloaded(first, gwa, image(pki))
        channel = await open_channel_now(first, gwa)
        await call(channel, first, "activate", activate_argument(clock.now() + _dt.timedelta(hours=2)))
    finally:
        await first.stop()
    clock.advance(3 * 3600)  # the time passed while the gateway was down: it activates at start
    second = await started(Gateway(config, clock=clock), gwa)
    try:
        await wait_for(lambda: second.store.firmware().get("active", ("",))[0] == "2.0.0")
        await gwa.wait_event("firmware-activated")
    finally:
        await second.stop()


async def test_a_failed_self_test_keeps_the_active_firmware(fw_gateway, gwa, pki):
    gateway = fw_gateway
    container = image(pki)
    await downloaded(gateway, gwa, container)
    stored = gateway.firmware.dir / f"{hashlib.sha256(container).hexdigest()}.img"
    damaged = bytearray(stored.read_bytes())
    damaged[-10] ^= 0xFF
    stored.write_bytes(bytes(damaged))  # the storage lost a bit after the verification
    channel = await open_channel(gateway, gwa)
    assert result_state(await call(channel, gateway, "activate")) == "failed"
    [event] = await gwa.wait_event("firmware-activation-failed")
    assert (event.details["reason"], event.details["active"]) == ("self-test-failed", __version__)
    assert gateway.store.firmware().get("active", (__version__,))[0] == __version__
    assert "previous" not in gateway.store.firmware()
    assert image_files(gateway) == []
    [entry] = [e for e in system_events(gateway) if e.event == "firmware-activation-failed"]
    assert (entry.level, entry.outcome) == (3, 1)


# -- broken downloads: refused, logged, reported, the active firmware untouched ----------------------
def _tampered(pki) -> bytes:
    container = bytearray(image(pki))
    container[len(container) // 2] ^= 0x01  # inside the signed image
    return bytes(container)


def _bad_manifest(pki) -> bytes:
    payload = b"\x00" * 1500
    manifest = b'{"format": "smgw-emu-firmware-1", "sha256": "' + b"0" * 64 + b'", "size": 1500, "version": "2.0.0"}'
    return build_firmware_image(pki, "x", b"", content=content_with_manifest(manifest, payload))


BROKEN = {
    # case: (what the GWA serves, what it announces) -> reason
    "not-found": (lambda pki, c: None, lambda c: (len(c), hashlib.sha256(c).digest()), "not-found"),
    "truncated": (lambda pki, c: c[:-100], lambda c: (len(c), hashlib.sha256(c).digest()), "size-mismatch"),
    "larger": (lambda pki, c: c + b"\0" * 100, lambda c: (len(c), hashlib.sha256(c).digest()), "size-mismatch"),
    "wrong-hash": (lambda pki, c: c, lambda c: (len(c), hashlib.sha256(c + b"!").digest()), "hash-mismatch"),
    "untrusted-signer": (lambda pki, c: image(pki, signer="emt-sig"), None, "unknown-signer"),
    "tampered": (lambda pki, c: _tampered(pki), None, "signature-invalid"),
    "bad-manifest": (lambda pki, c: _bad_manifest(pki), None, "manifest-mismatch"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
async def test_a_broken_download_is_refused(fw_gateway, gwa, pki, case):
    gateway = fw_gateway
    good = image(pki)
    serve, announce, reason = BROKEN[case]
    served = serve(pki, good)
    if served is not None:
        gwa.downloads[NAME] = served
    size, digest = (announce or (lambda c: (len(c), hashlib.sha256(c).digest())))(good if announce else served)
    before = last_record(gateway)
    channel = await open_channel(gateway, gwa)
    response = await call(channel, gateway, "download", download_argument(NAME, good, size=size, sha256=digest))
    assert result_state(response) == "downloading"
    [event] = await gwa.wait_event("firmware-download-failed")
    assert event.details["reason"] == reason and event.details["resumable"] == "false"
    await settled(gateway)
    assert firmware_state(gateway) == "failed" and update_slot(gateway)[2]["reason"] == reason
    assert "active" not in gateway.store.firmware()  # the factory firmware stays active
    assert image_files(gateway) == []  # nothing of the image is kept
    [entry] = [e for e in system_events(gateway, before) if e.event == "firmware-download-failed"]
    assert (entry.level, entry.outcome, entry.details["reason"]) == (3, 1, reason)
    values = await read_object(channel, gateway)
    assert (state_name(values["state"]), values["last_error"], values["active_version"]) == ("failed", reason, __version__)
    # nothing to activate
    refused = await call(channel, gateway, "activate")
    assert refused.status == 409 and error_of(refused.body).code == "state-conflict"


async def test_gwa_unreachable_fails_and_keeps_nothing_active(pki, gwa, tmp_path):
    closed_port = free_port()
    config = gateway_config(pki, gwa, tmp_path / "state", firmware={"chunk_bytes": CHUNK})
    config = dataclasses.replace(config, gwa=dataclasses.replace(
        config.gwa, admin_service_url=f"https://127.0.0.1:{closed_port}/admin-service/"))
    gateway = await started(Gateway(config), gwa)
    try:
        container = image(pki)
        channel = await open_channel(gateway, gwa)
        await call(channel, gateway, "download", download_argument(NAME, container))
        [event] = await gwa.wait_event("firmware-download-failed")
        assert (event.details["reason"], event.details["resumable"]) == ("connect-failed", "true")
        assert [e.details["reason"] for e in system_events(gateway) if e.event == "admin-service-fetch-failed"] == ["connect-failed"]
        assert "active" not in gateway.store.firmware()
    finally:
        await gateway.stop()


async def test_an_outage_mid_download_is_resumed_where_it_stopped(paced_gateway, gwa, pki):
    gateway = paced_gateway
    container = image(pki, chunks=3)
    gwa.downloads[NAME] = container
    channel = await open_channel_now(gateway, gwa)
    await call(channel, gateway, "download", download_argument(NAME, container))
    await wait_for(lambda: update_slot(gateway)[2].get("offset") == CHUNK)
    gwa.admin_service_status = 503  # the service endpoint goes away
    gateway.clock.advance(60)
    for _ in range(100):  # the retries wait on the gateway's clock as well
        if firmware_state(gateway) == "failed":
            break
        await asyncio.sleep(0.02)
        gateway.clock.advance(1)
    [event] = await gwa.wait_event("firmware-download-failed")
    assert (event.details["reason"], event.details["resumable"], event.details["offset"]) == ("http-error", "true", str(CHUNK))
    assert len([e for e in gwa.transcript.entries if e.step == "admin-service-response-503"]) == 3  # fetch_attempts
    gwa.admin_service_status = None
    assert result_state(await call(channel, gateway, "download", download_argument(NAME, container))) == "downloading"
    await wait_for(lambda: update_slot(gateway)[2].get("offset") == 2 * CHUNK)
    gateway.clock.advance(60)
    await gwa.wait_event("firmware-downloaded")
    served = [re.search(r"bytes=(\d+)-", e.detail).group(1) for e in gwa.transcript.entries
              if e.step == "admin-service-get"]
    assert served == ["0", "1024", "1024", "1024", "1024", "2048"]  # 3 refused attempts, then resumed at 1024


async def test_a_manufacturer_signer_can_be_configured(pki, gwa, tmp_path):
    """firmware.signer_certificates: here only a certificate file (standing for a manufacturer's),
    so an image signed by the GWA is refused."""
    config = gateway_config(pki, gwa, tmp_path / "state",
                            firmware={"chunk_bytes": CHUNK, "signer_certificates": "emt-sig.crt"})
    gateway = await started(Gateway(config), gwa)
    try:
        channel = await open_channel(gateway, gwa)
        maker = image(pki, "3.0.0", signer="emt-sig")
        gwa.downloads["maker.bin"] = maker
        await call(channel, gateway, "download", download_argument("maker.bin", maker))
        [event] = await gwa.wait_event("firmware-downloaded")
        assert event.details["version"] == "3.0.0" and "EMT-TEST-0001" in event.details["signer"]
        by_gwa = image(pki, "3.0.1")
        gwa.downloads["gwa.bin"] = by_gwa
        await call(channel, gateway, "download", download_argument("gwa.bin", by_gwa))
        [event] = await gwa.wait_event("firmware-download-failed")
        assert event.details["reason"] == "unknown-signer"
    finally:
        await gateway.stop()


# -- bad method calls: a clear error, no state change, a log entry -----------------------------------
async def test_bad_method_calls_change_nothing(paced_gateway, gwa, pki):
    gateway = paced_gateway
    container = image(pki)
    gwa.downloads[NAME] = container
    channel = await open_channel_now(gateway, gwa)
    big = gateway.config.firmware.max_image_bytes + 1
    cases = [
        ("download", b"", 400, "type-mismatch", "download"),
        ("download", b'<visible-string xmlns="urn:smgw-emu:cosem:1">fw.bin</visible-string>', 400, "type-mismatch", "download"),
        ("download", download_argument("../../etc/passwd", container), 422, "invalid-value", "image_name"),
        ("download", download_argument("/abs.bin", container), 422, "invalid-value", "image_name"),
        ("download", download_argument(NAME, container, size=0), 422, "invalid-value", "image_size"),
        ("download", download_argument(NAME, container, size=big), 422, "invalid-value", "image_size"),
        ("download", download_argument(NAME, container, sha256=bytes(31)), 422, "invalid-value", "image_sha256"),
        ("pause", b"", 409, "state-conflict", "state"),
        ("activate", b"", 409, "state-conflict", "state"),
        ("activate", b'<unsigned xmlns="urn:smgw-emu:cosem:1">1</unsigned>', 400, "type-mismatch", "activate"),
        ("rollback", b"", 409, "state-conflict", "previous_version"),
    ]
    for method, body, status, code, field in cases:
        before_rows, before_outbox, before = gateway.store.firmware(), gateway.store.count("outbox"), last_record(gateway)
        response = await call(channel, gateway, method, body)
        assert response.status == status, (method, body[:80], response.text)
        error = error_of(response.body)
        assert (error.code, error.field) == (code, field), (method, body[:80])
        assert gateway.store.firmware() == before_rows and gateway.store.count("outbox") == before_outbox
        assert image_files(gateway) == []
        failed = [e for e in system_events(gateway, before) if e.event == "request-failed"]
        assert failed and failed[-1].details["code"] == code
    unknown = await channel.request("POST", f"{firmware_object_path(gateway.id)}/methods/9", b"")
    assert unknown.status == 404 and error_of(unknown.body).code == "unknown-method"
    # one download at a time
    assert result_state(await call(channel, gateway, "download", download_argument(NAME, container))) == "downloading"
    await wait_for(lambda: update_slot(gateway)[2].get("offset") == CHUNK)
    rows = gateway.store.firmware()
    busy = await call(channel, gateway, "download", download_argument(NAME, container))
    assert busy.status == 409 and error_of(busy.body).code == "state-conflict"
    assert gateway.store.firmware() == rows
    # the object is read-only: the version cannot be written
    write = await channel.request("PUT", f"{firmware_object_path(gateway.id)}/attributes/8",
                                  b'<visible-string xmlns="urn:smgw-emu:cosem:1">9.9.9</visible-string>')
    assert write.status == 405 and error_of(write.body).code == "read-only-attribute"


# -- SIGKILL in the middle of a download -------------------------------------------------------------
CLI = str(Path(sys.executable).with_name("smgw-emu"))


async def _wait_for_line(path: Path, pattern: str, timeout: float = 20.0) -> re.Match:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        match = re.search(pattern, path.read_text(errors="replace")) if path.exists() else None
        if match:
            return match
        await asyncio.sleep(0.05)
    raise AssertionError(f"{pattern!r} not in {path}:\n{path.read_text(errors='replace') if path.exists() else ''}")


async def _spawn(config_file: Path, log_file: Path) -> tuple[asyncio.subprocess.Process, tuple[str, int]]:
    with open(log_file, "ab") as out:
        proc = await asyncio.create_subprocess_exec(CLI, "run", "--config", str(config_file), stdout=out, stderr=out)
    match = await _wait_for_line(log_file, r"wake-up listener\s+udp://([0-9.]+):(\d+)")
    return proc, (match.group(1), int(match.group(2)))


@pytest.mark.parametrize("trial", range(2))
async def test_sigkill_mid_download_loses_at_most_the_range_in_flight(pki, gwa, tmp_path, trial):
    chunks = 40
    state_dir = tmp_path / "state"
    config = gateway_config(pki, gwa, state_dir, firmware={"chunk_bytes": CHUNK, "chunk_interval_s": 0.01})
    config_file = tmp_path / "gateway.toml"
    config_file.write_text(render_config(config))
    container = image(pki, chunks=chunks)
    gwa.downloads[NAME] = container
    rng = random.Random(trial)

    first_log = tmp_path / "first.log"
    proc, address = await _spawn(config_file, first_log)
    try:
        channel = await gwa.wake(address, config.gateway.id)
        response = await call(channel, SimpleGateway(config.gateway.id), "download", download_argument(NAME, container))
        assert result_state(response) == "downloading"
        kill_after = rng.randint(3, chunks // 2)
        await wait_for(lambda: len(_gets(gwa)) >= kill_after, timeout=20)
        await asyncio.sleep(rng.random() * 0.02)  # anywhere in the range's round trip
        os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()
        started_ranges = len(_gets(gwa))
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == -signal.SIGKILL

    store = StateStore(state_dir)
    try:
        _, state, detail = store.firmware()["update"]
    finally:
        store.close()
    offset = detail["offset"]
    assert state == "downloading" and offset % CHUNK == 0
    # every range the gateway asked for before the one in flight is stored
    assert (started_ranges - 1) * CHUNK <= offset <= started_ranges * CHUNK, (started_ranges, offset)
    assert (state_dir / "firmware" / "update.part").stat().st_size >= offset

    seen = len(gwa.transcript.entries)
    second_log = tmp_path / "second.log"
    proc, address = await _spawn(config_file, second_log)
    try:
        await gwa.wait_event("firmware-downloaded", timeout=20)
        resumed = [e.detail for e in gwa.transcript.entries[seen:] if e.step == "admin-service-get"]
        assert re.search(r"bytes=(\d+)-", resumed[0]).group(1) == str(offset)  # continues where the store says
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 15)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    store = StateStore(state_dir)
    try:
        version, state, detail = store.firmware()["update"]
        resumed_log = [e for e in store.logs("system", limit=10**6) if e.event == "firmware-download-resumed"]
    finally:
        store.close()
    assert (version, state) == ("2.0.0", "verified")
    assert resumed_log[-1].details == {**resumed_log[-1].details, "offset": str(offset), "trigger": "restart"}
    sha = hashlib.sha256(container).hexdigest()
    assert (state_dir / "firmware" / f"{sha}.img").read_bytes() == container


def _gets(gwa) -> list:
    return [e for e in gwa.transcript.entries if e.step == "admin-service-get"]


class SimpleGateway:
    """Enough of a gateway for the path helpers when the gateway runs in another process."""

    def __init__(self, gateway_id: str) -> None:
        self.id = gateway_id



async def test_an_unreadable_signer_certificate_stops_the_start(pki, gwa, tmp_path):
    from smgw_emu.app.gateway import GatewayStartError

    config = gateway_config(pki, gwa, tmp_path / "state", firmware={"signer_certificates": "gwa, no-such-maker.crt"})
    gateway = Gateway(config)
    try:
        with pytest.raises(GatewayStartError, match="firmware.signer_certificates: .*no-such-maker.crt"):
            await gateway.start()
    finally:
        await gateway.stop()
