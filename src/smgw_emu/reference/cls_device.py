"""The reference CLS device (a controllable local system on the HAN: wallbox, heat pump), the HAN
end of a CLS connection (Lastenheft 6.8).

* HKS 3, the device initiates: `connect()` opens TLS (HAN profile, ``cls-tls`` of the test
  SM-PKI) to the gateway's HAN interface and names the EMT in a SOCKS5 CONNECT (RFC 1928). The
  SOCKS5 client bytes are written here by hand, independently of the gateway's parser.
* HKS 4 and 5, the gateway dials: the device is a TLS server (`start()`, `wait_session()`).
* Behaviour: `answer_command()` reads one command line and answers it (``SET k=v`` -> ``OK k=v``,
  ``GET k`` -> ``VALUE k=v``, ``PING`` -> ``PONG``, else ``ERR unknown command``); tests may also
  send and receive raw bytes through the `StreamSession`.

Its transcript (channel "han") holds the TLS set-up, the SOCKS5 messages, every message and the
gateway's close; each session records how the gateway ended it (`StreamSession.ending`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import struct
from pathlib import Path

from smgw_emu.net.tls import PROFILES, TlsProfile, client_context, server_context
from smgw_emu.pki import PkiDir
from smgw_emu.reference.stream_session import StreamServer, StreamSession, open_session
from smgw_emu.reference.transcript import Transcript

CLS, SMGW = "CLS", "SMGW"
SOCKS_REPLIES = {0: "succeeded", 1: "general failure", 2: "not allowed by ruleset", 3: "network unreachable",
                 4: "host unreachable", 5: "connection refused", 7: "command not supported",
                 8: "address type not supported"}


class SocksRefused(Exception):
    """The gateway refused the SOCKS5 set-up: ``code`` is its reply code (0xFF: no acceptable
    method; None: it closed the connection without a reply)."""

    def __init__(self, code: int | None, message: str) -> None:
        super().__init__(message)
        self.code = code


def socks_connect_request(host: str, port: int = 0) -> bytes:
    """A SOCKS5 CONNECT for ``host`` (IPv4, IPv6 or a domain name) and ``port``."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        name = host.encode("ascii")
        return bytes([5, 1, 0, 3, len(name)]) + name + struct.pack("!H", port)
    kind = 1 if address.version == 4 else 4
    return bytes([5, 1, 0, kind]) + address.packed + struct.pack("!H", port)


class ReferenceClsDevice(StreamServer):
    me, channel, connect_step = CLS, "han", "han-tls-connect"

    def __init__(self, pki: PkiDir, *, entity: str = "cls", chain: Path | None = None, key: Path | None = None,
                 host: str = "127.0.0.1", port: int = 0, tls_profile: TlsProfile | None = None) -> None:
        """``chain``/``key`` replace the entity's TLS identity (to play a device with a wrong certificate)."""
        profile = tls_profile or PROFILES["han"]
        identity = {"chain": chain or pki.chain_path(f"{entity}-tls"), "key": key or pki.key_path(f"{entity}-tls"),
                    "cafile": pki.root_ca}
        self.client_context = client_context(profile, **identity)
        self.server_context = server_context(profile, **identity)
        self.host = host
        self._port = port
        self.transcript = Transcript()
        self.state: dict[str, str] = {}
        self._init_server()

    # -- HKS 4 / 5: the gateway dials the device (StreamServer: start, wait_session, stop) -----
    @property
    def address(self) -> str:
        """host:port of its HAN TLS server: the proxy profile's cls_address."""
        return f"{self.host}:{self.port}"

    # -- HKS 3: the device connects through the gateway ---------------------------------------
    async def open_tls(self, gateway: tuple[str, int], timeout: float = 10.0) -> StreamSession:
        """TLS to the gateway's HAN interface, no SOCKS yet (raises on a refused handshake)."""
        reader, writer = await asyncio.wait_for(asyncio.open_connection(gateway[0], gateway[1]), timeout)
        session = await open_session(reader, writer, self.client_context, self.transcript, me=CLS, channel="han",
                                     server_side=False, timeout=timeout)
        self.transcript.add("han-tls-connect", CLS, SMGW, "han", f"{session.peer_id} {session.tls_version} {session.cipher}")
        self.sessions.append(session)
        return session

    async def connect(self, gateway: tuple[str, int], target: str, port: int = 0, *, request: bytes | None = None,
                      greeting: bytes = b"\x05\x01\x00", timeout: float = 10.0) -> StreamSession:
        """HKS 3: TLS to the gateway, then SOCKS5 CONNECT to ``target`` (the EMT's id). Raises
        SocksRefused when the gateway refuses; the session is closed then."""
        session = await self.open_tls(gateway, timeout)
        try:
            await session.send(greeting, step="socks-greeting")
            method = await self._read(session, 2, timeout)
            session._received("socks-method", f"method {method[1]:#04x}")
            if method[1] != 0x00:
                raise SocksRefused(method[1], "the gateway accepts none of the offered SOCKS5 methods")
            await session.send(request if request is not None else socks_connect_request(target, port), step="socks-connect")
            head = await self._read(session, 4, timeout)
            code = head[1]
            size = {1: 4, 4: 16}.get(head[3])
            if size is None:  # a domain name as bound address
                size = (await self._read(session, 1, timeout))[0]
            await self._read(session, size + 2, timeout)
            session._received("socks-granted" if code == 0 else "socks-refused", SOCKS_REPLIES.get(code, str(code)))
            if code != 0:
                raise SocksRefused(code, f"SOCKS5 CONNECT refused: {SOCKS_REPLIES.get(code, code)}")
        except SocksRefused:
            await session.wait_closed(timeout=timeout)
            raise
        return session

    @staticmethod
    async def _read(session: StreamSession, size: int, timeout: float) -> bytes:
        try:
            return await session.receive_exactly(size, timeout=timeout)
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError) as exc:
            await session.close()
            raise SocksRefused(None, f"the gateway closed the connection during the SOCKS5 set-up ({type(exc).__name__})") from None

    # -- behaviour -----------------------------------------------------------------------------
    async def answer_command(self, session: StreamSession, *, timeout: float = 10.0) -> bytes:
        """Read one command from the EMT (step emt-data-forwarded) and answer it (step cls-data)."""
        line = (await session.receive_line(step="emt-data-forwarded", timeout=timeout)).decode("ascii", "replace").strip()
        verb, _, rest = line.partition(" ")
        if verb == "SET" and "=" in rest:
            key, _, value = rest.partition("=")
            self.state[key] = value
            answer = f"OK {key}={value}"
        elif verb == "GET" and rest:
            answer = f"VALUE {rest}={self.state.get(rest, '')}"
        elif verb == "PING":
            answer = "PONG"
        else:
            answer = "ERR unknown command"
        await session.send(answer.encode() + b"\n", step="cls-data")
        return answer.encode()
