"""The gateway's side of the LMN link: a TLS client connection to one meter that carries SML
files (asyncio adapter; the dialogs are in `core/lmn.py`, the codec in `core/sml.py`).

[ours] The emulated LMN is a loopback network: each meter is a TLS server at the address of its
meter profile (``lmn_address``, "host:port"), the gateway the TLS client. TLS is the LMN
profile of `net/tls.py` (TR-03116-3: as the WAN, but sessions up to 744 h), with mutual
authentication: the meter presents its SM-PKI TLS certificate, the gateway its own TLS
certificate. Beyond a chain to the SM-PKI root, the gateway demands the certificate of the meter
profile (``meter_certificate``, SHA-256 fingerprint) or, when the profile has none, a
certificate whose subject CN is the meter id. One request file, one answer file per exchange;
the connection lives for one dialog (so never near the 744 h limit, which it still enforces).
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass

from cryptography import x509

from smgw_emu.core import sml
from smgw_emu.core.lmn import LmnError
from smgw_emu.net.tls import PeerCheck, certificate_fingerprint


def parse_address(address: str) -> tuple[str, int]:
    """"host:port" or "[v6]:port" -> (host, port); ValueError when it is neither."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{address[:60]!r} is no host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


@dataclass(frozen=True)
class LmnLimits:
    connect_timeout_s: float = 5.0
    exchange_timeout_s: float = 10.0
    max_session_lifetime_s: float = 744 * 3600
    max_file_bytes: int = sml.MAX_FRAME_BYTES


class LmnConnection:
    """One open TLS connection to a meter."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limits: LmnLimits,
                 monotonic) -> None:
        self._reader, self._writer = reader, writer
        self._limits = limits
        self._monotonic = monotonic
        self._opened = monotonic()
        self._frames = sml.FrameBuffer(limits.max_file_bytes)
        ssl_object = writer.get_extra_info("ssl_object")
        self.peer_certificate_der: bytes = ssl_object.getpeercert(binary_form=True) if ssl_object else b""
        self.tls_version = ssl_object.version() if ssl_object else ""
        self.cipher = ssl_object.cipher()[0] if ssl_object else ""

    async def exchange(self, payload: bytes) -> bytes:
        """Send one SML file, return the payload of the answer file."""
        if self._monotonic() - self._opened > self._limits.max_session_lifetime_s:
            raise LmnError("session-expired", "LMN TLS session older than its maximum lifetime")
        try:
            self._writer.write(sml.frame(payload))
            await self._writer.drain()
            return await asyncio.wait_for(self._read_file(), self._limits.exchange_timeout_s)
        except asyncio.TimeoutError:
            raise LmnError("timeout", f"no answer within {self._limits.exchange_timeout_s:g} s") from None
        except sml.SmlError as exc:
            raise LmnError("sml-malformed", str(exc)) from None
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            raise LmnError("unreachable", f"connection lost: {exc}") from None

    async def _read_file(self) -> bytes:
        while True:
            chunk = await self._reader.read(65536)
            if not chunk:
                raise ConnectionResetError("the meter closed the connection")
            files = self._frames.feed(chunk)
            if files:
                return files[0]

    async def close(self) -> None:
        self._writer.close()
        try:
            await asyncio.wait_for(self._writer.wait_closed(), 2)
        except (ConnectionError, ssl.SSLError, OSError, asyncio.TimeoutError):
            pass


async def open_lmn(address: str, *, ssl_context: ssl.SSLContext, meter_id: str, meter_certificate_der: bytes,
                   limits: LmnLimits, monotonic) -> LmnConnection:
    """Connect to the meter at ``address`` and check it is the meter of the profile."""
    try:
        host, port = parse_address(address)
    except ValueError as exc:
        raise LmnError("no-address", str(exc)) from None
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=ssl_context, ssl_handshake_timeout=limits.connect_timeout_s),
            limits.connect_timeout_s,
        )
    except ssl.SSLError as exc:
        raise LmnError("tls-handshake-failed", f"{address}: {exc.reason or exc}") from None
    except asyncio.TimeoutError:
        raise LmnError("unreachable", f"{address}: no TLS connection within {limits.connect_timeout_s:g} s") from None
    except (ConnectionError, OSError) as exc:
        if isinstance(exc, ConnectionResetError):
            raise LmnError("tls-handshake-failed", f"{address}: the meter closed the handshake") from None
        raise LmnError("unreachable", f"{address}: {exc.strerror or exc}") from None
    connection = LmnConnection(reader, writer, limits, monotonic)
    problem = meter_certificate_problem(connection.peer_certificate_der, meter_id, meter_certificate_der)
    if problem:
        await connection.close()
        raise LmnError("certificate-mismatch", problem)
    return connection


def meter_certificate_problem(peer_der: bytes, meter_id: str, expected_der: bytes) -> str | None:
    """Why the meter's TLS certificate is not the one of the meter profile (None when it is)."""
    expected = {certificate_fingerprint(expected_der)} if expected_der else set()
    problem = PeerCheck(expected).problem(peer_der)
    if problem or expected:
        return problem.replace("communication profile", "meter profile") if problem else None
    cert = x509.load_der_x509_certificate(peer_der)
    names = [a.value for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    if names != [meter_id]:
        return f"meter certificate names {names[0] if names else 'nobody'}, not meter {meter_id}"
    return None
