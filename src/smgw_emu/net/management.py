"""The MANAGEMENT channel, gateway side (Lastenheft 5.2, 5.3, 5.16).

The gateway opens a TLS connection to the GWA (it is the TLS client) and then *serves* HTTP/1.1
on it: the GWA sends requests, the gateway answers ("reverse HTTP", docs/domain.md §2). aiohttp's
low-level `web.Server` is an asyncio protocol factory, so `loop.create_connection(server, ...)`
puts an HTTP server on our own outgoing connection.

The rules (AUTH, idle timeout, 48 h lifetime) are in `smgw_emu.core.session`; this module only
moves bytes, runs timers and reports what happened through `journal`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import Any, Awaitable, Callable

from aiohttp import web
from aiohttp.web_request import BaseRequest

from smgw_emu.core.session import AUTH_TIMEOUT, ManagementSession, SessionLimits
from smgw_emu.net.timers import Cancellable, Timers
from smgw_emu.net.tls import PeerCheck

log = logging.getLogger("smgw_emu.management")

Journal = Callable[..., None]
RequestHandler = Callable[[BaseRequest, "ManagementChannel"], Awaitable[web.StreamResponse]]


def tls_error(exc: ssl.SSLError) -> str:
    """OpenSSL's reason for a failed handshake, with the verification result when a certificate
    was refused (CERTIFICATE_VERIFY_FAILED alone does not tell an expired certificate from one of
    another root)."""
    reason = exc.reason or type(exc).__name__
    verify_message = getattr(exc, "verify_message", None)
    return f"{reason}: {verify_message}" if verify_message else reason


class ChannelError(Exception):
    """The channel could not be opened; `reason` is a stable code for logs and counters."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class _ChannelServer(web.Server):
    """aiohttp's low-level server, told when its one connection ends."""

    def __init__(self, *args: Any, on_lost: Callable[[BaseException | None], None], max_request_bytes: int, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._on_lost = on_lost
        self._max_request_bytes = max_request_bytes
        self.request_factory = self._make_limited_request

    def _make_limited_request(self, message, payload, protocol, writer, task) -> BaseRequest:
        return BaseRequest(message, payload, protocol, writer, task, self._loop, client_max_size=self._max_request_bytes)

    def connection_lost(self, handler, exc=None) -> None:  # type: ignore[override]
        super().connection_lost(handler, exc)
        self._on_lost(exc)


class ManagementChannel:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext,
        peer_check: PeerCheck,
        handler: RequestHandler,
        timers: Timers,
        limits: SessionLimits,
        journal: Journal,
        max_request_bytes: int = 1024 * 1024,
        connect_timeout: float = 10.0,
    ) -> None:
        self.host, self.port = host, port
        self._ssl = ssl_context
        self._peer_check = peer_check
        self._handler = handler
        self._timers = timers
        self._limits = limits
        self._journal = journal
        self._max_request_bytes = max_request_bytes
        self._connect_timeout = connect_timeout
        self._transport: asyncio.Transport | None = None
        self._timer: Cancellable | None = None
        self._ready: asyncio.Future[None] | None = None
        self.session: ManagementSession | None = None
        self.closed = asyncio.Event()
        self.close_reason: str | None = None
        self.peer_der: bytes | None = None

    @property
    def is_open(self) -> bool:
        return self._transport is not None and not self.closed.is_set()

    async def open(self) -> None:
        """Connect, check the peer, establish AUTH. Raises ChannelError; logs either way."""
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        server = _ChannelServer(
            self._serve, on_lost=self._lost, max_request_bytes=self._max_request_bytes,
            keepalive_timeout=10 * 365 * 86400,  # idle closing is ours (core.session), on our clock
        )
        try:
            transport, _ = await asyncio.wait_for(
                loop.create_connection(server, self.host, self.port, ssl=self._ssl, server_hostname=None),
                self._connect_timeout,
            )
        except ssl.SSLError as exc:
            raise self._fail("tls-handshake-failed", f"TLS handshake with GWA {self.host}:{self.port} failed: {tls_error(exc)}",
                             tls_error=tls_error(exc))
        except (OSError, asyncio.TimeoutError) as exc:
            if isinstance(exc, ConnectionResetError) and not exc.args:
                # asyncio's SSL transport raises a bare ConnectionResetError when the peer closes
                # during the handshake, e.g. an OpenSSL server that found no suite it may use.
                raise self._fail("tls-handshake-failed", f"TLS handshake with GWA {self.host}:{self.port} failed: "
                                 "the GWA closed the connection during the handshake", tls_error="closed-by-peer")
            if isinstance(exc, asyncio.TimeoutError):
                detail = f"no TLS connection within {self._connect_timeout:g} s"
            else:  # str() of an exception may be empty: never log a reason without text
                detail = str(exc) or type(exc).__name__
            raise self._fail("connect-failed", f"cannot connect to GWA {self.host}:{self.port}: {detail}")
        self._transport = transport  # type: ignore[assignment]
        ssl_object = transport.get_extra_info("ssl_object")
        self.peer_der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        problem = self._peer_check.problem(self.peer_der)
        if problem:
            transport.abort()
            self._ready.set_exception(ConnectionAbortedError(problem))
            self._ready.exception()  # mark retrieved
            self.closed.set()
            raise self._fail("peer-rejected", f"MANAGEMENT channel to {self.host}:{self.port} refused: {problem}")
        now = self._timers.clock.monotonic()
        self.session = ManagementSession(self._limits, opened_at=now)
        cipher = ssl_object.cipher() if ssl_object else None
        with self._together():
            self._log_opened(ssl_object, cipher, now)
        self._ready.set_result(None)
        self._arm_timer()

    def _together(self):
        """One commit for several log entries, when the journal can do that."""
        together = getattr(self._journal, "together", None)
        return together() if together else contextlib.nullcontext()

    def _log_opened(self, ssl_object, cipher, now: float) -> None:
        assert self.session is not None
        self._journal(
            "management-channel-opened", f"MANAGEMENT channel to {self.host}:{self.port} open ({ssl_object.version()}, {cipher[0] if cipher else '?'})",
            peer=self.host, port=self.port, cipher=cipher[0] if cipher else "",
        )
        self.session.establish_auth(now)
        self._journal("auth-established", "AUTH state established with the GWA (peer certificate matches the communication profile)")

    def _fail(self, reason: str, message: str, **details: object) -> ChannelError:
        self._journal("management-channel-failed", message, level=3, outcome=1, reason=reason, **details)
        return ChannelError(reason, message)

    async def _serve(self, request: BaseRequest) -> web.StreamResponse:
        assert self._ready is not None
        await self._ready  # no request is answered before the peer has been checked
        assert self.session is not None
        self.session.on_request(self._timers.clock.monotonic())
        self._arm_timer()
        return await self._handler(request, self)

    # -- AUTH (5.8/5.9) ----------------------------------------------------------------------
    def authenticated(self) -> bool:
        return self.session is not None and self.session.authenticated(self._timers.clock.monotonic())

    def end_auth(self, reason: str) -> None:
        if self.session and self.session.end_auth(reason):
            self._journal("auth-ended", f"AUTH state ended ({reason})", reason=reason)
            self._arm_timer()

    def reestablish_auth(self) -> str | None:
        """Check the peer again (the GWA certificate may have changed); None on success."""
        problem = self._peer_check.problem(self.peer_der)
        if problem:
            self._journal("auth-refused", f"AUTH state not established: {problem}", level=3, outcome=1)
            return problem
        assert self.session is not None
        self.session.establish_auth(self._timers.clock.monotonic())
        self._journal("auth-established", "AUTH state established again on request of the GWA")
        self._arm_timer()
        return None

    # -- timers and teardown (5.3) -----------------------------------------------------------
    def _arm_timer(self) -> None:
        if self._timer:
            self._timer.cancel()
        if self.session is None or self.closed.is_set():
            return
        self._timer = self._timers.call_at(self.session.next_deadline(), self._on_timer)

    def _on_timer(self) -> None:
        if self.session is None or self.closed.is_set():
            return
        for item in self.session.due(self._timers.clock.monotonic()):
            if item == AUTH_TIMEOUT:
                self.end_auth(AUTH_TIMEOUT)
            else:
                self.close(item)
                return
        self._arm_timer()

    def close(self, reason: str) -> None:
        """Tear the channel down from the gateway's side (close_notify, then FIN)."""
        if self.closed.is_set() or self._transport is None:
            return
        self.close_reason = reason
        self._transport.close()

    def _lost(self, exc: BaseException | None) -> None:
        if self.closed.is_set():
            return
        if self._timer:
            self._timer.cancel()
        reason = self.close_reason or "closed-by-gwa"
        self.close_reason = reason
        with self._together():
            self._log_closed(reason, exc)
        self.closed.set()

    def _log_closed(self, reason: str, exc: BaseException | None) -> None:
        if self.session and self.session.end_auth("channel-closed"):
            self._journal("auth-ended", "AUTH state ended (channel-closed)", reason="channel-closed")
        who = "by the gateway" if reason != "closed-by-gwa" else "by the GWA"
        if exc is None:
            self._journal("management-channel-closed", f"MANAGEMENT channel closed {who} ({reason})", reason=reason)
        else:  # e.g. the GWA's fatal TLS alert after the gateway refused its renegotiation
            error = tls_error(exc) if isinstance(exc, ssl.SSLError) else (str(exc) or type(exc).__name__)
            self._journal("management-channel-closed", f"MANAGEMENT channel closed {who} ({reason}): {error}",
                          level=2, reason=reason, error=error)

    async def wait_closed(self) -> None:
        await self.closed.wait()
