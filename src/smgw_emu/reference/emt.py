"""The reference active EMT (aEMT): the WAN end of a CLS connection (Lastenheft 6.8).

Every WAN connection is opened by the gateway (DOMAIN.md §1), so the EMT is a TLS server: it
presents its TLS certificate (``emt-tls`` of the test SM-PKI, or another entity's to play a wrong
EMT), demands the gateway's, and hands each accepted connection to the test as a
`StreamSession`. Its transcript (channel "emt") holds the connection set-up, every message it
sends or receives and the gateway's close.

    async with ReferenceEmt(pki) as emt:
        ...  # profile: host 127.0.0.1, port emt.port, tls_certificate emt-tls
        session = await emt.wait_session()
        await session.send(b"SET max_power=4200\\n", step="emt-data")
        answer = await session.receive_line(step="cls-data-forwarded")
"""

from __future__ import annotations

import asyncio

from smgw_emu.net.tls import PROFILES, TlsProfile, server_context
from smgw_emu.pki import PkiDir
from smgw_emu.reference.stream_session import StreamSession
from smgw_emu.reference.transcript import Transcript

EMT, SMGW = "EMT", "SMGW"


class ReferenceEmt:
    def __init__(self, pki: PkiDir, *, entity: str = "emt", host: str = "127.0.0.1", port: int = 0,
                 tls_profile: TlsProfile | None = None) -> None:
        self.pki = pki
        self.entity = entity
        self.host = host
        self._port = port
        self.tls_context = server_context(tls_profile or PROFILES["wan"], chain=pki.chain_path(f"{entity}-tls"),
                                          key=pki.key_path(f"{entity}-tls"), cafile=pki.root_ca)
        self.transcript = Transcript()
        self.sessions: list[StreamSession] = []
        self._arrived: asyncio.Queue[StreamSession] = asyncio.Queue()
        self._server: asyncio.Server | None = None

    async def start(self) -> "ReferenceEmt":
        self._server = await asyncio.start_server(self._accept, self.host, self._port, ssl=self.tls_context,
                                                  ssl_handshake_timeout=10)
        return self

    async def stop(self) -> None:
        for session in self.sessions:
            await session.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> "ReferenceEmt":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = StreamSession(reader, writer, self.transcript, me=EMT, channel="emt")
        self.transcript.add("emt-tls-connect", SMGW, EMT, "emt", f"{session.peer_id} {session.tls_version} {session.cipher}")
        self.sessions.append(session)
        await self._arrived.put(session)

    async def wait_session(self, timeout: float = 10.0) -> StreamSession:
        """The next connection the gateway opened to this EMT."""
        return await asyncio.wait_for(self._arrived.get(), timeout)

    def pending_sessions(self) -> int:
        return self._arrived.qsize()
