"""6.4.2 meter profile: create (fig. 26), update (27), read (28), delete (29); the gateway side of
pairing (30) and crypto reset (31, 32); meter key material in a CMS container (5.10)."""

from __future__ import annotations

import os

from smgw_emu.core import cms
from smgw_emu.core.cosem import DlmsValue, xmlcodec
from smgw_emu.reference.cosem_client import (
    attribute_document,
    meter_profile_values,
    profile_document,
    profile_object_path,
    profile_path,
    seal_for_gateway,
)

from .conftest import assert_transcript
from .cosem_flow import attributes, error_of, meter, open_channel, provision, settled, system_events, last_record

KEY = bytes(range(16))


async def test_fig26_create_meter_profile(gateway, gwa, pki):
    meter_id = pki.identities.meter
    channel = await open_channel(gateway, gwa)
    body = profile_document("meter", meter_profile_values(pki, key_container=seal_for_gateway(pki, KEY)))
    response = await channel.request("POST", profile_path("meter", meter_id), body, step="post-meter-profile")
    assert response.status == 201, response.text
    values = attributes(response.body)
    assert "encrypted_key" not in values  # write-only: key material never comes back
    assert values["pairing_state"].value == 0  # unpaired
    [event] = await gwa.wait_event("meter-profile-created")
    assert event.details["meter"] == meter_id and event.details["key-material"] == "yes"
    await settled(gateway)
    # the key was decrypted and kept in the key bank; it appears in no log entry
    state, material = gateway.store.key_banks()[f"meter/{meter_id}/initial"]
    assert material["key"] == KEY.hex()
    assert all(KEY.hex() not in str(e.details) + e.message for e in system_events(gateway))
    # the meter's LDEV: the profile and its original value lists (import, export)
    stored = {(o.class_id, o.obis) for o in gateway.store.objects("meter", meter_id)}
    assert stored == {(28300, "0000800002ff"), (28403, "0100010800ff"), (28403, "0100020800ff")}
    assert_transcript(26, gateway, gwa)


async def test_fig27_update_meter_profile(gateway, gwa, pki):
    meter_id = pki.identities.meter
    await provision(gateway, gwa, meter(pki))
    channel = await open_channel(gateway, gwa)
    body = profile_document("meter", {"capture_period_s": 300})
    response = await channel.request("PUT", profile_object_path("meter", meter_id), body, step="put-meter-profile")
    assert response.status == 200, response.text
    assert attributes(response.body)["capture_period_s"].value == 300
    [event] = await gwa.wait_event("meter-profile-updated")
    assert event.details["changed"] == "capture_period_s"
    await settled(gateway)
    periods = {o.obis: o.attributes["capture_period_s"] for o in gateway.store.objects("meter", meter_id)}
    assert periods == {"0000800002ff": 300, "0100010800ff": 300, "0100020800ff": 300}
    assert_transcript(27, gateway, gwa)


async def test_fig28_read_meter_profile(gateway, gwa, pki):
    meter_id = pki.identities.meter
    await provision(gateway, gwa, meter(pki, key_container=seal_for_gateway(pki, KEY)))
    channel = await open_channel(gateway, gwa)
    response = await channel.request("GET", profile_object_path("meter", meter_id), step="get-meter-profile")
    assert response.status == 200, response.text
    values = attributes(response.body)
    assert values["meter_id"].value == meter_id and values["meter_type"].value == 1
    assert "encrypted_key" not in values
    assert_transcript(28, gateway, gwa)


async def test_fig29_delete_meter_profile(gateway, gwa, pki):
    meter_id = pki.identities.meter
    await provision(gateway, gwa, meter(pki, key_container=seal_for_gateway(pki, KEY)))
    channel = await open_channel(gateway, gwa)
    response = await channel.request("DELETE", profile_object_path("meter", meter_id), step="delete-meter-profile")
    assert response.status == 204, response.text
    await gwa.wait_event("meter-profile-deleted")
    await settled(gateway)
    assert gateway.store.objects("meter", meter_id) == []
    assert not [bank for bank in gateway.store.key_banks() if bank.startswith(f"meter/{meter_id}/")]
    assert_transcript(29, gateway, gwa)
    gone = await channel.request("GET", profile_object_path("meter", meter_id))
    assert gone.status == 404 and error_of(gone.body).code == "unknown-ldev"


async def test_meter_profile_validation_names_the_field(gateway, gwa, pki):
    meter_id = pki.identities.meter
    channel = await open_channel(gateway, gwa)
    wrong_usage = meter_profile_values(pki)["meter_certificate"]
    from cryptography.hazmat.primitives import serialization

    enc_cert = pki.cert("gateway-enc").public_bytes(serialization.Encoding.DER)
    cases = [
        ({"meter_id": "1XXX12"}, meter_id, 422, "invalid-value", "meter_id"),
        ({"meter_type": "gas"}, meter_id, 422, "invalid-value", "meter_type"),
        ({"capture_period_s": 7}, meter_id, 422, "invalid-value", "capture_period_s"),
        ({"capture_period_s": 0}, meter_id, 422, "invalid-value", "capture_period_s"),
        ({"meter_certificate": enc_cert}, meter_id, 422, "invalid-certificate", "meter_certificate"),
        ({"pairing_state": "paired"}, meter_id, 405, "read-only-attribute", "pairing_state"),
        ({"meter_type": 5}, meter_id, 400, "type-mismatch", "meter_type"),
    ]
    assert wrong_usage  # the PKI's meter TLS certificate itself is fine (see fig. 26)
    before = gateway.store.objects()
    for changes, ldev, status, code, field in cases:
        values = meter_profile_values(pki)
        values.update({k: v for k, v in changes.items() if not isinstance(v, int) or k != "meter_type"})
        body = profile_document("meter", values)
        if changes.get("meter_type") == 5:  # not a meter_type name: write the raw enum into the document
            body = body.replace(b"<enum>1</enum>", b"<enum>5</enum>")
        response = await channel.request("POST", profile_path("meter", ldev), body)
        error = error_of(response.body)
        assert (response.status, error.code, error.field) == (status, code, field), (changes, response.text)
    assert gateway.store.objects() == before


async def test_bad_key_container_changes_nothing(gateway, gwa, pki):
    meter_id = pki.identities.meter
    channel = await open_channel(gateway, gwa)
    cases = {
        "wrong recipient": (seal_for_gateway(pki, KEY, recipient="gwa-enc"), 400, "cms-not-for-us"),
        "not signed by the GWA": (seal_for_gateway(pki, KEY, signer="emt-sig"), 403, "cms-unknown-signer"),
        "not a container": (b"\x30\x03\x02\x01\x00", 400, "cms-malformed"),
        "key of 5 bytes": (seal_for_gateway(pki, b"short"), 422, "invalid-value"),
    }
    before, banks, mark = gateway.store.objects(), gateway.store.key_banks(), last_record(gateway)
    for name, (container, status, code) in cases.items():
        body = profile_document("meter", meter_profile_values(pki, key_container=container))
        response = await channel.request("POST", profile_path("meter", meter_id), body)
        error = error_of(response.body)
        assert (response.status, error.code, error.field) == (status, code, "encrypted_key"), (name, response.text)
    assert gateway.store.objects() == before and gateway.store.key_banks() == banks
    failed = [e for e in system_events(gateway, mark) if e.event == "request-failed"]
    assert [e.details["code"] for e in failed] == [c for _, _, c in cases.values()]


def method_path(meter_id: str, index: int) -> str:
    return profile_object_path("meter", meter_id) + f"/methods/{index}"


async def test_pairing_and_crypto_reset_state_machine(gateway, gwa, pki):
    """The gateway side of figs. 30-32: states, checks, key banks, events. The profile has no
    lmn_address, so the LMN side (tests/e2e/test_lmn_pairing.py) waits and the states stay put."""
    meter_id = pki.identities.meter
    await provision(gateway, gwa, meter(pki, meter_certificate=b""))
    channel = await open_channel(gateway, gwa)

    # no key material yet: neither pairing nor a crypto reset without pairing can start
    for index in (1, 2):
        refused = await channel.request("POST", method_path(meter_id, index), b"")
        assert refused.status == 409 and error_of(refused.body).field == "encrypted_key", refused.text
    # fig. 32: the GWA supplies the meter's initial key first ...
    put = await channel.request("PUT", profile_object_path("meter", meter_id) + "/attributes/5",
                                attribute_document(28300, "encrypted_key", seal_for_gateway(pki, KEY)))
    assert put.status == 200, put.text
    # ... then calls crypto_reset with the new key material in a container from the GWA
    new_key = os.urandom(16)
    argument = xmlcodec.value_to_xml(DlmsValue("octet-string", seal_for_gateway(pki, new_key)))
    reset = await channel.request("POST", method_path(meter_id, 2), argument)
    assert reset.status == 200, reset.text
    assert xmlcodec.method_result_from_xml(reset.body) == (2, DlmsValue("enum", 1))  # pairing
    [event] = await gwa.wait_event("crypto-reset-started")
    assert event.details["mode"] == "without-pairing" and event.details["key-source"] == "gwa"
    state, material = gateway.store.key_banks()[f"meter/{meter_id}/pending"]
    assert (state, material["key"]) == ("pending", new_key.hex())
    # while the meter side works on it, neither method starts again
    for index in (1, 2):
        busy = await channel.request("POST", method_path(meter_id, index), b"")
        assert busy.status == 409 and error_of(busy.body).code == "state-conflict"
    profile = attributes((await channel.request("GET", profile_object_path("meter", meter_id))).body)
    assert profile["pairing_state"].value == 1
    await settled(gateway)


async def test_pair_starts_pairing(gateway, gwa, pki):
    meter_id = pki.identities.meter
    await provision(gateway, gwa, meter(pki, key_container=seal_for_gateway(pki, KEY)))
    channel = await open_channel(gateway, gwa)
    response = await channel.request("POST", method_path(meter_id, 1), b"")
    assert response.status == 200, response.text
    [event] = await gwa.wait_event("meter-pairing-started")
    assert event.details["previous-state"] == "unpaired"
    [stored] = [o for o in gateway.store.objects("meter", meter_id) if o.class_id == 28300]
    assert stored.attributes["pairing_state"] == "pairing"
    bad_argument = await channel.request("POST", method_path(meter_id, 1), b"<unsigned>1</unsigned>")
    assert bad_argument.status == 400 and error_of(bad_argument.body).code == "type-mismatch"
    await settled(gateway)


def test_reference_containers_open_with_the_gateway_key(pki):
    """The reference side's helper seals exactly what the gateway's key opens."""
    container = seal_for_gateway(pki, KEY)
    opened = cms.open_sealed(container, pki.cert("gateway-enc"), pki.key("gateway-enc"), [pki.cert("gwa-sig")])
    assert opened.content == KEY
