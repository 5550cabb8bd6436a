"""The wake-up listener on real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import socket

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from smgw_emu.core.wakeup import (
    DEFAULT_CODEC,
    ECDSA_WITH_SHA256,
    WakeUpData,
    WakeUpVerifier,
    build_wakeup,
    key_id_of,
)
from smgw_emu.net.wakeup_listener import RateLimits, WakeUpListener
from smgw_emu.pki import generate_key

WAIT = 5.0  # generous upper bound for one packet; tests finish long before it


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Recorder:
    """The caller's callbacks: collect what the listener reports."""

    def __init__(self):
        self.accepted: asyncio.Queue = asyncio.Queue()
        self.rejected: asyncio.Queue = asyncio.Queue()

    def on_accept(self, decision, addr):
        self.accepted.put_nowait((decision, addr))

    def on_reject(self, reason, addr, details):
        self.rejected.put_nowait((reason, addr, details))


@pytest.fixture(scope="module")
def gwa(pki):
    return pki.key("gwa-sig"), pki.cert("gwa-sig")


@pytest.fixture(scope="module")
def forger_key():
    return generate_key()


@pytest.fixture
def make(gwa, pki):
    def make(**overrides) -> bytes:
        args = dict(recipient_id=pki.identities.gateway, signer_key=gwa[0], signer_cert=gwa[1], created_at=utc_now())
        return build_wakeup(**(args | overrides))

    return make


@pytest.fixture
def recorder():
    return Recorder()


@pytest.fixture
async def listener(pki, gwa, recorder):
    verifier = WakeUpVerifier(pki.identities.gateway, [gwa[1]])
    async with WakeUpListener(
        verifier, on_accept=recorder.on_accept, on_reject=recorder.on_reject, host="127.0.0.1", port=0,
        tcp_port=0, rate_limits=RateLimits(per_source_rate=2, per_source_burst=10),
    ) as listener:
        yield listener


@pytest.fixture
def udp_socket():
    """A sender socket; it also tells whether anything ever comes back."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    yield sock
    sock.close()


def assert_nothing_came_back(sock: socket.socket) -> None:
    with pytest.raises(BlockingIOError):
        sock.recvfrom(65535)


async def processed(listener: WakeUpListener, count: int) -> None:
    """Wait until the listener has decided on `count` packets in all."""
    async with asyncio.timeout(WAIT):
        while sum(listener.counters.values()) < count:
            await asyncio.sleep(0.001)


async def test_address_is_bound(listener):
    host, port = listener.address
    assert host == "127.0.0.1" and port > 0
    assert listener.tcp_address[1] > 0


async def test_valid_packet_triggers_on_accept(listener, recorder, udp_socket, make, gwa, pki):
    udp_socket.sendto(make(nonce=b"\x01" * 16), listener.address)
    decision, addr = await asyncio.wait_for(recorder.accepted.get(), WAIT)
    assert decision.accepted
    assert decision.content.recipient_id == pki.identities.gateway
    assert decision.content.sender_key_id == key_id_of(gwa[1])
    assert decision.content.nonce == b"\x01" * 16
    assert addr == udp_socket.getsockname()
    assert listener.counters == {"accepted": 1}
    await asyncio.sleep(0.2)
    assert_nothing_came_back(udp_socket)


async def test_each_bad_packet_triggers_on_reject_and_nothing_is_sent_back(
    listener, recorder, udp_socket, make, forger_key, caplog
):
    caplog.set_level(logging.INFO, logger="smgw_emu.wakeup")
    replayed = make(nonce=b"\x02" * 16)
    bad = {
        "empty": b"",
        "too-large": b"\x30" * 1025,
        "malformed": b"garbage",
        "bad-version": make(version=7),
        "wrong-recipient": make(recipient_id="EXXX0099999999"),
        "bad-signature": make(signer_key=forger_key),
        "stale": make(created_at=utc_now() - dt.timedelta(seconds=120)),
        "future": make(created_at=utc_now() + dt.timedelta(seconds=120)),
    }
    udp_socket.sendto(replayed, listener.address)
    await asyncio.wait_for(recorder.accepted.get(), WAIT)
    for expected, packet in bad.items():
        udp_socket.sendto(packet, listener.address)
        reason, addr, details = await asyncio.wait_for(recorder.rejected.get(), WAIT)
        assert reason == expected
        assert addr == udp_socket.getsockname()
        assert details["size"] == len(packet)
    udp_socket.sendto(replayed, listener.address)
    reason, _, details = await asyncio.wait_for(recorder.rejected.get(), WAIT)
    assert reason == "replayed-nonce"
    assert details["nonce"] == (b"\x02" * 16).hex()

    assert listener.counters == {"accepted": 1, "replayed-nonce": 1} | {reason: 1 for reason in bad}
    rejections = [r for r in caplog.records if r.name == "smgw_emu.wakeup" and "rejected" in r.getMessage()]
    assert len(rejections) == len(bad) + 1
    assert "reason=wrong-recipient" in rejections[4].getMessage()
    await asyncio.sleep(0.2)
    assert_nothing_came_back(udp_socket)


async def test_flood_from_one_source_does_not_starve_another(listener, recorder, make, forger_key, gwa, pki):
    """2,000 forged packets from one socket; a valid packet from another is still accepted."""
    signed = DEFAULT_CODEC.encode_content(
        WakeUpData(1, pki.identities.gateway, key_id_of(gwa[1]), utc_now().replace(microsecond=0), bytes(16))
    )
    forged_signature = forger_key.sign(signed, ec.ECDSA(hashes.SHA256()))
    now = utc_now().replace(microsecond=0)
    flood = [
        DEFAULT_CODEC.encode_packet(
            DEFAULT_CODEC.encode_content(
                WakeUpData(1, pki.identities.gateway, key_id_of(gwa[1]), now, i.to_bytes(16, "big"))
            ),
            ECDSA_WITH_SHA256, forged_signature,
        )
        for i in range(2000)
    ]
    valid = make(nonce=b"\x03" * 16)
    flooder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    honest = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    flooder.bind(("127.0.0.1", 0))
    honest.bind(("127.0.0.1", 0))
    try:
        sent = 0
        for batch_start in range(0, len(flood), 100):
            # batches small enough for the socket buffer, so the kernel drops nothing
            for packet in flood[batch_start:batch_start + 100]:
                flooder.sendto(packet, listener.address)
            sent += 100
            if batch_start == 1000:  # in the middle of the flood
                honest.sendto(valid, listener.address)
                sent += 1
            await processed(listener, sent)
        decision, addr = await asyncio.wait_for(recorder.accepted.get(), WAIT)
        assert decision.content.nonce == b"\x03" * 16
        assert addr == honest.getsockname()

        # the flooder's own budget is gone: even a genuine packet from its socket waits
        flooder.sendto(make(), listener.address)
        await processed(listener, sent + 1)
    finally:
        flooder.close()
        honest.close()
    counters = listener.counters
    assert counters["accepted"] == 1
    assert counters["bad-signature"] + counters["rate-limited"] == 2001
    assert counters["rate-limited"] >= 1900
    assert recorder.accepted.empty()


async def test_async_callback_is_run(pki, gwa, make, udp_socket):
    opened = asyncio.Event()

    async def open_management_channel(decision, addr):
        await asyncio.sleep(0)
        opened.set()

    verifier = WakeUpVerifier(pki.identities.gateway, [gwa[1]])
    async with WakeUpListener(verifier, on_accept=open_management_channel, on_reject=lambda *a: None) as listener:
        udp_socket.sendto(make(), listener.address)
        await asyncio.wait_for(opened.wait(), WAIT)


async def test_failing_callback_does_not_stop_the_listener(pki, gwa, make, udp_socket):
    def broken(*args):
        raise RuntimeError("boom")

    verifier = WakeUpVerifier(pki.identities.gateway, [gwa[1]])
    async with WakeUpListener(verifier, on_accept=broken, on_reject=broken) as listener:
        udp_socket.sendto(b"junk", listener.address)
        udp_socket.sendto(make(), listener.address)
        await processed(listener, 2)
        assert listener.counters == {"malformed": 1, "accepted": 1}


# --- TCP: one packet per connection ---


async def send_tcp(address, data: bytes) -> bytes:
    """Send one packet, half-close, and return whatever the gateway sends back."""
    reader, writer = await asyncio.open_connection(*address)
    writer.write(data)
    await writer.drain()
    writer.write_eof()
    reply = await asyncio.wait_for(reader.read(), WAIT)
    writer.close()
    await writer.wait_closed()
    return reply


async def test_tcp_valid_packet_is_accepted_and_nothing_is_written(listener, recorder, make):
    assert await send_tcp(listener.tcp_address, make()) == b""
    decision, _ = await asyncio.wait_for(recorder.accepted.get(), WAIT)
    assert decision.accepted


@pytest.mark.parametrize("data, expected", [(b"junk", "malformed"), (b"\x30" * 5000, "too-large"), (b"", "empty")])
async def test_tcp_bad_packets_are_rejected(listener, recorder, data, expected):
    assert await send_tcp(listener.tcp_address, data) == b""
    reason, _, _ = await asyncio.wait_for(recorder.rejected.get(), WAIT)
    assert reason == expected
