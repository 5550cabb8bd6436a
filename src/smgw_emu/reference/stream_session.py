"""One TLS byte stream between a reference participant (EMT, CLS device) and the gateway's CLS
proxy, with every message it sends or receives in the participant's `Transcript`.

TLS runs here over `ssl.MemoryBIO` on a plain TCP stream, not through asyncio's TLS transport:
asyncio ends the stream the same way whether the peer sent close_notify or just dropped the TCP
connection, and a test must tell the two apart. Each session records how the peer ended it
(`ending`): "close_notify" (orderly), "abort" (TCP EOF without close_notify, a reset, a fatal
alert) or "timeout" (we closed and the peer did not answer within the close timeout).
"""

from __future__ import annotations

import asyncio
import ssl

from cryptography import x509

from smgw_emu.reference.transcript import Transcript

SMGW = "SMGW"
#: Plaintext per TLS write (then drain: the TCP flow control reaches the sender).
WRITE_CHUNK = 64 * 1024
#: Decrypted bytes held for the test before the session stops reading from TCP.
BUFFER_LIMIT = 256 * 1024
#: How long `close()` waits for the peer's close_notify answer.
CLOSE_TIMEOUT_S = 5.0
ORDERLY, ABORT, TIMEOUT = "close_notify", "abort", "timeout"


class StreamSession:
    """``me`` is the participant ("EMT", "CLS"), ``channel`` its transcript channel ("emt", "han").
    Made by `open_session` (the TLS handshake done)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tls: ssl.SSLObject,
                 incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO, transcript: Transcript, *,
                 me: str, channel: str) -> None:
        self.reader, self.writer = reader, writer  # the TCP stream under TLS
        self._tls, self._incoming, self._outgoing = tls, incoming, outgoing
        self._buffer = bytearray()  # decrypted, not yet consumed
        self.transcript = transcript
        self.me, self.channel = me, channel
        self.closed = False
        #: How the peer ended the TLS connection (None while it has not): ORDERLY, ABORT or TIMEOUT.
        self.ending: str | None = None
        self.ending_detail = ""
        #: True when the peer ended it before this side closed.
        self.ended_by_peer = False
        self._changed, self._consumed = asyncio.Event(), asyncio.Event()
        self._pump_task: asyncio.Task | None = None
        self._wanted = 0  # bytes a reader waits for (may exceed BUFFER_LIMIT)
        self.peer_certificate: x509.Certificate | None = None
        self.peer_id = self.tls_version = self.cipher = ""

    def _handshake_done(self) -> None:
        der = self._tls.getpeercert(binary_form=True)
        self.peer_certificate = x509.load_der_x509_certificate(der) if der else None
        self.peer_id = (self.peer_certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
                        if self.peer_certificate else "")
        self.tls_version = self._tls.version() or ""
        self.cipher = (self._tls.cipher() or ("",))[0]

    # -- TLS over the TCP stream ---------------------------------------------------------------
    def _flush(self) -> None:
        data = self._outgoing.read()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    async def _feed(self) -> None:
        """The next TCP bytes into TLS; at the end of the TCP stream, its EOF."""
        try:
            data = await self.reader.read(65536)
        except (ConnectionError, OSError) as exc:
            self.ending_detail = f"TCP: {type(exc).__name__}"
            data = b""
        if data:
            self._incoming.write(data)
        else:
            self._incoming.write_eof()

    async def _handshake(self) -> None:
        try:
            while True:
                try:
                    self._tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    self._flush()
                    await self.writer.drain()
                    await self._feed()
        finally:
            self._flush()  # our Finished, or the alert that ends a failed handshake
        await self.writer.drain()
        self._handshake_done()

    def _ended(self, how: str, detail: str) -> None:
        if self.ending is None:
            self.ending, self.ended_by_peer = how, not self.closed
            self.ending_detail = self.ending_detail or detail
        self._changed.set()

    def _start_pump(self) -> None:
        self._pump_task = asyncio.get_running_loop().create_task(self._pump())

    async def _pump(self) -> None:
        """Decrypt what arrives into the buffer until the peer ends the connection; its close_notify
        is answered at once (as any TLS stack does), whether or not the test is reading then."""
        try:
            await self._pump_records()
        except Exception as exc:  # noqa: BLE001 - whatever breaks the stream ends it
            self._ended(ABORT, f"{type(exc).__name__}: {exc}")

    async def _pump_records(self) -> None:
        while self.ending is None:
            while len(self._buffer) >= max(BUFFER_LIMIT, self._wanted) and not self.closed:
                self._consumed.clear()
                await self._consumed.wait()  # flow control: the TCP window fills, the gateway waits
            try:
                data = self._tls.read(65536)
            except ssl.SSLWantReadError:
                self._flush()  # TLS may have something to answer
                await self._feed()
                continue
            except ssl.SSLZeroReturnError:
                data = b""
            except ssl.SSLError as exc:  # SSLEOFError: the TCP stream ended without close_notify
                self._ended(ABORT, f"{type(exc).__name__}: {exc.reason or exc}")
                return
            if not data:
                self._ended(ORDERLY, "close_notify received")
                self._send_close_notify()
                return
            if not self.closed:
                self._buffer.extend(data)
            self._changed.set()

    def _send_close_notify(self) -> None:
        try:
            self._tls.unwrap()
        except (ssl.SSLWantReadError, ssl.SSLError, ValueError):
            pass  # sent; the peer's answer is read by the pump (or the TLS state is broken already)
        self._flush()

    async def _read_tls(self) -> bool:
        """Wait for more decrypted bytes in the buffer; False once the peer has ended the connection."""
        size = len(self._buffer)
        while len(self._buffer) == size:
            if self.ending is not None:
                return False
            self._changed.clear()
            await self._changed.wait()
        return True

    def _take(self, size: int) -> bytes:
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        self._consumed.set()
        return data

    # -- the participant's view --------------------------------------------------------------
    def _received(self, step: str, detail: str) -> None:
        self.transcript.add(step, SMGW, self.me, self.channel, detail)

    async def send(self, data: bytes, *, step: str | None = None) -> None:
        """Send ``data``; with ``step``, record it as one message."""
        for start in range(0, len(data), WRITE_CHUNK):
            self._tls.write(data[start:start + WRITE_CHUNK])
            self._flush()
            await self.writer.drain()
        if step:
            self.transcript.add(step, self.me, SMGW, self.channel, f"{len(data)} bytes")

    async def _read_exactly(self, size: int) -> bytes:
        self._wanted = size
        self._consumed.set()
        try:
            while len(self._buffer) < size:
                if not await self._read_tls():
                    raise asyncio.IncompleteReadError(self._take(len(self._buffer)), size)
        finally:
            self._wanted = 0
        return self._take(size)

    async def _read_line(self) -> bytes:
        while (end := self._buffer.find(b"\n")) < 0:
            if not await self._read_tls():
                raise asyncio.IncompleteReadError(self._take(len(self._buffer)), None)
        return self._take(end + 1)

    async def _read_some(self) -> bytes:
        if not self._buffer:
            await self._read_tls()
        return self._take(len(self._buffer))

    async def receive_exactly(self, size: int, *, step: str | None = None, timeout: float = 10.0) -> bytes:
        data = await asyncio.wait_for(self._read_exactly(size), timeout)
        if step:
            self._received(step, f"{len(data)} bytes")
        return data

    async def receive_line(self, *, step: str | None = None, timeout: float = 10.0) -> bytes:
        """One newline-terminated message (the newline stripped)."""
        line = await asyncio.wait_for(self._read_line(), timeout)
        if step:
            self._received(step, line[:60].decode("ascii", "replace").strip())
        return line[:-1]

    async def receive_some(self, timeout: float = 0.2) -> bytes:
        """Whatever arrives within ``timeout`` (b"" if nothing does); not recorded."""
        try:
            return await asyncio.wait_for(self._read_some(), timeout)
        except asyncio.TimeoutError:
            return b""

    async def wait_closed(self, *, step: str | None = None, timeout: float = 10.0) -> bytes:
        """Read until the gateway ends the stream; record ``step`` then (its detail says how:
        `ending`); return what was still read."""
        async def drain() -> None:
            while await self._read_tls():
                pass

        await asyncio.wait_for(drain(), timeout)
        rest = self._take(len(self._buffer))
        if step:
            self._received(step, f"closed by the gateway ({self.ending}: {self.ending_detail})")
        await self.close()
        return rest

    async def close(self, *, step: str | None = None, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """End the stream from this side: TLS close_notify, wait for the peer's (`ending`), FIN."""
        if self.closed:
            return
        self.closed = True
        if step:
            self.transcript.add(step, self.me, SMGW, self.channel, f"closed by the {self.me}")
        self._buffer.clear()
        self._consumed.set()
        try:
            if self.ending is None:
                self._send_close_notify()
                await self.writer.drain()
                await asyncio.wait_for(self._read_tls(), timeout)  # nothing more is buffered: the end
        except asyncio.TimeoutError:
            self._ended(TIMEOUT, f"no close_notify within {timeout:g} s")
        except (ConnectionError, OSError) as exc:
            self._ended(ABORT, f"TCP: {type(exc).__name__}")
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), timeout)
        except (asyncio.TimeoutError, ConnectionError, OSError):
            self.writer.transport.abort()
        self._stop_pump()

    def _stop_pump(self) -> None:
        if self._pump_task is not None and not self._pump_task.done():
            self._pump_task.cancel()

    def abort(self) -> None:
        """Drop the TCP connection without close_notify (to play a participant that gives up)."""
        self.closed = True
        self.writer.transport.abort()
        self._stop_pump()


async def open_session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, context: ssl.SSLContext,
                       transcript: Transcript, *, me: str, channel: str, server_side: bool,
                       timeout: float = 10.0) -> StreamSession:
    """TLS over the TCP stream ``reader``/``writer``; raises (ssl.SSLError, OSError, TimeoutError)
    and drops the TCP connection when the handshake fails."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_side=server_side)
    session = StreamSession(reader, writer, tls, incoming, outgoing, transcript, me=me, channel=channel)
    try:
        await asyncio.wait_for(session._handshake(), timeout)
    except BaseException:
        writer.transport.abort()
        raise
    session._start_pump()
    return session


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
        self._server = await asyncio.start_server(self._accept, self.host, self._port)  # TLS: open_session
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
        try:
            session = await open_session(reader, writer, self.server_context, self.transcript, me=self.me,
                                         channel=self.channel, server_side=True)
        except (ssl.SSLError, OSError, asyncio.TimeoutError):
            return  # a failed handshake is no session (the gateway reports it)
        self.transcript.add(self.connect_step, "SMGW", self.me, self.channel,
                            f"{session.peer_id} {session.tls_version} {session.cipher}")
        self.sessions.append(session)
        await self._arrived.put(session)

    async def wait_session(self, timeout: float = 10.0) -> StreamSession:
        """The next connection the gateway opened to this participant."""
        return await asyncio.wait_for(self._arrived.get(), timeout)

    def pending_sessions(self) -> int:
        return self._arrived.qsize()
