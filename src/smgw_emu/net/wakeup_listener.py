"""Receives wake-up packets on UDP (and optionally TCP) and hands them to the WakeUpVerifier.

The listener never sends anything: no reply, no error, no ICMP of its own; the caller decides
what an accepted packet leads to (the gateway opens the MANAGEMENT channel to the GWA address it
has configured, never to the packet's source).

Flood protection: the cheap checks run on every packet; only packets that pass them are charged
to a per-source rate limiter before the expensive signature check. UDP sources are keyed by
(host, port) and TCP sources by host (TCP source addresses cannot be spoofed, UDP ones can; the
limiter's overall budget bounds CPU use however many sources appear).

TCP framing [ours]: one packet per connection. The client sends the packet and half-closes (or
closes); the gateway reads until end of stream, `max_size` + 1 bytes, or `tcp_read_timeout`,
whichever comes first, checks what it got, and closes without writing.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import inspect
import logging
import socket
import time
from dataclasses import dataclass
from typing import Any, Callable, Hashable

from smgw_emu.core.ratelimit import PerSourceLimiter
from smgw_emu.core.wakeup import RejectReason, WakeUpDecision, WakeUpVerifier

log = logging.getLogger("smgw_emu.wakeup")

Address = tuple[str, int]
#: on_accept(decision, addr); may return an awaitable, which is run as a task.
AcceptCallback = Callable[[WakeUpDecision, Address], Any]
#: on_reject(reason, addr, details); may return an awaitable, which is run as a task.
RejectCallback = Callable[[str, Address, dict], Any]


@dataclass(frozen=True)
class RateLimits:
    """[ours] Budgets for signature checks (brainpoolP256r1 verify costs about 0.3 ms)."""

    per_source_rate: float = 2.0  # per second
    per_source_burst: float = 10.0
    max_sources: int = 1024
    overall_rate: float = 200.0
    overall_burst: float = 400.0

    def limiter(self) -> PerSourceLimiter:
        return PerSourceLimiter(
            self.per_source_rate, self.per_source_burst, max_sources=self.max_sources,
            overall_rate=self.overall_rate, overall_burst=self.overall_burst,
        )


def _utc_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


class WakeUpListener:
    """Owns the sockets, the rate limiter and the counters; the verifier owns the checks."""

    def __init__(
        self,
        verifier: WakeUpVerifier,
        *,
        on_accept: AcceptCallback,
        on_reject: RejectCallback,
        host: str = "127.0.0.1",
        port: int = 0,
        tcp_port: int | None = None,
        rate_limits: RateLimits = RateLimits(),
        clock: Callable[[], _dt.datetime] = _utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        receive_buffer: int | None = 1 << 20,
        tcp_read_timeout: float = 5.0,
        max_tcp_connections: int = 32,
    ):
        self.verifier = verifier
        self.on_accept = on_accept
        self.on_reject = on_reject
        self.host = host
        self.port = port
        self.tcp_port = tcp_port
        self.limiter = rate_limits.limiter()
        self.counters: dict[str, int] = {}
        self._clock = clock
        self._monotonic = monotonic
        self._receive_buffer = receive_buffer
        self._tcp_read_timeout = tcp_read_timeout
        self._max_tcp_connections = max_tcp_connections
        self._tcp_connections = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._tcp_server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    # --- lifecycle ---

    async def start(self) -> Address:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _WakeUpDatagramProtocol(self), local_addr=(self.host, self.port)
        )
        if self._receive_buffer:
            try:  # a larger buffer rides out bursts; the kernel caps it at net.core.rmem_max
                self._transport.get_extra_info("socket").setsockopt(
                    socket.SOL_SOCKET, socket.SO_RCVBUF, self._receive_buffer
                )
            except OSError:
                pass
        if self.tcp_port is not None:
            self._tcp_server = await asyncio.start_server(self._serve_tcp, self.host, self.tcp_port)
        log.info("wake-up listener on udp %s:%d%s", *self.address,
                 f", tcp {self.tcp_address[0]}:{self.tcp_address[1]}" if self.tcp_address else "")
        return self.address

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if self._tcp_server is not None:
            self._tcp_server.close()
            await self._tcp_server.wait_closed()
            self._tcp_server = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> "WakeUpListener":
        await self.start()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    @property
    def address(self) -> Address:
        """The bound UDP (host, port); useful with port 0."""
        if self._transport is None:
            raise RuntimeError("listener is not started")
        return tuple(self._transport.get_extra_info("sockname")[:2])

    @property
    def tcp_address(self) -> Address | None:
        if self._tcp_server is None:
            return None
        return tuple(self._tcp_server.sockets[0].getsockname()[:2])

    # --- processing ---

    def process(self, data: bytes, addr: Address, source: Hashable | None = None) -> WakeUpDecision:
        """Check one packet from `addr`, count it, log it, and call back. Never raises."""
        source = addr if source is None else source
        decision = self.verifier.precheck(data)
        if not isinstance(decision, WakeUpDecision):
            if self.limiter.allow(source, self._monotonic()):
                decision = self.verifier.finish(decision, self._clock())
            else:
                decision = WakeUpDecision.reject(RejectReason.RATE_LIMITED, content=decision.packet.data)
        if decision.accepted:
            self._count("accepted")
            content = decision.content
            log.info("wake-up accepted from %s:%d: recipient=%r key_id=%s created_at=%s nonce=%s",
                     addr[0], addr[1], content.recipient_id, content.sender_key_id.hex(),
                     content.created_at.isoformat(), content.nonce.hex())
            self._call(self.on_accept, decision, addr)
        else:
            reason = str(decision.reason)
            self._count(reason)
            details = _details(decision, data)
            # %r keeps attacker-chosen text on one line
            log.warning("wake-up rejected from %s:%d: reason=%s size=%d detail=%r",
                        addr[0], addr[1], reason, len(data), decision.detail)
            self._call(self.on_reject, reason, addr, details)
        return decision

    def _count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1

    def _call(self, callback: Callable, *args) -> None:
        try:
            result = callback(*args)
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self._tasks.add(task)
                task.add_done_callback(self._task_done)
        except Exception:
            log.exception("wake-up callback %r failed", callback)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("wake-up callback task failed", exc_info=task.exception())

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        addr: Address = (peer[0], peer[1]) if peer else ("?", 0)
        try:
            if self._tcp_connections >= self._max_tcp_connections:
                log.warning("wake-up tcp connection from %s:%d dropped: too many connections", *addr)
                return
            self._tcp_connections += 1
            try:
                data = await self._read_tcp_packet(reader)
            finally:
                self._tcp_connections -= 1
            self.process(data, addr, source=addr[0])
        finally:
            writer.close()  # nothing is ever written
            try:
                await writer.wait_closed()
            except OSError:
                pass

    async def _read_tcp_packet(self, reader: asyncio.StreamReader) -> bytes:
        limit = self.verifier.max_size + 1  # one byte more is enough to say "too large"
        chunks: list[bytes] = []
        received = 0
        deadline = asyncio.get_running_loop().time() + self._tcp_read_timeout
        try:
            async with asyncio.timeout_at(deadline):
                while received < limit:
                    chunk = await reader.read(limit - received)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    received += len(chunk)
        except (TimeoutError, ConnectionError):
            pass  # check what arrived
        return b"".join(chunks)


class _WakeUpDatagramProtocol(asyncio.DatagramProtocol):
    def __init__(self, listener: WakeUpListener):
        self.listener = listener

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.listener.process(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        log.debug("wake-up socket error: %s", exc)


def _details(decision: WakeUpDecision, data: bytes) -> dict:
    details: dict = {"detail": decision.detail, "size": len(data)}
    content = decision.content
    if content is not None:
        details |= {
            "version": content.version,
            "recipient_id": content.recipient_id,
            "sender_key_id": content.sender_key_id.hex(),
            "created_at": content.created_at.isoformat(),
            "nonce": content.nonce.hex(),
        }
    return details
