"""6.4.5 CLS proxy profile: create (fig. 39), update (40), read (41), delete (42)."""

from __future__ import annotations

from smgw_emu.reference.cosem_client import (
    cls_proxy_profile_values,
    profile_document,
    profile_object_path,
    profile_path,
)

from .conftest import assert_transcript
from .cosem_flow import attributes, create, emt_profile, error_of, open_channel, provision, settled

CLS = "CLS-PROXY-1"


def cls_profile(pki, **changes):
    return create("clsprofile", CLS, cls_proxy_profile_values(pki, CLS, **changes))


async def test_fig39_create_cls_proxy_profile(gateway, gwa, pki):
    await provision(gateway, gwa, emt_profile(pki))
    channel = await open_channel(gateway, gwa)
    body = profile_document("clsprofile", cls_proxy_profile_values(pki, CLS))
    response = await channel.request("POST", profile_path("clsprofile", CLS), body, step="post-cls-proxy-profile")
    assert response.status == 201, response.text
    [event] = await gwa.wait_event("cls-proxy-profile-created")
    assert (event.details["cls-device"], event.details["emt"], event.details["hks"]) == (pki.identities.cls, pki.identities.emt, "4")
    await settled(gateway)
    [stored] = gateway.store.objects("clsprofile", CLS)
    assert stored.attributes["max_session_s"] == 3600
    assert_transcript(39, gateway, gwa)


async def test_fig40_update_cls_proxy_profile(gateway, gwa, pki):
    await provision(gateway, gwa, emt_profile(pki), cls_profile(pki))
    channel = await open_channel(gateway, gwa)
    body = profile_document("clsprofile", {"hks": 5, "max_bandwidth_kbps": 256})
    response = await channel.request("PUT", profile_object_path("clsprofile", CLS), body, step="put-cls-proxy-profile")
    assert response.status == 200, response.text
    [event] = await gwa.wait_event("cls-proxy-profile-updated")
    assert event.details["changed"] == "hks,max_bandwidth_kbps"
    await settled(gateway)
    assert gateway.store.objects("clsprofile", CLS)[0].attributes["hks"] == 5
    assert_transcript(40, gateway, gwa)


async def test_fig41_read_cls_proxy_profile(gateway, gwa, pki):
    await provision(gateway, gwa, emt_profile(pki), cls_profile(pki))
    channel = await open_channel(gateway, gwa)
    response = await channel.request("GET", profile_object_path("clsprofile", CLS), step="get-cls-proxy-profile")
    assert response.status == 200, response.text
    values = attributes(response.body)
    assert (values["emt_id"].value, values["hks"].value) == (pki.identities.emt, 4)
    assert_transcript(41, gateway, gwa)


async def test_fig42_delete_cls_proxy_profile(gateway, gwa, pki):
    await provision(gateway, gwa, emt_profile(pki), cls_profile(pki))
    channel = await open_channel(gateway, gwa)
    response = await channel.request("DELETE", profile_object_path("clsprofile", CLS), step="delete-cls-proxy-profile")
    assert response.status == 204, response.text
    await gwa.wait_event("cls-proxy-profile-deleted")
    await settled(gateway)
    assert gateway.store.objects("clsprofile", CLS) == []
    assert_transcript(42, gateway, gwa)


async def test_cls_proxy_profile_validation_names_the_field(gateway, gwa, pki):
    await provision(gateway, gwa, emt_profile(pki))
    channel = await open_channel(gateway, gwa)
    cases = [
        ({"emt_id": "EMT-NOBODY"}, 422, "unknown-reference", "emt_id"),
        ({"hks": 2}, 400, "type-mismatch", "hks"),
        ({"max_bandwidth_kbps": 0}, 422, "invalid-value", "max_bandwidth_kbps"),
        ({"max_session_s": 200000}, 422, "invalid-value", "max_session_s"),
        ({"cls_device_id": "bad id!"}, 422, "invalid-value", "cls_device_id"),
    ]
    before = gateway.store.objects()
    for changes, status, code, field in cases:
        values = cls_proxy_profile_values(pki, CLS, **{k: v for k, v in changes.items() if k != "hks"})
        body = profile_document("clsprofile", values)
        if "hks" in changes:  # outside the type's range: cannot be built, so written into the document
            body = body.replace(b"<unsigned>4</unsigned>", b"<unsigned>2</unsigned>")
        response = await channel.request("POST", profile_path("clsprofile", CLS), body)
        error = error_of(response.body)
        assert (response.status, error.code, error.field) == (status, code, field), (changes, response.text)
    assert gateway.store.objects() == before
