"""6.4.1 communication profile: create (fig. 22), update (23), read (24), delete (25), on the wire."""

from __future__ import annotations

from smgw_emu.reference.cosem_client import (
    attribute_document,
    communication_profile_values,
    profile_document,
    profile_object_path,
    profile_path,
)

from .conftest import assert_transcript
from .cosem_flow import attributes, emt_profile, error_of, open_channel, provision, settled


async def test_fig22_create_communication_profile(gateway, gwa, pki):
    emt = pki.identities.emt
    channel = await open_channel(gateway, gwa)
    body = profile_document("commprofile", communication_profile_values(pki))
    response = await channel.request("POST", profile_path("commprofile", emt), body, step="post-communication-profile")
    assert response.status == 201, response.text
    assert response.headers["Location"] == profile_object_path("commprofile", emt)
    assert attributes(response.body)["partner_id"].value == emt
    [event] = await gwa.wait_event("communication-profile-created")
    assert event.details["ldev"] == f"commprofile/{emt}" and event.details["role"] == "emt"
    await settled(gateway)
    [stored] = gateway.store.objects("commprofile", emt)
    assert stored.attributes["partner_role"] == "emt" and stored.attributes["port"] == 4443
    assert [e.event for e in gateway.store.logs("system", limit=10**6)].count("communication-profile-created") == 1
    assert_transcript(22, gateway, gwa)


async def test_fig23_update_communication_profile(gateway, gwa, pki):
    emt = pki.identities.emt
    await provision(gateway, gwa, emt_profile(pki))
    channel = await open_channel(gateway, gwa)
    body = profile_document("commprofile", {"host": "emt2.example", "port": 5443})
    response = await channel.request("PUT", profile_object_path("commprofile", emt), body, step="put-communication-profile")
    assert response.status == 200, response.text
    assert attributes(response.body)["host"].value == "emt2.example"
    [event] = await gwa.wait_event("communication-profile-updated")
    assert event.details["changed"] == "host,port"
    await settled(gateway)
    [stored] = gateway.store.objects("commprofile", emt)
    assert (stored.attributes["host"], stored.attributes["port"]) == ("emt2.example", 5443)
    assert_transcript(23, gateway, gwa)


async def test_fig24_read_communication_profile(gateway, gwa, pki):
    emt = pki.identities.emt
    await provision(gateway, gwa, emt_profile(pki))
    channel = await open_channel(gateway, gwa)
    response = await channel.request("GET", profile_object_path("commprofile", emt), step="get-communication-profile")
    assert response.status == 200, response.text
    values = attributes(response.body)
    assert values["partner_id"].value == emt and values["container_profile"].value == "default"
    assert values["encryption_certificate"].value == communication_profile_values(pki)["encryption_certificate"]
    assert_transcript(24, gateway, gwa)


async def test_fig25_delete_communication_profile(gateway, gwa, pki):
    emt = pki.identities.emt
    await provision(gateway, gwa, emt_profile(pki))
    channel = await open_channel(gateway, gwa)
    response = await channel.request("DELETE", profile_object_path("commprofile", emt), step="delete-communication-profile")
    assert response.status == 204, response.text
    await gwa.wait_event("communication-profile-deleted")
    await settled(gateway)
    assert gateway.store.objects("commprofile", emt) == []
    assert ("commprofile", emt) not in gateway.store.ldevs()
    assert_transcript(25, gateway, gwa)


async def test_gwa_profile_is_locked(gateway, gwa, pki):
    channel = await open_channel(gateway, gwa)
    path = profile_object_path("commprofile", gateway.gwa.id)
    # the GWA's own profile is readable, built from personalisation ...
    own = attributes((await channel.request("GET", path)).body)
    assert own["partner_role"].value == 0 and own["port"].value == gwa.management_port  # 0 = gwa
    # ... and not changed through this API
    before = gateway.store.objects()
    put = await channel.request("PUT", path + "/attributes/4", attribute_document(28100, "host", "elsewhere.example"))
    assert put.status == 409 and error_of(put.body).code == "profile-locked"
    delete = await channel.request("DELETE", path)
    assert delete.status == 409 and error_of(delete.body).code == "profile-locked"
    assert gateway.store.objects() == before


async def test_communication_profile_validation_names_the_field(gateway, gwa, pki):
    emt = pki.identities.emt
    channel = await open_channel(gateway, gwa)
    cases = {
        "partner_id": ({"partner_id": "OTHER"}, 422, "invalid-value"),
        "port": ({"port": 0}, 422, "invalid-value"),
        "host": ({"host": "not a host"}, 422, "invalid-value"),
        "info_report_url": ({"info_report_url": "http://plain.example/"}, 422, "invalid-value"),
        "idle_timeout_s": ({"idle_timeout_s": 200000}, 422, "invalid-value"),
        "container_profile": ({"container_profile": "rot13"}, 422, "invalid-value"),
        # wrong key usage: a TLS certificate where the encryption certificate belongs
        "encryption_certificate": ({"encryption_certificate": communication_profile_values(pki)["tls_certificate"]},
                                   422, "invalid-certificate"),
        "tls_certificate": ({"tls_certificate": b"\x30\x03\x02\x01\x01"}, 422, "invalid-certificate"),
    }
    before = gateway.store.objects()
    for field, (changes, status, code) in cases.items():
        body = profile_document("commprofile", communication_profile_values(pki, **changes))
        response = await channel.request("POST", profile_path("commprofile", emt), body)
        error = error_of(response.body)
        assert (response.status, error.code, error.field) == (status, code, field), (field, response.text)
    assert gateway.store.objects() == before
