"""Lastenheft chapter 5 on the wire: wake-up (5.1), MANAGEMENT (5.2/5.3), ADMIN-SERVICE (5.4/5.5),
INFO-REPORT (5.6/5.7), AUTH (5.8/5.9), TLS (5.12) and HTTP responses (5.16), and 6.5.3
"SMGW gestartet". Real gateway, reference GWA, loopback sockets, TLS with the test SM-PKI."""

from __future__ import annotations

import asyncio
import datetime as _dt

import pytest
from cryptography.hazmat.primitives import serialization
from lxml import etree

from smgw_emu.app.gateway import Gateway
from smgw_emu.core.clock import VirtualClock
from smgw_emu.net.tls import WAN_CIPHERS
from smgw_emu.reference.gwa import ChannelClosed, ReferenceGwa

from .conftest import assert_transcript, gateway_config, started, wait_for

GW_NS = "{urn:smgw-emu:gateway:1}"
ERR_NS = "{urn:smgw-emu:error:1}"


def events(gateway: Gateway, name: str) -> list:
    return [e for e in gateway.store.logs("system", limit=1_000_000) if e.event == name]


async def open_channel(gateway: Gateway, gwa: ReferenceGwa):
    channel = await gwa.wake(gateway.wakeup_address, gateway.id)
    await wait_for(lambda: gateway.management is not None and gateway.management.authenticated())
    await wait_for(lambda: len(events(gateway, "auth-established")) >= 1)
    return channel


async def close_and_settle(gateway: Gateway, channel) -> None:
    await channel.close()
    await wait_for(lambda: gateway.management is None or not gateway.management.is_open)


# -- 5.1 wake-up ---------------------------------------------------------------------------------
async def test_fig1_valid_wakeup_opens_management_channel_to_configured_gwa(gateway, gwa):
    channel = await open_channel(gateway, gwa)
    assert channel.peer_id == gateway.id
    # the gateway connected to the address of its communication profile
    assert (gateway.management.host, gateway.management.port) == (gwa.host, gwa.management_port)
    assert gateway.wakeup_listener.counters.get("accepted") == 1
    assert_transcript(1, gateway, gwa)


def _bad_packets(gwa: ReferenceGwa, gateway: Gateway, pki, tmp_path):
    from smgw_emu.pki import init_pki

    now = _dt.datetime.now(_dt.timezone.utc)
    good = gwa.build_wakeup(gateway.id)
    other = init_pki(tmp_path / "other-pki")
    forger = ReferenceGwa.__new__(ReferenceGwa)  # only its signing: a key the gateway does not hold
    forger.signature_key, forger.signature_cert = other.key("gwa-sig"), pki.cert("gwa-sig")
    return {
        "bad-signature": ReferenceGwa.build_wakeup(forger, gateway.id),
        "wrong-recipient": gwa.build_wakeup("EXXX0099999999"),
        "stale": gwa.build_wakeup(gateway.id, created_at=now - _dt.timedelta(seconds=180)),  # margins survive a loaded CI
        "future": gwa.build_wakeup(gateway.id, created_at=now + _dt.timedelta(seconds=180)),
        "malformed": good[:-7],
        "too-large": good + b"\x00" * 1024,
        "garbage": b"\x30\x03\x02\x01",
        "unknown-sender": ReferenceGwa.build_wakeup(_signer(other, "emt-sig"), gateway.id),
    }


def _signer(pki, entity):
    signer = ReferenceGwa.__new__(ReferenceGwa)
    signer.signature_key, signer.signature_cert = pki.key(entity), pki.cert(entity)
    return signer


async def test_fig1_bad_wakeups_are_silent_logged_and_change_nothing(gateway, gwa, pki, tmp_path):
    before_state = (gateway.store.objects(), gateway.store.key_banks(), gateway.store.ldevs())
    bad = _bad_packets(gwa, gateway, pki, tmp_path)
    for name, packet in bad.items():
        gwa.send_wakeup(gateway.wakeup_address, gateway.id, packet=packet, step=f"wakeup-{name}")
    await wait_for(lambda: len(events(gateway, "wakeup-rejected")) == len(bad))
    await asyncio.sleep(0.2)
    assert gwa.pending_channels() == 0 and gateway.management is None
    reasons = sorted(e.details["reason"] for e in events(gateway, "wakeup-rejected"))
    assert reasons == sorted(["bad-signature", "wrong-recipient", "stale", "future", "malformed",
                              "too-large", "malformed", "unknown-sender"])
    assert (gateway.store.objects(), gateway.store.key_banks(), gateway.store.ldevs()) == before_state
    assert before_state[1], "the key banks hold the GWA: the comparison must compare something"
    # and a valid wake-up is still served
    channel = await open_channel(gateway, gwa)
    assert (await channel.request("GET", "/smgw/info")).status == 200


async def test_fig1_replayed_wakeup_refused_also_after_restart(pki, gwa, tmp_path):
    config = gateway_config(pki, gwa, tmp_path / "state")
    packet = gwa.build_wakeup(config.gateway.id)
    gateway = await started(Gateway(config), gwa)
    try:
        gwa.send_wakeup(gateway.wakeup_address, gateway.id, packet=packet)
        channel = await gwa.wait_channel()
        await close_and_settle(gateway, channel)
        gwa.send_wakeup(gateway.wakeup_address, gateway.id, packet=packet)
        await wait_for(lambda: len(events(gateway, "wakeup-rejected")) == 1)
        assert events(gateway, "wakeup-rejected")[0].details["reason"] == "replayed-nonce"
    finally:
        await gateway.stop()
    restarted = Gateway(config)
    await restarted.start()
    try:
        gwa.send_wakeup(restarted.wakeup_address, restarted.id, packet=packet)
        await wait_for(lambda: len(events(restarted, "wakeup-rejected")) == 2)
        assert events(restarted, "wakeup-rejected")[-1].details["reason"] == "replayed-nonce"
        assert gwa.pending_channels() == 0
    finally:
        await restarted.stop()


async def test_fig1_wakeup_while_channel_open_opens_no_second_channel(gateway, gwa):
    channel = await open_channel(gateway, gwa)
    gwa.send_wakeup(gateway.wakeup_address, gateway.id)
    await wait_for(lambda: len(events(gateway, "wakeup-ignored")) == 1)
    await asyncio.sleep(0.1)
    assert gwa.pending_channels() == 0 and len(gwa.channels) == 1
    assert (await channel.request("GET", "/smgw/info")).status == 200


# -- 5.2 / 5.3 MANAGEMENT channel -------------------------------------------------------------------
async def test_fig2_management_channel_serves_http(gateway, gwa):
    channel = await open_channel(gateway, gwa)
    response = await channel.request("GET", "/smgw/info", step="get-info")
    assert response.status == 200
    root = etree.fromstring(response.body)
    assert root.tag == GW_NS + "gateway" and root.get("id") == gateway.id
    assert_transcript(2, gateway, gwa)


def _retries(gateway: Gateway) -> list[tuple[int, int, float]]:
    """(attempt, attempts, next delay) of each logged MANAGEMENT retry."""
    return [(int(e.details["attempt"]), int(e.details["attempts"]), float(e.details["next_delay_s"]))
            for e in events(gateway, "management-connect-retry")]


def _connect_failures(gateway: Gateway) -> int:
    failed = events(gateway, "management-channel-failed")
    assert {e.details["reason"] for e in failed} <= {"connect-failed"}
    return len(failed)


async def _fail_attempts(gateway: Gateway, count: int) -> None:
    """Let the gateway fail `count` more connects, advancing its virtual clock by each backoff."""
    for _ in range(count):
        before = _connect_failures(gateway)
        await wait_for(lambda: len(_retries(gateway)) == before)
        gateway.clock.advance(_retries(gateway)[-1][2])
        await wait_for(lambda: _connect_failures(gateway) == before + 1)


async def test_fig2_gwa_unreachable_gateway_retries_until_gwa_listens(virtual_gateway, gwa):
    gateway = virtual_gateway
    await gwa.stop_listening_management()  # the GWA's MANAGEMENT endpoint is down
    gwa.send_wakeup(gateway.wakeup_address, gateway.id)
    await wait_for(lambda: len(_retries(gateway)) == 1)
    assert _connect_failures(gateway) == 1
    await _fail_attempts(gateway, 2)  # attempts 2 and 3 fail, each after its backoff
    await wait_for(lambda: len(_retries(gateway)) == 3)
    ch = gateway.config.channels
    attempts = 1 + ch.management_max_retries
    assert _retries(gateway) == [(1, attempts, ch.retry_initial_s), (2, attempts, 2 * ch.retry_initial_s),
                                 (3, attempts, 4 * ch.retry_initial_s)]
    # a wake-up while retrying starts no second connection or retry loop
    gwa.send_wakeup(gateway.wakeup_address, gateway.id)
    await wait_for(lambda: len(events(gateway, "wakeup-ignored")) == 1)
    await asyncio.sleep(0.1)
    assert _connect_failures(gateway) == 3 and len(_retries(gateway)) == 3
    # the GWA comes back: the next retry, on the gateway clock, opens the channel
    await gwa.listen_management()
    gateway.clock.advance(_retries(gateway)[-1][2] - 0.001)
    await asyncio.sleep(0.1)
    assert gwa.pending_channels() == 0 and gateway.management is None
    gateway.clock.advance(0.001)
    channel = await gwa.wait_channel()
    await wait_for(lambda: gateway.management is not None and gateway.management.authenticated())
    assert (await channel.request("GET", "/smgw/info")).status == 200
    assert gateway.channels_opened == 1 and _connect_failures(gateway) == 3 and len(_retries(gateway)) == 3
    assert not events(gateway, "management-connect-abandoned")


async def test_fig2_gwa_unreachable_retries_stop_at_the_bound(pki, gwa, tmp_path):
    clock = VirtualClock(_dt.datetime.now(_dt.timezone.utc))
    config = gateway_config(pki, gwa, tmp_path / "state", clock={"mode": "virtual"},
                            channels={"management_max_retries": 3, "retry_initial_s": 1.0, "retry_max_s": 3.0})
    gateway = await started(Gateway(config, clock=clock), gwa)
    try:
        await gwa.stop_listening_management()
        gwa.send_wakeup(gateway.wakeup_address, gateway.id)
        await wait_for(lambda: len(_retries(gateway)) == 1)
        await _fail_attempts(gateway, 3)
        await wait_for(lambda: events(gateway, "management-connect-abandoned"))
        assert _retries(gateway) == [(1, 4, 1.0), (2, 4, 2.0), (3, 4, 3.0)]  # doubling, capped at retry_max_s
        abandoned = events(gateway, "management-connect-abandoned")
        assert [(e.details["attempt"], e.details["attempts"]) for e in abandoned] == [("4", "4")]
        assert abandoned[0].level == 3 and abandoned[0].outcome == 1
        clock.advance(3600)  # nothing more happens: no timer left behind
        await asyncio.sleep(0.1)
        assert _connect_failures(gateway) == 4 and len(_retries(gateway)) == 3
        assert gateway._connecting.done() and not gateway.management_busy
        # the next wake-up starts over, and reaches the GWA that is back
        await gwa.listen_management()
        gwa.send_wakeup(gateway.wakeup_address, gateway.id, created_at=clock.now())  # on the gateway's time
        await gwa.wait_channel()
        await wait_for(lambda: gateway.management is not None and gateway.management.authenticated())
        assert _connect_failures(gateway) == 4
    finally:
        await gateway.stop()


async def test_fig2_gateway_stop_cancels_management_retries(pki, gwa, tmp_path):
    clock = VirtualClock(_dt.datetime.now(_dt.timezone.utc))
    config = gateway_config(pki, gwa, tmp_path / "state", clock={"mode": "virtual"})
    gateway = await started(Gateway(config, clock=clock), gwa)
    await gwa.stop_listening_management()
    gwa.send_wakeup(gateway.wakeup_address, gateway.id)
    await wait_for(lambda: len(_retries(gateway)) == 1)
    retrying = gateway._connecting
    await asyncio.wait_for(gateway.stop(), 10)
    assert retrying.cancelled()
    await gwa.listen_management()
    clock.advance(3600)
    await asyncio.sleep(0.1)
    assert gwa.pending_channels() == 0 and gateway.journal.counters["management-channel-failed"] == 1


async def test_fig3_gwa_closes_management_channel(gateway, gwa):
    channel = await open_channel(gateway, gwa)
    assert (await channel.request("GET", "/smgw/info", step="get-info")).status == 200
    await close_and_settle(gateway, channel)
    await wait_for(lambda: events(gateway, "management-channel-closed"))
    assert events(gateway, "management-channel-closed")[-1].details["reason"] == "closed-by-gwa"
    assert_transcript(3, gateway, gwa)


async def test_fig3_gateway_closes_idle_channel_on_its_clock(virtual_gateway, gwa):
    gateway = virtual_gateway
    channel = await open_channel(gateway, gwa)
    assert (await channel.request("GET", "/smgw/info")).status == 200
    gateway.clock.advance(gateway.config.channels.idle_timeout_s - 1)
    await asyncio.sleep(0.05)
    assert gateway.management.is_open
    gateway.clock.advance(1)
    await channel.wait_closed()
    await wait_for(lambda: events(gateway, "management-channel-closed"))
    assert events(gateway, "management-channel-closed")[-1].details["reason"] == "idle-timeout"


async def test_fig3_gateway_ends_session_after_48_hours(pki, gwa, tmp_path):
    clock = VirtualClock(_dt.datetime.now(_dt.timezone.utc))
    config = gateway_config(pki, gwa, tmp_path / "state", clock={"mode": "virtual"},
                            channels={"idle_timeout_s": 10 * 86400.0})
    gateway = await started(Gateway(config, clock=clock), gwa)
    try:
        channel = await open_channel(gateway, gwa)
        clock.advance(48 * 3600 - 1)
        await asyncio.sleep(0.05)
        assert gateway.management.is_open
        clock.advance(1)
        await channel.wait_closed()
        await wait_for(lambda: events(gateway, "management-channel-closed"))
        assert events(gateway, "management-channel-closed")[-1].details["reason"] == "session-lifetime"
    finally:
        await gateway.stop()


# -- 5.4 / 5.5 ADMIN-SERVICE ----------------------------------------------------------------------
FETCH = b'<fetch xmlns="urn:smgw-emu:gateway:1" name="probe.bin"/>'


async def _admin_service_fetch(gateway, gwa):
    import hashlib

    payload = bytes(range(256)) * 64
    gwa.downloads["probe.bin"] = payload
    channel = await open_channel(gateway, gwa)
    response = await channel.request("POST", "/smgw/admin-service/fetch", FETCH, step="post-admin-service-fetch")
    assert response.status == 200, response.text
    root = etree.fromstring(response.body)
    assert root.get("size") == str(len(payload))
    assert root.get("sha256") == hashlib.sha256(payload).hexdigest()
    await wait_for(lambda: events(gateway, "admin-service-channel-closed"))


async def test_fig4_admin_service_channel_fetches_from_gwa(gateway, gwa):
    await _admin_service_fetch(gateway, gwa)
    assert_transcript(4, gateway, gwa)


async def test_fig5_admin_service_channel_closed_after_fetch(gateway, gwa):
    await _admin_service_fetch(gateway, gwa)
    opened = events(gateway, "admin-service-channel-opened")
    closed = events(gateway, "admin-service-channel-closed")
    assert len(opened) == len(closed) == 1 and closed[0].record > opened[0].record
    assert_transcript(5, gateway, gwa)


async def test_admin_service_missing_resource_is_502_and_logged(gateway, gwa):
    channel = await open_channel(gateway, gwa)
    response = await channel.request("POST", "/smgw/admin-service/fetch", FETCH)
    assert response.status == 502
    assert etree.fromstring(response.body).get("code") == "admin-service-not-found"
    assert events(gateway, "admin-service-fetch-failed")


# -- 5.6 / 5.7 INFO-REPORT and 6.5.3 gateway started ----------------------------------------------
async def _fresh_gateway_reports_start(pki, gwa, tmp_path) -> Gateway:
    gateway = Gateway(gateway_config(pki, gwa, tmp_path / "state"))
    gwa.transcript.mark()
    await gateway.start()
    gateway.transcript_mark = 0
    await gwa.wait_event("gateway-started")
    await wait_for(lambda: gateway.info_report.idle.is_set() and events(gateway, "info-report-channel-closed"))
    return gateway


@pytest.mark.parametrize("figure", [6, 7])
async def test_fig6_fig7_start_event_over_info_report(pki, gwa, tmp_path, figure):
    gateway = await _fresh_gateway_reports_start(pki, gwa, tmp_path)
    try:
        (event,) = gwa.events("gateway-started")
        assert event.gateway == gateway.id and event.id is not None
        assert gateway.store.pending("info-report") == []
        assert_transcript(figure, gateway, gwa)
    finally:
        await gateway.stop()


async def test_info_report_retries_until_acknowledged_and_survives_restart(pki, gwa, tmp_path):
    gwa.report_status = 503
    config = gateway_config(pki, gwa, tmp_path / "state")
    gateway = Gateway(config)
    await gateway.start()
    await wait_for(lambda: len(events(gateway, "info-report-delivery-failed")) >= 2)
    assert gwa.events() == []
    await gateway.stop()  # the report was never acknowledged: it stays in the outbox
    restarted = Gateway(config)
    await restarted.start()
    try:
        pending = restarted.store.pending("info-report")
        assert [p.kind for p in pending] == ["gateway-started", "gateway-started"]
        gwa.report_status = 200
        await gwa.wait_event("gateway-started", count=2)
        await wait_for(lambda: restarted.store.pending("info-report") == [])
        assert sorted(e.id for e in gwa.events("gateway-started")) == [p.id for p in pending]
    finally:
        await restarted.stop()


# -- 5.8 / 5.9 AUTH -------------------------------------------------------------------------------
async def test_fig8_auth_established_with_channel(gateway, gwa):
    channel = await open_channel(gateway, gwa)
    auth = await channel.request("GET", "/smgw/auth", step="get-auth")
    assert auth.status == 200 and etree.fromstring(auth.body).get("state") == "established"
    assert (await channel.request("GET", "/smgw/info", step="get-info")).status == 200
    assert_transcript(8, gateway, gwa)


async def test_fig9_auth_ended_by_gwa_refuses_admin_requests(gateway, gwa):
    channel = await open_channel(gateway, gwa)
    before = gateway.store.objects(), gateway.store.key_banks()
    assert (await channel.request("DELETE", "/smgw/auth", step="delete-auth")).status == 200
    refused = await channel.request("GET", "/smgw/info", step="get-info-without-auth")
    assert refused.status == gateway.config.policy.auth_refused_status == 403
    assert etree.fromstring(refused.body).get("code") == "auth-required"
    assert (await channel.request("POST", "/smgw/auth", step="post-auth")).status == 200
    assert (await channel.request("GET", "/smgw/info", step="get-info")).status == 200
    assert (gateway.store.objects(), gateway.store.key_banks()) == before and before[1]
    assert_transcript(9, gateway, gwa)


async def test_fig9_auth_times_out_on_gateway_clock(pki, gwa, tmp_path):
    clock = VirtualClock(_dt.datetime.now(_dt.timezone.utc))
    config = gateway_config(pki, gwa, tmp_path / "state", clock={"mode": "virtual"},
                            channels={"idle_timeout_s": 100_000.0, "auth_timeout_s": 900.0})
    gateway = await started(Gateway(config, clock=clock), gwa)
    try:
        channel = await open_channel(gateway, gwa)
        assert (await channel.request("GET", "/smgw/info")).status == 200
        clock.advance(900)
        await wait_for(lambda: events(gateway, "auth-ended"))
        assert events(gateway, "auth-ended")[-1].details["reason"] == "auth-timeout"
        assert (await channel.request("GET", "/smgw/info")).status == 403
        assert events(gateway, "request-refused-no-auth")
    finally:
        await gateway.stop()


# -- 5.12 TLS, 5.16 HTTP responses ----------------------------------------------------------------
async def test_fig12_tls_profile_on_the_wire(gateway, gwa, pki):
    channel = await open_channel(gateway, gwa)
    assert channel.tls_version == "TLSv1.2"
    assert channel.cipher in WAN_CIPHERS
    assert channel.peer_certificate.public_bytes(serialization.Encoding.DER) == \
        pki.cert("gateway-tls").public_bytes(serialization.Encoding.DER)
    assert (await channel.request("GET", "/smgw/info", step="get-info")).status == 200
    await close_and_settle(gateway, channel)
    await wait_for(lambda: events(gateway, "management-channel-closed"))
    assert_transcript(12, gateway, gwa)


async def test_fig16_http_responses_with_status_and_error_body(gateway, gwa):
    channel = await open_channel(gateway, gwa)
    ok = await channel.request("GET", "/smgw/info", step="get-info")
    assert ok.status == 200 and ok.headers["Content-Type"].startswith("application/xml")
    unknown = await channel.request("GET", "/smgw/nothing-here", step="get-unknown")
    assert unknown.status == 404
    error = etree.fromstring(unknown.body)
    assert error.tag == ERR_NS + "error" and error.get("code") == "unknown-resource"
    wrong_method = await channel.request("PUT", "/smgw/info", b"<x/>", step="put-info")
    assert wrong_method.status == 405 and "GET" in wrong_method.headers["Allow"]
    too_big = await channel.request("POST", "/smgw/admin-service/fetch",
                                    b"<a>" + b"x" * gateway.config.policy.max_request_bytes + b"</a>", step="post-oversized")
    assert too_big.status == 413
    assert etree.fromstring(too_big.body).get("code") == "body-too-large"
    assert (await channel.request("GET", "/smgw/info", step="get-info-again")).status == 200
    assert_transcript(16, gateway, gwa)


async def test_channel_closed_by_gateway_stop_is_seen_by_gwa(pki, gwa, tmp_path):
    gateway = await started(Gateway(gateway_config(pki, gwa, tmp_path / "state")), gwa)
    channel = await open_channel(gateway, gwa)
    await gateway.stop()
    with pytest.raises(ChannelClosed):
        await channel.request("GET", "/smgw/info")
    assert gateway.management.close_reason == "gateway-stopping"
