"""The consumer's HTTPS server at the HAN interface (docs/domain.md §7), the sockets only.

Plain TCP accept, then the TLS handshake with the HAN profile of `net/tls.py` by
`loop.start_tls`, so a refused handshake (a certificate of another root, no shared suite) is seen
and reported through `on_refused` instead of being swallowed by asyncio. A connection whose
handshake succeeded is handed to aiohttp's low-level `web.Server` (the same HTTP/1.1 server as the
MANAGEMENT channel); bytes that arrive between the handshake and that hand-over are kept and
replayed. Every connection ends after `max_session_s` (TR-03116-3: 48 h on the HAN), on the
gateway clock.

Who may read what is decided by the request handler (`smgw_emu.app.han`); it finds the client's
certificate with :func:`peer_certificate`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import Any, Awaitable, Callable

from aiohttp import web
from aiohttp.web_request import BaseRequest

from smgw_emu.net.timers import Cancellable, Timers
from smgw_emu.net.tlsserver import TlsServer

log = logging.getLogger("smgw_emu.han")

RequestHandler = Callable[[BaseRequest], Awaitable[web.StreamResponse]]


def peer_certificate(request: BaseRequest) -> bytes | None:
    """The DER certificate the client presented on this request's connection, if any."""
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    return ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None


def peer_address(request: BaseRequest) -> str:
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    return str(peer[0]) if peer else "?"


class _Held(asyncio.Protocol):
    """Holds what arrives on a fresh TLS connection until the HTTP server takes it over."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.eof = False
        self.lost = False
        self.exc: BaseException | None = None

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)

    def eof_received(self) -> bool:
        self.eof = True
        return True

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost, self.exc = True, exc


class _WebServer(web.Server):
    """aiohttp's low-level server, telling us when a connection ends."""

    def __init__(self, *args: Any, on_lost: Callable[[Any], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_lost = on_lost

    def connection_lost(self, handler, exc=None) -> None:  # type: ignore[override]
        super().connection_lost(handler, exc)
        self._on_lost(handler)


class HanServer(TlsServer):
    """HTTPS on `host:port` for the consumer. ``on_refused(reason, message, peer)`` hears of every
    connection whose TLS handshake failed (reason ``tls-handshake-failed``)."""

    def __init__(self, *, host: str, port: int, ssl_context: ssl.SSLContext, handler: RequestHandler,
                 timers: Timers, handshake_timeout: float, max_session_s: float,
                 on_refused: Callable[[str, str, str], None], idle_timeout_s: float = 75.0) -> None:
        super().__init__(host=host, port=port, ssl_context=ssl_context, handshake_timeout=handshake_timeout,
                         on_refused=on_refused)
        self._timers = timers
        self._max_session_s = max_session_s
        self._web = _WebServer(handler, on_lost=self._lost, keepalive_timeout=idle_timeout_s)
        self._limits: dict[Any, Cancellable] = {}   # aiohttp handler -> its session-lifetime timer
        self.connections_accepted = 0

    @property
    def open_connections(self) -> int:
        return len(self._web.connections)

    async def close(self) -> None:
        await super().close()
        for timer in self._limits.values():
            timer.cancel()
        self._limits.clear()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._web.shutdown(1.0), 2.0)

    # -- one connection ----------------------------------------------------------------------
    def protocol(self) -> asyncio.Protocol:
        return _Held()

    async def connected(self, tls: asyncio.BaseTransport, protocol: asyncio.Protocol, peer: str) -> None:
        assert isinstance(protocol, _Held)
        held = protocol
        self.connections_accepted += 1
        handler = self._web()
        tls.set_protocol(handler)
        handler.connection_made(tls)
        for chunk in held.chunks:
            handler.data_received(chunk)
        if held.eof:
            handler.eof_received()
        if held.lost:
            handler.connection_lost(held.exc)
            return
        self._limits[handler] = self._timers.call_later(self._max_session_s, lambda: self._expire(handler, tls))

    def _expire(self, handler: Any, tls: asyncio.BaseTransport) -> None:
        self._limits.pop(handler, None)
        log.info("HAN connection ended: session lifetime of %g s reached", self._max_session_s)
        tls.close()

    def _lost(self, handler: Any) -> None:
        timer = self._limits.pop(handler, None)
        if timer is not None:
            timer.cancel()
