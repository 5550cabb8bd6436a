"""The LMN side of the meter profile, end to end: pairing (6.4.2.6, fig. 30), crypto reset with
and without an existing pairing (6.4.2.7, figs. 31, 32), the event after pairing (6.5.12,
fig. 56), and their failures.

Real parts only: the gateway, the reference GWA (WAN, real TLS) and the reference meter (a TLS
server on loopback speaking SML), the session's SM-PKI. The gateway runs on a virtual clock, so
readings and retries happen only when a test moves time. A test holds the meter's answers
(`meter.hold()`) until the events before them reached the GWA: the INFO-REPORT channel then opens
once per event, as the catalogue's steps say.
"""

from __future__ import annotations

import datetime as _dt
import os

import pytest
from cryptography.hazmat.primitives import serialization

from smgw_emu.app.gateway import Gateway
from smgw_emu.core import lmn
from smgw_emu.core.clock import VirtualClock
from smgw_emu.core.cosem import DlmsValue, xmlcodec
from smgw_emu.net.tls import certificate_fingerprint
from smgw_emu.pki import init_pki
from smgw_emu.reference.cosem_client import (
    attribute_document,
    meter_profile_values,
    profile_document,
    profile_object_path,
    profile_path,
    seal_for_gateway,
)
from smgw_emu.reference.meter import ReferenceMeter

from .conftest import assert_transcript, gateway_config, mark, started, wait_for
from .cosem_flow import attributes, error_of, last_record, open_channel, settled, system_events
from tests.ports import free_port

INITIAL_KEY = bytes(range(16))
LMN = {"attempts": 3, "retry_interval_s": 10, "connect_timeout_s": 2, "exchange_timeout_s": 5}


@pytest.fixture
async def gateway(pki, gwa, tmp_path):
    """A gateway on a virtual clock (readings and LMN retries move only with the test's time)."""
    clock = VirtualClock(_dt.datetime.now(_dt.timezone.utc))
    gw = Gateway(gateway_config(pki, gwa, tmp_path / "state", clock={"mode": "virtual"}, lmn=LMN), clock=clock)
    yield await started(gw, gwa)
    await gw.stop()


@pytest.fixture
async def meter(pki):
    async with ReferenceMeter(pki, initial_key=INITIAL_KEY) as reference:
        yield reference


def der(pki, name: str) -> bytes:
    return pki.cert(name).public_bytes(serialization.Encoding.DER)


def method_path(meter_id: str, index: int) -> str:
    return profile_object_path("meter", meter_id) + f"/methods/{index}"


def profile_body(pki, meter: ReferenceMeter | None = None, *, key: bytes | None = INITIAL_KEY, **changes) -> bytes:
    values = meter_profile_values(pki, key_container=seal_for_gateway(pki, key) if key else b"", **changes)
    if meter is not None:
        values.setdefault("lmn_address", meter.address)
    return profile_document("meter", values)


def mark_all(gateway, gwa, *meters: ReferenceMeter) -> None:
    mark(gateway, gwa)
    for meter in meters:
        meter.transcript.mark()


def pairing_state(gateway, meter_id: str) -> str:
    [profile] = [o for o in gateway.store.objects("meter", meter_id) if o.class_id == 28300]
    return profile.attributes["pairing_state"]


async def paired(gateway, gwa, pki, meter: ReferenceMeter, **changes) -> None:
    """Set-up outside a figure's transcript: create the meter profile, pair, settle, mark."""
    channel = await open_channel(gateway, gwa)
    created = await channel.request("POST", profile_path("meter", meter.meter_id), profile_body(pki, meter, **changes))
    assert created.status == 201, created.text
    before = len(gwa.events("meter-paired"))
    response = await channel.request("POST", method_path(meter.meter_id, 1), b"")
    assert response.status == 200, response.text
    await gwa.wait_event("meter-paired", count=before + 1)
    await channel.close()
    await wait_for(lambda: not gateway.management.is_open)
    await settled(gateway)
    mark_all(gateway, gwa, meter)


# -- fig. 30 ---------------------------------------------------------------------------------------


async def test_fig30_pairing_between_meter_and_gateway(gateway, gwa, pki, meter):
    meter_id = meter.meter_id
    mark_all(gateway, gwa, meter)
    channel = await open_channel(gateway, gwa)
    created = await channel.request("POST", profile_path("meter", meter_id), profile_body(pki, meter),
                                    step="post-meter-profile")
    assert created.status == 201, created.text
    assert attributes(created.body)["lmn_address"].value == meter.address
    await gwa.wait_event("meter-profile-created")
    await settled(gateway)

    meter.hold()  # the meter answers once the GWA has the pairing-started event
    response = await channel.request("POST", method_path(meter_id, 1), b"", step="post-pair")
    assert response.status == 200, response.text
    assert xmlcodec.method_result_from_xml(response.body) == (1, DlmsValue("enum", 1))  # pairing
    await gwa.wait_event("meter-pairing-started")
    await settled(gateway)
    meter.release()

    [event] = await gwa.wait_event("meter-paired")
    await settled(gateway)
    assert event.details["server-id"] == lmn.server_id(meter_id).hex() == "0a0158585800" + (98765432).to_bytes(4, "big").hex()
    assert event.details["certificate-sha256"] == certificate_fingerprint(der(pki, "meter-tls"))
    assert pairing_state(gateway, meter_id) == "paired"
    state, material = gateway.store.key_banks()[f"meter/{meter_id}/active"]
    assert (state, material["key"], material["source"]) == ("active", INITIAL_KEY.hex(), "initial")
    assert meter.paired_with == certificate_fingerprint(der(pki, "gateway-tls"))
    assert all(INITIAL_KEY.hex() not in str(e.details) + e.message for e in system_events(gateway))
    assert_transcript(30, gateway, gwa, others=[meter.transcript])


# -- fig. 31 ---------------------------------------------------------------------------------------


async def test_fig31_crypto_reset_with_existing_pairing(gateway, gwa, pki, meter):
    meter_id = meter.meter_id
    await paired(gateway, gwa, pki, meter)
    new_key = os.urandom(16)
    channel = await open_channel(gateway, gwa)
    meter.hold()
    argument = xmlcodec.value_to_xml(DlmsValue("octet-string", seal_for_gateway(pki, new_key)))
    response = await channel.request("POST", method_path(meter_id, 2), argument, step="post-crypto-reset")
    assert response.status == 200, response.text
    [started_event] = await gwa.wait_event("crypto-reset-started")
    assert (started_event.details["mode"], started_event.details["key-source"]) == ("with-pairing", "gwa")
    await settled(gateway)
    meter.release()

    [done] = await gwa.wait_event("crypto-reset-done")
    await settled(gateway)
    assert (done.details["mode"], done.details["key-source"]) == ("with-pairing", "gwa")
    assert meter.current_key == new_key  # the meter took the new key material ...
    banks = gateway.store.key_banks()
    assert banks[f"meter/{meter_id}/active"][1]["key"] == new_key.hex()  # ... and the gateway uses it
    assert f"meter/{meter_id}/pending" not in banks
    assert banks[f"meter/{meter_id}/initial"][1]["key"] == INITIAL_KEY.hex()
    assert pairing_state(gateway, meter_id) == "paired"
    assert_transcript(31, gateway, gwa, others=[meter.transcript])


# -- fig. 32 ---------------------------------------------------------------------------------------


async def test_fig32_crypto_reset_without_existing_pairing(gateway, gwa, pki):
    # the meter still uses a key of an earlier pairing (another gateway): only its initial key helps
    async with ReferenceMeter(pki, initial_key=INITIAL_KEY, current_key=os.urandom(16)) as meter:
        meter_id = meter.meter_id
        channel = await open_channel(gateway, gwa)
        created = await channel.request("POST", profile_path("meter", meter_id), profile_body(pki, meter, key=None))
        assert created.status == 201, created.text
        await channel.close()
        await settled(gateway)
        mark_all(gateway, gwa, meter)

        channel = await open_channel(gateway, gwa)
        put = await channel.request("PUT", profile_object_path("meter", meter_id) + "/attributes/5",
                                    attribute_document(28300, "encrypted_key", seal_for_gateway(pki, INITIAL_KEY)),
                                    step="put-meter-profile-initial-key")
        assert put.status == 200, put.text
        await gwa.wait_event("meter-profile-updated")
        await settled(gateway)
        meter.hold()
        response = await channel.request("POST", method_path(meter_id, 2), b"", step="post-crypto-reset")
        assert response.status == 200, response.text
        [started_event] = await gwa.wait_event("crypto-reset-started")
        assert (started_event.details["mode"], started_event.details["key-source"]) == ("without-pairing", "gateway")
        await settled(gateway)
        meter.release()

        [done] = await gwa.wait_event("crypto-reset-done")
        await settled(gateway)
        assert done.details["mode"] == "without-pairing"
        active = gateway.store.key_banks()[f"meter/{meter_id}/active"][1]
        assert bytes.fromhex(active["key"]) == meter.current_key not in (INITIAL_KEY,)
        assert active["source"] == "gateway" and pairing_state(gateway, meter_id) == "paired"
        assert meter.paired_with == certificate_fingerprint(der(pki, "gateway-tls"))
        assert_transcript(32, gateway, gwa, others=[meter.transcript])


# -- fig. 56 ---------------------------------------------------------------------------------------


def to_next_boundary(gateway, period: int = 900) -> float:
    epoch = gateway.clock.now().timestamp()
    return (int(epoch // period) + 1) * period - epoch


async def test_fig56_event_after_pairing_meter_detection(gateway, gwa, pki, meter):
    meter_id = meter.meter_id
    await paired(gateway, gwa, pki, meter)
    gateway.clock.advance(to_next_boundary(gateway))  # the first capture period boundary after pairing
    [event] = await gwa.wait_event("meter-detected")
    await settled(gateway)
    status = "00000000" + f"{meter.status:08x}"
    assert event.details["meter"] == meter_id and event.details["server-id"] == lmn.server_id(meter_id).hex()
    assert event.details["0100010800ff"] == f"1234567.8 status={status}"
    assert event.details["0100020800ff"] == f"0.0 status={status}"
    [(stamp, value, stored_status)] = gateway.store.meter_values(meter_id, "0100010800ff")
    assert (value, stored_status) == ("1234567.8", status) and stamp == event.details["time"][:19] + "Z"
    assert_transcript(56, gateway, gwa, others=[meter.transcript])

    # the next reading stores values again, but the meter is detected once
    meter.registers["0100010800ff"].value += 25
    gateway.clock.advance(900)
    await wait_for(lambda: len(gateway.store.meter_values(meter_id, "0100010800ff")) == 2)
    await settled(gateway)
    assert gateway.store.meter_values(meter_id, "0100010800ff")[-1][1] == "1234570.3"
    assert len(gwa.events("meter-detected")) == 1


# -- failures --------------------------------------------------------------------------------------


async def start_pairing(gateway, gwa, pki, body: bytes, meter_id: str):
    channel = await open_channel(gateway, gwa)
    created = await channel.request("POST", profile_path("meter", meter_id), body)
    assert created.status == 201, created.text
    await settled(gateway)
    objects, banks, record = gateway.store.objects(), gateway.store.key_banks(), last_record(gateway)
    response = await channel.request("POST", method_path(meter_id, 1), b"")
    assert response.status == 200, response.text
    return channel, objects, banks, record


def without_pairing_state(objects):
    return [(o.ldev_id, o.obis, {k: v for k, v in o.attributes.items() if k != "pairing_state"}) for o in objects]


async def assert_pairing_failed(gateway, gwa, meter_id, objects, banks, record, reason: str, attempts: int = 1):
    [failed] = await gwa.wait_event("meter-pairing-failed")
    await settled(gateway)
    assert (failed.details["reason"], failed.details["attempts"]) == (reason, str(attempts)), failed.details
    assert pairing_state(gateway, meter_id) == "failed"
    # nothing else changed: no active key, the initial key kept, the other objects as they were
    assert gateway.store.key_banks() == banks
    assert without_pairing_state(gateway.store.objects()) == without_pairing_state(objects)
    logged = [e for e in system_events(gateway, record) if e.event in ("lmn-channel-failed", "meter-pairing-failed")]
    assert logged[-1].event == "meter-pairing-failed" and (logged[-1].level, logged[-1].outcome) == (2, 1) and logged[-1].details["reason"] == reason
    return [e for e in logged if e.event == "lmn-channel-failed"]


async def test_pairing_with_a_meter_of_another_pki_fails_at_the_tls_handshake(gateway, gwa, pki, tmp_path):
    other = init_pki(tmp_path / "other-pki")
    async with ReferenceMeter(other, initial_key=INITIAL_KEY) as stranger:
        channel, objects, banks, record = await start_pairing(gateway, gwa, pki, profile_body(pki, stranger),
                                                              stranger.meter_id)
        tries = await assert_pairing_failed(gateway, gwa, stranger.meter_id, objects, banks, record,
                                            "tls-handshake-failed")
        assert len(tries) == 1 and tries[0].level == 2  # a refused handshake is not retried
        assert stranger.files_received == 0


async def test_pairing_refuses_a_meter_with_another_certificate(gateway, gwa, pki):
    async with ReferenceMeter(pki, initial_key=INITIAL_KEY, certificate="cls-tls") as impostor:
        channel, objects, banks, record = await start_pairing(gateway, gwa, pki, profile_body(pki, impostor),
                                                              impostor.meter_id)
        await assert_pairing_failed(gateway, gwa, impostor.meter_id, objects, banks, record, "certificate-mismatch")
        assert impostor.files_received == 0  # nothing was said to it


async def test_pairing_refuses_a_meter_with_another_meter_id(gateway, gwa, pki):
    async with ReferenceMeter(pki, initial_key=INITIAL_KEY, meter_id="1XXX0000000001") as other_meter:
        meter_id = pki.identities.meter  # the profile's meter; the certificate is right, the SML server id is not
        channel, objects, banks, record = await start_pairing(gateway, gwa, pki, profile_body(pki, other_meter), meter_id)
        await assert_pairing_failed(gateway, gwa, meter_id, objects, banks, record, "meter-id-mismatch")
        [failed] = gwa.events("meter-pairing-failed")
        assert "1XXX0000000001" in failed.details["detail"]  # the detail names the meter that answered


async def test_pairing_with_a_wrong_initial_key_fails(gateway, gwa, pki):
    async with ReferenceMeter(pki, initial_key=os.urandom(16)) as meter:
        channel, objects, banks, record = await start_pairing(gateway, gwa, pki, profile_body(pki, meter), meter.meter_id)
        await assert_pairing_failed(gateway, gwa, meter.meter_id, objects, banks, record, "authentication-failed")
        assert [e.step for e in meter.transcript.entries][-1] == "sml-attention-error"


async def test_garbled_answers_fail_the_pairing(gateway, gwa, pki, meter):
    meter.corrupt_answers = True
    channel, objects, banks, record = await start_pairing(gateway, gwa, pki, profile_body(pki, meter), meter.meter_id)
    await assert_pairing_failed(gateway, gwa, meter.meter_id, objects, banks, record, "sml-malformed")


async def test_unreachable_meter_is_retried_then_pairing_fails(gateway, gwa, pki):
    meter_id = pki.identities.meter
    body = profile_body(pki, lmn_address=f"127.0.0.1:{free_port()}")
    channel, objects, banks, record = await start_pairing(gateway, gwa, pki, body, meter_id)
    for attempt in (1, 2):  # each retry waits retry_interval_s on the gateway's (virtual) clock
        await wait_for(lambda: len([e for e in system_events(gateway, record) if e.event == "lmn-channel-failed"]) == attempt)
        assert pairing_state(gateway, meter_id) == "pairing"
        gateway.clock.advance(LMN["retry_interval_s"])
    tries = await assert_pairing_failed(gateway, gwa, meter_id, objects, banks, record, "unreachable", attempts=3)
    assert [e.details["attempt"] for e in tries] == ["1", "2", "3"]


async def test_crypto_reset_with_a_wrong_initial_key_keeps_the_old_keys(gateway, gwa, pki):
    async with ReferenceMeter(pki, initial_key=os.urandom(16), current_key=os.urandom(16)) as meter:
        before = meter.current_key
        channel = await open_channel(gateway, gwa)
        created = await channel.request("POST", profile_path("meter", meter.meter_id), profile_body(pki, meter))
        assert created.status == 201
        await settled(gateway)
        banks = gateway.store.key_banks()
        response = await channel.request("POST", method_path(meter.meter_id, 2), b"")
        assert response.status == 200, response.text
        [failed] = await gwa.wait_event("crypto-reset-failed")
        await settled(gateway)
        assert (failed.details["reason"], failed.details["mode"]) == ("authentication-failed", "without-pairing")
        assert meter.current_key == before and gateway.store.key_banks() == banks  # pending dropped, nothing new
        assert pairing_state(gateway, meter.meter_id) == "failed"


async def test_crypto_reset_of_an_unknown_meter_is_404_and_changes_nothing(gateway, gwa, pki):
    channel = await open_channel(gateway, gwa)
    objects, banks, record = gateway.store.objects(), gateway.store.key_banks(), last_record(gateway)
    response = await channel.request("POST", method_path("1XXX0000000099", 2), b"")
    assert response.status == 404 and error_of(response.body).code == "unknown-ldev", response.text
    assert gateway.store.objects() == objects and gateway.store.key_banks() == banks
    assert [e.details["code"] for e in system_events(gateway, record) if e.event == "request-failed"] == ["unknown-ldev"]


@pytest.mark.parametrize("address", ["meter.local", "127.0.0.1:0", "127.0.0.1:70000", "bad host:80", "[::1]:x"])
async def test_bad_lmn_address_is_refused(gateway, gwa, pki, address):
    channel = await open_channel(gateway, gwa)
    objects, record = gateway.store.objects(), last_record(gateway)
    response = await channel.request("POST", profile_path("meter", pki.identities.meter),
                                     profile_body(pki, lmn_address=address))
    error = error_of(response.body)
    assert (response.status, error.code, error.field) == (422, "invalid-value", "lmn_address"), response.text
    assert gateway.store.objects() == objects
    assert [e.details["field"] for e in system_events(gateway, record) if e.event == "request-failed"] == ["lmn_address"]


async def test_pairing_and_readings_survive_a_restart(pki, gwa, tmp_path):
    """A pairing cut off by a stop runs again at the next start; a paired meter is read with the
    stored key after a restart."""
    port = free_port()
    config = gateway_config(pki, gwa, tmp_path / "state", clock={"mode": "virtual"}, lmn=LMN)
    first = await started(Gateway(config, clock=VirtualClock(_dt.datetime.now(_dt.timezone.utc))), gwa)
    try:
        channel, _, _, record = await start_pairing(first, gwa, pki, profile_body(pki, lmn_address=f"127.0.0.1:{port}"),
                                                    pki.identities.meter)
        await wait_for(lambda: any(e.event == "lmn-channel-failed" for e in system_events(first, record)))
        await channel.close()
    finally:
        await first.stop()  # mid-retry: the stored state says "pairing"
    async with ReferenceMeter(pki, initial_key=INITIAL_KEY, port=port):
        second = await started(Gateway(config, clock=VirtualClock(_dt.datetime.now(_dt.timezone.utc))), gwa)
        try:
            await gwa.wait_event("meter-paired")
            assert pairing_state(second, pki.identities.meter) == "paired"
        finally:
            await second.stop()
        third = await started(Gateway(config, clock=VirtualClock(_dt.datetime.now(_dt.timezone.utc))), gwa)
        try:
            third.clock.advance(to_next_boundary(third))
            [event] = await gwa.wait_event("meter-detected")
            assert event.details["meter"] == pki.identities.meter
            await settled(third)
        finally:
            await third.stop()
