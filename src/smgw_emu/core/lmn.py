"""The LMN dialogs between the gateway and a meter, sans-IO (Lastenheft 6.4.2.6, 6.4.2.7, 6.5.12).

What crosses the LMN is an SML file per direction (`core/sml.py`) inside a TLS connection that
the gateway opens (`net/lmn.py`). This module builds the gateway's request files, judges the
meter's answers, and turns the outcome of a pairing, a crypto reset or a reading into the change
the application stores (a :class:`~smgw_emu.core.profiles.ProfileChange`: profile object, key
banks, log entry, events).

[ours] (docs/decisions.md "The LMN link and the meter side of pairing"), all in this one place:

* **File authentication:** every file ends with PublicClose whose ``globalSignature`` is an
  AES-CMAC (16 bytes) over the bytes of the file's messages before it, keyed with the meter key
  material (16, 24 or 32 bytes: the initial key of the meter profile until a crypto reset
  replaces it). The answer echoes the request's ``reqFileId`` (fresh random bytes), so an answer
  cannot be replayed. Error answers (Attention) may come unsigned; they never change state.
* **Dialogs:** pairing = identity query (GetProcParameter of :data:`IDENTITY_PATH`) with the
  initial key; crypto reset = SetProcParameter of :data:`KEY_PATH` with the new key wrapped
  (RFC 3394 AES key wrap) under the key that authenticates the file, answered by Attention "OK",
  then a new connection and an identity query with the new key; reading = GetList of the
  meter's registers with the active key.
* **Server id:** the 10-byte form of a DIN 43863-5 meter id (0x0A, medium, 3 manufacturer
  letters, block number, 4-byte serial number), :func:`server_id`.
* **Events:** ``meter-paired`` / ``meter-pairing-failed`` (fig. 30), ``crypto-reset-done`` /
  ``crypto-reset-failed`` (figs. 31, 32), ``meter-detected`` (fig. 56: the first valid reading
  after a pairing or crypto reset).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Mapping, Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from smgw_emu.core import sml
from smgw_emu.core.cosem.model import CosemModel, CosemObject, LogicalDevice
from smgw_emu.core.profiles import EventSpec, KeyBankWrite, ProfileChange, meter_key_banks

# -- [ours] parameter names and attention numbers ------------------------------------------------

IDENTITY_PATH = bytes.fromhex("8181c78201ff")      # device data tree (identity query)
DEVICE_ID = bytes.fromhex("0100000009ff")          # 1-0:0.0.9 device identification = server id
MANUFACTURER = bytes.fromhex("8181c78203ff")       # manufacturer identification
FIRMWARE = bytes.fromhex("0100000200ff")           # 1-0:0.2.0 firmware version
KEY_PATH = bytes.fromhex("8181c78c01ff")           # meter key material (wrapped), write-only
#: SML attention numbers (after SML 1.04 as publicly described; [ours] until checked)
ATTENTION_OK = bytes.fromhex("8181c7c7fd00")
ATTENTION_ERROR = bytes.fromhex("8181c7c7fe00")
ATTENTION_UNKNOWN_REQUEST = bytes.fromhex("8181c7c7fe01")
ATTENTION_AUTHENTICATION = bytes.fromhex("8181c7c7fe02")
ATTENTION_NAMES = {ATTENTION_OK: "ok", ATTENTION_ERROR: "error", ATTENTION_UNKNOWN_REQUEST: "unknown-request",
                   ATTENTION_AUTHENTICATION: "insufficient-authentication"}
KEY_LENGTHS = (16, 24, 32)
SIGNATURE_BYTES = 16

_METER_ID = re.compile(r"([0-9])([A-Z]{3})([0-9]{2})([0-9]{8})")


class LmnError(Exception):
    """A dialog with a meter failed; ``reason`` is stable (it goes into events and logs):
    no-address, no-key, unreachable, tls-handshake-failed, certificate-mismatch, timeout,
    sml-malformed, authentication-failed, meter-refused, meter-id-mismatch, session-expired."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


# -- identities ----------------------------------------------------------------------------------


def server_id(meter_id: str) -> bytes:
    """The 10-byte SML server id of a DIN 43863-5 meter id ("1XXX0098765432")."""
    m = _METER_ID.fullmatch(meter_id)
    if not m:
        raise ValueError(f"{meter_id!r} is no DIN 43863-5 meter id")
    medium, maker, block, number = m.groups()
    return bytes([0x0A, int(medium)]) + maker.encode("ascii") + bytes([int(block)]) + int(number).to_bytes(4, "big")


def meter_id_of(server: bytes) -> str | None:
    """The meter id a 10-byte server id names, None when it is no such id."""
    if len(server) != 10 or server[0] != 0x0A or server[1] > 9 or not server[2:5].isalpha() or not server[2:5].isupper():
        return None
    number = int.from_bytes(server[6:10], "big")
    if server[5] > 99 or number > 99_999_999:
        return None
    return f"{server[1]}{server[2:5].decode('ascii')}{server[5]:02d}{number:08d}"


@dataclass(frozen=True)
class MeterIdentity:
    server_id: bytes
    manufacturer: str
    firmware: str

    @property
    def meter_id(self) -> str | None:
        return meter_id_of(self.server_id)


def identity_tree(identity: MeterIdentity) -> sml.Tree:
    return sml.Tree(IDENTITY_PATH, None, (
        sml.Tree(DEVICE_ID, identity.server_id),
        sml.Tree(MANUFACTURER, identity.manufacturer.encode()),
        sml.Tree(FIRMWARE, identity.firmware.encode()),
    ))


def parse_identity(tree: sml.Tree) -> MeterIdentity:
    def text(name: bytes) -> str:
        child = tree.child(name)
        value = child.value if child is not None else None
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else ""

    device = tree.child(DEVICE_ID)
    if tree.name != IDENTITY_PATH or device is None or not isinstance(device.value, bytes):
        raise LmnError("sml-malformed", "the identity tree names no device identification (1-0:0.0.9)")
    return MeterIdentity(device.value, text(MANUFACTURER), text(FIRMWARE))


# -- file authentication -------------------------------------------------------------------------


def file_signature(key: bytes, messages: Sequence[sml.Message]) -> bytes:
    """AES-CMAC over the bytes of the messages (as sent or received)."""
    mac = cmac.CMAC(algorithms.AES(key))
    for message in messages:
        mac.update(message.raw or message.encode())
    return mac.finalize()


def signature_valid(key: bytes, messages: Sequence[sml.Message], signature: bytes) -> bool:
    mac = cmac.CMAC(algorithms.AES(key))
    for message in messages:
        mac.update(message.raw or message.encode())
    try:
        mac.verify(signature)
        return True
    except InvalidSignature:
        return False


def signed_file(bodies: Sequence[sml.Body], key: bytes | None, *, transaction: bytes, closing: type[sml.Body]) -> bytes:
    """An SML file: the bodies, then PublicClose (request or response) signed with ``key``
    (unsigned when ``key`` is None: error answers). Transaction ids are ``transaction`` + index."""
    messages = [sml.Message(transaction + bytes([i]), body) for i, body in enumerate(bodies)]
    messages = [sml.Message(m.transaction_id, m.body, raw=m.encode()) for m in messages]
    signature = file_signature(key, messages) if key is not None else b""
    close = sml.Message(transaction + bytes([len(bodies)]), closing(global_signature=signature))
    return sml.encode_messages([*messages, close])


def wrap_key(wrapping_key: bytes, key: bytes) -> bytes:
    return aes_key_wrap(wrapping_key, key)


def unwrap_key(wrapping_key: bytes, wrapped: bytes) -> bytes | None:
    try:
        key = aes_key_unwrap(wrapping_key, wrapped)
    except (InvalidUnwrap, ValueError):
        return None
    return key if len(key) in KEY_LENGTHS else None


# -- the gateway's requests and its judgement of the answers -------------------------------------


@dataclass(frozen=True)
class Request:
    """One request file and what the answer must echo."""

    payload: bytes
    req_file_id: bytes
    key: bytes
    expect: type[sml.Body]


def _check_key(key: bytes) -> None:
    if len(key) not in KEY_LENGTHS:
        raise LmnError("no-key", f"meter key material has {len(key)} bytes (16, 24 or 32 expected)")


def _request(body: sml.Body, *, key: bytes, client_id: bytes, meter: str, req_file_id: bytes,
             expect: type[sml.Body]) -> Request:
    _check_key(key)
    opening = sml.OpenRequest(client_id=client_id, req_file_id=req_file_id, server_id=server_id(meter), sml_version=1)
    payload = signed_file([opening, body], key, transaction=req_file_id[:8], closing=sml.CloseRequest)
    return Request(payload, req_file_id, key, expect)


def identity_request(*, key: bytes, client_id: bytes, meter: str, req_file_id: bytes) -> Request:
    body = sml.GetProcParameterRequest(path=(IDENTITY_PATH,), server_id=server_id(meter))
    return _request(body, key=key, client_id=client_id, meter=meter, req_file_id=req_file_id,
                    expect=sml.GetProcParameterResponse)


def set_key_request(*, key: bytes, new_key: bytes, client_id: bytes, meter: str, req_file_id: bytes) -> Request:
    _check_key(key)
    _check_key(new_key)
    tree = sml.Tree(KEY_PATH, wrap_key(key, new_key))
    body = sml.SetProcParameterRequest(path=(KEY_PATH,), tree=tree, server_id=server_id(meter))
    return _request(body, key=key, client_id=client_id, meter=meter, req_file_id=req_file_id,
                    expect=sml.AttentionResponse)


def reading_request(*, key: bytes, client_id: bytes, meter: str, req_file_id: bytes) -> Request:
    body = sml.GetListRequest(client_id=client_id, server_id=server_id(meter))
    return _request(body, key=key, client_id=client_id, meter=meter, req_file_id=req_file_id,
                    expect=sml.GetListResponse)


def judge_answer(request: Request, payload: bytes) -> sml.Body:
    """The body of the meter's answer, or LmnError: malformed, refused (Attention other than OK),
    not echoing the request, or not signed with the request's key."""
    try:
        messages = sml.decode_messages(payload)
    except sml.SmlError as exc:
        raise LmnError("sml-malformed", str(exc)) from None
    shape = [type(m.body) for m in messages]
    if len(messages) != 3 or shape[0] is not sml.OpenResponse or shape[2] is not sml.CloseResponse:
        raise LmnError("sml-malformed", f"answer file is {sml.describe(messages)}; expected PublicOpen.Res, "
                       "one answer, PublicClose.Res")
    opening, body, close = (m.body for m in messages)
    if isinstance(body, sml.AttentionResponse) and body.number != ATTENTION_OK:
        name = ATTENTION_NAMES.get(body.number, body.number.hex())
        reason = "authentication-failed" if body.number == ATTENTION_AUTHENTICATION else "meter-refused"
        raise LmnError(reason, f"meter answered attention {body.number.hex()} ({name})")
    if opening.req_file_id != request.req_file_id:
        raise LmnError("sml-malformed", "the answer does not echo the request's reqFileId")
    if not signature_valid(request.key, messages[:2], close.global_signature):
        raise LmnError("authentication-failed", "the answer's signature does not verify with the meter key")
    if not isinstance(body, request.expect):
        raise LmnError("sml-malformed", f"{body.NAME} answers a request that expects {request.expect.NAME}")
    return body


def check_identity(body: sml.GetProcParameterResponse, meter: str) -> MeterIdentity:
    identity = parse_identity(body.tree)
    if identity.server_id != server_id(meter) or body.server_id != identity.server_id:
        named = identity.meter_id or identity.server_id.hex()
        raise LmnError("meter-id-mismatch", f"the meter on the LMN is {named}, the meter profile names {meter}")
    return identity


# -- readings ------------------------------------------------------------------------------------

#: [ours] the gateway's half of the status word (16 hex digits, gateway first) while it knows no error
GATEWAY_STATUS_OK = "00000000"


def readings(body: sml.GetListResponse, registers: Sequence[str]) -> dict[str, tuple[str, str]]:
    """register OBIS hex -> (value as a decimal string in the register's unit, status word),
    for the registers of the meter profile that the answer carries as numbers."""
    out: dict[str, tuple[str, str]] = {}
    for entry in body.entries:
        obis = entry.obj_name.hex()
        if obis not in registers or not isinstance(entry.value, sml.Int):
            continue
        value = Decimal(entry.value.value).scaleb(entry.scaler or 0)
        status = f"{GATEWAY_STATUS_OK}{(entry.status or 0) & 0xFFFFFFFF:08x}"
        out[obis] = (format(value, "f"), status)
    return out


# -- outcomes as changes of the meter profile ----------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What a pairing or crypto-reset job found out on the LMN."""

    job: str                                  # pairing | crypto-reset
    ok: bool
    reason: str = ""
    detail: str = ""
    identity: MeterIdentity | None = None
    certificate_sha256: str = ""
    key: bytes = b""                          # the key the meter uses now (ok only)
    key_source: str = ""                      # initial | gwa | gateway
    mode: str = ""                            # crypto reset: with-pairing | without-pairing
    attempts: int = 1


def _put(obj: CosemObject, name: str, data) -> None:
    attr = obj.cosem_class.attribute_named(name)
    obj.store(attr.index, attr.spec.build(data, name))


def plan_outcome(ldev: LogicalDevice, obj: CosemObject, outcome: Outcome, now: _dt.datetime) -> ProfileChange:
    """The change that finishes a pairing (fig. 30) or crypto reset (figs. 31, 32)."""
    meter = ldev.id
    _, pending, active = meter_key_banks(meter)
    new = obj.copy()
    _put(new, "pairing_state", "paired" if outcome.ok else "failed")
    details = {"ldev": f"{ldev.kind}/{meter}", "meter": meter}
    if outcome.job == "crypto-reset":
        details["mode"] = outcome.mode
    key_writes: tuple[KeyBankWrite, ...] = ()
    if outcome.ok:
        assert outcome.identity is not None
        details.update({"server-id": outcome.identity.server_id.hex(), "manufacturer": outcome.identity.manufacturer,
                        "firmware": outcome.identity.firmware, "certificate-sha256": outcome.certificate_sha256})
        if outcome.job == "crypto-reset":
            details["key-source"] = outcome.key_source
        key_writes = (KeyBankWrite(active, "active", {
            "key": outcome.key.hex(), "source": outcome.key_source, "since": now.isoformat(),
            "server_id": outcome.identity.server_id.hex(), "certificate_sha256": outcome.certificate_sha256,
            "detected": "",
        }),)
        event = "meter-paired" if outcome.job == "pairing" else "crypto-reset-done"
        message = (f"meter {meter} paired over the LMN" if outcome.job == "pairing"
                   else f"crypto reset of meter {meter} done ({outcome.mode}): the meter uses the new key material")
    else:
        details.update({"reason": outcome.reason, "detail": outcome.detail[:200], "attempts": str(outcome.attempts)})
        event = "meter-pairing-failed" if outcome.job == "pairing" else "crypto-reset-failed"
        message = f"{outcome.job} of meter {meter} failed: {outcome.reason}: {outcome.detail[:200]}"
    return ProfileChange(
        "invoke", ldev, event, message, details, (EventSpec(event, details),), put=(new,),
        key_writes=key_writes, key_deletes=(pending,) if outcome.job == "crypto-reset" else (), target=new,
        level=1 if outcome.ok else 2, outcome=0 if outcome.ok else 1,
    )


def certificate_sha256(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def detection_details(meter: str, identity_server_id: str, values: Mapping[str, tuple[str, str]],
                      capture_time: _dt.datetime) -> dict[str, str]:
    """Details of meter-detected (fig. 56): the meter and its first values after pairing."""
    details = {"ldev": f"meter/{meter}", "meter": meter, "server-id": identity_server_id,
               "time": capture_time.isoformat()}
    for obis, (value, status) in sorted(values.items()):
        details[obis] = f"{value} status={status}"
    return details


def meter_profile(model: CosemModel, meter: str) -> tuple[LogicalDevice, CosemObject] | None:
    """The meter LDEV and its profile object, None when the meter has no profile (any more)."""
    from smgw_emu.core.profiles import profile_object

    for ldev in model.ldevs("meter"):
        if ldev.id == meter:
            obj = profile_object(model, ldev)
            return (ldev, obj) if obj is not None else None
    return None
