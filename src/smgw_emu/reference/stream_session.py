"""One TLS byte stream between a reference participant (EMT, CLS device) and the gateway's CLS
proxy, with every message it sends or receives in the participant's `Transcript`."""

from __future__ import annotations

import asyncio
import ssl

from cryptography import x509

from smgw_emu.reference.transcript import Transcript

SMGW = "SMGW"


class StreamSession:
    """``me`` is the participant ("EMT", "CLS"), ``channel`` its transcript channel ("emt", "han")."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, transcript: Transcript, *,
                 me: str, channel: str) -> None:
        self.reader, self.writer = reader, writer
        self.transcript = transcript
        self.me, self.channel = me, channel
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        self.peer_certificate = x509.load_der_x509_certificate(der) if der else None
        self.peer_id = (self.peer_certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
                        if self.peer_certificate else "")
        self.tls_version = ssl_object.version() if ssl_object else ""
        self.cipher = ssl_object.cipher()[0] if ssl_object else ""
        self.closed = False

    def _received(self, step: str, detail: str) -> None:
        self.transcript.add(step, SMGW, self.me, self.channel, detail)

    async def send(self, data: bytes, *, step: str | None = None) -> None:
        """Send ``data``; with ``step``, record it as one message."""
        self.writer.write(data)
        await self.writer.drain()
        if step:
            self.transcript.add(step, self.me, SMGW, self.channel, f"{len(data)} bytes")

    async def receive_exactly(self, size: int, *, step: str | None = None, timeout: float = 10.0) -> bytes:
        data = await asyncio.wait_for(self.reader.readexactly(size), timeout)
        if step:
            self._received(step, f"{len(data)} bytes")
        return data

    async def receive_line(self, *, step: str | None = None, timeout: float = 10.0) -> bytes:
        """One newline-terminated message (the newline stripped)."""
        line = await asyncio.wait_for(self.reader.readuntil(b"\n"), timeout)
        if step:
            self._received(step, line[:60].decode("ascii", "replace").strip())
        return line[:-1]

    async def receive_some(self, timeout: float = 0.2) -> bytes:
        """Whatever arrives within ``timeout`` (b"" if nothing does); not recorded."""
        try:
            return await asyncio.wait_for(self.reader.read(65536), timeout)
        except asyncio.TimeoutError:
            return b""

    async def wait_closed(self, *, step: str | None = None, timeout: float = 10.0) -> bytes:
        """Read until the gateway ends the stream; record ``step`` then; return what was still read."""
        rest = bytearray()

        async def drain() -> None:
            while True:
                try:
                    chunk = await self.reader.read(65536)
                except (ConnectionError, ssl.SSLError, OSError):
                    return
                if not chunk:
                    return
                rest.extend(chunk)

        await asyncio.wait_for(drain(), timeout)
        if step:
            self._received(step, "closed by the gateway")
        await self.close()
        return bytes(rest)

    async def close(self, *, step: str | None = None) -> None:
        """End the stream from this side (TLS close_notify)."""
        if self.closed:
            return
        self.closed = True
        if step:
            self.transcript.add(step, self.me, SMGW, self.channel, f"closed by the {self.me}")
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 5)
        except (asyncio.TimeoutError, ConnectionError, ssl.SSLError, OSError):
            self.writer.transport.abort()


class StreamServer:
    """A reference participant's TLS server: every connection the gateway opens becomes a
    `StreamSession` with a set-up step in the transcript (the EMT, the CLS device in HKS 4/5).
    Subclasses set `server_context`, `transcript`, `host`, `_port` and the class attributes."""

    me = ""             # participant name in the transcript, e.g. "EMT"
    channel = ""        # transcript channel, e.g. "emt"
    connect_step = ""   # transcript step of an accepted connection, e.g. "emt-tls-connect"

    server_context: ssl.SSLContext
    transcript: Transcript
    host: str
    _port: int

    def _init_server(self) -> None:
        self.sessions: list[StreamSession] = []
        self._arrived: asyncio.Queue[StreamSession] = asyncio.Queue()
        self._server: asyncio.Server | None = None

    async def start(self):
        self._server = await asyncio.start_server(self._accept, self.host, self._port, ssl=self.server_context,
                                                  ssl_handshake_timeout=10)
        return self

    async def stop(self) -> None:
        for session in self.sessions:
            await session.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self):
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = StreamSession(reader, writer, self.transcript, me=self.me, channel=self.channel)
        self.transcript.add(self.connect_step, "SMGW", self.me, self.channel,
                            f"{session.peer_id} {session.tls_version} {session.cipher}")
        self.sessions.append(session)
        await self._arrived.put(session)

    async def wait_session(self, timeout: float = 10.0) -> StreamSession:
        """The next connection the gateway opened to this participant."""
        return await asyncio.wait_for(self._arrived.get(), timeout)

    def pending_sessions(self) -> int:
        return self._arrived.qsize()
