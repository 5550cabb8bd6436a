"""6.8 CLS proxy: connection set-up in HKS 3 (fig. 74), HKS 4 (75), HKS 5 (76), disconnect by the
GWA (77), and the bad input around them.

Everything runs over real sockets and real TLS: the reference GWA (MANAGEMENT, INFO-REPORT), the
reference EMT (WAN TLS server, emt-tls) and the reference CLS device (HAN, cls-tls). The gateway
terminates TLS on both sides and relays the bytes (app/cls.py, net/cls_proxy.py, core/cls.py).
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import hashlib
import os
import ssl

import pytest

from smgw_emu.app.gateway import Gateway
from smgw_emu.core.clock import VirtualClock
from smgw_emu.pki import init_pki
from smgw_emu.reference.cls_device import ReferenceClsDevice, SocksRefused, socks_connect_request
from smgw_emu.reference.cosem_client import (
    attribute_document,
    cls_proxy_profile_values,
    profile_document,
    profile_object_path,
    profile_path,
)
from smgw_emu.reference.emt import ReferenceEmt
from smgw_emu.reference.stream_session import ORDERLY, StreamSession

from .conftest import assert_transcript, gateway_config, mark, started, wait_for
from .cosem_flow import create, emt_profile, error_of, open_channel, provision, settled, system_events

CLS = "CLS-PROXY-1"
CONNECT, DISCONNECT = 2, 1


@pytest.fixture
async def emt(pki):
    async with ReferenceEmt(pki) as reference:
        yield reference


@pytest.fixture
async def cls_device(pki):
    async with ReferenceClsDevice(pki) as reference:
        yield reference


@pytest.fixture
async def clock_gateway(pki, gwa, tmp_path):
    """Factory: a gateway on a virtual clock with its own [cls] settings; stopped at teardown."""
    gateways: list[Gateway] = []

    async def make(**cls) -> Gateway:
        clock = VirtualClock(_dt.datetime.now(_dt.timezone.utc))
        config = gateway_config(pki, gwa, tmp_path / f"state-{len(gateways)}", clock={"mode": "virtual"}, cls=cls)
        gateway = Gateway(config, clock=clock)
        gateways.append(gateway)
        return await started(gateway, gwa)

    yield make
    for gateway in gateways:
        await gateway.stop()


def the_emt(pki, emt: ReferenceEmt):
    """The EMT's communication profile, pointing at the reference EMT."""
    return emt_profile(pki, host="127.0.0.1", port=emt.port)


def proxy_profile(pki, hks: int, cls_device: ReferenceClsDevice | None = None, profile_id: str = CLS, **changes):
    address = cls_device.address if cls_device is not None else ""
    return create("clsprofile", profile_id, cls_proxy_profile_values(pki, profile_id, hks=hks, cls_address=address, **changes))


def method_path(index: int, profile_id: str = CLS) -> str:
    return f"{profile_object_path('clsprofile', profile_id)}/methods/{index}"


def mark_all(gateway, gwa, *participants) -> None:
    mark(gateway, gwa)
    for participant in participants:
        participant.transcript.mark()


def refusals(gateway, since: int = 0) -> list:
    return [e for e in system_events(gateway, since) if e.event == "cls-connection-refused"]


def last_record(gateway) -> int:
    return system_events(gateway)[-1].record


def assert_gateway_closed_orderly(*sessions: StreamSession) -> None:
    """The gateway ended each of these legs, with TLS close_notify (not a dropped TCP connection)."""
    for session in sessions:
        assert session.ended_by_peer and session.ending == ORDERLY, (
            f"{session.me} leg: ended {session.ending} ({session.ending_detail}), by the gateway: {session.ended_by_peer}")


def assert_gateway_answered_close_notify(session: StreamSession) -> None:
    """This side closed the leg; the gateway answered with its close_notify."""
    assert not session.ended_by_peer and session.ending == ORDERLY, (
        f"{session.me} leg: ended {session.ending} ({session.ending_detail})")


async def ends_orderly(gateway, gwa, closing: StreamSession, other: StreamSession, reason: str) -> None:
    """``closing`` ends its leg (close_notify): the gateway answers it and ends ``other`` with
    close_notify too, then reports the close."""
    await closing.close()
    assert await other.wait_closed() == b""
    assert_gateway_answered_close_notify(closing)
    assert_gateway_closed_orderly(other)
    [event] = await gwa.wait_event("cls-connection-closed")
    assert event.details["reason"] == reason


# -- the four figures ----------------------------------------------------------------------------


async def test_fig74_hks3_cls_device_reaches_its_emt(gateway, gwa, pki, emt, cls_device):
    await provision(gateway, gwa, the_emt(pki, emt), proxy_profile(pki, 3))
    mark_all(gateway, gwa, emt, cls_device)
    at_cls = await cls_device.connect(gateway.cls.han_address, pki.identities.emt)
    at_emt = await emt.wait_session()
    assert at_emt.peer_id == gateway.id and at_cls.peer_id == gateway.id  # the gateway terminates TLS on both sides
    await at_cls.send(b"STATUS charging power=3.7kW\n", step="cls-data")
    assert await at_emt.receive_line(step="cls-data-forwarded") == b"STATUS charging power=3.7kW"
    await at_emt.send(b"SET max_power=4200\n", step="emt-data")
    assert await at_cls.receive_line(step="emt-data-forwarded") == b"SET max_power=4200"
    [event] = await gwa.wait_event("cls-connection-opened")
    assert (event.details["profile"], event.details["cls-device"], event.details["emt"], event.details["hks"],
            event.details["initiator"]) == (CLS, pki.identities.cls, pki.identities.emt, "3", "cls")
    await settled(gateway)
    assert_transcript(74, gateway, gwa, others=[emt.transcript, cls_device.transcript])
    await ends_orderly(gateway, gwa, at_cls, at_emt, "closed-by-cls")


async def test_fig75_hks4_gwa_triggers_the_channel(gateway, gwa, pki, emt, cls_device):
    await provision(gateway, gwa, the_emt(pki, emt), proxy_profile(pki, 4, cls_device))
    mark_all(gateway, gwa, emt, cls_device)
    channel = await open_channel(gateway, gwa)
    response = await channel.request("POST", method_path(CONNECT), step="post-cls-connect")
    assert response.status == 200, response.text
    assert b"<visible-string>CLS-PROXY-1/" in response.body  # the connection id
    at_emt, at_cls = await emt.wait_session(), await cls_device.wait_session()
    await at_emt.send(b"SET max_power=4200\n", step="emt-data")
    assert await cls_device.answer_command(at_cls) == b"OK max_power=4200"
    assert await at_emt.receive_line(step="cls-data-forwarded") == b"OK max_power=4200"
    assert cls_device.state == {"max_power": "4200"}
    [event] = await gwa.wait_event("cls-connection-opened")
    assert (event.details["hks"], event.details["initiator"]) == ("4", "emt")
    await settled(gateway)
    assert_transcript(75, gateway, gwa, others=[emt.transcript, cls_device.transcript])
    await ends_orderly(gateway, gwa, at_emt, at_cls, "closed-by-emt")


async def test_fig76_hks5_standing_channel_opened_by_the_gateway(clock_gateway, gwa, pki, emt, cls_device):
    gateway = await clock_gateway(hks5_interval_s=30)
    await provision(gateway, gwa, the_emt(pki, emt), proxy_profile(pki, 5, cls_device))
    mark_all(gateway, gwa, emt, cls_device)
    gateway.clock.advance(29)
    await asyncio.sleep(0.05)
    assert emt.pending_sessions() == 0  # nothing before the check is due
    gateway.clock.advance(1)  # the check on the gateway's clock: the trigger
    at_emt, at_cls = await emt.wait_session(), await cls_device.wait_session()
    await at_emt.send(b"GET max_power\n", step="emt-data")
    assert await cls_device.answer_command(at_cls) == b"VALUE max_power="
    assert await at_emt.receive_line(step="cls-data-forwarded") == b"VALUE max_power="
    [event] = await gwa.wait_event("cls-connection-opened")
    assert (event.details["hks"], event.details["initiator"]) == ("5", "gateway")
    await settled(gateway)
    assert_transcript(76, gateway, gwa, others=[emt.transcript, cls_device.transcript])
    await ends_orderly(gateway, gwa, at_cls, at_emt, "closed-by-cls")


async def test_fig77_gwa_disconnects_a_running_connection(gateway, gwa, pki, emt, cls_device):
    await provision(gateway, gwa, the_emt(pki, emt), proxy_profile(pki, 3))
    at_cls = await cls_device.connect(gateway.cls.han_address, pki.identities.emt)
    at_emt = await emt.wait_session()
    await at_cls.send(b"PING\n")
    assert await at_emt.receive_line() == b"PING"
    await gwa.wait_event("cls-connection-opened")
    await settled(gateway)
    mark_all(gateway, gwa, emt, cls_device)
    channel = await open_channel(gateway, gwa)
    response = await channel.request("POST", method_path(DISCONNECT), step="post-cls-disconnect")
    assert response.status == 200, response.text
    assert await at_emt.wait_closed(step="emt-tls-close") == b""
    assert await at_cls.wait_closed(step="han-tls-close") == b""
    assert_gateway_closed_orderly(at_emt, at_cls)  # close_notify on both legs, not a dropped connection
    [event] = await gwa.wait_event("cls-connection-closed")
    assert (event.details["reason"], event.details["bytes-to-emt"], event.details["bytes-to-cls"]) == (
        "disconnected-by-gwa", "5", "0")
    await settled(gateway)
    assert gateway.cls.relays == {}
    assert_transcript(77, gateway, gwa, others=[emt.transcript, cls_device.transcript])
    # nothing open any more: a second disconnect is a state conflict, logged, no event
    response = await channel.request("POST", method_path(DISCONNECT))
    error = error_of(response.body)
    assert (response.status, error.code, error.field) == (409, "state-conflict", "profile_id")
    assert [e for e in system_events(gateway) if e.event == "request-failed"][-1].details["code"] == "state-conflict"


# -- the relay --------------------------------------------------------------------------------------


async def test_relay_keeps_the_bytes_intact_both_ways(gateway, gwa, pki, emt, cls_device):
    await provision(gateway, gwa, the_emt(pki, emt), proxy_profile(pki, 3, max_bandwidth_kbps=1_000_000))
    at_cls = await cls_device.connect(gateway.cls.han_address, pki.identities.emt)
    at_emt = await emt.wait_session()
    up, down = os.urandom(300_000), os.urandom(400_000)

    async def send_and_receive(sender, data, receiver, size):
        _, received = await asyncio.gather(sender.send(data), receiver.receive_exactly(size))
        return received

    got_up, got_down = await asyncio.gather(send_and_receive(at_cls, up, at_emt, len(up)),
                                            send_and_receive(at_emt, down, at_cls, len(down)))
    assert hashlib.sha256(got_up).hexdigest() == hashlib.sha256(up).hexdigest()
    assert hashlib.sha256(got_down).hexdigest() == hashlib.sha256(down).hexdigest()
    await at_emt.close()
    assert await at_cls.wait_closed() == b""
    assert_gateway_answered_close_notify(at_emt)
    assert_gateway_closed_orderly(at_cls)
    [event] = await gwa.wait_event("cls-connection-closed")
    assert (event.details["reason"], event.details["bytes-to-emt"], event.details["bytes-to-cls"]) == (
        "closed-by-emt", str(len(up)), str(len(down)))


async def test_session_limit_closes_both_legs_on_the_gateway_clock(clock_gateway, gwa, pki, emt, cls_device):
    gateway = await clock_gateway()
    await provision(gateway, gwa, the_emt(pki, emt), proxy_profile(pki, 3, max_session_s=120))
    at_cls = await cls_device.connect(gateway.cls.han_address, pki.identities.emt)
    at_emt = await emt.wait_session()
    gateway.clock.advance(119.5)
    await at_cls.send(b"PING\n")
    assert await at_emt.receive_line() == b"PING"  # still relaying just before the limit
    gateway.clock.advance(0.5)
    assert await at_emt.wait_closed() == b""
    assert await at_cls.wait_closed() == b""
    assert_gateway_closed_orderly(at_emt, at_cls)
    [event] = await gwa.wait_event("cls-connection-closed")
    assert (event.details["reason"], event.details["duration-s"]) == ("session-limit", "120.000")
    [entry] = [e for e in system_events(gateway) if e.event == "cls-connection-closed"]
    assert entry.level == 2  # a limit reached is a warning


async def test_bandwidth_limit_holds_bytes_back_on_the_gateway_clock(clock_gateway, gwa, pki, emt, cls_device):
    gateway = await clock_gateway(bandwidth_policy="shape")
    await provision(gateway, gwa, the_emt(pki, emt), proxy_profile(pki, 3, max_bandwidth_kbps=8))  # 1000 bytes/s
    at_cls = await cls_device.connect(gateway.cls.han_address, pki.identities.emt)
    at_emt = await emt.wait_session()
    data = os.urandom(4000)
    await at_cls.send(data)
    received = await at_emt.receive_exactly(1000)  # one second's worth passes at once
    assert await at_emt.receive_some(0.3) == b""    # the rest waits for the gateway's clock
    for _ in range(3):
        gateway.clock.advance(1)
        received += await at_emt.receive_exactly(1000)
    assert received == data
    [limited] = [e for e in system_events(gateway) if e.event == "cls-bandwidth-limited"]  # logged once
    assert (limited.details["direction"], limited.details["policy"]) == ("to-emt", "shape")
    assert gateway.cls.relays[CLS].connection.is_open


async def test_bandwidth_limit_ends_the_connection_under_policy_close(clock_gateway, gwa, pki, emt, cls_device):
    gateway = await clock_gateway(bandwidth_policy="close")
    await provision(gateway, gwa, the_emt(pki, emt), proxy_profile(pki, 3, max_bandwidth_kbps=8))
    at_cls = await cls_device.connect(gateway.cls.han_address, pki.identities.emt)
    at_emt = await emt.wait_session()
    await at_cls.send(os.urandom(4000))
    assert len(await at_emt.wait_closed()) <= 1000  # at most the budget passed
    await at_cls.wait_closed()
    assert_gateway_closed_orderly(at_emt, at_cls)
    [event] = await gwa.wait_event("cls-connection-closed")
    assert event.details["reason"] == "bandwidth-limit"
    [limited] = [e for e in system_events(gateway) if e.event == "cls-bandwidth-limited"]
    assert limited.details["policy"] == "close"


async def test_standing_channel_reopens_and_stays_down_after_a_gwa_disconnect(clock_gateway, gwa, pki, emt, cls_device):
    gateway = await clock_gateway(hks5_interval_s=10)
    await provision(gateway, gwa, the_emt(pki, emt), proxy_profile(pki, 5, cls_device))
    channel = await open_channel(gateway, gwa)
    gateway.clock.advance(10)
    first_emt, first_cls = await emt.wait_session(), await cls_device.wait_session()
    await first_emt.close()  # the EMT ends it: the next check opens it again
    await first_cls.wait_closed()
    await wait_for(lambda: CLS not in gateway.cls.relays)
    gateway.clock.advance(10)
    await emt.wait_session(), await cls_device.wait_session()
    response = await channel.request("POST", method_path(DISCONNECT))
    assert response.status == 200, response.text
    gateway.clock.advance(10)
    await asyncio.sleep(0.2)
    assert emt.pending_sessions() == 0  # disconnected by the GWA: stays down ...
    response = await channel.request("PUT", profile_object_path("clsprofile", CLS) + "/attributes/7",
                                     attribute_document(28500, "max_session_s", 600))
    assert response.status == 200, response.text
    gateway.clock.advance(10)
    await emt.wait_session()  # ... until the profile changes
    reasons = [e.details["reason"] for e in gwa.events("cls-connection-closed")]
    await wait_for(lambda: len(gwa.events("cls-connection-opened")) == 3)
    assert reasons == ["closed-by-emt", "disconnected-by-gwa"]


async def test_a_profile_change_ends_its_connection(gateway, gwa, pki, emt, cls_device):
    await provision(gateway, gwa, the_emt(pki, emt), proxy_profile(pki, 3))
    at_cls = await cls_device.connect(gateway.cls.han_address, pki.identities.emt)
    at_emt = await emt.wait_session()
    channel = await open_channel(gateway, gwa)
    body = profile_document("clsprofile", {"max_bandwidth_kbps": 32})
    assert (await channel.request("PUT", profile_object_path("clsprofile", CLS), body)).status == 200
    await at_emt.wait_closed()
    await at_cls.wait_closed()
    assert_gateway_closed_orderly(at_emt, at_cls)
    [event] = await gwa.wait_event("cls-connection-closed")
    assert event.details["reason"] == "profile-changed"


# -- bad input ---------------------------------------------------------------------------------------


async def test_cls_device_with_a_wrong_certificate_is_refused(gateway, gwa, pki, emt, tmp_path):
    await provision(gateway, gwa, the_emt(pki, emt), proxy_profile(pki, 3))
    before, since = gateway.store.objects(), last_record(gateway)
    # a certificate of another PKI: the HAN handshake fails
    rogue = init_pki(tmp_path / "rogue")
    impostor = ReferenceClsDevice(pki, chain=rogue.chain_path("cls-tls"), key=rogue.key_path("cls-tls"))
    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError, SocksRefused)):
        await impostor.connect(gateway.cls.han_address, pki.identities.emt)
    # a certificate of the SM-PKI, but a meter's, not a CLS device's of any profile
    meter = ReferenceClsDevice(pki, entity="meter")
    with pytest.raises(SocksRefused) as refused:
        await meter.connect(gateway.cls.han_address, pki.identities.emt)
    assert refused.value.code is None  # closed before any SOCKS reply
    await wait_for(lambda: len(refusals(gateway, since)) == 2)
    assert [e.details["reason"] for e in refusals(gateway, since)] == ["tls-handshake-failed", "unknown-device"]
    assert refusals(gateway, since)[1].details["device"] == pki.identities.meter
    assert emt.pending_sessions() == 0 and gateway.cls.relays == {}
    assert gateway.store.objects() == before


async def test_hks4_cls_device_with_a_wrong_certificate_is_refused(gateway, gwa, pki, emt):
    async with ReferenceClsDevice(pki, entity="meter") as impostor:  # listens at the profile's address
        await provision(gateway, gwa, the_emt(pki, emt), proxy_profile(pki, 4, impostor))
        before = gateway.store.objects()
        channel = await open_channel(gateway, gwa)
        response = await channel.request("POST", method_path(CONNECT))
        error = error_of(response.body)
        assert (response.status, error.code, error.field) == (502, "cls-device-peer-rejected", "cls_address")
        assert pki.identities.meter in error.message
        at_emt = await emt.wait_session()
        assert await at_emt.wait_closed() == b""  # the EMT leg was opened first, and closed again
        [event] = await gwa.wait_event("cls-connection-failed")
        assert (event.details["side"], event.details["error"]) == ("device", "peer-rejected")
        assert gateway.cls.relays == {} and gateway.store.objects() == before


async def test_emt_not_named_in_the_profile_is_refused(gateway, gwa, pki, emt, cls_device):
    await provision(gateway, gwa, the_emt(pki, emt), proxy_profile(pki, 3))
    since, before = last_record(gateway), gateway.store.objects()
    for target, port in (("EMT-SOMEONE-ELSE", 0), ("127.0.0.1", emt.port + 1)):
        with pytest.raises(SocksRefused) as refused:
            await cls_device.connect(gateway.cls.han_address, target, port)
        assert refused.value.code == 0x02  # not allowed by ruleset
    assert [e.details["reason"] for e in refusals(gateway, since)] == ["emt-not-allowed"] * 2
    assert emt.pending_sessions() == 0 and gateway.store.objects() == before  # nobody dialled, nothing changed
    # by the host and port of its communication profile, the EMT is the one of the profile
    session = await cls_device.connect(gateway.cls.han_address, "127.0.0.1", emt.port)
    await session.close()


async def test_emt_with_another_certificate_is_refused(gateway, gwa, pki, cls_device):
    async with ReferenceEmt(pki, entity="gwa") as wrong_emt:  # a valid SM-PKI certificate, not the EMT's
        await provision(gateway, gwa, the_emt(pki, wrong_emt), proxy_profile(pki, 3))
        with pytest.raises(SocksRefused) as refused:
            await cls_device.connect(gateway.cls.han_address, pki.identities.emt)
        assert refused.value.code == 0x01
        [event] = await gwa.wait_event("cls-connection-failed")
        assert (event.details["side"], event.details["error"]) == ("emt", "peer-rejected")
        assert gateway.cls.relays == {}


async def test_no_cls_proxy_profile_no_connection(gateway, gwa, pki, emt, cls_device):
    await provision(gateway, gwa, the_emt(pki, emt))
    since = last_record(gateway)
    with pytest.raises(SocksRefused):  # no profile at all
        await cls_device.connect(gateway.cls.han_address, pki.identities.emt)
    await provision(gateway, gwa, proxy_profile(pki, 4, cls_device),
                    proxy_profile(pki, 3, profile_id="CLS-HKS3", cls_device_id="OTHER-CLS-DEVICE"))
    with pytest.raises(SocksRefused) as refused:  # a profile, but for HKS 4: the device may not initiate
        await cls_device.connect(gateway.cls.han_address, pki.identities.emt)
    assert refused.value.code == 0x02
    assert [e.details["reason"] for e in refusals(gateway, since)] == ["unknown-device", "wrong-hks"]
    before = gateway.store.objects()
    channel = await open_channel(gateway, gwa)
    cases = [
        (method_path(CONNECT, "NO-SUCH-PROFILE"), 404, "unknown-ldev", None),
        (method_path(DISCONNECT), 409, "state-conflict", "profile_id"),  # nothing open
    ]
    for path, status, code, field in cases:
        response = await channel.request("POST", path)
        error = error_of(response.body)
        assert (response.status, error.code) == (status, code), response.text
        if field:
            assert error.field == field
    response = await channel.request("POST", method_path(CONNECT, "CLS-HKS3"))  # connect is HKS 4's trigger
    assert (response.status, error_of(response.body).code, error_of(response.body).field) == (409, "state-conflict", "hks")
    response = await channel.request("POST", method_path(CONNECT), b"<unsigned>1</unsigned>")  # argument: null-data
    assert (response.status, error_of(response.body).code) == (400, "type-mismatch")
    assert emt.pending_sessions() == 0
    assert gateway.store.objects() == before


async def test_hks4_unreachable_sides_answer_502(gateway, gwa, pki, emt, cls_device):
    free = emt.port
    await emt.stop()  # nobody listens at the EMT's address any more
    await provision(gateway, gwa, emt_profile(pki, host="127.0.0.1", port=free), proxy_profile(pki, 4, cls_device))
    channel = await open_channel(gateway, gwa)
    response = await channel.request("POST", method_path(CONNECT))
    error = error_of(response.body)
    assert (response.status, error.code, error.field) == (502, "cls-emt-connect-failed", "emt_id")
    assert cls_device.transcript.entries == []  # the CLS device is only dialled once the EMT leg is up
    [event] = await gwa.wait_event("cls-connection-failed")
    assert (event.details["side"], event.details["error"]) == ("emt", "connect-failed")
    assert [e for e in system_events(gateway) if e.event == "request-failed"][-1].details["status"] == "502"


async def test_malformed_socks_requests_are_refused(gateway, gwa, pki, emt, cls_device):
    await provision(gateway, gwa, the_emt(pki, emt), proxy_profile(pki, 3))
    since, before = last_record(gateway), gateway.store.objects()
    bind = b"\x05\x02\x00\x03" + bytes([len(pki.identities.emt)]) + pki.identities.emt.encode() + b"\x00\x00"
    cases = [
        ({"greeting": b"\x05\x01\x02"}, 0xFF),                                   # only user/password offered
        ({"request": bind}, 0x07),                                              # BIND: not supported
        ({"request": b"\x05\x01\x00\x02\x00\x00\x00\x00\x00\x00"}, 0x08),        # address type 2 does not exist
        ({"request": socks_connect_request("x y")}, 0x01),                        # not a printable host name
    ]
    for kwargs, code in cases:
        with pytest.raises(SocksRefused) as refused:
            await cls_device.connect(gateway.cls.han_address, pki.identities.emt, **kwargs)
        assert refused.value.code == code, kwargs
    assert [e.details["reason"] for e in refusals(gateway, since)] == ["socks-error"] * len(cases)
    assert emt.pending_sessions() == 0 and gateway.store.objects() == before


async def test_cls_proxy_profile_address_validation(gateway, gwa, pki, emt):
    await provision(gateway, gwa, the_emt(pki, emt))
    channel = await open_channel(gateway, gwa)
    before = gateway.store.objects()
    for hks, address in ((4, ""), (5, ""), (4, "cls.example"), (3, "no port:"), (4, "cls.example:99999")):
        body = profile_document("clsprofile", cls_proxy_profile_values(pki, CLS, hks=hks, cls_address=address))
        response = await channel.request("POST", profile_path("clsprofile", CLS), body)
        error = error_of(response.body)
        assert (response.status, error.code, error.field) == (422, "invalid-value", "cls_address"), (hks, address)
    assert gateway.store.objects() == before


async def test_held_back_bytes_push_back_on_the_sender(clock_gateway, gwa, pki, emt, cls_device):
    """Under "shape" the gateway does not buffer what it holds back: it stops reading from the
    device (TCP flow control slows the device), so what the gateway holds stays bounded."""
    gateway = await clock_gateway(bandwidth_policy="shape")
    await provision(gateway, gwa, the_emt(pki, emt), proxy_profile(pki, 3, max_bandwidth_kbps=8))
    at_cls = await cls_device.connect(gateway.cls.han_address, pki.identities.emt)
    at_emt = await emt.wait_session()
    sending = asyncio.create_task(at_cls.send(os.urandom(16 * 1024 * 1024)))
    await asyncio.sleep(0.5)
    source = gateway.cls.relays[CLS].legs["to-emt"][0]
    assert len(source.reader._buffer) <= 256 * 1024  # not the 16 MiB the device sent
    assert len(await at_emt.receive_exactly(1000)) == 1000 and await at_emt.receive_some(0.1) == b""
    sending.cancel()
    at_cls.abort()  # the device gives up; the EMT ends the connection
    await at_emt.close()
    [event] = await gwa.wait_event("cls-connection-closed")
    assert event.details["reason"] == "closed-by-emt"
