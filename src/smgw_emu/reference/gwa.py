"""The reference Gateway-Administrator (GWA): the other side of the WAN, for labs and our tests.

It does what a GWA system does to a gateway, over real sockets and real TLS:
* signs and sends wake-up packets (UDP);
* accepts the gateway's MANAGEMENT-channel TLS connection and sends HTTP/1.1 requests over it
  (the gateway is the TLS client but the HTTP server; h11 drives the client side on the accepted
  stream, since aiohttp's client cannot use an accepted connection);
* runs the service endpoint: ADMIN-SERVICE downloads (GET /admin-service/<name>) and INFO-REPORT
  reception (POST /info-report), as an aiohttp HTTPS server with mutual TLS.
Everything it sees goes into a `Transcript` with catalogue step ids.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
import os
import socket
import ssl
from dataclasses import dataclass, field
from typing import Callable

import h11
from aiohttp import web
from cryptography import x509
from multidict import CIMultiDict

from smgw_emu.core.events import Event, decode_event
from smgw_emu.core.timesync import time_document
from smgw_emu.core.wakeup import build_wakeup
from smgw_emu.net.tls import PROFILES, TlsProfile, server_context
from smgw_emu.pki import PkiDir
from smgw_emu.reference.transcript import Transcript

log = logging.getLogger("smgw_emu.reference.gwa")

GWA, SMGW = "GWA", "SMGW"


@dataclass
class GwaResponse:
    status: int
    headers: CIMultiDict[str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass
class ReceivedReport:
    body: bytes
    event: Event | None
    peer_subject: str
    at: _dt.datetime = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc))


class ChannelClosed(Exception):
    """The gateway closed the MANAGEMENT channel."""


class GwaChannel:
    """One MANAGEMENT channel as the GWA sees it: an accepted TLS stream, HTTP client role."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, transcript: Transcript,
                 max_response_bytes: int = 64 * 1024 * 1024) -> None:
        self._reader, self._writer = reader, writer
        self._transcript = transcript
        self._conn = h11.Connection(our_role=h11.CLIENT, max_incomplete_event_size=max_response_bytes)
        self._lock = asyncio.Lock()
        self.closed = False
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        self.peer_certificate = x509.load_der_x509_certificate(der) if der else None
        self.peer_id = self.peer_certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value if der else ""
        self.tls_version = ssl_object.version() if ssl_object else ""
        self.cipher = ssl_object.cipher()[0] if ssl_object else ""
        self._closed_event = asyncio.Event()

    async def request(self, method: str, path: str, body: bytes = b"", *, headers: dict[str, str] | None = None,
                      step: str | None = None, timeout: float = 30.0) -> GwaResponse:
        """Send one request and read its response. `step` names the transcript step."""
        async with self._lock:
            if self.closed:
                raise ChannelClosed("the MANAGEMENT channel is closed")
            hdrs = {"Host": "smgw", "User-Agent": "smgw-emu-reference-gwa"}
            if body or method in ("POST", "PUT"):
                hdrs["Content-Length"] = str(len(body))
                hdrs.setdefault("Content-Type", "application/xml")
            hdrs.update(headers or {})
            self._transcript.add(step or f"{method.lower()} {path}", GWA, SMGW, "management", f"{method} {path}")
            data = self._conn.send(h11.Request(method=method, target=path, headers=list(hdrs.items())))
            if body:
                data += self._conn.send(h11.Data(data=body))
            data += self._conn.send(h11.EndOfMessage())
            try:
                self._writer.write(data)
                await self._writer.drain()
                response = await asyncio.wait_for(self._read_response(), timeout)
            except (ConnectionError, ssl.SSLError, h11.RemoteProtocolError) as exc:
                self._mark_closed(f"closed by the gateway: {exc}")
                raise ChannelClosed(str(exc)) from None
            self._transcript.add(f"response-{response.status}", SMGW, GWA, "management", f"{method} {path}")
            if self._conn.our_state is h11.MUST_CLOSE or self._conn.their_state is h11.MUST_CLOSE:
                self._mark_closed("connection: close")
            else:
                self._conn.start_next_cycle()
            return response

    async def _read_response(self) -> GwaResponse:
        status, headers, body = 0, CIMultiDict(), bytearray()
        while True:
            event = self._conn.next_event()
            if event is h11.NEED_DATA:
                chunk = await self._reader.read(65536)
                if not chunk:
                    self._mark_closed("closed by the gateway")
                    raise ChannelClosed("the gateway closed the MANAGEMENT channel")
                self._conn.receive_data(chunk)
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
                headers = CIMultiDict((k.decode(), v.decode()) for k, v in event.headers)
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return GwaResponse(status, headers, bytes(body))
            elif isinstance(event, h11.ConnectionClosed):
                self._mark_closed("closed by the gateway")
                raise ChannelClosed("the gateway closed the MANAGEMENT channel")

    async def wait_closed(self, timeout: float = 10.0) -> None:
        """Wait until the gateway closes the channel (reads and discards until EOF)."""
        async def drain() -> None:
            while not self.closed:
                try:
                    chunk = await self._reader.read(65536)
                except (ConnectionError, ssl.SSLError):
                    chunk = b""
                if not chunk:
                    self._mark_closed("closed by the gateway")
        await asyncio.wait_for(drain(), timeout)

    def _mark_closed(self, detail: str) -> None:
        if not self.closed:
            self.closed = True
            self._transcript.add("management-channel-closed", SMGW, GWA, "management", detail)
            self._closed_event.set()
            self._writer.close()

    async def close(self) -> None:
        """Tear the channel down from the GWA's side (5.3)."""
        if self.closed:
            return
        self.closed = True
        self._transcript.add("management-channel-closed", GWA, SMGW, "management", "closed by the GWA")
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass


class ReferenceGwa:
    def __init__(
        self, pki: PkiDir, *, host: str = "127.0.0.1", management_port: int = 0, service_port: int = 0,
        tls_profile: TlsProfile | None = None, entity: str = "gwa",
    ) -> None:
        self.pki = pki
        self.host = host
        self._management_port = management_port
        self._service_port = service_port
        self.entity = entity
        profile = tls_profile or PROFILES["wan"]
        self.tls_context = server_context(
            profile, chain=pki.chain_path(f"{entity}-tls"), key=pki.key_path(f"{entity}-tls"), cafile=pki.root_ca
        )
        self.signature_key = pki.key(f"{entity}-sig")
        self.signature_cert = pki.cert(f"{entity}-sig")
        self.transcript = Transcript()
        self.downloads: dict[str, bytes] = {}
        self.reports: list[ReceivedReport] = []
        self.report_status = 200  # what the INFO-REPORT endpoint answers; set to 503 to make the gateway retry
        # 5.14: answers for the next reports, taken in order before report_status: a status, or
        # "drop" (take the event, then close the connection without answering: a lost acknowledgement)
        self.report_answers: list[int | str] = []
        self.record_acknowledgements = False  # also put the GWA's answer to each report in the transcript
        self.duplicates: list[Event] = []     # reports dropped as duplicates (same gateway, id and body)
        self._acknowledged: dict[tuple[str, int], bytes] = {}
        # 5.13: the time service at <admin_service_url>time; its clock, an answer delay, a body override
        self.time_source: Callable[[], _dt.datetime] = lambda: _dt.datetime.now(_dt.timezone.utc)
        self.time_delay = 0.0
        self.time_body: bytes | None = None
        self.admin_service_status: int | None = None  # set (e.g. 503) to make ADMIN-SERVICE refuse every GET
        self._unclaimed: list[GwaChannel] = []  # accepted, not yet handed to a waiter
        self._channel_arrived = asyncio.Condition()
        self.channels: list[GwaChannel] = []
        self._server: asyncio.Server | None = None
        self._closed_servers: list[asyncio.Server] = []
        self._runner: web.AppRunner | None = None
        self._site_port = 0
        self._report_waiters: list[asyncio.Future] = []
        self.rejected_handshakes = 0

    # -- life cycle --------------------------------------------------------------------------
    async def start(self) -> "ReferenceGwa":
        await self.listen_management()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/admin-service/time", self._time_service)  # before the catch-all below
        app.router.add_get("/admin-service/{name:.+}", self._admin_service)
        app.router.add_post("/info-report", self._info_report)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._service_port, ssl_context=self.tls_context)
        await site.start()
        self._site_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def listen_management(self) -> None:
        """Accept MANAGEMENT channels (again: on the port of the first start, so that a gateway
        personalised with it reaches this GWA once it is back)."""
        if self._server is not None:
            return
        self._server = await asyncio.start_server(
            self._accept_management, self.host, self._management_port, ssl=self.tls_context,
            ssl_handshake_timeout=10,
        )
        self._management_port = self._server.sockets[0].getsockname()[1]

    async def stop_listening_management(self) -> None:
        """Refuse MANAGEMENT connections (the GWA is unreachable) until `listen_management()`;
        the ADMIN-SERVICE and INFO-REPORT endpoint stays up. Open channels stay open."""
        if self._server is not None:
            server, self._server = self._server, None
            server.close()  # the listening socket closes now; wait_closed() would wait for open channels
            self._closed_servers.append(server)

    async def stop(self) -> None:
        for channel in self.channels:
            if not channel.closed:
                await channel.close()
        await self.stop_listening_management()
        for server in self._closed_servers:
            await server.wait_closed()
        self._closed_servers.clear()
        if self._runner:
            await self._runner.cleanup()

    async def __aenter__(self) -> "ReferenceGwa":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    @property
    def management_port(self) -> int:
        assert self._management_port, "the GWA has not listened for MANAGEMENT channels yet"
        return self._management_port

    @property
    def service_port(self) -> int:
        return self._site_port

    @property
    def admin_service_url(self) -> str:
        return f"https://{self.host}:{self.service_port}/admin-service/"

    @property
    def info_report_url(self) -> str:
        return f"https://{self.host}:{self.service_port}/info-report"

    # -- wake-up (5.1) -----------------------------------------------------------------------
    def build_wakeup(self, gateway_id: str, *, created_at: _dt.datetime | None = None, nonce: bytes | None = None) -> bytes:
        return build_wakeup(
            recipient_id=gateway_id, signer_key=self.signature_key, signer_cert=self.signature_cert,
            created_at=created_at or _dt.datetime.now(_dt.timezone.utc), nonce=nonce,
        )

    def send_wakeup(self, gateway_addr: tuple[str, int], gateway_id: str, *, packet: bytes | None = None,
                    created_at: _dt.datetime | None = None, step: str = "wakeup") -> bytes:
        packet = packet if packet is not None else self.build_wakeup(gateway_id, created_at=created_at)
        family = socket.AF_INET6 if ":" in gateway_addr[0] else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.sendto(packet, gateway_addr)
        self.transcript.add(step, GWA, SMGW, "wakeup", f"{len(packet)} bytes to {gateway_addr[0]}:{gateway_addr[1]}")
        return packet

    async def wake(self, gateway_addr: tuple[str, int], gateway_id: str, *, timeout: float = 10.0,
                   match_id: bool = False) -> GwaChannel:
        """Send a wake-up and wait for the gateway's MANAGEMENT channel (with `match_id`, the
        channel whose certificate names `gateway_id`: for several gateways behind one GWA)."""
        self.send_wakeup(gateway_addr, gateway_id)
        return await self.wait_channel(timeout, gateway_id=gateway_id if match_id else None)

    # -- MANAGEMENT channel (5.2, 5.3) -------------------------------------------------------
    async def _accept_management(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        channel = GwaChannel(reader, writer, self.transcript)
        self.transcript.add("management-tls-connect", SMGW, GWA, "management",
                            f"{channel.peer_id} {channel.tls_version} {channel.cipher}")
        self.channels.append(channel)
        async with self._channel_arrived:
            self._unclaimed.append(channel)
            self._channel_arrived.notify_all()

    async def wait_channel(self, timeout: float = 10.0, *, gateway_id: str | None = None) -> GwaChannel:
        """The next MANAGEMENT channel (from `gateway_id`, when given: its TLS certificate's CN)."""
        def claim() -> GwaChannel | None:
            for channel in self._unclaimed:
                if gateway_id is None or channel.peer_id == gateway_id:
                    self._unclaimed.remove(channel)
                    return channel
            return None

        async def wait() -> GwaChannel:
            async with self._channel_arrived:
                while (channel := claim()) is None:
                    await self._channel_arrived.wait()
                return channel

        return await asyncio.wait_for(wait(), timeout)

    def pending_channels(self) -> int:
        return len(self._unclaimed)

    # -- service endpoint: ADMIN-SERVICE (5.4/5.5) and INFO-REPORT (5.6/5.7, 5.14) -----------
    def _peer_subject(self, request: web.Request) -> str:
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        if not der:
            return ""
        cert = x509.load_der_x509_certificate(der)
        return cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value

    async def _admin_service(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        wanted = request.headers.get("Range", "")
        shown = f" {wanted}" if wanted else ""
        self.transcript.add("admin-service-get", SMGW, GWA, "admin-service", f"GET {name}{shown} by {self._peer_subject(request)}")
        if self.admin_service_status is not None:
            self.transcript.add(f"admin-service-response-{self.admin_service_status}", GWA, SMGW, "admin-service", name)
            return web.Response(status=self.admin_service_status)
        if name not in self.downloads:
            self.transcript.add("admin-service-response-404", GWA, SMGW, "admin-service", name)
            return web.Response(status=404)
        data = self.downloads[name]
        if wanted:  # one range, RFC 9110 14.2: bytes=a-b or bytes=a- (what the gateway sends)
            span = _byte_range(wanted, len(data))
            if span is None:
                self.transcript.add("admin-service-response-416", GWA, SMGW, "admin-service", f"{name}{shown}")
                return web.Response(status=416, headers={"Content-Range": f"bytes */{len(data)}"})
            start, end = span
            self.transcript.add("admin-service-response-206", GWA, SMGW, "admin-service", f"{name} bytes {start}-{end}/{len(data)}")
            return web.Response(status=206, body=data[start:end + 1], content_type="application/octet-stream",
                                headers={"Content-Range": f"bytes {start}-{end}/{len(data)}"})
        self.transcript.add("admin-service-response-200", GWA, SMGW, "admin-service", name)
        return web.Response(body=data, content_type="application/octet-stream")

    async def _time_service(self, request: web.Request) -> web.Response:
        """5.13: the GWA's time (TLS, mutual authentication, like every ADMIN-SERVICE request)."""
        self.transcript.add("get-time", SMGW, GWA, "admin-service", f"GET time by {self._peer_subject(request)}")
        if self.time_delay:
            await asyncio.sleep(self.time_delay)
        body = self.time_body if self.time_body is not None else time_document(self.time_source())
        self.transcript.add("time-response", GWA, SMGW, "admin-service", body.decode("utf-8", "replace")[:120])
        return web.Response(body=body, content_type="application/xml")

    async def _info_report(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            event = decode_event(body)
        except Exception:  # a report that is no event document is still recorded
            event = None
        answer = self.report_answers.pop(0) if self.report_answers else self.report_status
        step = f"event-{event.type}" if event else "info-report"
        self.transcript.add(step, SMGW, GWA, "info-report", f"id={event.id if event else '?'} status={answer}")
        # De-duplication by id (5.14): a retry of a report already taken is byte-identical; the same
        # id with another body is a new report (e.g. a gateway whose state was reset).
        key = (event.gateway, event.id) if event is not None and event.id is not None else None
        duplicate = key is not None and self._acknowledged.get(key) == body
        taken = answer == "drop" or (isinstance(answer, int) and 200 <= answer < 300)
        if taken and duplicate:
            self.duplicates.append(event)
        elif taken:
            if key is not None:
                self._acknowledged[key] = body
            self.reports.append(ReceivedReport(body, event, self._peer_subject(request)))
            for waiter in list(self._report_waiters):
                if not waiter.done():
                    waiter.set_result(None)
        if answer == "drop":
            self._ack_step("report-lost", "event taken, connection closed without an answer")
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=200)  # never reaches the gateway
        if taken:
            self._ack_step("report-duplicate-acknowledged" if duplicate else "report-acknowledged",
                           f"{answer}{' (duplicate dropped)' if duplicate else ''}")
        else:
            self._ack_step(f"report-refused-{answer}", str(answer))
        return web.Response(status=int(answer))

    def _ack_step(self, step: str, detail: str) -> None:
        if self.record_acknowledgements:
            self.transcript.add(step, GWA, SMGW, "info-report", detail)

    def events(self, event_type: str | None = None) -> list[Event]:
        return [r.event for r in self.reports if r.event and (event_type is None or r.event.type == event_type)]

    async def wait_event(self, event_type: str, *, count: int = 1, timeout: float = 10.0) -> list[Event]:
        """Wait until at least `count` events of `event_type` were received and acknowledged."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.events(event_type)) < count:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise asyncio.TimeoutError(f"no {count} event(s) {event_type!r} within {timeout}s; got {[e.type for e in self.events()]}")
            waiter = loop.create_future()
            self._report_waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, remaining)
            except asyncio.TimeoutError:
                pass
            finally:
                self._report_waiters.remove(waiter)
        return self.events(event_type)


def _byte_range(header: str, length: int) -> tuple[int, int] | None:
    """'bytes=a-b' / 'bytes=a-' -> (a, min(b, length - 1)); None if unsatisfiable or not one range."""
    unit, _, spec = header.partition("=")
    first, dash, last = spec.strip().partition("-")
    if unit.strip() != "bytes" or not dash or not first.isdigit() or (last and not last.isdigit()):
        return None
    start = int(first)
    end = min(int(last), length - 1) if last else length - 1
    return (start, end) if start < length and start <= end else None


def random_nonce() -> bytes:
    return os.urandom(16)
