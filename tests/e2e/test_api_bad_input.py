"""Bad input on the MANAGEMENT channel's COSEM API: every case gets its documented 4xx and error
code, changes no state, and is logged (system-log entry request-failed with the code)."""

from __future__ import annotations

import pytest

from smgw_emu.core.cosem import ObisCode
from smgw_emu.reference.cosem_client import (
    attribute_document,
    communication_profile_values,
    meter_profile_values,
    object_document,
    profile_document,
    profile_object_path,
    profile_path,
)

from .cosem_flow import emt_profile, error_of, last_record, meter, open_channel, provision, system_events


def state(gateway):
    return gateway.store.objects(), gateway.store.ldevs(), gateway.store.key_banks(), gateway.store.count("outbox")


def failures(gateway, since: int) -> list[tuple[str, str]]:
    return [(e.details.get("status"), e.details.get("code")) for e in system_events(gateway, since) if e.event == "request-failed"]


def _deep(levels: int) -> bytes:
    return b"<array>" * levels + b"</array>" * levels


XXE = b"""<?xml version="1.0"?><!DOCTYPE cosem-object [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<cosem-object class-id="28100" obis="0000800001ff"><attribute index="4"><visible-string>&xxe;</visible-string></attribute></cosem-object>"""
LAUGHS = b"""<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]><cosem-object class-id="28100" obis="0000800001ff"/>"""
DOCTYPE = b"""<?xml version="1.0"?><!DOCTYPE cosem-object SYSTEM "http://example.invalid/cosem.dtd"><cosem-object class-id="28100" obis="0000800001ff"/>"""
UNDECLARED = b"""<cosem-object class-id="28100" obis="0000800001ff"><attribute index="4"><visible-string>&undeclared;</visible-string></attribute></cosem-object>"""


def _bodies(pki) -> dict[str, tuple[bytes, int, str]]:
    good = profile_document("commprofile", communication_profile_values(pki))
    wrong_type = good.replace(b"<long-unsigned>4443</long-unsigned>", b"<visible-string>4443</visible-string>")
    assert wrong_type != good
    return {
        "malformed": (b"<cosem-object class-id='28100'", 400, "malformed"),
        "empty": (b"", 400, "malformed"),
        "not UTF-8": (good.replace(b"emt.example", "\u00e9mt".encode("latin-1")), 400, "malformed"),
        "XXE": (XXE, 400, "entity-forbidden"),
        "entity expansion": (LAUGHS, 400, "entity-forbidden"),
        "DOCTYPE": (DOCTYPE, 400, "doctype-forbidden"),
        "undeclared entity": (UNDECLARED, 400, "entity-forbidden"),
        "10,000 deep": (b'<cosem-object class-id="28100" obis="0000800001ff"><attribute index="2">' + _deep(10_000)
                        + b"</attribute></cosem-object>", 400, "too-deep"),
        "65 deep (over policy.xml_max_depth)": (b'<cosem-object class-id="28100" obis="0000800001ff"><attribute index="2">'
                                                + _deep(63) + b"</attribute></cosem-object>", 400, "too-deep"),
        "wrong type": (wrong_type, 400, "type-mismatch"),
        "unknown DLMS type": (good.replace(b"<long-unsigned>4443</long-unsigned>", b"<long-long>4443</long-long>"), 400, "bad-xml"),
        "wrong root": (b"<attribute index='2'><unsigned>1</unsigned></attribute>", 400, "bad-xml"),
        "unknown class": (good.replace(b'class-id="28100"', b'class-id="4711"'), 400, "wrong-object"),
        "bad OBIS": (good.replace(b'obis="0000800001ff"', b'obis="00008000"'), 400, "bad-obis"),
        "unknown attribute": (good.replace(b'index="14"', b'index="99"'), 404, "unknown-attribute"),
        "attribute named wrongly": (good.replace(b'name="host"', b'name="hostname"'), 400, "bad-xml"),
    }


async def test_bad_bodies_are_refused_and_logged(gateway, gwa, pki):
    channel = await open_channel(gateway, gwa)
    path = profile_path("commprofile", pki.identities.emt)
    before, mark = state(gateway), last_record(gateway)
    expected = []
    for name, (body, status, code) in _bodies(pki).items():
        response = await channel.request("POST", path, body)
        assert (response.status, error_of(response.body).code) == (status, code), (name, response.text)
        expected.append((str(status), code))
    assert state(gateway) == before
    assert failures(gateway, mark) == expected
    wrong_type = error_of((await channel.request("POST", path, _bodies(pki)["wrong type"][0])).body)
    assert wrong_type.field.endswith("visible-string[1]") or wrong_type.field == "port"


async def test_50_mb_body_is_refused_before_it_is_read(gateway, gwa, pki):
    channel = await open_channel(gateway, gwa)
    before, mark = state(gateway), last_record(gateway)
    response = await channel.request("POST", profile_path("commprofile", pki.identities.emt), b"<a>" + b"x" * (50 * 1024 * 1024) + b"</a>",
                                     timeout=60)
    assert response.status == 413 and error_of(response.body).code == "body-too-large"
    assert state(gateway) == before
    assert [e.event for e in system_events(gateway, mark)] == ["request-failed"]
    # the channel still serves
    assert (await channel.request("GET", "/smgw/cosem")).status == 200


async def test_unknown_addresses(gateway, gwa, pki):
    await provision(gateway, gwa, meter(pki))
    channel = await open_channel(gateway, gwa)
    m = pki.identities.meter
    cases = [
        ("GET", "/smgw/cosem/meter/1XXX0000000001", 404, "unknown-ldev"),
        ("GET", f"/smgw/cosem/commprofile/{m}", 404, "unknown-ldev"),  # exists, but as a meter
        ("GET", f"/smgw/cosem/meter/{m}/3-0100010800ff", 404, "unknown-object"),
        ("GET", f"/smgw/cosem/meter/{m}/28300-0000800099ff", 404, "unknown-object"),
        ("GET", f"/smgw/cosem/meter/{m}/28300-0000800002ff/attributes/42", 404, "unknown-attribute"),
        ("POST", f"/smgw/cosem/meter/{m}/28300-0000800002ff/methods/9", 404, "unknown-method"),
        ("GET", f"/smgw/cosem/meter/{m}/not-an-object", 404, "bad-address"),
        ("GET", f"/smgw/cosem/meter/{m}/28300-0000800002ff/attributes/0", 404, "bad-address"),
        ("DELETE", "/smgw/cosem/clsprofile/NOPE", 404, "unknown-ldev"),
        ("POST", "/smgw/cosem/toaster/T1", 404, "unknown-ldev"),
        ("GET", f"/smgw/cosem/meter/{m}/28300-0000800002ff/attributes", 404, "unknown-resource"),
    ]
    before, mark = state(gateway), last_record(gateway)
    body = profile_document("meter", meter_profile_values(pki))
    for method, path, status, code in cases:
        response = await channel.request(method, path, body if method == "POST" else b"")
        assert (response.status, error_of(response.body).code) == (status, code), (method, path, response.text)
    assert state(gateway) == before
    assert failures(gateway, mark) == [(str(s), c) for _, _, s, c in cases]
    not_allowed = await channel.request("PUT", f"/smgw/cosem/meter/{m}", b"<x/>")
    assert not_allowed.status == 405 and not_allowed.headers["Allow"] == "DELETE, GET, POST"


async def test_writes_to_read_only_attributes(gateway, gwa, pki):
    await provision(gateway, gwa, meter(pki))
    channel = await open_channel(gateway, gwa)
    m, gw = pki.identities.meter, gateway.id
    profile = profile_object_path("meter", m)
    cases = [
        (profile + "/attributes/1", attribute_document(28300, "logical_name", bytes.fromhex("0000800003ff")), "logical_name"),
        (profile + "/attributes/7", attribute_document(28300, "pairing_state", "paired"), "pairing_state"),
        (f"/smgw/cosem/gateway/{gw}/8-0000010000ff/attributes/2", b"<date-time>2030-01-01T00:00:00+00:00</date-time>", "time"),
        (f"/smgw/cosem/meter/{m}/28403-0100010800ff/attributes/2", b"<array/>", "buffer"),
        (f"/smgw/cosem/gateway/{gw}/1-0100000200ff/attributes/2", b"<visible-string>9.9</visible-string>", "value"),
    ]
    before, mark = state(gateway), last_record(gateway)
    for path, body, field in cases:
        response = await channel.request("PUT", path, body)
        error = error_of(response.body)
        assert (response.status, error.code, error.field) == (405, "read-only-attribute", field), (path, response.text)
    # a whole-object PUT naming a read-only attribute is refused as a whole
    response = await channel.request("PUT", profile, profile_document("meter", {"capture_period_s": 300, "pairing_state": "paired"}))
    assert response.status == 405
    assert state(gateway) == before
    assert failures(gateway, mark) == [("405", "read-only-attribute")] * (len(cases) + 1)


async def test_role_may_not_touch_the_object(gateway, gwa, pki):
    """The GWA (role gwa) may not read key material back, create objects of standard classes,
    delete the gateway's own objects or LDEV."""
    await provision(gateway, gwa, meter(pki))
    channel = await open_channel(gateway, gwa)
    m, gw = pki.identities.meter, gateway.id
    clock = object_document(8, ObisCode(0, 0, 1, 0, 0, 1), {"time_zone": 60})
    cases = [
        ("GET", profile_object_path("meter", m) + "/attributes/5", b"", "encrypted_key"),
        ("POST", f"/smgw/cosem/gateway/{gw}", clock, "class-id"),
        ("DELETE", f"/smgw/cosem/gateway/{gw}/28403-0000636200ff", b"", "object"),
        ("DELETE", f"/smgw/cosem/meter/{m}/28403-0100010800ff", b"", "object"),
        ("DELETE", f"/smgw/cosem/gateway/{gw}", b"", "ldev"),
    ]
    before, mark = state(gateway), last_record(gateway)
    for method, path, body, field in cases:
        response = await channel.request(method, path, body)
        error = error_of(response.body)
        assert (response.status, error.code, error.field) == (403, "access-denied", field), (method, path, response.text)
    assert state(gateway) == before
    assert failures(gateway, mark) == [("403", "access-denied")] * len(cases)


async def test_duplicates_and_mismatches(gateway, gwa, pki):
    await provision(gateway, gwa, emt_profile(pki), meter(pki))
    channel = await open_channel(gateway, gwa)
    m, emt = pki.identities.meter, pki.identities.emt
    meter_body = profile_document("meter", meter_profile_values(pki))
    cases = [
        ("POST", profile_path("meter", m), meter_body, 409, "duplicate-ldev"),
        ("POST", profile_path("commprofile", m), profile_document("commprofile", communication_profile_values(pki, partner_id=m)), 409, "duplicate-ldev"),
        ("POST", profile_path("meter", "1XXX0000000002"), profile_document("commprofile", {"partner_id": "x"}), 400, "wrong-object"),
        ("PUT", profile_object_path("commprofile", emt), meter_body, 400, "wrong-object"),
        ("PUT", profile_object_path("meter", m) + "/attributes/4", attribute_document(28300, "meter_id", m), 400, "bad-xml"),
    ]
    before, mark = state(gateway), last_record(gateway)
    for method, path, body, status, code in cases:
        response = await channel.request(method, path, body)
        assert (response.status, error_of(response.body).code) == (status, code), (path, response.text)
    assert state(gateway) == before
    assert failures(gateway, mark) == [(str(s), c) for *_, s, c in cases]


async def test_requests_outside_auth_change_nothing(gateway, gwa, pki):
    channel = await open_channel(gateway, gwa)
    assert (await channel.request("DELETE", "/smgw/auth")).status == 200
    before = state(gateway)
    body = profile_document("meter", meter_profile_values(pki))
    response = await channel.request("POST", profile_path("meter", pki.identities.meter), body)
    assert response.status == 403 and b"auth-required" in response.body
    assert state(gateway) == before
    assert system_events(gateway)[-1].event == "request-refused-no-auth"


@pytest.mark.parametrize("media", ["text/plain", "application/json", ""])
async def test_unsupported_media_type(gateway, gwa, pki, media):
    channel = await open_channel(gateway, gwa)
    before = state(gateway)
    body = profile_document("meter", meter_profile_values(pki))
    response = await channel.request("POST", profile_path("meter", pki.identities.meter), body,
                                     headers={"Content-Type": media})
    assert response.status == 415 and error_of(response.body).code == "unsupported-media-type"
    assert state(gateway) == before
