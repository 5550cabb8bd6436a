"""The reference meter: the other side of the LMN, for labs and our tests.

A meter as the gateway meets it on the emulated LMN (docs/decisions.md "The LMN link and the
meter side of pairing"): a TLS server on loopback with its SM-PKI TLS certificate (`meter-tls`),
mutual authentication (the gateway must present a certificate of the same SM-PKI), the LMN TLS
profile of `net/tls.py`. It speaks SML (`core/sml.py`): it answers identity queries
(GetProcParameter), key changes (SetProcParameter, crypto reset) and readings (GetList), each
file authenticated as `core/lmn.py` says, with its current key, or for a key change also with
its initial key (the manufacturer's key: a crypto reset without pairing, fig. 32).

It holds its identity (meter id, certificate), its initial and current key, whom it is paired
with, and its register values; `readings` keeps every reading it sent (the values of each GetList
answer, so a test can compare what the gateway delivers with them). Everything it sees goes into a `Transcript` on channel "lmn",
with the catalogue's step ids:

    lmn-tls-connect            SMGW -> METER   a TLS connection was established
    sml-get-meter-identity     SMGW -> METER   GetProcParameter of the identity tree
    sml-meter-identity         METER -> SMGW   its answer
    sml-set-new-key            SMGW -> METER   SetProcParameter of the key material
    sml-get-list               SMGW -> METER   GetList (a reading)
    sml-list                   METER -> SMGW   its answer
    sml-attention-ok / sml-attention-error  METER -> SMGW
    sml-malformed              SMGW -> METER   a file it could not read (it closes the connection)
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from dataclasses import dataclass
from decimal import Decimal

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from smgw_emu.core import lmn, sml
from smgw_emu.net.tls import PROFILES, certificate_fingerprint, server_context
from smgw_emu.pki import PkiDir
from smgw_emu.reference.transcript import Transcript

log = logging.getLogger("smgw_emu.reference.meter")

METER, SMGW = "METER", "SMGW"
CHANNEL = "lmn"


@dataclass
class Register:
    value: int          # raw, before the scaler
    scaler: int = -1    # 10**scaler: tenths of Wh
    unit: int = 30      # Wh


@dataclass(frozen=True)
class SentReading:
    """One GetList answer: obis (hex) -> value (raw * 10**scaler, in the register's unit)."""

    values: dict[str, Decimal]
    status: int


class ReferenceMeter:
    def __init__(
        self, pki: PkiDir, *, initial_key: bytes, current_key: bytes | None = None, meter_id: str | None = None,
        certificate: str = "meter-tls", host: str = "127.0.0.1", port: int = 0,
        manufacturer: str = "XXX", firmware: str = "1.0.0", status: int = 0x00000104,
    ) -> None:
        self.pki = pki
        self.meter_id = meter_id or pki.identities.meter
        self.initial_key = initial_key
        self.current_key = current_key or initial_key
        self.identity = lmn.MeterIdentity(lmn.server_id(self.meter_id), manufacturer, firmware)
        self.status = status
        self.registers: dict[str, Register] = {
            "0100010800ff": Register(12_345_678), "0100020800ff": Register(0),
        }
        self.host, self._port = host, port
        self.tls_context = server_context(PROFILES["lmn"], chain=pki.chain_path(certificate),
                                          key=pki.key_path(certificate), cafile=pki.root_ca)
        self.certificate_der = pki.cert(certificate).public_bytes(serialization.Encoding.DER)
        self.transcript = Transcript()
        self.paired_with: str | None = None   # SHA-256 of the gateway certificate it paired with
        self.corrupt_answers = False           # send answers with a damaged CRC (bad input for the gateway)
        self.answering = asyncio.Event()       # clear it to hold answers (a slow meter): `hold()` / `release()`
        self.answering.set()
        self.files_received = 0
        self.readings: list[SentReading] = []
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()

    # -- life cycle ----------------------------------------------------------------------------
    async def start(self) -> "ReferenceMeter":
        self._server = await asyncio.start_server(self._serve, self.host, self._port, ssl=self.tls_context,
                                                  ssl_handshake_timeout=10)
        return self

    async def stop(self) -> None:
        self.answering.set()
        if self._server:
            self._server.close()
            for writer in list(self._connections):
                writer.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> "ReferenceMeter":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    @property
    def address(self) -> str:
        """The meter's place on the LMN, as the meter profile's lmn_address names it."""
        return f"{self.host}:{self.port}"

    def hold(self) -> None:
        self.answering.clear()

    def release(self) -> None:
        self.answering.set()

    # -- one connection ------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ssl_object = writer.get_extra_info("ssl_object")
        peer = ssl_object.getpeercert(binary_form=True) if ssl_object else b""
        subject = x509.load_der_x509_certificate(peer).subject.rfc4514_string() if peer else "?"
        self.transcript.add("lmn-tls-connect", SMGW, METER, CHANNEL, f"{subject} {ssl_object.version()} {ssl_object.cipher()[0]}")
        self._connections.add(writer)
        frames = sml.FrameBuffer()
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                try:
                    payloads = frames.feed(chunk)
                except sml.SmlError as exc:
                    self.transcript.add("sml-malformed", SMGW, METER, CHANNEL, str(exc))
                    return
                for payload in payloads:
                    answer = self._answer(payload, peer)
                    if answer is None:
                        return
                    await self.answering.wait()
                    data, step, detail = answer
                    framed = sml.frame(data)
                    if self.corrupt_answers:
                        framed = framed[:-1] + bytes([framed[-1] ^ 0xFF])
                    writer.write(framed)
                    await writer.drain()
                    self.transcript.add(step, METER, SMGW, CHANNEL, detail)
        except (ConnectionError, ssl.SSLError, OSError):
            return
        finally:
            self._connections.discard(writer)
            writer.close()

    def _answer(self, payload: bytes, peer_der: bytes) -> tuple[bytes, str, str] | None:
        """(answer file, transcript step, detail) for one request file (None: unreadable, the
        connection is closed)."""
        self.files_received += 1
        try:
            messages = sml.decode_messages(payload)
        except sml.SmlError as exc:
            self.transcript.add("sml-malformed", SMGW, METER, CHANNEL, str(exc))
            return None
        shape = [type(m.body) for m in messages]
        if len(messages) != 3 or shape[0] is not sml.OpenRequest or shape[2] is not sml.CloseRequest:
            self.transcript.add("sml-malformed", SMGW, METER, CHANNEL, f"file {sml.describe(messages)}")
            return None
        opening, request, close = (m.body for m in messages)
        step = {sml.GetProcParameterRequest: "sml-get-meter-identity", sml.SetProcParameterRequest: "sml-set-new-key",
                sml.GetListRequest: "sml-get-list"}.get(type(request), "sml-request")
        self.transcript.add(step, SMGW, METER, CHANNEL, sml.describe(messages))
        transaction = messages[0].transaction_id[:7] + b"\xa0"

        # which key authenticates the file: the current one; for a key change also the initial one
        candidates = [self.current_key]
        if isinstance(request, sml.SetProcParameterRequest) and self.initial_key != self.current_key:
            candidates.append(self.initial_key)
        key = next((k for k in candidates if lmn.signature_valid(k, messages[:2], close.global_signature)), None)
        if key is None:
            return self._attention(opening, transaction, lmn.ATTENTION_AUTHENTICATION, None, "file signature invalid")

        if isinstance(request, sml.GetProcParameterRequest) and request.path == (lmn.IDENTITY_PATH,):
            self.paired_with = certificate_fingerprint(peer_der)  # [ours] an authenticated identity query pairs
            body: sml.Body = sml.GetProcParameterResponse(self.identity.server_id, request.path,
                                                          lmn.identity_tree(self.identity))
            return self._reply(opening, transaction, body, key, "sml-meter-identity")
        if isinstance(request, sml.SetProcParameterRequest) and request.path == (lmn.KEY_PATH,):
            wrapped = request.tree.value
            new_key = lmn.unwrap_key(key, wrapped) if isinstance(wrapped, bytes) else None
            if new_key is None:
                return self._attention(opening, transaction, lmn.ATTENTION_ERROR, key, "key material does not unwrap")
            self.current_key = new_key
            self.paired_with = certificate_fingerprint(peer_der)
            return self._attention(opening, transaction, lmn.ATTENTION_OK, key, "new key material in use")
        if isinstance(request, sml.GetListRequest):
            now = int(time.time())
            entries = tuple(
                sml.ListEntry(bytes.fromhex(obis), sml.Int(reg.value, True, 8), status=self.status,
                              unit=reg.unit, scaler=reg.scaler)
                for obis, reg in self.registers.items()
            ) + (sml.ListEntry(lmn.DEVICE_ID, self.identity.server_id),)
            body = sml.GetListResponse(self.identity.server_id, entries, client_id=opening.client_id,
                                       act_sensor_time=sml.SmlTime(now))
            self.readings.append(SentReading(
                {obis: Decimal(reg.value).scaleb(reg.scaler) for obis, reg in self.registers.items()}, self.status))
            return self._reply(opening, transaction, body, key, "sml-list")
        return self._attention(opening, transaction, lmn.ATTENTION_UNKNOWN_REQUEST, key, f"{request.NAME} not served")

    def _reply(self, opening: sml.OpenRequest, transaction: bytes, body: sml.Body, key: bytes | None,
               step: str) -> tuple[bytes, str, str]:
        response_open = sml.OpenResponse(req_file_id=opening.req_file_id, server_id=self.identity.server_id,
                                         client_id=opening.client_id, sml_version=1)
        data = lmn.signed_file([response_open, body], key, transaction=transaction, closing=sml.CloseResponse)
        detail = body.NAME + (f" {body.number.hex()} {body.message.decode(errors='replace')}"
                              if isinstance(body, sml.AttentionResponse) else "")
        return data, step, detail

    def _attention(self, opening, transaction, number: bytes, key: bytes | None, message: str) -> tuple[bytes, str, str]:
        body = sml.AttentionResponse(self.identity.server_id, number, message.encode())
        step = "sml-attention-ok" if number == lmn.ATTENTION_OK else "sml-attention-error"
        return self._reply(opening, transaction, body, key, step)
