"""The LMN dialogs (smgw_emu.core.lmn), sans-IO: server ids, signed files, the gateway's judgement
of a meter's answers, readings, and the outcome as a change of the meter profile."""

from __future__ import annotations

import datetime as _dt
import os

import pytest
from hypothesis import given, strategies as st
from smllib import SmlStreamReader

from smgw_emu.core import lmn, sml
from smgw_emu.core.cosem import CosemModel, LogicalDevice
from smgw_emu.core.lmn import LmnError
from smgw_emu.core.profiles import PROFILE_KINDS

KEY, OTHER = bytes(range(16)), bytes(range(16, 32))
METER = "1XXX0098765432"


@given(st.from_regex(r"[0-9][A-Z]{3}[0-9]{10}", fullmatch=True))
def test_server_id_round_trip(meter_id):
    server = lmn.server_id(meter_id)
    assert len(server) == 10 and server[0] == 0x0A
    assert lmn.meter_id_of(server) == meter_id


def test_server_id_layout_and_bad_ids():
    assert lmn.server_id("1EMH0012345678").hex() == "0a01454d480000bc614e"
    with pytest.raises(ValueError):
        lmn.server_id("1emh0012345678")
    assert lmn.meter_id_of(b"\x0b" + bytes(9)) is None and lmn.meter_id_of(b"short") is None


def answer(request: lmn.Request, body: sml.Body, key: bytes | None, *, req_file_id: bytes | None = None) -> bytes:
    opening = sml.OpenResponse(req_file_id=req_file_id or request.req_file_id, server_id=lmn.server_id(METER))
    return lmn.signed_file([opening, body], key, transaction=b"answer", closing=sml.CloseResponse)


def identity_body(meter: str = METER) -> sml.GetProcParameterResponse:
    identity = lmn.MeterIdentity(lmn.server_id(meter), "XXX", "1.0")
    return sml.GetProcParameterResponse(identity.server_id, (lmn.IDENTITY_PATH,), lmn.identity_tree(identity))


def identity_request(key: bytes = KEY) -> lmn.Request:
    return lmn.identity_request(key=key, client_id=b"EXXX0012345678", meter=METER, req_file_id=os.urandom(8))


def test_request_file_is_signed_sml_that_smllib_frames():
    request = identity_request()
    messages = sml.decode_messages(request.payload)
    assert sml.describe(messages) == "PublicOpen.Req GetProcParameter.Req PublicClose.Req"
    assert lmn.signature_valid(KEY, messages[:2], messages[2].body.global_signature)
    assert not lmn.signature_valid(OTHER, messages[:2], messages[2].body.global_signature)
    reader = SmlStreamReader()
    reader.add(sml.frame(request.payload))
    assert reader.get_frame().bytes == request.payload


def test_a_good_identity_answer_is_accepted():
    request = identity_request()
    body = lmn.judge_answer(request, answer(request, identity_body(), KEY))
    identity = lmn.check_identity(body, METER)
    assert (identity.meter_id, identity.manufacturer, identity.firmware) == (METER, "XXX", "1.0")


@pytest.mark.parametrize(("make", "reason"), [
    (lambda r: answer(r, identity_body(), OTHER), "authentication-failed"),            # signed with another key
    (lambda r: answer(r, identity_body(), None), "authentication-failed"),             # not signed
    (lambda r: answer(r, identity_body(), KEY, req_file_id=b"replayed"), "sml-malformed"),  # not our request
    (lambda r: answer(r, sml.AttentionResponse(lmn.server_id(METER), lmn.ATTENTION_AUTHENTICATION), None),
     "authentication-failed"),
    (lambda r: answer(r, sml.AttentionResponse(lmn.server_id(METER), lmn.ATTENTION_ERROR), None), "meter-refused"),
    (lambda r: answer(r, sml.GetListResponse(lmn.server_id(METER), ()), KEY), "sml-malformed"),  # wrong answer
    (lambda r: b"\x76\x01", "sml-malformed"),
    (lambda r: r.payload, "sml-malformed"),                                             # an echo of the request
])
def test_bad_answers_are_refused_with_a_reason(make, reason):
    request = identity_request()
    with pytest.raises(LmnError) as err:
        lmn.judge_answer(request, make(request))
    assert err.value.reason == reason


def test_another_meter_is_refused():
    request = identity_request()
    body = lmn.judge_answer(request, answer(request, identity_body("1XXX0000000001"), KEY))
    with pytest.raises(LmnError) as err:
        lmn.check_identity(body, METER)
    assert err.value.reason == "meter-id-mismatch" and "1XXX0000000001" in err.value.detail


def test_key_change_wraps_the_new_key_under_the_current_one():
    new_key = os.urandom(32)
    request = lmn.set_key_request(key=KEY, new_key=new_key, client_id=b"gw", meter=METER, req_file_id=b"12345678")
    set_request = sml.decode_messages(request.payload)[1].body
    wrapped = set_request.tree.value
    assert new_key not in request.payload
    assert lmn.unwrap_key(KEY, wrapped) == new_key and lmn.unwrap_key(OTHER, wrapped) is None
    ok = sml.AttentionResponse(lmn.server_id(METER), lmn.ATTENTION_OK)
    assert lmn.judge_answer(request, answer(request, ok, KEY)) == ok
    with pytest.raises(LmnError) as err:
        lmn.set_key_request(key=b"short", new_key=new_key, client_id=b"gw", meter=METER, req_file_id=b"1")
    assert err.value.reason == "no-key"


def test_readings_take_the_profile_registers_with_scaler_and_status():
    body = sml.GetListResponse(lmn.server_id(METER), (
        sml.ListEntry(bytes.fromhex("0100010800ff"), sml.Int(12345678, True, 8), status=0x104, scaler=-1, unit=30),
        sml.ListEntry(bytes.fromhex("0100020800ff"), sml.Int(7, False, 4), scaler=3),
        sml.ListEntry(bytes.fromhex("0100100700ff"), sml.Int(5, True, 4)),          # not a register of the profile
        sml.ListEntry(lmn.DEVICE_ID, lmn.server_id(METER)),
    ))
    assert lmn.readings(body, ["0100010800ff", "0100020800ff", "0100000009ff"]) == {
        "0100010800ff": ("1234567.8", "0000000000000104"), "0100020800ff": ("7000", "0000000000000000"),
    }


def meter_profile(state: str = "pairing"):
    model = CosemModel()
    pk = PROFILE_KINDS["meter"]
    spec = model.definitions.cls(pk.class_id)
    values = {"meter_id": METER, "meter_type": "electricity", "capture_period_s": 900, "pairing_state": state}
    built = {spec.attribute_named(k).index: spec.attribute_named(k).spec.build(v, k) for k, v in values.items()}
    return LogicalDevice("meter", METER), model.build_object(pk.class_id, pk.obis, built)


NOW = _dt.datetime(2026, 11, 25, 12, tzinfo=_dt.timezone.utc)


def test_outcome_of_a_pairing_and_a_failed_crypto_reset():
    ldev, obj = meter_profile()
    identity = lmn.MeterIdentity(lmn.server_id(METER), "XXX", "1.0")
    change = lmn.plan_outcome(ldev, obj, lmn.Outcome("pairing", True, identity=identity, key=KEY, key_source="initial",
                                                     certificate_sha256="ab"), NOW)
    assert change.log_event == "meter-paired" and [e.type for e in change.events] == ["meter-paired"]
    assert change.target.peek(7).value == 2 and obj.peek(7).value == 1  # paired; the model's object untouched
    [write] = change.key_writes
    assert (write.bank, write.state, write.material["key"]) == (f"meter/{METER}/active", "active", KEY.hex())
    assert KEY.hex() not in str(change.details) and change.key_deletes == ()

    failed = lmn.plan_outcome(ldev, obj, lmn.Outcome("crypto-reset", False, "unreachable", "refused", mode="with-pairing",
                                                     attempts=3), NOW)
    assert failed.log_event == "crypto-reset-failed" and failed.target.peek(7).value == 3
    assert failed.key_writes == () and failed.key_deletes == (f"meter/{METER}/pending",)
    assert failed.details["reason"] == "unreachable" and failed.details["attempts"] == "3"


@pytest.mark.parametrize(("line", "field"), [
    ("attempts = 0", "lmn.attempts"), ("retry_interval_s = 0", "lmn.retry_interval_s"),
    ("connect_timeout_s = -1", "lmn.connect_timeout_s"), ("exchange_timeout_s = 4000", "lmn.exchange_timeout_s"),
    ("attempts = \"3\"", "lmn.attempts"), ("color = 1", "lmn.color"),
])
def test_bad_lmn_configuration_names_the_field(line, field):
    from smgw_emu.app.config import DEFAULT_CONFIG_TOML, ConfigError, parse_config

    assert parse_config(DEFAULT_CONFIG_TOML).lmn.attempts == 3
    key = line.split(" =")[0]
    lines = DEFAULT_CONFIG_TOML.splitlines()
    start = lines.index(next(l for l in lines if l.startswith("[lmn]")))
    section = [l for l in lines[start + 1:] if not l.startswith(key + " ")]
    text = "\n".join(lines[:start + 1] + [line] + section)
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        parse_config(text)
