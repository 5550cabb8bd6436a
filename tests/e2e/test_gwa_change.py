"""6.6 GWA change on the wire: the good case (figs. 59, 60) and every failure case with its
rollback (61-67). Two reference GWAs on loopback, real TLS with the test SM-PKI; the new GWA's
certificates are issued under the same root (or, in test_certificates.py, under a new one)."""

from __future__ import annotations

import asyncio
import datetime as _dt
import os
import shutil
import signal
import subprocess
import sys

from lxml import etree

from smgw_emu.app.config import render_config
from smgw_emu.app.gateway import GWA_PROFILE_KEY, Gateway
from smgw_emu.core.clock import VirtualClock
from smgw_emu.pki import PkiDir
from smgw_emu.reference.cosem_client import meter_profile_values, profile_document
from smgw_emu.reference.gwa import ReferenceGwa
from smgw_emu.reference.keybank_client import (
    GWAPRE,
    bank_digest,
    bank_phase,
    certificates_document,
    confirm_document,
    der,
    new_gwa_identity,
)
from smgw_emu.reference.keybank_client import gwa_profile_document as doc
from smgw_emu.store import StateStore

from .conftest import assert_transcript, gateway_config, started, wait_for
from .cosem_flow import error_of, settled
from .keybank_flow import (
    close,
    new_gwa_running,
    old_gwa_back_in_charge,
    prepare,
    profile_of,
    state,
    switch_and_leave,
    verify_new_gwa,
    virtual_config,
    virtual_gateway_at,
    wake_channel,
)
from tests.ports import free_port

NEW_GWA = "GWA-NEW-0001"


async def test_fig60_gwa_change_success(gateway, gwa, pki, tmp_path):
    new = new_gwa_identity(pki, tmp_path / "new-gwa", NEW_GWA)
    async with new_gwa_running(new, gwa) as new_gwa:
        old_id = gateway.gwa.id
        channel = await wake_channel(gateway, gwa)
        await prepare(channel, new, new_gwa)
        await switch_and_leave(gateway, channel)
        # the gateway now works with the new GWA: address, pinned certificate, wake-up key
        assert (gateway.gwa.id, gateway.gwa.management_port) == (NEW_GWA, new_gwa.management_port)
        new_channel, _ = await verify_new_gwa(gateway, new_gwa)
        r = await new_channel.request("POST", GWAPRE + "/final-profile", profile_of(new, new_gwa),
                                      step="post-final-profile")
        assert r.status == 201 and bank_phase(r.body) == "finalised", r.text
        r = await new_channel.request("POST", GWAPRE + "/confirm", confirm_document(bank_digest(r.body)),
                                      step="post-confirm-final-gwa")
        assert r.status == 200, r.text
        [event] = await new_gwa.wait_event("gwa-change-completed")
        assert event.details["gwa"] == NEW_GWA and event.details["previous-gwa"] == old_id
        await settled(gateway)
        assert_transcript(60, gateway, gwa)
        assert_transcript(59, gateway, gwa)
        banks = gateway.store.key_banks()
        assert "gwa/GWAPRE" not in banks and banks["gwa/ACTIVE"][1]["profile"]["partner_id"] == NEW_GWA
        assert [l.id for l in gateway.cosem.model.ldevs("commprofile")] == [NEW_GWA]
        await close(gateway, new_channel)


# -- failures before the switch: the old GWA rolls back by releasing GWAPRE -----------------------
async def _release(gateway, gwa, channel) -> None:
    r = await channel.request("DELETE", GWAPRE, step="delete-gwapre")
    assert r.status == 204, r.text
    [event] = await gwa.wait_event("gwa-change-aborted")
    assert event.details["gwa"] == gateway.gwa.id
    await settled(gateway)


async def test_fig61_reserve_key_banks_twice(gateway, gwa, pki):
    before = state(gateway)
    channel = await wake_channel(gateway, gwa)
    r = await channel.request("POST", GWAPRE + "/reserve", step="post-reserve-gwapre")
    assert r.status == 200 and bank_phase(r.body) == "reserved", r.text
    r = await channel.request("POST", GWAPRE + "/reserve", step="post-reserve-gwapre-again")
    assert r.status == 409 and error_of(r.body).code == "state-conflict", r.text
    assert gateway.store.key_banks()["gwa/GWAPRE"][0] == "reserved"  # the refusal changed nothing
    await _release(gateway, gwa, channel)
    assert_transcript(61, gateway, gwa)
    assert state(gateway) == before
    await close(gateway, channel)
    await old_gwa_back_in_charge(gateway, gwa)


async def test_fig62_invalid_gwapre_profile(gateway, gwa, pki, tmp_path):
    new = new_gwa_identity(pki, tmp_path / "new-gwa", NEW_GWA)
    before = state(gateway)
    async with new_gwa_running(new, gwa) as new_gwa:
        channel = await wake_channel(gateway, gwa)
        r = await channel.request("POST", GWAPRE + "/reserve", step="post-reserve-gwapre")
        assert r.status == 200, r.text
        r = await channel.request("POST", GWAPRE + "/profile", profile_of(new, new_gwa, host="not a host"),
                                  step="post-gwapre-profile")
        error = error_of(r.body)
        assert (r.status, error.code, error.field) == (422, "invalid-value", "host"), r.text
        assert gateway.store.key_banks()["gwa/GWAPRE"][0] == "reserved"
        await _release(gateway, gwa, channel)
        assert_transcript(62, gateway, gwa)
        assert state(gateway) == before
        await close(gateway, channel)
        await old_gwa_back_in_charge(gateway, gwa)


async def test_fig63_certificates_of_an_untrusted_root(gateway, gwa, pki, tmp_path):
    # the new GWA's certificates chain to a root the gateway does not trust (no 6.7.3 before)
    new = new_gwa_identity(pki, tmp_path / "new-gwa", NEW_GWA, new_root=True)
    before = state(gateway)
    async with new_gwa_running(new, gwa) as new_gwa:
        channel = await wake_channel(gateway, gwa)
        r = await channel.request("POST", GWAPRE + "/reserve", step="post-reserve-gwapre")
        assert r.status == 200, r.text
        r = await channel.request("POST", GWAPRE + "/profile", profile_of(new, new_gwa), step="post-gwapre-profile")
        assert r.status == 201, r.text
        r = await channel.request("POST", GWAPRE + "/certificates", certificates_document(new),
                                  step="post-gwapre-certificates")
        error = error_of(r.body)
        assert (r.status, error.code, error.field) == (422, "invalid-certificate", "certificate[tls]"), r.text
        assert "not in the gateway's SM-PKI trust list" in error.message
        assert gateway.store.key_banks()["gwa/GWAPRE"][0] == "profiled"
        await _release(gateway, gwa, channel)
        assert_transcript(63, gateway, gwa)
        assert state(gateway) == before
        await close(gateway, channel)
        await old_gwa_back_in_charge(gateway, gwa)


async def test_fig64_switch_with_incomplete_gwapre(gateway, gwa, pki, tmp_path):
    new = new_gwa_identity(pki, tmp_path / "new-gwa", NEW_GWA)
    before = state(gateway)
    async with new_gwa_running(new, gwa) as new_gwa:
        channel = await wake_channel(gateway, gwa)
        r = await channel.request("POST", GWAPRE + "/reserve", step="post-reserve-gwapre")
        assert r.status == 200, r.text
        r = await channel.request("POST", GWAPRE + "/profile", profile_of(new, new_gwa), step="post-gwapre-profile")
        assert r.status == 201, r.text
        # no certificates of the new GWA yet: the gateway does not switch
        r = await channel.request("POST", GWAPRE + "/switch", step="post-switch-to-gwapre")
        assert r.status == 409 and error_of(r.body).code == "state-conflict", r.text
        assert gateway.gwa == before[3] and gateway.management.authenticated()
        await _release(gateway, gwa, channel)
        assert_transcript(64, gateway, gwa)
        assert state(gateway) == before
        await close(gateway, channel)
        await old_gwa_back_in_charge(gateway, gwa)


# -- failures after the switch: the fallback timer brings the old GWA back ------------------------
FALLBACK_S = 60.0


async def _fallback_and_release(gateway, gwa, reason_phase: str):
    """The fallback time passes on the gateway's clock; the old GWA learns it and releases GWAPRE."""
    assert gateway.keybanks.banks.in_use_bank == "GWAPRE"
    gateway.clock.advance(FALLBACK_S)
    [event] = await gwa.wait_event("gwa-change-failed")
    assert event.details["failed-in"] == reason_phase and event.details["gwa"] == gateway.gwa.id
    await settled(gateway)
    assert bank_phase_of(gateway) == "rolled-back"
    channel = await wake_channel(gateway, gwa, step="wakeup-rollback")
    r = await channel.request("DELETE", GWAPRE, step="delete-gwapre")
    assert r.status == 204, r.text
    await settled(gateway)
    return channel


def bank_phase_of(gateway) -> str:
    return gateway.store.key_banks()["gwa/GWAPRE"][0]


def impostor_of(pki, new, directory):
    """A PKI directory with the new GWA's signature key but another TLS certificate (same name,
    same CA): the wake-up verifies, the TLS peer is not the one in GWAPRE."""
    other = new_gwa_identity(pki, directory / "other-tls", new.gwa_id)
    target = directory / "impostor"
    shutil.copytree(new.pki.root, target)
    for suffix in (".crt", ".key", ".chain.pem"):
        shutil.copyfile(other.pki.root / f"gwa-tls{suffix}", target / f"gwa-tls{suffix}")
    return PkiDir(target, new.pki.manifest)


async def test_fig65_gwapre_not_verified_after_the_switch(pki, gwa, tmp_path):
    """The new GWA's endpoint presents another TLS certificate than the one in GWAPRE: its wake-up
    is accepted, the gateway connects and refuses the peer; GWAPRE is never verified."""
    gateway = await virtual_gateway_at(pki, gwa, tmp_path / "state", policy={"gwa_change_fallback_s": FALLBACK_S})
    try:
        new = new_gwa_identity(pki, tmp_path / "new-gwa", NEW_GWA)
        before = state(gateway)
        async with ReferenceGwa(impostor_of(pki, new, tmp_path)) as new_gwa:
            new_gwa.transcript = gwa.transcript
            channel = await wake_channel(gateway, gwa)
            await prepare(channel, new, new_gwa)
            await switch_and_leave(gateway, channel)
            new_gwa.send_wakeup(gateway.wakeup_address, gateway.id, created_at=gateway.clock.now(), step="wakeup-new-gwa")
            await wait_for(lambda: any(e.event == "management-channel-failed" for e in gateway.store.log_tail("system", 3)))
            failed = [e for e in gateway.store.log_tail("system", 3) if e.event == "management-channel-failed"][-1]
            assert failed.details["reason"] == "peer-rejected"
            assert bank_phase_of(gateway) == "switched"
            rollback = await _fallback_and_release(gateway, gwa, "switched")
            assert_transcript(65, gateway, gwa)
            await close(gateway, rollback)
            assert state(gateway) == before
            await old_gwa_back_in_charge(gateway, gwa)
    finally:
        await gateway.stop()


async def test_new_gwa_unreachable_after_the_switch(pki, gwa, tmp_path):
    """6.6.8 failing the other way: nothing listens at the new GWA's address."""
    gateway = await virtual_gateway_at(pki, gwa, tmp_path / "state", policy={"gwa_change_fallback_s": FALLBACK_S})
    try:
        new = new_gwa_identity(pki, tmp_path / "new-gwa", NEW_GWA)
        before = state(gateway)
        async with new_gwa_running(new, gwa) as new_gwa:
            channel = await wake_channel(gateway, gwa)
            await prepare(channel, new, new_gwa)
        # the new GWA's endpoints are closed now: it can still sign a wake-up, but not be reached
        await switch_and_leave(gateway, channel)
        new_gwa.send_wakeup(gateway.wakeup_address, gateway.id, created_at=gateway.clock.now(), step="wakeup-new-gwa")
        await wait_for(lambda: any(e.event == "management-channel-failed" for e in gateway.store.log_tail("system", 3)))
        assert bank_phase_of(gateway) == "switched"
        rollback = await _fallback_and_release(gateway, gwa, "switched")
        await close(gateway, rollback)
        assert state(gateway) == before
        await old_gwa_back_in_charge(gateway, gwa)
    finally:
        await gateway.stop()


async def test_fig66_invalid_final_profile(pki, gwa, tmp_path):
    gateway = await virtual_gateway_at(pki, gwa, tmp_path / "state", policy={"gwa_change_fallback_s": FALLBACK_S})
    try:
        new = new_gwa_identity(pki, tmp_path / "new-gwa", NEW_GWA)
        before = state(gateway)
        async with new_gwa_running(new, gwa) as new_gwa:
            channel = await wake_channel(gateway, gwa)
            await prepare(channel, new, new_gwa)
            await switch_and_leave(gateway, channel)
            new_channel, _ = await verify_new_gwa(gateway, new_gwa)
            r = await new_channel.request("POST", GWAPRE + "/final-profile",
                                          profile_of(new, new_gwa, partner_id="GWA-OTHER-0001"), step="post-final-profile")
            error = error_of(r.body)
            assert (r.status, error.code, error.field) == (422, "invalid-value", "partner_id"), r.text
            assert bank_phase_of(gateway) == "verified"
            await close(gateway, new_channel)  # the new GWA gives up without correcting it
            rollback = await _fallback_and_release(gateway, gwa, "verified")
            assert_transcript(66, gateway, gwa)
            await close(gateway, rollback)
            assert state(gateway) == before
            await old_gwa_back_in_charge(gateway, gwa)
    finally:
        await gateway.stop()


async def test_fig67_final_gwa_not_confirmed(pki, gwa, tmp_path):
    gateway = await virtual_gateway_at(pki, gwa, tmp_path / "state", policy={"gwa_change_fallback_s": FALLBACK_S})
    try:
        new = new_gwa_identity(pki, tmp_path / "new-gwa", NEW_GWA)
        before = state(gateway)
        async with new_gwa_running(new, gwa) as new_gwa:
            channel = await wake_channel(gateway, gwa)
            await prepare(channel, new, new_gwa)
            await switch_and_leave(gateway, channel)
            new_channel, stale_digest = await verify_new_gwa(gateway, new_gwa)
            # the final profile names its host by name: GWAPRE's content, and so its digest, changes
            r = await new_channel.request("POST", GWAPRE + "/final-profile", profile_of(new, new_gwa, host="localhost"),
                                          step="post-final-profile")
            assert r.status == 201 and bank_digest(r.body) != stale_digest, r.text
            # the new GWA confirms what it read before its final profile: not what the gateway holds
            r = await new_channel.request("POST", GWAPRE + "/confirm", confirm_document(stale_digest),
                                          step="post-confirm-final-gwa")
            error = error_of(r.body)
            assert (r.status, error.code, error.field) == (409, "digest-mismatch", "digest"), r.text
            assert bank_phase_of(gateway) == "finalised"
            await close(gateway, new_channel)
            rollback = await _fallback_and_release(gateway, gwa, "finalised")
            assert_transcript(67, gateway, gwa)
            await close(gateway, rollback)
            assert state(gateway) == before
            await old_gwa_back_in_charge(gateway, gwa)
    finally:
        await gateway.stop()


# -- persistence ----------------------------------------------------------------------------------
async def test_gwa_change_survives_restart(pki, gwa, tmp_path):
    """A switched gateway restarts still working with the new GWA; restarted after the fallback
    time it returns to the old GWA at start."""
    policy = {"gwa_change_fallback_s": FALLBACK_S}
    gateway = await virtual_gateway_at(pki, gwa, tmp_path / "state", policy=policy)
    new = new_gwa_identity(pki, tmp_path / "new-gwa", NEW_GWA)
    before = state(gateway)
    async with new_gwa_running(new, gwa) as new_gwa:
        try:
            channel = await wake_channel(gateway, gwa)
            await prepare(channel, new, new_gwa)
            await switch_and_leave(gateway, channel)
            switched_at = gateway.clock.now()
        finally:
            await gateway.stop()
        # restart within the fallback time: still the new GWA; its channel verifies GWAPRE
        clock = VirtualClock(switched_at + _dt.timedelta(seconds=10))
        gateway = Gateway(virtual_config(pki, gwa, tmp_path / "state", policy=policy), clock=clock)
        await started(gateway, new_gwa)  # the start-up event goes to the GWA in use
        try:
            assert gateway.gwa.id == NEW_GWA and gateway.keybanks.banks.phase == "switched"
            channel, _ = await verify_new_gwa(gateway, new_gwa)
            assert bank_phase_of(gateway) == "verified"
            await close(gateway, channel)
            gateway.clock.advance(FALLBACK_S / 2)  # the timer runs from the switch, not from the restart
            await asyncio.sleep(0.05)
            assert bank_phase_of(gateway) == "verified"
        finally:
            await gateway.stop()
        # restart after the fallback time: the gateway falls back while starting
        clock = VirtualClock(switched_at + _dt.timedelta(seconds=FALLBACK_S + 1))
        gateway = Gateway(virtual_config(pki, gwa, tmp_path / "state", policy=policy), clock=clock)
        await started(gateway, gwa)
        try:
            await gwa.wait_event("gwa-change-failed")
            assert gateway.gwa == before[3] and bank_phase_of(gateway) == "rolled-back"
            channel = await wake_channel(gateway, gwa)
            assert (await channel.request("DELETE", GWAPRE)).status == 204
            await close(gateway, channel)
            await settled(gateway)
            assert state(gateway) == before
        finally:
            await gateway.stop()


# -- bad input --------------------------------------------------------------------------------------
async def test_keybank_bad_input_changes_nothing(gateway, gwa, pki, tmp_path):
    new = new_gwa_identity(pki, tmp_path / "new-gwa", NEW_GWA)
    channel = await wake_channel(gateway, gwa)
    xml = {"Content-Type": "application/xml"}

    async def refused(method, path, body, status, code, field=None, headers=None):
        banks, objects = gateway.store.key_banks(), gateway.store.objects()
        last = gateway.store.log_tail("system", 1)[-1].record
        r = await channel.request(method, path, body, headers=headers or xml)
        error = error_of(r.body)
        assert (r.status, error.code) == (status, code), (method, path, r.text)
        if field is not None:
            assert error.field == field, (method, path, r.text)
        assert (gateway.store.key_banks(), gateway.store.objects()) == (banks, objects)
        failed = [e for e in gateway.store.logs("system", since_record=last) if e.event == "request-failed"]
        assert failed and failed[-1].details["code"] == code
        return error

    base = (NEW_GWA, "127.0.0.1", 4711, "https://127.0.0.1:4712")
    good_profile = doc(*base)
    # nothing reserved yet
    await refused("POST", GWAPRE + "/profile", good_profile, 409, "state-conflict", "phase")
    await refused("DELETE", GWAPRE, b"", 404, "unknown-keybank", "bank")
    await refused("GET", "/smgw/keybanks/OTHER", b"", 404, "unknown-keybank", "bank")
    await refused("DELETE", "/smgw/keybanks/ACTIVE", b"", 409, "state-conflict", "bank")
    await refused("POST", GWAPRE + "/confirm", confirm_document("00" * 32), 409, "state-conflict", "phase")
    await refused("POST", GWAPRE + "/switch", b"", 409, "state-conflict", "phase")
    assert (await channel.request("POST", GWAPRE + "/reserve")).status == 200
    # the GWAPRE profile
    await refused("POST", GWAPRE + "/profile", b"<cosem-object", 400, "malformed")
    await refused("POST", GWAPRE + "/profile", good_profile, 415, "unsupported-media-type", "Content-Type",
                  headers={"Content-Type": "text/plain"})
    await refused("POST", GWAPRE + "/profile", profile_document("meter", meter_profile_values(pki)), 400, "wrong-object",
                  "class-id")
    await refused("POST", GWAPRE + "/profile", doc(*base, partner_role="emt"), 422, "invalid-value", "partner_role")
    await refused("POST", GWAPRE + "/profile", doc(*base, tls_certificate=der(new.certificate("tls"))), 422,
                  "invalid-value", "tls_certificate")
    await refused("POST", GWAPRE + "/profile", doc(*base, port=0), 422, "invalid-value", "port")
    await refused("POST", GWAPRE + "/profile", doc(*base, info_report_url="http://127.0.0.1/r"), 422, "invalid-value",
                  "info_report_url")
    await refused("POST", GWAPRE + "/profile", doc(*base, info_report_url=None), 422, "invalid-value", "info_report_url")
    await refused("POST", GWAPRE + "/profile", doc("bad id/x", *base[1:]), 422, "invalid-value", "partner_id")
    await refused("POST", GWAPRE + "/certificates", certificates_document(new), 409, "state-conflict", "phase")
    assert (await channel.request("POST", GWAPRE + "/profile", good_profile)).status == 201
    # the certificates
    full = etree.fromstring(certificates_document(new))
    without_enc = etree.fromstring(certificates_document(new))
    without_enc.remove(without_enc[2])
    await refused("POST", GWAPRE + "/certificates", etree.tostring(without_enc), 400, "bad-xml", "certificate[enc]")
    doubled = etree.fromstring(certificates_document(new))
    doubled.append(etree.fromstring(etree.tostring(full[0])))
    await refused("POST", GWAPRE + "/certificates", etree.tostring(doubled), 400, "bad-xml", "certificate[tls]")
    not_hex = etree.fromstring(certificates_document(new))
    not_hex[1].text = "zz"
    await refused("POST", GWAPRE + "/certificates", etree.tostring(not_hex), 400, "bad-xml", "certificate[sig]")
    await refused("POST", GWAPRE + "/certificates", confirm_document("00"), 400, "bad-xml", "/confirm")
    await refused("POST", GWAPRE + "/certificates", certificates_document(new, replace={"tls": der(new.certificate("enc"))}),
                  422, "invalid-certificate", "certificate[tls]")
    await refused("POST", GWAPRE + "/certificates", certificates_document(new, replace={"sig": b"\x30\x03\x02\x01\x01"}),
                  422, "invalid-certificate", "certificate[sig]")
    error = await refused("POST", GWAPRE + "/certificates",
                          certificates_document(new, replace={u: der(pki.cert(f"gwa-{u}")) for u in ("tls", "sig", "enc")}),
                          422, "invalid-certificate", "certificate[tls]")
    assert "not the GWA of the GWAPRE profile" in error.message
    # steps of later phases
    await refused("POST", GWAPRE + "/switch", b"", 409, "state-conflict", "phase")
    await refused("POST", GWAPRE + "/final-profile", good_profile, 409, "state-conflict", "phase")
    await refused("POST", GWAPRE + "/confirm", b'<confirm xmlns="urn:smgw-emu:keybank:1"/>', 400, "bad-xml", "digest")
    assert (await channel.request("POST", GWAPRE + "/certificates", certificates_document(new))).status == 201
    await refused("POST", GWAPRE + "/confirm", confirm_document("00" * 32), 409, "state-conflict", "phase")
    assert (await channel.request("DELETE", GWAPRE)).status == 204
    await close(gateway, channel)


async def test_gwa_change_survives_sigkill(pki, gwa, tmp_path):
    """The gateway as a process of its own, killed with SIGKILL right after the switch and right
    after the confirmation: each time it comes back in the state the last answer announced."""
    wakeup_port = free_port()
    config = gateway_config(pki, gwa, tmp_path / "state", wakeup={"port": wakeup_port})
    path = tmp_path / "gateway.toml"
    path.write_text(render_config(config))
    address = ("127.0.0.1", wakeup_port)

    async def start() -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-m", "smgw_emu.cli", "run", "--config", str(path)],
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        loop = asyncio.get_running_loop()
        line = await loop.run_in_executor(None, process.stdout.readline)
        assert "running" in line, line
        return process

    def kill(process: subprocess.Popen) -> None:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
        process.stdout.close()

    async def channel_of(reference: ReferenceGwa):
        reference.send_wakeup(address, config.gateway.id)
        return await reference.wait_channel(10)

    new = new_gwa_identity(pki, tmp_path / "new-gwa", NEW_GWA)
    async with new_gwa_running(new, gwa) as new_gwa:
        process = await start()
        try:
            channel = await channel_of(gwa)
            await prepare(channel, new, new_gwa)
            r = await channel.request("POST", GWAPRE + "/switch")
            assert r.status == 200, r.text
            kill(process)
            process = await start()  # switched: works with the new GWA, whose wake-up it now accepts
            await new_gwa.wait_event("gateway-started", timeout=10)
            channel = await channel_of(new_gwa)
            r = await channel.request("GET", GWAPRE)
            assert bank_phase(r.body) == "verified", r.text
            r = await channel.request("POST", GWAPRE + "/final-profile", profile_of(new, new_gwa))
            r = await channel.request("POST", GWAPRE + "/confirm", confirm_document(bank_digest(r.body)))
            assert r.status == 200, r.text
            kill(process)
            process = await start()  # completed: the new GWA is ACTIVE
            channel = await channel_of(new_gwa)
            r = await channel.request("GET", "/smgw/keybanks")
            assert r.status == 200 and b'in-use="ACTIVE"' in r.body and b"GWAPRE" not in r.body, r.text
            assert NEW_GWA.encode() in r.body
            await channel.close()
        finally:
            if process.poll() is None:
                kill(process)


async def test_state_of_an_earlier_version_is_migrated(pki, gwa, tmp_path):
    """A state directory written before key banks existed (the GWA profile in kv) starts with that
    profile as bank ACTIVE; the kv entry is gone, the trust anchor is the PKI's root."""
    config = gateway_config(pki, gwa, tmp_path / "state")
    gateway = await started(Gateway(config), gwa)
    old_profile = dict(gateway.gwa.to_json(), host="localhost")
    await gateway.stop()
    store = StateStore(tmp_path / "state")
    with store.transaction() as tx:
        tx.execute("DELETE FROM key_banks WHERE bank LIKE 'gwa/%' OR bank = 'trust/roots'")
        tx.set(GWA_PROFILE_KEY, old_profile)
    store.close()
    gateway = await started(Gateway(config), gwa)
    try:
        assert gateway.gwa.host == "localhost" and gateway.store.get(GWA_PROFILE_KEY) is None
        banks = gateway.store.key_banks()
        assert banks["gwa/ACTIVE"][1]["profile"]["host"] == "localhost"
        assert len(banks["trust/roots"][1]["roots"]) == 1
        assert [e.message for e in gateway.store.logs("system") if e.event == "personalisation"][-1].endswith(
            "the state of an earlier version")
    finally:
        await gateway.stop()
