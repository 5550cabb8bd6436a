"""The gateway's HAN and LMN TLS identities changed over the MANAGEMENT channel (Lastenheft 6.7.5
HAN certificate change, fig. 72; 6.7.6 LMN certificate change, fig. 73).

Real parts only: the gateway, the reference GWA (WAN, real TLS), the reference CLS device and the
reference consumer client on the HAN (real TLS clients that check the certificate the gateway
presents), the reference meter on the LMN, the session's SM-PKI (its gateway sub-CA issues the
certificates for the gateway's requests, as the SM-PKI would for the GWA)."""

from __future__ import annotations

import datetime as _dt

import pytest
from cryptography import x509

from smgw_emu.app.gateway import Gateway
from smgw_emu.core.clock import VirtualClock
from smgw_emu.core.keybanks import certificate_fingerprint
from smgw_emu.pki import init_pki
from smgw_emu.reference.cls_device import ReferenceClsDevice
from smgw_emu.reference.keybank_client import (
    KEYS_HAN,
    KEYS_LMN,
    der,
    identity_certificate_document,
    issue_gateway_certificates,
)
from smgw_emu.reference.meter import ReferenceMeter
from smgw_emu.reference.trudi_client import GatewayNotPinned, HanConsumerClient

from .conftest import assert_transcript, gateway_config, mark, started, wait_for
from .cosem_flow import error_of, settled, system_events
from .keybank_flow import close, wake_channel
from .test_lmn_pairing import INITIAL_KEY, LMN, mark_all, paired

GENERATE = b'<generate xmlns="urn:smgw-emu:keybank:1"/>'


async def change(channel, pki, base: str, domain: str) -> x509.Certificate:
    """generate, read the request, have the SM-PKI issue it, install: the steps of figs. 72/73."""
    r = await channel.request("POST", base + "/generate", GENERATE, step=f"post-generate-{domain}-key")
    assert r.status == 200 and b'pending="generated"' in r.body, r.text
    requests = await channel.request("GET", base + "/requests", step=f"get-{domain}-certificate-request")
    assert requests.status == 200, requests.text
    issued = issue_gateway_certificates(pki, requests.body)["tls"]
    r = await channel.request("PUT", base + "/certificates", identity_certificate_document(issued),
                              step=f"put-{domain}-certificate")
    assert r.status == 200 and b'generation="1"' in r.body and b'stage="own"' in r.body, r.text
    return issued


async def cls_sees(gateway, pki) -> bytes:
    """The certificate the gateway's CLS listener presents to a real TLS client (the CLS device)."""
    async with ReferenceClsDevice(pki) as device:
        session = await device.open_tls(gateway.cls.han_address)
        presented = der(session.peer_certificate)
        await session.close()
    return presented


async def consumer_sees(gateway, pki, pin: str) -> None:
    host, port = gateway.han.server.address
    async with HanConsumerClient(host, port, cafile=pki.root_ca, gateway_fingerprint=pin) as client:
        await client._connect()  # the pin is checked at the handshake, before any request


@pytest.fixture
def han_config(pki, gwa, tmp_path):
    return gateway_config(pki, gwa, tmp_path / "state", han={"enabled": True, "port": 0})


async def test_fig72_han_certificate_change(pki, gwa, han_config):
    gateway = await started(Gateway(han_config), gwa)
    old = pki.cert("gateway-tls")
    try:
        assert await cls_sees(gateway, pki) == der(old)
        mark(gateway, gwa)
        channel = await wake_channel(gateway, gwa)
        issued = await change(channel, pki, KEYS_HAN, "han")
        [event] = await gwa.wait_event("han-certificate-changed")
        assert event.details["tls"] == certificate_fingerprint(der(issued))[:16]
        assert (event.details["generation"], event.details["previous-generation"]) == ("1", "0")
        await settled(gateway)
        async with ReferenceClsDevice(pki) as device:
            device.transcript.mark()
            session = await device.open_tls(gateway.cls.han_address)
            assert der(session.peer_certificate) == der(issued)  # the next HAN connection: the new certificate
            await session.close()
            assert_transcript(72, gateway, gwa, others=[device.transcript])
        await consumer_sees(gateway, pki, certificate_fingerprint(der(issued)))
        with pytest.raises(GatewayNotPinned):
            await consumer_sees(gateway, pki, certificate_fingerprint(der(old)))
        assert gateway.han.certificate_der == der(issued)  # the TRuDI export names it
        # the WAN identity is untouched
        assert der(channel.peer_certificate) == der(old)
        await close(gateway, channel)
    finally:
        await gateway.stop()
    gateway = await started(Gateway(han_config), gwa)  # survives a restart
    try:
        assert await cls_sees(gateway, pki) == der(issued)
        await consumer_sees(gateway, pki, certificate_fingerprint(der(issued)))
    finally:
        await gateway.stop()


async def test_local_identity_bad_input_changes_nothing(pki, gwa, han_config, tmp_path):
    gateway = await started(Gateway(han_config), gwa)
    try:
        channel = await wake_channel(gateway, gwa)

        async def refused(method, path, body, status, code, field=None):
            banks = gateway.store.key_banks()
            last = gateway.store.log_tail("system", 1)[-1].record
            r = await channel.request(method, path, body)
            error = error_of(r.body)
            assert (r.status, error.code, error.field) == (status, code, field), (method, path, r.text)
            assert gateway.store.key_banks() == banks
            failed = [e for e in gateway.store.logs("system", since_record=last) if e.event == "request-failed"]
            assert failed and failed[-1].details["code"] == code

        await refused("GET", KEYS_HAN + "/requests", b"", 409, "state-conflict", "pending")
        await refused("PUT", KEYS_LMN + "/certificates", identity_certificate_document(pki.cert("gateway-tls")), 409,
                      "state-conflict", "pending")
        await refused("DELETE", KEYS_HAN + "/pending", b"", 409, "state-conflict", "pending")
        assert (await channel.request("POST", KEYS_HAN + "/generate", GENERATE)).status == 200
        await refused("POST", KEYS_HAN + "/generate", GENERATE, 409, "state-conflict", "pending")
        requests = (await channel.request("GET", KEYS_HAN + "/requests")).body
        # a certificate of another key (the WAN TLS certificate), of another gateway, of another PKI
        await refused("PUT", KEYS_HAN + "/certificates", identity_certificate_document(pki.cert("gateway-tls")), 422,
                      "invalid-certificate", "certificate")
        other_gw = issue_gateway_certificates(pki, requests, subject_cn="EXXX0099999999")["tls"]
        await refused("PUT", KEYS_HAN + "/certificates", identity_certificate_document(other_gw), 422,
                      "invalid-certificate", "certificate")
        stranger = issue_gateway_certificates(init_pki(tmp_path / "stranger"), requests)["tls"]
        await refused("PUT", KEYS_HAN + "/certificates", identity_certificate_document(stranger), 422,
                      "invalid-certificate", "certificate")
        await refused("PUT", KEYS_HAN + "/certificates",
                      b'<certificates xmlns="urn:smgw-emu:keybank:1"><certificate usage="tls">zz</certificate>'
                      b'</certificates>', 400, "bad-xml", "certificate")
        await refused("PUT", KEYS_HAN + "/certificates", b'<certificates xmlns="urn:smgw-emu:keybank:1"/>', 400,
                      "bad-xml", "certificate")
        assert (await channel.request("DELETE", KEYS_HAN + "/pending")).status == 204
        assert "han/PENDING" not in gateway.store.key_banks() and "han/ACTIVE" not in gateway.store.key_banks()
        assert await cls_sees(gateway, pki) == der(pki.cert("gateway-tls"))
        await close(gateway, channel)
    finally:
        await gateway.stop()


# -- fig. 73 ---------------------------------------------------------------------------------------


@pytest.fixture
async def lmn_gateway(pki, gwa, tmp_path):
    clock = VirtualClock(_dt.datetime.now(_dt.timezone.utc))
    gw = Gateway(gateway_config(pki, gwa, tmp_path / "state", clock={"mode": "virtual"}, lmn=LMN), clock=clock)
    yield await started(gw, gwa)
    await gw.stop()


async def test_fig73_lmn_certificate_change(lmn_gateway, gwa, pki):
    gateway = lmn_gateway
    async with ReferenceMeter(pki, initial_key=INITIAL_KEY) as meter:
        await paired(gateway, gwa, pki, meter)
        assert meter.paired_with == certificate_fingerprint(der(pki.cert("gateway-tls")))
        mark_all(gateway, gwa, meter)
        channel = await wake_channel(gateway, gwa)
        issued = await change(channel, pki, KEYS_LMN, "lmn")
        await gwa.wait_event("lmn-certificate-changed")
        new = certificate_fingerprint(der(issued))
        await wait_for(lambda: meter.paired_with == new)  # the meter saw the new certificate
        await wait_for(lambda: any(e.event == "lmn-certificate-shown" for e in gateway.store.log_tail("system", 5)))
        await settled(gateway)
        assert_transcript(73, gateway, gwa, others=[meter.transcript])
        # the WAN and HAN identities are untouched
        assert der(channel.peer_certificate) == der(pki.cert("gateway-tls"))
        assert await cls_sees(gateway, pki) == der(pki.cert("gateway-tls"))
        await close(gateway, channel)


async def test_lmn_certificate_change_meter_unreachable(lmn_gateway, gwa, pki):
    """The meter is gone: tried [lmn] attempts times, then event lmn-certificate-change-failed; the
    new certificate stays the gateway's (the meter sees it at its next reading)."""
    gateway = lmn_gateway
    meter = await ReferenceMeter(pki, initial_key=INITIAL_KEY).start()
    await paired(gateway, gwa, pki, meter)
    await meter.stop()
    record = gateway.store.log_tail("system", 1)[-1].record
    channel = await wake_channel(gateway, gwa)
    issued = await change(channel, pki, KEYS_LMN, "lmn")
    for attempt in (1, 2):  # each retry waits retry_interval_s on the gateway's (virtual) clock
        await wait_for(lambda: len([e for e in system_events(gateway, record) if e.event == "lmn-channel-failed"]) == attempt)
        gateway.clock.advance(LMN["retry_interval_s"])
    [event] = await gwa.wait_event("lmn-certificate-change-failed")
    assert (event.details["meter"], event.details["reason"]) == (meter.meter_id, "unreachable")
    assert gateway.identities.certificate_der("lmn") == der(issued)
    await close(gateway, channel)

