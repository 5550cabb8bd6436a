"""The reference EMT and CLS device see how the gateway side ended a TLS connection: an orderly
close_notify, or a TCP connection dropped without one (the e2e tests of figs. 74-77 rely on it).
The other side is plain asyncio TLS with the gateway's identity, over loopback."""

from __future__ import annotations

import asyncio

import pytest

from smgw_emu.net.tls import PROFILES, client_context, server_context
from smgw_emu.reference.cls_device import ReferenceClsDevice
from smgw_emu.reference.emt import ReferenceEmt
from smgw_emu.reference.stream_session import ABORT, ORDERLY

HOST = "127.0.0.1"


def gateway_identity(pki):
    return {"chain": pki.chain_path("gateway-tls"), "key": pki.key_path("gateway-tls"), "cafile": pki.root_ca}


async def dial_emt(pki, emt: ReferenceEmt):
    reader, writer = await asyncio.open_connection(HOST, emt.port, ssl=client_context(PROFILES["wan"], **gateway_identity(pki)))
    return reader, writer, await emt.wait_session()


@pytest.mark.parametrize("orderly", [True, False], ids=["close_notify", "abort"])
async def test_emt_tells_close_notify_from_a_dropped_connection(pki, orderly):
    async with ReferenceEmt(pki) as emt:
        _, writer, session = await dial_emt(pki, emt)
        writer.write(b"last words\n")
        await writer.drain()
        assert await session.receive_line() == b"last words"
        if orderly:
            writer.close()  # asyncio: close_notify, then FIN
        else:
            writer.transport.abort()  # FIN without close_notify
        assert await session.wait_closed(step="emt-tls-close") == b""
        assert session.ended_by_peer
        assert session.ending == (ORDERLY if orderly else ABORT), session.ending_detail
        assert f"({session.ending}:" in emt.transcript.entries[-1].detail


async def test_emt_closing_first_hears_the_answer(pki):
    async with ReferenceEmt(pki) as emt:
        reader, _, session = await dial_emt(pki, emt)
        await session.close()
        assert await reader.read() == b""
        assert (session.ended_by_peer, session.ending) == (False, ORDERLY)


async def test_cls_device_as_client_sees_a_dropped_connection(pki):
    async def drop(reader, writer):
        await reader.readexactly(4)
        writer.transport.abort()

    server = await asyncio.start_server(drop, HOST, 0, ssl=server_context(PROFILES["han"], **gateway_identity(pki)))
    try:
        device = ReferenceClsDevice(pki)
        session = await device.open_tls((HOST, server.sockets[0].getsockname()[1]))
        assert session.peer_id
        await session.send(b"PING")
        await session.wait_closed()
        assert (session.ended_by_peer, session.ending) == (True, ABORT)
    finally:
        server.close()
        await server.wait_closed()
