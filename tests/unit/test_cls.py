"""The CLS proxy rules, sans-IO (smgw_emu.core.cls): scenarios, the CLS device's identity, the
SOCKS5 request of HKS 3, authorisation, bandwidth budget and the state of one connection."""

from __future__ import annotations

import struct

import pytest
from cryptography.hazmat.primitives import serialization

from smgw_emu.core.cls import (
    CHUNK_BYTES,
    REPLY_ADDRESS_TYPE_NOT_SUPPORTED,
    REPLY_COMMAND_NOT_SUPPORTED,
    REPLY_GENERAL_FAILURE,
    REPLY_NOT_ALLOWED,
    SCENARIOS,
    TO_CLS,
    TO_EMT,
    ClsConnection,
    ClsLimits,
    ClsProfile,
    ClsRefused,
    DirectionBudget,
    SocksError,
    SocksRequest,
    authorise_hks3,
    check_cls_certificate,
    cls_device_id_of,
    gateway_dials_cls,
    han_address_problem,
    parse_han_address,
    parse_socks_greeting,
    parse_socks_request,
    socks_method_reply,
    socks_reply,
)
from smgw_emu.reference.cls_device import socks_connect_request  # written independently, by hand


def der(pki, name: str) -> bytes:
    return pki.cert(name).public_bytes(serialization.Encoding.DER)


def profile(profile_id="P1", device="CLS-1", emt="EMT-1", hks=3, **kw) -> ClsProfile:
    values = dict(max_bandwidth_kbps=64, max_session_s=3600, cls_address="")
    values.update(kw)
    return ClsProfile(profile_id, device, emt, hks, **values)


# -- scenarios and addresses ----------------------------------------------------------------------


def test_scenarios_are_one_table():
    assert sorted(SCENARIOS) == [3, 4, 5]
    assert [SCENARIOS[h].initiator for h in (3, 4, 5)] == ["cls", "emt", "gateway"]
    assert [gateway_dials_cls(h) for h in (3, 4, 5)] == [False, True, True]


@pytest.mark.parametrize("address, expected", [
    ("127.0.0.1:4712", ("127.0.0.1", 4712)), ("cls.example:1", ("cls.example", 1)), ("[::1]:65535", ("::1", 65535)),
])
def test_han_address_parses(address, expected):
    assert parse_han_address(address) == expected


@pytest.mark.parametrize("address", ["cls.example", ":4712", "host:0", "host:65536", "host:x", "bad host:1", "[nope]:1"])
def test_han_address_refuses(address):
    with pytest.raises(ValueError):
        parse_han_address(address)


def test_han_address_is_required_where_the_gateway_dials():
    assert han_address_problem(3, "") is None
    assert "required" in han_address_problem(4, "")
    assert "required" in han_address_problem(5, "")
    assert han_address_problem(5, "127.0.0.1:1") is None
    assert "host:port" in han_address_problem(3, "nope")


# -- the CLS device's certificate ------------------------------------------------------------------


def test_device_is_named_by_its_certificate(pki):
    assert cls_device_id_of(der(pki, "cls-tls")) == pki.identities.cls
    assert check_cls_certificate(der(pki, "cls-tls"), pki.identities.cls) is None
    assert "names" in check_cls_certificate(der(pki, "meter-tls"), pki.identities.cls)


@pytest.mark.parametrize("certificate, reason", [(None, "no certificate"), (b"junk", "not DER"),
                                                 ("emt-enc", "digitalSignature")])
def test_device_certificate_refused(pki, certificate, reason):
    data = der(pki, certificate) if isinstance(certificate, str) else certificate
    with pytest.raises(ClsRefused, match=reason) as refused:
        cls_device_id_of(data)
    assert refused.value.reason == "bad-certificate"


# -- SOCKS5 ----------------------------------------------------------------------------------------


def test_socks_greeting():
    assert parse_socks_greeting(b"") is None
    assert parse_socks_greeting(b"\x05") is None
    assert parse_socks_greeting(b"\x05\x02\x00") is None  # one method still missing
    assert parse_socks_greeting(b"\x05\x02\x02\x00rest") == (4, b"\x02\x00")
    assert socks_method_reply() == b"\x05\x00" and socks_method_reply(False) == b"\x05\xff"


@pytest.mark.parametrize("data", [b"\x04\x01\x00", b"\x05\x00", b"\x05\x01\x02"])
def test_socks_greeting_refused(data):
    with pytest.raises(SocksError) as refused:
        parse_socks_greeting(data)
    assert refused.value.socks_reply is None and refused.value.reason == "socks-error"


@pytest.mark.parametrize("host, port, kind", [("EMT-TEST-0001", 0, 3), ("10.1.2.3", 4443, 1), ("2001:db8::1", 443, 4)])
def test_socks_request_from_an_independent_client(host, port, kind):
    data = socks_connect_request(host, port)
    for cut in range(len(data)):  # any prefix is incomplete, never an error
        assert parse_socks_request(data[:cut]) is None
    assert parse_socks_request(data + b"app") == (len(data), SocksRequest(host, port, kind))


@pytest.mark.parametrize("data, reply", [
    (b"\x05\x02\x00\x03\x01a\x00\x00", REPLY_COMMAND_NOT_SUPPORTED),    # BIND
    (b"\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00", REPLY_COMMAND_NOT_SUPPORTED),  # UDP ASSOCIATE
    (b"\x05\x01\x00\x02\x00\x00\x00\x00", REPLY_ADDRESS_TYPE_NOT_SUPPORTED),
    (b"\x05\x01\x01\x03\x01a\x00\x00", REPLY_GENERAL_FAILURE),          # reserved byte set
    (b"\x04\x01\x00\x03\x01a\x00\x00", REPLY_GENERAL_FAILURE),          # SOCKS4
    (b"\x05\x01\x00\x03\x00\x00\x00", REPLY_GENERAL_FAILURE),           # empty name
    (b"\x05\x01\x00\x03\x03a b\x00\x00", REPLY_GENERAL_FAILURE),        # not a host name
])
def test_socks_request_refused(data, reply):
    with pytest.raises(SocksError) as refused:
        parse_socks_request(data)
    assert refused.value.socks_reply == reply


def test_socks_reply_discloses_no_address():
    assert socks_reply(0) == b"\x05\x00\x00\x01" + b"\x00" * 4 + struct.pack("!H", 0)


# -- HKS 3 authorisation ---------------------------------------------------------------------------


def test_authorise_by_partner_id_or_profile_address():
    profiles = [profile("A", hks=4), profile("B", hks=3), profile("C", emt="EMT-2", hks=3), profile("D", device="X")]
    addresses = {"EMT-1": ("emt.example", 4443)}
    assert authorise_hks3(profiles, "CLS-1", SocksRequest("EMT-1", 0, 3), addresses).profile_id == "B"
    assert authorise_hks3(profiles, "CLS-1", SocksRequest("emt.example", 4443, 3), addresses).profile_id == "B"
    assert authorise_hks3(profiles, "CLS-1", SocksRequest("EMT-2", 9, 3), addresses).profile_id == "C"


@pytest.mark.parametrize("device, request_, reason", [
    ("NOBODY", SocksRequest("EMT-1", 0, 3), "unknown-device"),
    ("CLS-1", SocksRequest("EMT-3", 0, 3), "emt-not-allowed"),
    ("CLS-1", SocksRequest("emt.example", 4444, 3), "emt-not-allowed"),  # right host, wrong port
    ("CLS-2", SocksRequest("EMT-1", 0, 3), "wrong-hks"),
])
def test_authorise_refuses(device, request_, reason):
    profiles = [profile("A"), profile("B", device="CLS-2", hks=5, cls_address="h:1")]
    with pytest.raises(ClsRefused) as refused:
        authorise_hks3(profiles, device, request_, {"EMT-1": ("emt.example", 4443)})
    assert (refused.value.reason, refused.value.socks_reply) == (reason, REPLY_NOT_ALLOWED)


# -- limits and budget -------------------------------------------------------------------------------


def test_limits_in_bytes():
    limits = ClsLimits(8, 60)
    assert (limits.bytes_per_s, limits.burst_bytes) == (1000.0, 1000)
    assert ClsLimits(1_000_000, 60).burst_bytes == 125_000_000


def test_budget_allows_one_second_then_refills():
    budget = DirectionBudget(ClsLimits(8, 60), now=0.0)
    assert budget.allowance(0.0) == 1000
    assert budget.spend(1000, 0.0) and budget.allowance(0.0) == 0
    assert not budget.spend(1, 0.0)
    assert budget.wait_s(0.0) == pytest.approx(0.25)  # a quarter of the burst
    assert budget.allowance(0.5) == 500
    assert budget.allowance(10.0) == 1000  # never more than one burst
    assert DirectionBudget(ClsLimits(10_000_000, 1), 0.0).allowance(0.0) == CHUNK_BYTES


# -- one connection -------------------------------------------------------------------------------------


def test_connection_life_cycle():
    connection = ClsConnection("P1/1", profile(max_session_s=120), "cls", created_at=5.0)
    assert connection.details()["max-session-s"] == "120"
    assert connection.open(10.0) == 130.0
    with pytest.raises(ValueError):
        connection.open(11.0)
    assert connection.due(129.9) is None and connection.due(130.0) == "session-limit"
    connection.count(TO_EMT, 5)
    connection.count(TO_CLS, 7)
    assert connection.note_limited(TO_EMT) and not connection.note_limited(TO_EMT)
    assert connection.close("session-limit", 130.0)
    assert not connection.close("closed-by-cls", 131.0)  # the first reason stays
    details = connection.details()
    assert (details["reason"], details["bytes-to-emt"], details["bytes-to-cls"], details["duration-s"]) == (
        "session-limit", "5", "7", "120.000")
    assert connection.due(200.0) is None
