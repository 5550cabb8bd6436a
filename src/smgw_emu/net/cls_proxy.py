"""The CLS proxy's sockets (Lastenheft 6.8): the HAN interface, the TLS legs and the relay.

* `HanListener`: the gateway's HAN interface for CLS devices (HKS 3). Plain TCP accept, then the
  TLS handshake with the HAN profile of `net/tls.py` (`loop.start_tls`), so a refused handshake
  (a certificate of another PKI, no certificate) is seen and reported, not only logged by asyncio.
* `dial`: one outgoing TLS leg, to the EMT (WAN context, certificate pinned by the caller's check)
  or to a CLS device (HAN context, HKS 4/5).
* `Relay`: moves application bytes between the two legs in both directions, within the
  connection's bandwidth budget, and ends both legs (TLS close_notify) on the session limit, a
  close by either side or `close()`.

The rules (who may connect, limits, state) are in `smgw_emu.core.cls`; what is logged and reported
is decided by the caller (`smgw_emu.app.cls`) through callbacks.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass
from typing import Awaitable, Callable

from smgw_emu.core.cls import CHUNK_BYTES, TO_CLS, TO_EMT, ClsConnection
from smgw_emu.net.management import tls_error
from smgw_emu.net.timers import Cancellable, Timers
from smgw_emu.net.tlsserver import TlsServer

log = logging.getLogger("smgw_emu.cls")

#: How long the gateway waits for a peer's close_notify answer before it drops the TCP connection.
CLOSE_TIMEOUT_S = 5.0


class LegError(Exception):
    """A leg could not be opened; ``reason`` is connect-failed, tls-handshake-failed or peer-rejected."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class Leg:
    """One TLS connection of a relay: ``side`` is "emt" (WAN) or "cls" (HAN)."""

    side: str
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    peer_der: bytes | None
    peer: str

    def close(self) -> None:
        """TLS close_notify, then FIN (asyncio flushes what is buffered first)."""
        self.writer.close()

    async def wait_closed(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        try:
            await asyncio.wait_for(self.writer.wait_closed(), timeout)
        except asyncio.TimeoutError:
            self.writer.transport.abort()
        except (ConnectionError, ssl.SSLError, OSError):
            pass


async def dial(side: str, host: str, port: int, ssl_context: ssl.SSLContext, *, timeout: float,
               check: Callable[[bytes | None], str | None]) -> Leg:
    """Open TLS to ``host:port``; ``check`` judges the peer certificate (None = acceptable)."""
    what = "EMT" if side == "emt" else "CLS device"
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=ssl_context, ssl_handshake_timeout=timeout), timeout)
    except ssl.SSLError as exc:
        raise LegError("tls-handshake-failed", f"TLS handshake with the {what} at {host}:{port} failed: {tls_error(exc)}") from None
    except (OSError, asyncio.TimeoutError) as exc:
        if isinstance(exc, ConnectionResetError) and not exc.args:
            raise LegError("tls-handshake-failed", f"TLS handshake with the {what} at {host}:{port} failed: "
                                                   "it closed the connection during the handshake") from None
        detail = f"no TLS connection within {timeout:g} s" if isinstance(exc, asyncio.TimeoutError) else (str(exc) or type(exc).__name__)
        raise LegError("connect-failed", f"cannot connect to the {what} at {host}:{port}: {detail}") from None
    ssl_object = writer.get_extra_info("ssl_object")
    peer_der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
    problem = check(peer_der)
    if problem:
        writer.transport.abort()
        raise LegError("peer-rejected", f"the {what} at {host}:{port} is refused: {problem}")
    return Leg(side, reader, writer, peer_der, f"{host}:{port}")


class _StreamProtocol(asyncio.StreamReaderProtocol):
    def __init__(self) -> None:
        self.reader = asyncio.StreamReader()
        super().__init__(self.reader)


class HanListener(TlsServer):
    """TLS server for CLS devices on the HAN. ``on_leg`` gets every connection whose handshake
    succeeded; ``on_refused(reason, message, peer)`` hears of every one that failed."""

    def __init__(self, *, host: str, port: int, ssl_context: ssl.SSLContext, handshake_timeout: float,
                 on_leg: Callable[[Leg], Awaitable[None]], on_refused: Callable[[str, str, str], None]) -> None:
        super().__init__(host=host, port=port, ssl_context=ssl_context, handshake_timeout=handshake_timeout,
                         on_refused=on_refused)
        self._on_leg = on_leg

    def protocol(self) -> asyncio.Protocol:
        return _StreamProtocol()

    async def connected(self, tls: asyncio.BaseTransport, protocol: asyncio.Protocol, peer: str) -> None:
        assert isinstance(protocol, _StreamProtocol)
        # start_tls does not call connection_made; without it the reader has no transport
        # (no flow control towards the device) and the protocol would not know it runs over TLS
        protocol.connection_made(tls)
        writer = asyncio.StreamWriter(tls, protocol, protocol.reader, asyncio.get_running_loop())  # type: ignore[arg-type]
        reader = protocol.reader
        ssl_object = tls.get_extra_info("ssl_object")
        peer_der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        await self._on_leg(Leg("cls", reader, writer, peer_der, peer))


class Relay:
    """Relays application bytes between the EMT leg and the CLS leg of one connection."""

    def __init__(self, connection: ClsConnection, emt: Leg, cls: Leg, *, timers: Timers, policy: str,
                 on_limited: Callable[[ClsConnection, str], None], on_closed: Callable[[ClsConnection], None],
                 initial_to_emt: bytes = b"") -> None:
        self.connection = connection
        self.legs = {TO_EMT: (cls, emt), TO_CLS: (emt, cls)}  # direction -> (source, destination)
        self._emt, self._cls = emt, cls
        self._timers = timers
        self._policy = policy
        self._on_limited = on_limited
        self._on_closed = on_closed
        self._initial = initial_to_emt
        self._timer: Cancellable | None = None
        self._tasks: list[asyncio.Task] = []
        self._finishing: asyncio.Task | None = None
        self.closed = asyncio.Event()

    def _now(self) -> float:
        return self._timers.clock.monotonic()

    def start(self) -> None:
        deadline = self.connection.open(self._now())
        self._timer = self._timers.call_at(deadline, self._on_deadline)
        name = self.connection.connection_id
        self._tasks = [asyncio.create_task(self._pump(TO_EMT), name=f"cls-{name}-to-emt"),
                       asyncio.create_task(self._pump(TO_CLS), name=f"cls-{name}-to-cls")]

    def _on_deadline(self) -> None:
        reason = self.connection.due(self._now())
        if reason:
            self.close(reason)
        elif self.connection.is_open:  # a real-clock timer may fire a hair early
            self._timer = self._timers.call_at(self.connection.deadline, self._on_deadline)

    async def _pump(self, direction: str) -> None:
        source, destination = self.legs[direction]
        connection = self.connection
        budget = connection.budgets[direction]
        reason: str | None = None
        try:
            if direction == TO_EMT and self._initial:
                # bytes the CLS device sent right behind its SOCKS request: under "shape" they pass
                # even when they exceed the budget (they are at most one read of the request)
                data, self._initial = self._initial, b""
                reason = await self._forward(direction, data, destination, enforce=self._policy == "close")
            while reason is None:
                if self._policy == "shape":
                    allowance = budget.allowance(self._now())
                    if allowance <= 0:
                        if connection.note_limited(direction):
                            self._on_limited(connection, direction)
                        await self._timers.sleep(budget.wait_s(self._now()))
                        continue
                else:
                    allowance = CHUNK_BYTES
                try:
                    data = await source.reader.read(allowance)
                except (ConnectionError, ssl.SSLError, OSError):
                    reason = f"{source.side}-connection-lost"
                    break
                if not data:
                    reason = f"closed-by-{source.side}"
                    break
                reason = await self._forward(direction, data, destination)
        except asyncio.CancelledError:
            return
        self.close(reason)

    async def _forward(self, direction: str, data: bytes, destination: Leg, enforce: bool = True) -> str | None:
        """Charge the budget and send; a reason when the connection must end."""
        connection = self.connection
        if not connection.budgets[direction].spend(len(data), self._now()) and enforce:
            # only under policy "close": "shape" never reads more than the budget allows
            connection.note_limited(direction)
            self._on_limited(connection, direction)
            return "bandwidth-limit"
        connection.count(direction, len(data))
        try:
            destination.writer.write(data)
            await destination.writer.drain()
        except (ConnectionError, ssl.SSLError, OSError):
            return f"{destination.side}-connection-lost"
        return None

    def close(self, reason: str) -> None:
        """End the connection: both legs get close_notify; ``on_closed`` runs once both are down."""
        if not self.connection.close(reason, self._now()):
            return
        if self._timer:
            self._timer.cancel()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        self._finishing = asyncio.create_task(self._finish())

    async def _finish(self) -> None:
        for leg in (self._emt, self._cls):
            leg.close()
        await asyncio.gather(self._emt.wait_closed(), self._cls.wait_closed())
        try:
            self._on_closed(self.connection)
        finally:
            self.closed.set()

    async def wait_closed(self) -> None:
        await self.closed.wait()
