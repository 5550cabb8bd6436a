"""The gateway as HTTP client on the WAN (ADMIN-SERVICE and INFO-REPORT channels).

aiohttp over our TR-03116-3 TLS context, plus one check aiohttp cannot express together with a
custom SSLContext: the peer must be the certificate named in the communication profile (a
valid SM-PKI certificate of some other participant is not enough). The check runs right after
the handshake, before a single byte of the request is sent.
"""

from __future__ import annotations

import ssl
from typing import Callable

import aiohttp

from smgw_emu.net.tls import PeerCheck


class PeerRejected(aiohttp.ClientConnectionError):
    """The TLS peer is not the participant the profile names."""


class PinnedConnector(aiohttp.TCPConnector):
    def __init__(self, *, ssl_context: ssl.SSLContext, peer_check: PeerCheck, force_close: bool = True,
                 on_connected: Callable[[], None] | None = None, **kwargs) -> None:
        super().__init__(ssl=ssl_context, force_close=force_close, **kwargs)
        self._peer_check = peer_check
        self._on_connected = on_connected

    async def _create_connection(self, req, traces, timeout):  # type: ignore[override]
        protocol = await super()._create_connection(req, traces, timeout)
        transport = protocol.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport else None
        problem = self._peer_check.problem(ssl_object.getpeercert(binary_form=True) if ssl_object else None)
        if problem:
            protocol.close()
            raise PeerRejected(problem)
        if self._on_connected is not None:
            self._on_connected()
        return protocol


def wan_session(ssl_context: ssl.SSLContext, peer_check: PeerCheck, total_timeout: float, *,
                keep_alive: bool = False, on_connected: Callable[[], None] | None = None) -> aiohttp.ClientSession:
    """One channel's HTTP session; closing it closes the channel (5.5, 5.7). With `keep_alive`
    several requests share one TLS connection (a firmware download's Range requests); every new
    connection is checked against the profile again."""
    return aiohttp.ClientSession(
        connector=PinnedConnector(ssl_context=ssl_context, peer_check=peer_check, force_close=not keep_alive,
                                  on_connected=on_connected),
        timeout=aiohttp.ClientTimeout(total=total_timeout),
        headers={"User-Agent": "smgw-emu"},
    )
