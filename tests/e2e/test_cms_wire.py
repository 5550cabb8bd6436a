"""CMS data containers on the MANAGEMENT channel: the gateway decrypts what the GWA sends sealed
(5.10, fig. 10) and seals what it answers when asked (5.11, fig. 11)."""

from __future__ import annotations

from smgw_emu.core import cms
from smgw_emu.core.cosem import xmlcodec
from smgw_emu.reference.cosem_client import (
    CMS_MEDIA_TYPE,
    communication_profile_values,
    open_from_gateway,
    profile_document,
    profile_path,
    seal_for_gateway,
)

from .conftest import assert_transcript
from .cosem_flow import error_of, last_record, open_channel, settled, system_events

SEALED = {"Content-Type": CMS_MEDIA_TYPE}


async def test_fig10_gateway_decrypts_a_sealed_request(gateway, gwa, pki):
    emt = pki.identities.emt
    channel = await open_channel(gateway, gwa)
    container = seal_for_gateway(pki, profile_document("commprofile", communication_profile_values(pki)))
    response = await channel.request("POST", profile_path("commprofile", emt), container, headers=SEALED,
                                     step="post-cms-container")
    assert response.status == 201, response.text
    await gwa.wait_event("communication-profile-created")
    await settled(gateway)
    [opened] = [e for e in system_events(gateway) if e.event == "cms-container-opened"]
    assert opened.details["signer"] == gateway.gwa.id and opened.details["source"] == "request body"
    assert gateway.store.objects("commprofile", emt)
    assert_transcript(10, gateway, gwa)


async def test_fig10_refused_containers_change_nothing(gateway, gwa, pki):
    emt = pki.identities.emt
    channel = await open_channel(gateway, gwa)
    xml = profile_document("commprofile", communication_profile_values(pki))
    good = seal_for_gateway(pki, xml)
    tampered = bytearray(good)
    tampered[-40] ^= 0x01  # inside the GCM ciphertext / tag
    sha1_kdf = cms.ContainerProfile("sha1-kdf", kdf_hash="sha1")
    cases = {
        "for another recipient": (seal_for_gateway(pki, xml, recipient="gwa-enc"), 400, "cms-not-for-us"),
        "signed by the EMT": (seal_for_gateway(pki, xml, signer="emt-sig"), 403, "cms-unknown-signer"),
        "tampered": (bytes(tampered), 400, "cms-decrypt-failed"),
        "not DER": (b"<xml-pretending-to-be-cms/>", 400, "cms-malformed"),
        "signed, not encrypted": (cms.sign(xml, pki.cert("gwa-sig"), pki.key("gwa-sig")), 400, "cms-wrong-content-type"),
        "SHA-1 KDF": (cms.seal(xml, pki.cert("gwa-sig"), pki.key("gwa-sig"), pki.cert("gateway-enc"), sha1_kdf),
                      415, "cms-unsupported-algorithm"),
        "sealed garbage": (seal_for_gateway(pki, b"not xml"), 400, "malformed"),
    }
    before, mark = gateway.store.objects(), last_record(gateway)
    for name, (body, status, code) in cases.items():
        response = await channel.request("POST", profile_path("commprofile", emt), body, headers=SEALED)
        assert (response.status, error_of(response.body).code) == (status, code), (name, response.text)
    wrong_type = await channel.request("POST", profile_path("commprofile", emt), good, headers={"Content-Type": "text/plain"})
    assert (wrong_type.status, error_of(wrong_type.body).code) == (415, "unsupported-media-type")
    assert gateway.store.objects() == before
    failed = [e.details["code"] for e in system_events(gateway, mark) if e.event == "request-failed"]
    assert failed == [c for _, _, c in cases.values()] + ["unsupported-media-type"]


async def test_fig11_gateway_seals_a_response_for_the_gwa(gateway, gwa, pki):
    channel = await open_channel(gateway, gwa)
    path = f"/smgw/cosem/gateway/{gateway.id}/8-0000010000ff"
    response = await channel.request("GET", path, headers={"Accept": CMS_MEDIA_TYPE}, step="get-sealed")
    assert response.status == 200, response.text
    assert response.headers["Content-Type"].startswith(CMS_MEDIA_TYPE)
    clock = xmlcodec.object_from_xml(open_from_gateway(pki, response.body))
    assert clock.class_id == 8
    [sealed] = [e for e in system_events(gateway) if e.event == "cms-container-sealed"]
    assert sealed.details["recipient"] == gateway.gwa.id
    assert_transcript(11, gateway, gwa)
    # errors stay readable: not sealed
    missing = await channel.request("GET", path + "/attributes/99", headers={"Accept": CMS_MEDIA_TYPE})
    assert missing.status == 404 and error_of(missing.body).code == "unknown-attribute"
