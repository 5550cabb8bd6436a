"""SML, the Smart Message Language of German meters (FNN / BSI), sans-IO: transport framing,
the TLV encoding and the messages the LMN dialogs of smgw-emu use.

Three layers, each small and each proven against the independent parser `smllib` in
tests/unit/test_sml.py:

* **Transport v1:** ``1b1b1b1b 01010101`` + payload (every ``1b1b1b1b`` in it doubled) + zero
  padding to a multiple of 4 + ``1b1b1b1b 1a <pad count> <CRC16>``. The CRC is CRC-16/X.25 over
  everything before it, byte-swapped as libsml and smllib compute it (:func:`crc16`), sent high
  byte first. :func:`frame` builds one, :class:`FrameBuffer` takes bytes off a stream.
* **TLV:** one type-length byte (more when bit 7 is set: a further length nibble follows)
  with type 0 octet string, 4 boolean, 5 signed, 6 unsigned, 7 list. Octet strings and integers
  count their TL bytes in the length, lists count their elements. ``01`` is an octet string of
  no bytes: "not set" (decoded as ``None``; an empty octet string is encoded the same way),
  ``00`` ends a message. Integers keep their width (:class:`Int`).
* **Messages:** ``SML_Message ::= [transactionId, groupNo, abortOnError, [tag, body], crc16,
  endOfSmlMsg]``, the message CRC computed like the transport's over the message's bytes up to
  its crc16 field. Bodies: PublicOpen (0x0100/0x0101), PublicClose (0x0200/0x0201),
  GetProcParameter (0x0500/0x0501), SetProcParameter (0x0600), GetList (0x0700/0x0701),
  Attention (0xFF01). A message decoded from the wire keeps its bytes (``Message.raw``), so a
  signature over them can be checked without re-encoding.

Every refusal raises :class:`SmlError` with a stable ``reason`` (bad-frame, bad-crc, bad-tlv,
bad-message, unsupported, too-large). Limits (:data:`MAX_FRAME_BYTES`, :data:`MAX_DEPTH`) keep a
hostile peer from making us allocate much.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Callable, ClassVar, Sequence, Union

__all__ = [
    "AttentionResponse", "CloseRequest", "CloseResponse", "END", "FrameBuffer", "GetListRequest",
    "GetListResponse", "GetProcParameterRequest", "GetProcParameterResponse", "Int", "ListEntry",
    "MAX_FRAME_BYTES", "Message", "OpenRequest", "OpenResponse", "SetProcParameterRequest", "SmlError",
    "SmlTime", "Tree", "crc16", "decode_messages", "decode_tlv", "encode_messages", "encode_tlv", "frame",
    "unframe",
]

ESCAPE = b"\x1b\x1b\x1b\x1b"
START = ESCAPE + b"\x01\x01\x01\x01"
MAX_FRAME_BYTES = 64 * 1024  # [ours] an LMN file of ours is a few hundred bytes
MAX_DEPTH = 16


class SmlError(Exception):
    """Bytes that are no acceptable SML; ``reason`` is stable, the message is for people."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


# ---------------------------------------------------------------------------------------------
# CRC and transport
# ---------------------------------------------------------------------------------------------


def _table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _table()


def crc16(data: bytes) -> int:
    """CRC-16/X.25 (reflected 0x1021, init and xorout 0xFFFF), byte-swapped like libsml's."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    crc ^= 0xFFFF
    return ((crc & 0xFF) << 8) | (crc >> 8)


def frame(payload: bytes) -> bytes:
    """One transport-v1 frame around ``payload`` (SML messages: it ends with ``00``)."""
    if not payload or payload[-1] == 0x1B:
        raise ValueError("an SML payload ends with the end-of-message byte 00, never with 1b")
    escaped = payload.replace(ESCAPE, ESCAPE + ESCAPE)
    pad = -len(escaped) % 4
    body = START + escaped + b"\x00" * pad + ESCAPE + b"\x1a" + bytes([pad])
    return body + crc16(body).to_bytes(2, "big")


def unframe(data: bytes) -> tuple[bytes, bytes] | None:
    """(payload, rest) of the frame at the start of ``data``; None while it is incomplete."""
    if len(data) < len(START):
        if not START.startswith(data):
            raise SmlError("bad-frame", "data does not start with the SML start sequence")
        return None
    if not data.startswith(START):
        raise SmlError("bad-frame", "data does not start with the SML start sequence")
    out = bytearray()
    pos = len(START)
    while True:
        esc = data.find(ESCAPE, pos)
        if esc < 0 or len(data) < esc + 8:
            if len(data) > MAX_FRAME_BYTES:
                raise SmlError("too-large", f"no frame end within {MAX_FRAME_BYTES} bytes")
            return None
        out += data[pos:esc]
        follow = data[esc + 4:esc + 8]
        if follow == ESCAPE:
            out += ESCAPE
            pos = esc + 8
            continue
        if follow[0] != 0x1A:
            raise SmlError("bad-frame", f"unexpected escape sequence {follow.hex()} inside a frame")
        pad = follow[1]
        if pad > 3 or pad > len(out) or any(out[len(out) - pad:]):
            raise SmlError("bad-frame", f"padding of {pad} bytes is not 0..3 zero bytes")
        expected, got = crc16(data[:esc + 6]), int.from_bytes(follow[2:4], "big")
        if expected != got:
            raise SmlError("bad-crc", f"frame CRC {got:04x}, computed {expected:04x}")
        return bytes(out[:len(out) - pad]), data[esc + 8:]


class FrameBuffer:
    """Collects bytes from a stream and hands out whole frames' payloads."""

    def __init__(self, max_bytes: int = MAX_FRAME_BYTES) -> None:
        self._data = b""
        self.max_bytes = max_bytes

    def feed(self, data: bytes) -> list[bytes]:
        self._data += data
        payloads = []
        while self._data:
            found = unframe(self._data)
            if found is None:
                if len(self._data) > self.max_bytes:
                    raise SmlError("too-large", f"frame longer than {self.max_bytes} bytes")
                break
            payload, self._data = found
            payloads.append(payload)
        return payloads


# ---------------------------------------------------------------------------------------------
# TLV
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Int:
    """An SML integer with its width in bytes (1, 2, 4, 8 for Unsigned8..64 / Integer8..64)."""

    value: int
    signed: bool = False
    size: int = 1

    def __post_init__(self) -> None:
        bits = self.size * 8
        low, high = (-(1 << bits - 1), (1 << bits - 1) - 1) if self.signed else (0, (1 << bits) - 1)
        if not 1 <= self.size <= 8 or not low <= self.value <= high:
            raise ValueError(f"{self.value} does not fit an {'' if self.signed else 'un'}signed {bits}-bit integer")


def u8(v: int) -> Int: return Int(v, False, 1)
def u16(v: int) -> Int: return Int(v, False, 2)
def u32(v: int) -> Int: return Int(v, False, 4)
def u64(v: int) -> Int: return Int(v, False, 8)
def i8(v: int) -> Int: return Int(v, True, 1)
def i64(v: int) -> Int: return Int(v, True, 8)


class _End:
    """endOfSmlMsg (the byte 00)."""

    def __repr__(self) -> str:
        return "END"


END = _End()
Tlv = Union[None, bytes, bool, Int, list, _End]


def _tl(kind: int, length: int, counts_tl: bool) -> bytes:
    """Type-length bytes; ``length`` excludes the TL bytes (added here when ``counts_tl``)."""
    n = 1
    while (length + n if counts_tl else length) >= 16 ** n:
        n += 1
    total = length + n if counts_tl else length
    nibbles = [(total >> 4 * (n - 1 - i)) & 0x0F for i in range(n)]
    out = bytearray()
    for i, nibble in enumerate(nibbles):
        more = 0x80 if i < n - 1 else 0
        out.append(more | (kind if i == 0 else 0) | nibble)
    return bytes(out)


def encode_tlv(value: Tlv) -> bytes:
    if value is None or value == b"":
        return b"\x01"
    if value is END:
        return b"\x00"
    if isinstance(value, bool):
        return b"\x42" + (b"\x01" if value else b"\x00")
    if isinstance(value, Int):
        return _tl(0x50 if value.signed else 0x60, value.size, True) + value.value.to_bytes(value.size, "big", signed=value.signed)
    if isinstance(value, (bytes, bytearray)):
        return _tl(0x00, len(value), True) + bytes(value)
    if isinstance(value, list):
        return _tl(0x70, len(value), False) + b"".join(encode_tlv(item) for item in value)
    raise TypeError(f"no SML encoding for {type(value).__name__}")


def decode_tlv(data: bytes, pos: int = 0, depth: int = 0) -> tuple[Tlv, int]:
    """The value at ``pos`` and the position after it."""
    if pos >= len(data):
        raise SmlError("bad-tlv", f"value expected at byte {pos}, data ends")
    first = data[pos]
    if first == 0x00:
        return END, pos + 1
    if first == 0x01:
        return None, pos + 1
    kind, length, tl_end = first & 0x70, first & 0x0F, pos + 1
    byte = first
    while byte & 0x80:
        if tl_end >= len(data):
            raise SmlError("bad-tlv", f"type-length at byte {pos} is cut off")
        byte = data[tl_end]
        if byte & 0x70:
            raise SmlError("bad-tlv", f"type-length continuation byte {byte:02x} at {tl_end} carries a type")
        length = (length << 4) | (byte & 0x0F)
        tl_end += 1
        if tl_end - pos > 4:
            raise SmlError("bad-tlv", f"type-length at byte {pos} is longer than 4 bytes")
    if kind == 0x70:
        if depth >= MAX_DEPTH:
            raise SmlError("bad-tlv", f"lists nested deeper than {MAX_DEPTH}")
        if length > len(data) - tl_end:
            raise SmlError("bad-tlv", f"list of {length} elements at byte {pos} cannot fit in the data")
        items, at = [], tl_end
        for _ in range(length):
            item, at = decode_tlv(data, at, depth + 1)
            if item is END:
                raise SmlError("bad-tlv", f"end-of-message inside a list at byte {at - 1}")
            items.append(item)
        return items, at
    end = pos + length
    if length < tl_end - pos or end > len(data):
        raise SmlError("bad-tlv", f"value at byte {pos} claims {length} bytes, {len(data) - pos} are there")
    content = data[tl_end:end]
    if kind == 0x00:
        return (bytes(content) or None), end
    if kind == 0x40:
        if len(content) != 1:
            raise SmlError("bad-tlv", f"boolean at byte {pos} has {len(content)} bytes")
        return content[0] != 0, end
    if kind in (0x50, 0x60):
        if not 1 <= len(content) <= 8:
            raise SmlError("bad-tlv", f"integer at byte {pos} has {len(content)} bytes")
        signed = kind == 0x50
        return Int(int.from_bytes(content, "big", signed=signed), signed, len(content)), end
    raise SmlError("bad-tlv", f"unknown type {first:02x} at byte {pos}")


# ---------------------------------------------------------------------------------------------
# Field codecs (TLV <-> Python) for the message bodies
# ---------------------------------------------------------------------------------------------


class _Codec:
    def __init__(self, name: str, enc: Callable[[Any], Tlv], dec: Callable[[Tlv, str], Any]) -> None:
        self.name, self.enc, self.dec = name, enc, dec


def _bad(where: str, what: str, got: Tlv) -> SmlError:
    return SmlError("bad-message", f"{where}: {what} expected, got {got!r:.60}")


def _d_octet(t: Tlv, where: str) -> bytes:
    if t is None:
        return b""
    if not isinstance(t, bytes):
        raise _bad(where, "octet string", t)
    return t


def _unsigned(size: int) -> _Codec:
    def dec(t: Tlv, where: str) -> int:
        if not isinstance(t, Int) or t.signed:
            raise _bad(where, "unsigned integer", t)
        return t.value
    return _Codec(f"u{size * 8}", lambda v: Int(v, False, size), dec)


def _signed(size: int) -> _Codec:
    def dec(t: Tlv, where: str) -> int:
        if not isinstance(t, Int):
            raise _bad(where, "integer", t)
        return t.value
    return _Codec(f"i{size * 8}", lambda v: Int(v, True, size), dec)


OCTET = _Codec("octet", lambda v: bytes(v), _d_octet)
U8, U16, U32 = _unsigned(1), _unsigned(2), _unsigned(4)
I8 = _signed(1)


def _d_scalar(t: Tlv, where: str) -> "bytes | bool | Int":
    """SML_Value: an octet string, boolean or integer (kept with its width)."""
    if t is None:
        return b""
    if isinstance(t, (bytes, bool, Int)):
        return t
    raise _bad(where, "octet string, boolean or integer", t)


SCALAR = _Codec("value", lambda v: v, _d_scalar)


@dataclass(frozen=True)
class SmlTime:
    """SML_Time: kind 1 secIndex, 2 timestamp (seconds since 1970, UTC)."""

    value: int
    kind: int = 2


def _d_time(t: Tlv, where: str) -> SmlTime:
    if not (isinstance(t, list) and len(t) == 2 and isinstance(t[0], Int) and isinstance(t[1], Int)) or t[0].value not in (1, 2):
        raise _bad(where, "SML_Time [1|2, Unsigned32]", t)
    return SmlTime(t[1].value, t[0].value)


TIME = _Codec("time", lambda v: [u8(v.kind), u32(v.value)], _d_time)


def _d_path(t: Tlv, where: str) -> tuple[bytes, ...]:
    if not isinstance(t, list) or not t:
        raise _bad(where, "non-empty list of octet strings (tree path)", t)
    return tuple(_d_octet(item, f"{where}[{i}]") for i, item in enumerate(t))


PATH = _Codec("path", lambda v: [bytes(p) for p in v], _d_path)


@dataclass(frozen=True)
class Tree:
    """SML_Tree: a parameter (name, value) with child parameters. Values: SML_Value (kind 1)
    or SML_Time (kind 4); period and tuple entries are not used here."""

    name: bytes
    value: "bytes | bool | Int | SmlTime | None" = None
    children: tuple["Tree", ...] = ()

    def child(self, name: bytes) -> "Tree | None":
        return next((c for c in self.children if c.name == name), None)


def _e_tree(tree: Tree) -> Tlv:
    if tree.value is None:
        value: Tlv = None
    elif isinstance(tree.value, SmlTime):
        value = [u8(4), TIME.enc(tree.value)]
    else:
        value = [u8(1), tree.value]
    children = [_e_tree(c) for c in tree.children] if tree.children else None
    return [tree.name, value, children]


def _d_tree(t: Tlv, where: str) -> Tree:
    if not isinstance(t, list) or len(t) != 3:
        raise _bad(where, "SML_Tree of 3 elements", t)
    name = _d_octet(t[0], f"{where}.parameterName")
    raw = t[1]
    value: Any = None
    if raw is not None:
        if not (isinstance(raw, list) and len(raw) == 2 and isinstance(raw[0], Int)):
            raise _bad(f"{where}.parameterValue", "SML_ProcParValue [tag, value]", raw)
        if raw[0].value == 1:
            value = _d_scalar(raw[1], f"{where}.parameterValue")
        elif raw[0].value == 4:
            value = _d_time(raw[1], f"{where}.parameterValue")
        else:
            raise SmlError("unsupported", f"{where}.parameterValue: SML_ProcParValue kind {raw[0].value}")
    children: tuple[Tree, ...] = ()
    if t[2] is not None:
        if not isinstance(t[2], list):
            raise _bad(f"{where}.child_List", "list of trees", t[2])
        children = tuple(_d_tree(c, f"{where}.child[{i}]") for i, c in enumerate(t[2]))
    return Tree(name, value, children)


TREE = _Codec("tree", _e_tree, _d_tree)


@dataclass(frozen=True)
class ListEntry:
    """SML_ListEntry: one register value of a GetList response."""

    obj_name: bytes                     # OBIS code, 6 bytes
    value: "bytes | bool | Int"
    status: int | None = None
    val_time: SmlTime | None = None
    unit: int | None = None             # DLMS unit code (30 = Wh)
    scaler: int | None = None           # value * 10**scaler
    value_signature: bytes = b""


_ENTRY_FIELDS = (("obj_name", OCTET, False), ("status", U32, True), ("val_time", TIME, True), ("unit", U8, True),
                 ("scaler", I8, True), ("value", SCALAR, False), ("value_signature", OCTET, True))


def _e_entry(entry: ListEntry) -> Tlv:
    return [None if (v := getattr(entry, name)) is None or v == b"" else codec.enc(v)
            for name, codec, _ in _ENTRY_FIELDS]


def _d_entry(t: Tlv, where: str) -> ListEntry:
    return ListEntry(**_decode_fields(_ENTRY_FIELDS, t, where))


def _d_entries(t: Tlv, where: str) -> tuple[ListEntry, ...]:
    if not isinstance(t, list):
        raise _bad(where, "list of list entries", t)
    return tuple(_d_entry(e, f"{where}[{i}]") for i, e in enumerate(t))


ENTRIES = _Codec("entries", lambda v: [_e_entry(e) for e in v], _d_entries)


def _decode_fields(spec, t: Tlv, where: str) -> dict[str, Any]:
    if not isinstance(t, list) or len(t) != len(spec):
        raise _bad(where, f"list of {len(spec)} elements", t)
    values = {}
    for (name, codec, optional), item in zip(spec, t):
        if item is None and optional:
            values[name] = None if codec is not OCTET else b""
        elif item is None and codec not in (OCTET, SCALAR):
            raise SmlError("bad-message", f"{where}.{name} is required")
        else:
            values[name] = codec.dec(item, f"{where}.{name}")
    return values


# ---------------------------------------------------------------------------------------------
# Message bodies
# ---------------------------------------------------------------------------------------------


class Body:
    TAG: ClassVar[int]
    NAME: ClassVar[str]
    FIELDS: ClassVar[tuple]  # (name, codec, optional) in wire order

    def to_tlv(self) -> Tlv:
        out: list[Tlv] = []
        for name, codec, optional in self.FIELDS:
            value = getattr(self, name)
            if value is None or value == b"" or (value == () and optional):
                out.append(None)
            else:
                out.append(codec.enc(value))
        return [u32(self.TAG), out]

    @classmethod
    def from_tlv(cls, t: Tlv, where: str) -> "Body":
        return cls(**_decode_fields(cls.FIELDS, t, f"{where}.{cls.NAME}"))


@dataclass(frozen=True)
class OpenRequest(Body):
    TAG, NAME = 0x0100, "PublicOpen.Req"
    client_id: bytes
    req_file_id: bytes
    server_id: bytes = b""
    username: bytes = b""
    password: bytes = b""
    sml_version: int | None = None
    codepage: bytes = b""
    FIELDS = (("codepage", OCTET, True), ("client_id", OCTET, False), ("req_file_id", OCTET, False),
              ("server_id", OCTET, True), ("username", OCTET, True), ("password", OCTET, True),
              ("sml_version", U8, True))


@dataclass(frozen=True)
class OpenResponse(Body):
    TAG, NAME = 0x0101, "PublicOpen.Res"
    req_file_id: bytes
    server_id: bytes
    client_id: bytes = b""
    ref_time: SmlTime | None = None
    sml_version: int | None = None
    codepage: bytes = b""
    FIELDS = (("codepage", OCTET, True), ("client_id", OCTET, True), ("req_file_id", OCTET, False),
              ("server_id", OCTET, False), ("ref_time", TIME, True), ("sml_version", U8, True))


@dataclass(frozen=True)
class CloseRequest(Body):
    TAG, NAME = 0x0200, "PublicClose.Req"
    global_signature: bytes = b""
    FIELDS = (("global_signature", OCTET, True),)


@dataclass(frozen=True)
class CloseResponse(Body):
    TAG, NAME = 0x0201, "PublicClose.Res"
    global_signature: bytes = b""
    FIELDS = (("global_signature", OCTET, True),)


@dataclass(frozen=True)
class GetProcParameterRequest(Body):
    TAG, NAME = 0x0500, "GetProcParameter.Req"
    path: tuple[bytes, ...]
    server_id: bytes = b""
    username: bytes = b""
    password: bytes = b""
    attribute: bytes = b""
    FIELDS = (("server_id", OCTET, True), ("username", OCTET, True), ("password", OCTET, True),
              ("path", PATH, False), ("attribute", OCTET, True))


@dataclass(frozen=True)
class GetProcParameterResponse(Body):
    TAG, NAME = 0x0501, "GetProcParameter.Res"
    server_id: bytes
    path: tuple[bytes, ...]
    tree: Tree
    FIELDS = (("server_id", OCTET, False), ("path", PATH, False), ("tree", TREE, False))


@dataclass(frozen=True)
class SetProcParameterRequest(Body):
    TAG, NAME = 0x0600, "SetProcParameter.Req"
    path: tuple[bytes, ...]
    tree: Tree
    server_id: bytes = b""
    username: bytes = b""
    password: bytes = b""
    FIELDS = (("server_id", OCTET, True), ("username", OCTET, True), ("password", OCTET, True),
              ("path", PATH, False), ("tree", TREE, False))


@dataclass(frozen=True)
class GetListRequest(Body):
    TAG, NAME = 0x0700, "GetList.Req"
    client_id: bytes
    server_id: bytes = b""
    username: bytes = b""
    password: bytes = b""
    list_name: bytes = b""
    FIELDS = (("client_id", OCTET, False), ("server_id", OCTET, True), ("username", OCTET, True),
              ("password", OCTET, True), ("list_name", OCTET, True))


@dataclass(frozen=True)
class GetListResponse(Body):
    TAG, NAME = 0x0701, "GetList.Res"
    server_id: bytes
    entries: tuple[ListEntry, ...]
    client_id: bytes = b""
    list_name: bytes = b""
    act_sensor_time: SmlTime | None = None
    list_signature: bytes = b""
    act_gateway_time: SmlTime | None = None
    FIELDS = (("client_id", OCTET, True), ("server_id", OCTET, False), ("list_name", OCTET, True),
              ("act_sensor_time", TIME, True), ("entries", ENTRIES, False), ("list_signature", OCTET, True),
              ("act_gateway_time", TIME, True))


@dataclass(frozen=True)
class AttentionResponse(Body):
    TAG, NAME = 0xFF01, "Attention.Res"
    server_id: bytes
    number: bytes                       # 6 bytes, e.g. 8181c7c7fd00 "OK"
    message: bytes = b""
    details: Tree | None = None
    FIELDS = (("server_id", OCTET, False), ("number", OCTET, False), ("message", OCTET, True),
              ("details", TREE, True))


BODIES: dict[int, type[Body]] = {cls.TAG: cls for cls in (
    OpenRequest, OpenResponse, CloseRequest, CloseResponse, GetProcParameterRequest, GetProcParameterResponse,
    SetProcParameterRequest, GetListRequest, GetListResponse, AttentionResponse)}


# ---------------------------------------------------------------------------------------------
# Messages and files
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    transaction_id: bytes
    body: Body
    group_no: int = 0
    abort_on_error: int = 0
    raw: bytes = field(default=b"", compare=False, repr=False)  # as received

    def encode(self) -> bytes:
        head = [self.transaction_id, u8(self.group_no), u8(self.abort_on_error), self.body.to_tlv()]
        data = b"\x76" + b"".join(encode_tlv(item) for item in head)
        return data + encode_tlv(u16(crc16(data))) + b"\x00"


def encode_messages(messages: Sequence[Message]) -> bytes:
    """An SML file: the messages one after the other (the payload of one transport frame)."""
    return b"".join(m.encode() for m in messages)


def decode_messages(payload: bytes) -> list[Message]:
    """Every message of an SML file, each CRC-checked."""
    messages, pos = [], 0
    while pos < len(payload):
        start = pos
        where = f"message {len(messages)}"
        if payload[pos] != 0x76:
            raise SmlError("bad-message", f"{where}: a message is a list of 6, not {payload[pos]:02x} (byte {pos})")
        pos += 1
        head = []
        for _ in range(4):
            item, pos = decode_tlv(payload, pos)
            head.append(item)
        crc_value, after = decode_tlv(payload, pos)
        if not isinstance(crc_value, Int) or crc_value.signed:
            raise _bad(f"{where}.crc16", "unsigned integer", crc_value)
        if crc_value.value != crc16(payload[start:pos]):
            raise SmlError("bad-crc", f"{where}: message CRC {crc_value.value:04x}, computed {crc16(payload[start:pos]):04x}")
        end, pos = decode_tlv(payload, after)
        if end is not END:
            raise SmlError("bad-message", f"{where}: endOfSmlMsg (00) expected")
        transaction_id, group, abort, choice = head
        tid = _d_octet(transaction_id, f"{where}.transactionId")
        if not (isinstance(choice, list) and len(choice) == 2 and isinstance(choice[0], Int)):
            raise _bad(f"{where}.messageBody", "[tag, body]", choice)
        body_cls = BODIES.get(choice[0].value)
        if body_cls is None:
            raise SmlError("unsupported", f"{where}: message body {choice[0].value:#06x} is not supported")
        body = body_cls.from_tlv(choice[1], where)
        messages.append(Message(tid, body, U8.dec(group, f"{where}.groupNo"), U8.dec(abort, f"{where}.abortOnError"),
                                raw=payload[start:pos]))
    return messages


def describe(messages: Sequence[Message]) -> str:
    """``PublicOpen.Req GetList.Req PublicClose.Req``: for logs and transcripts."""
    return " ".join(m.body.NAME for m in messages)


def _fields_of(cls) -> list[str]:  # for tests: the dataclass fields equal the wire fields
    return [f.name for f in fields(cls)]
