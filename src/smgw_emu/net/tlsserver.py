"""A TLS listener whose handshakes we see: the common part of the gateway's HAN servers.

`asyncio.start_server(ssl=...)` hides failed handshakes (a certificate from another root never
reaches the application), but a refusal must be logged. So the listener accepts plain TCP, pauses
reading (the ClientHello must wait for `start_tls`) and runs the handshake itself; subclasses get
`connected(tls_transport, protocol, peer)` for every handshake that succeeded, and
`on_refused(reason, message, peer)` hears of every one that failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import Callable

from smgw_emu.net.management import tls_error

log = logging.getLogger("smgw_emu.tlsserver")


class _Paused(asyncio.Protocol):
    """The plain TCP connection until its TLS handshake starts."""

    def __init__(self, server: "TlsServer") -> None:
        self._server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.pause_reading()  # type: ignore[attr-defined]  # the ClientHello waits for start_tls
        self._server._spawn(transport)  # type: ignore[arg-type]


class TlsServer:
    #: what the log calls this interface, e.g. "the HAN"
    where = "the HAN"

    def __init__(self, *, host: str, port: int, ssl_context: ssl.SSLContext, handshake_timeout: float,
                 on_refused: Callable[[str, str, str], None]) -> None:
        self.host, self.port = host, port
        self._ssl = ssl_context
        self._timeout = handshake_timeout
        self._on_refused = on_refused
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Paused(self), self.host, self.port)

    def set_ssl_context(self, ssl_context: ssl.SSLContext) -> None:
        """Present another identity from the next connection on (6.7.5); open ones keep theirs."""
        self._ssl = ssl_context

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _spawn(self, transport: asyncio.Transport) -> None:
        task = asyncio.get_running_loop().create_task(self._handshake(transport))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def protocol(self) -> asyncio.Protocol:
        """The protocol that receives the first decrypted bytes (subclasses choose)."""
        raise NotImplementedError

    async def connected(self, tls: asyncio.BaseTransport, protocol: asyncio.Protocol, peer: str) -> None:
        raise NotImplementedError

    async def _handshake(self, transport: asyncio.Transport) -> None:
        loop = asyncio.get_running_loop()
        peer_info = transport.get_extra_info("peername")
        peer = f"{peer_info[0]}:{peer_info[1]}" if peer_info else "?"
        protocol = self.protocol()
        refused = f"TLS handshake with {peer} on {self.where} failed"
        try:
            try:
                tls = await asyncio.wait_for(
                    loop.start_tls(transport, protocol, self._ssl, server_side=True, ssl_handshake_timeout=self._timeout),
                    self._timeout + 1)
            except ssl.SSLError as exc:
                transport.abort()
                self._on_refused("tls-handshake-failed", f"{refused}: {tls_error(exc)}", peer)
                return
            except (OSError, asyncio.TimeoutError) as exc:
                transport.abort()
                detail = "no TLS handshake in time" if isinstance(exc, (asyncio.TimeoutError, ConnectionAbortedError)) \
                    else "the peer closed the connection during the handshake"
                self._on_refused("tls-handshake-failed", f"{refused}: {detail}", peer)
                return
            except Exception as exc:  # anything else: the connection goes, the listener stays
                transport.abort()
                log.exception("TLS set-up with %s on %s failed", peer, self.where)
                self._on_refused("tls-handshake-failed", f"{refused}: {type(exc).__name__}", peer)
                return
            if tls is None:  # the peer went away at once
                transport.abort()
                return
            await self.connected(tls, protocol, peer)
        except asyncio.CancelledError:
            transport.abort()
            raise
        except Exception:  # one connection's failure never takes the listener down
            log.exception("connection from %s on %s failed", peer, self.where)
            transport.abort()
