"""A reference consumer at the HAN interface: what PTB's TRuDI does, for labs and our tests.

It opens TLS with the HAN profile of `net/tls.py` to the gateway's consumer interface, presents
the consumer's own certificate or none (then it signs in with HTTP Basic), checks the gateway's
certificate chain against the SM-PKI root (and, if given, pins it), and reads
``GET /han/export`` or ``GET /han/log``. :func:`read_export` reads an AR 2418-6 document on its
own (XPath over the document, no code shared with the gateway's builder), so a test compares
what the gateway stored with what a consumer sees.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as _dt
import ssl
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Mapping
from urllib.parse import urlencode

import h11

from smgw_emu.core.xmlsafe import parse_xml
from smgw_emu.net.tls import PROFILES, certificate_fingerprint, client_context, client_context_without_identity

AR = "http://vde.de/AR_2418-6.xsd"
ESPI = "http://naesb.org/espi"
_NS = {"ar": AR, "espi": ESPI}


class GatewayNotPinned(Exception):
    """The gateway presented another certificate than the one the consumer expects."""


class Headers(dict):
    """Response headers; names compare without case (as HTTP says)."""

    def __init__(self, items=()) -> None:
        super().__init__((k.lower(), v) for k, v in items)

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.lower())

    def get(self, name: str, default=None):  # type: ignore[override]
        return super().get(name.lower(), default)


@dataclass(frozen=True)
class HanAnswer:
    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class ReadValue:
    time: _dt.datetime
    value: Decimal                     # espi:value * 10**scaler
    status_fnn: str | None
    status_ptb: int | None


@dataclass(frozen=True)
class ReadLogEntry:
    record: int | None
    time: _dt.datetime | None
    level: int | None
    outcome: int | None
    text: str
    extensions: str


@dataclass
class ExportView:
    """An AR 2418-6 document as a consumer reads it."""

    customer_id: str
    smgw_id: str
    usage_point_id: str
    tariff_name: str
    service_kind: int | None
    certificate_der: bytes
    lists: dict[str, list[ReadValue]] = field(default_factory=dict)       # meterReadingId -> values
    meters: dict[str, str] = field(default_factory=dict)                  # meterReadingId -> meterId
    log: list[ReadLogEntry] = field(default_factory=list)


def _time(text: str | None) -> _dt.datetime | None:
    return _dt.datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def _int(text: str | None) -> int | None:
    return int(text) if text is not None else None


def read_export(document: bytes) -> ExportView:
    """Read the parts of an AR 2418-6 document that TRuDI shows."""
    root = parse_xml(document, max_bytes=256 * 1024 * 1024)
    point = root.find("ar:UsagePoint", _NS)
    if point is None:
        raise ValueError("no UsagePoint in the document")

    def text(element, path: str) -> str | None:
        found = element.find(path, _NS)
        return found.text if found is not None else None

    certificate = text(point, "ar:Certificate/ar:certContent")
    view = ExportView(
        customer_id=text(point, "ar:Customer/ar:customerId") or "", smgw_id=text(point, "ar:SMGW/ar:smgwId") or "",
        usage_point_id=text(point, "ar:usagePointId") or "", tariff_name=text(point, "ar:tariffName") or "",
        service_kind=_int(text(point, "espi:ServiceCategory/espi:kind")),
        certificate_der=bytes.fromhex(certificate) if certificate else b"",
    )
    for entry in point.findall("ar:LogEntry", _NS):
        view.log.append(ReadLogEntry(
            _int(text(entry, "ar:recordNumber")), _time(text(entry, "ar:LogEvent/ar:timestamp")),
            _int(text(entry, "ar:LogEvent/ar:level")), _int(text(entry, "ar:LogEvent/ar:outcome")),
            text(entry, "ar:LogEvent/ar:text") or "", text(entry, "ar:LogEvent/ar:messageExtensions") or ""))
    for reading in point.findall("ar:MeterReading", _NS):
        name = text(reading, "ar:meterReadingId") or ""
        scaler = int(text(reading, "ar:ReadingType/ar:scaler") or 0)
        view.meters[name] = text(reading, "ar:Meter/ar:meterId") or ""
        values = view.lists.setdefault(name, [])
        for item in reading.iterfind("ar:IntervalBlock/ar:IntervalReading", _NS):
            values.append(ReadValue(
                _time(text(item, "ar:timePeriod/ar:start")),  # type: ignore[arg-type]
                Decimal(text(item, "espi:value") or "0").scaleb(scaler), text(item, "ar:statusFNN"),
                _int(text(item, "ar:statusPTB"))))
    return view


class HanConsumerClient:
    """One consumer's HTTPS client at the HAN interface. It keeps one TLS connection (HTTP/1.1
    keep-alive, h11) and opens a new one when the gateway has closed it. The gateway's
    certificate is checked (chain, and the pin if given) before any request, so a password never
    goes to a peer that is not the expected gateway."""

    def __init__(self, host: str, port: int, *, cafile: Path, user: str | None = None, password: str | None = None,
                 certificate: tuple[Path, Path] | None = None, gateway_fingerprint: str | None = None,
                 ssl_context: ssl.SSLContext | None = None, timeout: float = 10.0) -> None:
        self.host, self.port = host, port
        if ssl_context is None:
            profile = PROFILES["han"]
            ssl_context = client_context(profile, chain=certificate[0], key=certificate[1], cafile=cafile) \
                if certificate else client_context_without_identity(profile, cafile=cafile)
        self._ssl = ssl_context
        self._authorization = basic_authorization(user, password or "") if user is not None else None
        self._pin = gateway_fingerprint
        self._timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._conn: h11.Connection | None = None
        self.connections = 0

    async def __aenter__(self) -> "HanConsumerClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        writer, self._writer, self._reader, self._conn = self._writer, None, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2)

    @property
    def ssl_object(self) -> ssl.SSLObject | None:
        return self._writer.get_extra_info("ssl_object") if self._writer is not None else None

    async def _connect(self) -> None:
        await self.close()
        self._reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, ssl=self._ssl, ssl_handshake_timeout=self._timeout),
            self._timeout)
        der = self.ssl_object.getpeercert(binary_form=True) if self.ssl_object else None
        if self._pin is not None and (der is None or certificate_fingerprint(der) != self._pin):
            await self.close()
            raise GatewayNotPinned("the gateway's HAN certificate is not the expected one")
        self._conn = h11.Connection(our_role=h11.CLIENT, max_incomplete_event_size=64 * 1024 * 1024)
        self.connections += 1

    def _usable(self) -> bool:
        return (self._conn is not None and self._writer is not None and not self._writer.is_closing()
                and self._reader is not None and not self._reader.at_eof() and self._conn.our_state is h11.IDLE)

    async def request(self, method: str, path: str, params: Mapping[str, str] | list[tuple[str, str]] | None = None,
                      *, headers: Mapping[str, str] | None = None, body: bytes = b"",
                      authorization: str | None = None) -> HanAnswer:
        target = path + ("?" + urlencode(params) if params else "")
        fields = {"Host": f"{self.host}:{self.port}", "Content-Length": str(len(body))}
        if authorization or self._authorization:
            fields["Authorization"] = authorization or self._authorization  # type: ignore[assignment]
        fields.update(headers or {})
        for attempt in (1, 2):  # a kept connection the gateway has closed meanwhile: once more on a new one
            if not self._usable():
                await self._connect()
            try:
                return await asyncio.wait_for(self._exchange(method, target, fields, body), self._timeout)
            except (ConnectionError, EOFError, h11.RemoteProtocolError, ssl.SSLError):
                await self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _exchange(self, method: str, target: str, fields: Mapping[str, str], body: bytes) -> HanAnswer:
        assert self._conn is not None and self._writer is not None and self._reader is not None
        data = self._conn.send(h11.Request(method=method, target=target, headers=list(fields.items())))
        if body:
            data += self._conn.send(h11.Data(data=body))
        self._writer.write(data + self._conn.send(h11.EndOfMessage()))
        await self._writer.drain()
        status, headers, chunks = 0, Headers(), []
        while True:
            event = self._conn.next_event()
            if event is h11.NEED_DATA:
                chunk = await self._reader.read(65536)
                if not chunk and not status:
                    raise EOFError("the gateway closed the connection")
                self._conn.receive_data(chunk)
            elif isinstance(event, h11.Response):
                status = event.status_code
                headers = Headers((k.decode(), v.decode()) for k, v in event.headers)
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                break
        if self._conn.our_state is h11.DONE and self._conn.their_state is h11.DONE:
            self._conn.start_next_cycle()
        else:
            await self.close()
        return HanAnswer(status, headers, b"".join(chunks))

    async def get(self, path: str, params: Mapping[str, str] | list[tuple[str, str]] | None = None, *,
                  headers: Mapping[str, str] | None = None) -> HanAnswer:
        return await self.request("GET", path, params, headers=headers)

    async def export(self, **params: str) -> ExportView:
        answer = await self.get("/han/export", params)
        if answer.status != 200:
            raise RuntimeError(f"GET /han/export: {answer.status} {answer.body[:300]!r}")
        return read_export(answer.body)


def basic_authorization(user: str, password: str) -> str:
    """The value of an ``Authorization: Basic`` header (RFC 7617, UTF-8)."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode("utf-8")).decode("ascii")
