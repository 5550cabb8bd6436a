"""The SML codec (smgw_emu.core.sml) against the independent parser smllib: transport frames and
CRC, the TLV layer (hypothesis round trips), and typed messages smllib knows."""

from __future__ import annotations

import datetime as _dt

import pytest
from hypothesis import given, settings, strategies as st
from smllib import SmlStreamReader
from smllib.crc import x25
from smllib.sml_frame import SmlFrame

from smgw_emu.core import sml
from smgw_emu.core.sml import Int, SmlError

# -- strategies ------------------------------------------------------------------------------------

ints = st.builds(
    lambda signed, size, data: Int(data.draw(st.integers(-(1 << size * 8 - 1), (1 << size * 8 - 1) - 1)
                                             if signed else st.integers(0, (1 << size * 8) - 1)), signed, size),
    st.booleans(), st.sampled_from([1, 2, 3, 4, 8]), st.data(),
)
scalars = st.one_of(st.none(), st.binary(min_size=1, max_size=300), st.booleans(), ints)
values = st.recursive(scalars, lambda children: st.lists(children, max_size=20), max_leaves=60)


def smllib_value(snippet):
    """smllib's generic parse of one value, as plain Python (octet strings as hex)."""
    value = snippet.value
    if isinstance(value, list):
        return [smllib_value(s) for s in value]
    return value


def plain(value):
    if isinstance(value, Int):
        return value.value
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def smllib_parse(value_bytes: bytes):
    frame = SmlFrame(value_bytes)
    snippet = frame.get_value()
    if isinstance(snippet.value, list):
        frame._parse_msg(snippet)
    return smllib_value(snippet), frame.next_pos


# -- CRC and transport -----------------------------------------------------------------------------


@given(st.binary(max_size=600))
def test_crc16_equals_smllib_x25(data):
    assert sml.crc16(data) == x25.get_crc(data)


def test_crc16_known_value():
    # CRC-16/X-25 check value of "123456789" is 0x906E; SML sends it byte-swapped (libsml, smllib)
    assert sml.crc16(b"123456789") == 0x6E90


payloads = st.binary(min_size=0, max_size=400).map(lambda b: b + b"\x00")
escape_heavy = st.lists(st.sampled_from([b"\x1b", b"\x1b\x1b\x1b\x1b", b"\x00", b"\x1a", b"\x01\x01\x01\x01"]),
                        max_size=40).map(lambda parts: b"".join(parts) + b"\x00")


@settings(max_examples=300)
@given(st.one_of(payloads, escape_heavy))
def test_transport_round_trip_and_smllib_reads_our_frames(payload):
    framed = sml.frame(payload)
    assert len(framed) % 4 == 0
    assert sml.unframe(framed) == (payload, b"")
    reader = SmlStreamReader()
    reader.add(framed)
    assert reader.get_frame().bytes == payload


@given(st.lists(payloads, min_size=1, max_size=4), st.integers(1, 64))
def test_frame_buffer_takes_frames_off_a_stream_in_any_chunks(frames, chunk):
    stream = b"".join(sml.frame(p) for p in frames)
    buffer, got = sml.FrameBuffer(), []
    for i in range(0, len(stream), chunk):
        got += buffer.feed(stream[i:i + chunk])
    assert got == frames


@pytest.mark.parametrize(("mangle", "reason"), [
    (lambda f: f[:-1] + bytes([f[-1] ^ 1]), "bad-crc"),
    (lambda f: b"\x00" + f[1:], "bad-frame"),
    (lambda f: f[:12] + b"\x1b\x1b\x1b\x1b\x02\x02\x02\x02" + f[12:], "bad-frame"),
])
def test_damaged_frames_are_refused_with_a_reason(mangle, reason):
    with pytest.raises(SmlError) as err:
        sml.FrameBuffer().feed(mangle(sml.frame(b"\x76\x01\x01\x01\x01\x01\x00")))
    assert err.value.reason == reason


def test_endless_frame_is_refused():
    buffer = sml.FrameBuffer(max_bytes=1024)
    with pytest.raises(SmlError) as err:
        buffer.feed(sml.START + b"\x00" * 2048)
    assert err.value.reason == "too-large"


def test_frame_refuses_a_payload_that_would_be_ambiguous():
    with pytest.raises(ValueError):
        sml.frame(b"\x00\x1b")


# -- TLV -------------------------------------------------------------------------------------------


@settings(max_examples=300)
@given(values)
def test_tlv_round_trip_and_smllib_agrees(value):
    data = sml.encode_tlv(value)
    assert sml.decode_tlv(data) == (value, len(data))
    parsed, end = smllib_parse(data)
    assert end == len(data) and parsed == plain(value)


@pytest.mark.parametrize(("value", "encoded"), [
    (None, "01"), (True, "4201"), (Int(5, False, 1), "6205"), (Int(-1, True, 2), "53ffff"),
    (Int(0x0701, False, 4), "6500000701"), (b"\xaa" * 14, "0f" + "aa" * 14), (b"\xaa" * 15, "8101" + "aa" * 15),
    ([None] * 16, "f100" + "01" * 16),
])
def test_tlv_known_encodings(value, encoded):
    assert sml.encode_tlv(value).hex() == encoded


@pytest.mark.parametrize(("data", "what"), [
    ("", "ends"), ("63ff", "claims"), ("8f", "cut off"), ("7f01", "cannot fit"), ("3201", "unknown type"),
    ("7201" + "00", "end-of-message inside a list"), ("81f1" + "00" * 30, "carries a type"),
])
def test_bad_tlv_is_refused_with_a_reason(data, what):
    raw = bytes.fromhex(data)
    with pytest.raises(SmlError) as err:
        sml.decode_tlv(raw)
    assert err.value.reason == "bad-tlv" and what in err.value.detail


def test_deep_nesting_is_refused():
    with pytest.raises(SmlError, match="nested deeper"):
        sml.decode_tlv(b"\x71" * 40 + b"\x01")


def test_int_range_is_checked():
    with pytest.raises(ValueError):
        Int(256, False, 1)
    with pytest.raises(ValueError):
        Int(-129, True, 1)


# -- messages --------------------------------------------------------------------------------------

SERVER = bytes.fromhex("0a015858580005e30a78")  # server id of meter 1XXX0098765432 (tests/unit/test_lmn.py)
T0 = 1_790_000_000


def response_file() -> bytes:
    entries = (
        sml.ListEntry(bytes.fromhex("0100010800ff"), Int(123456, True, 8), status=0x00020240, unit=30, scaler=-1),
        sml.ListEntry(bytes.fromhex("0100020800ff"), Int(0, True, 8), unit=30, scaler=-1,
                      val_time=sml.SmlTime(T0)),
        sml.ListEntry(bytes.fromhex("0100000009ff"), SERVER),
    )
    bodies = [
        sml.OpenResponse(req_file_id=b"\x01\x02\x03\x04", server_id=SERVER, client_id=b"gw", sml_version=1),
        sml.GetListResponse(server_id=SERVER, entries=entries, client_id=b"gw", act_sensor_time=sml.SmlTime(T0)),
        sml.CloseResponse(global_signature=b"\x11" * 16),
    ]
    return sml.encode_messages([sml.Message(b"t" + bytes([i]), body) for i, body in enumerate(bodies)])


def test_smllib_reads_our_response_file():
    reader = SmlStreamReader()
    reader.add(sml.frame(response_file()))
    opening, listing, close = reader.get_frame().parse_frame()
    assert opening.message_body.server_id == SERVER.hex() and opening.message_body.req_file_id == "01020304"
    body = listing.message_body
    assert body.server_id == SERVER.hex()
    assert body.act_sensor_time == _dt.datetime.fromtimestamp(T0, _dt.timezone.utc)
    first, second, third = body.val_list
    assert (first.obis.obis_code, first.get_value(), first.unit, first.status) == ("1-0:1.8.0*255", 12345.6, 30, 0x00020240)
    assert second.val_time == _dt.datetime.fromtimestamp(T0, _dt.timezone.utc) and second.get_value() == 0
    assert third.value == SERVER.hex()
    assert close.message_body.global_signature == "11" * 16


def test_message_round_trip_keeps_raw_bytes_and_checks_crc():
    payload = response_file()
    messages = sml.decode_messages(payload)
    assert b"".join(m.raw for m in messages) == payload
    assert sml.encode_messages(messages) == payload
    assert sml.describe(messages) == "PublicOpen.Res GetList.Res PublicClose.Res"
    damaged = bytearray(payload)
    damaged[20] ^= 0x01
    with pytest.raises(SmlError) as err:
        sml.decode_messages(bytes(damaged))
    assert err.value.reason in ("bad-crc", "bad-tlv", "bad-message")


trees = st.recursive(
    st.builds(sml.Tree, st.binary(min_size=1, max_size=8),
              st.one_of(st.none(), st.binary(min_size=1, max_size=40), ints, st.builds(sml.SmlTime, st.integers(0, 2**32 - 1),
                                                                                    st.sampled_from([1, 2])))),
    lambda kids: st.builds(sml.Tree, st.binary(min_size=1, max_size=8), st.none(), st.lists(kids, min_size=1, max_size=4).map(tuple)),
    max_leaves=12,
)
octets = st.binary(min_size=1, max_size=20)
bodies = st.one_of(
    st.builds(sml.OpenRequest, client_id=octets, req_file_id=octets, server_id=octets, sml_version=st.integers(0, 255)),
    st.builds(sml.OpenResponse, req_file_id=octets, server_id=octets, ref_time=st.builds(sml.SmlTime, st.integers(0, 2**32 - 1))),
    st.builds(sml.CloseRequest, global_signature=octets), st.builds(sml.CloseResponse),
    st.builds(sml.GetProcParameterRequest, path=st.lists(octets, min_size=1, max_size=3).map(tuple), server_id=octets),
    st.builds(sml.GetProcParameterResponse, server_id=octets, path=st.lists(octets, min_size=1, max_size=3).map(tuple), tree=trees),
    st.builds(sml.SetProcParameterRequest, path=st.lists(octets, min_size=1, max_size=3).map(tuple), tree=trees),
    st.builds(sml.GetListRequest, client_id=octets, list_name=octets),
    st.builds(sml.GetListResponse, server_id=octets, entries=st.lists(st.builds(
        sml.ListEntry, octets, ints, status=st.one_of(st.none(), st.integers(0, 2**32 - 1)),
        unit=st.one_of(st.none(), st.integers(0, 255)), scaler=st.one_of(st.none(), st.integers(-128, 127))),
        max_size=5).map(tuple)),
    st.builds(sml.AttentionResponse, server_id=octets, number=st.binary(min_size=6, max_size=6), details=st.one_of(st.none(), trees)),
)


@settings(max_examples=200)
@given(st.lists(st.tuples(octets, bodies), min_size=1, max_size=4))
def test_every_message_body_round_trips_and_smllib_parses_its_structure(items):
    messages = [sml.Message(tid, body) for tid, body in items]
    payload = sml.encode_messages(messages)
    assert sml.decode_messages(payload) == messages
    reader = SmlStreamReader()
    reader.add(sml.frame(payload))
    frame = reader.get_frame()
    frame.next_pos, count = 0, 0
    while frame.next_pos < len(payload):  # smllib's generic parser walks every message we wrote
        snippet = frame.get_value()
        frame._parse_msg(snippet)
        tid, _, _, choice, crc, end = smllib_value(snippet)
        assert tid == items[count][0].hex() and choice[0] == items[count][1].TAG
        raw = messages[count].encode()
        assert crc == sml.crc16(raw[:-4]) == int.from_bytes(raw[-3:-1], "big")
        count += 1
    assert count == len(items)


@pytest.mark.parametrize(("payload", "reason"), [
    ("7501010101", "bad-message"),                                     # not a list of 6
    ("76" + "01" * 3 + "72" + "6301ff" + "70" + "6300" + "00" + "00", "bad-crc"),
])
def test_bad_messages_are_refused(payload, reason):
    with pytest.raises(SmlError) as err:
        sml.decode_messages(bytes.fromhex(payload))
    assert err.value.reason == reason


def test_unknown_body_is_unsupported_and_wrong_field_types_are_named():
    def message_with(tag: int, body) -> bytes:
        head = b"\x76" + b"".join(sml.encode_tlv(v) for v in (b"t", Int(0), Int(0), [Int(tag, False, 4), body]))
        return head + sml.encode_tlv(Int(sml.crc16(head), False, 2)) + b"\x00"

    with pytest.raises(SmlError) as err:
        sml.decode_messages(message_with(0x0300, []))
    assert err.value.reason == "unsupported"
    with pytest.raises(SmlError) as err:
        sml.decode_messages(message_with(0x0200, [Int(1)]))
    assert err.value.reason == "bad-message" and "global_signature" in err.value.detail
    with pytest.raises(SmlError) as err:
        sml.decode_messages(message_with(0x0701, [None, None, None, None, None, None, None]))
    assert err.value.reason == "bad-message" and "entries is required" in err.value.detail
