"""6.7.3 / 6.7.4 on the wire: the gateway's trust anchors (SM-PKI roots) added with a link
certificate and deleted, the TLS context following them, and a GWA change to a GWA under a root
the gateway learnt at run time."""

from __future__ import annotations

from cryptography import x509

from smgw_emu.app.gateway import Gateway
from smgw_emu.core import cms
from smgw_emu.core.keybanks import certificate_fingerprint
from smgw_emu.pki import generate_key, init_pki, issue_certificate
from smgw_emu.reference.keybank_client import (
    GWAPRE,
    KEYS,
    ROOTS,
    bank_digest,
    certificates_document,
    confirm_document,
    der,
    gateway_certificates_document,
    generate_document,
    issue_gateway_certificates,
    new_gwa_identity,
    root_document,
)

from .conftest import assert_transcript, gateway_config, mark, started
from .cosem_flow import error_of, settled
from .keybank_flow import close, new_gwa_running, profile_of, switch_and_leave, verify_new_gwa, wake_channel

NEW_GWA = "GWA-NEW-0002"


def fingerprint(cert: x509.Certificate) -> str:
    return certificate_fingerprint(der(cert))


def trusted(gateway) -> set[str]:
    """The roots in the store, and the roots the live TLS context trusts: always the same."""
    stored = {certificate_fingerprint(bytes.fromhex(h)) for h in gateway.store.key_banks()["trust/roots"][1]["roots"]}
    in_context = {certificate_fingerprint(c) for c in gateway.tls_context.get_ca_certs(binary_form=True)}
    assert stored == in_context
    return stored


async def add_root(gateway, gwa, new, *, step: str = "post-root-certificate"):
    channel = await wake_channel(gateway, gwa)
    r = await channel.request("POST", ROOTS, root_document(new.root, new.link_certificate), step=step)
    assert r.status == 201, r.text
    await close(gateway, channel)
    await settled(gateway)


async def test_fig70_add_root_certificate(gateway, gwa, pki, tmp_path):
    new = new_gwa_identity(pki, tmp_path / "new", NEW_GWA, new_root=True)
    root1 = fingerprint(pki.cert("root-ca"))
    assert trusted(gateway) == {root1}
    channel = await wake_channel(gateway, gwa)
    r = await channel.request("POST", ROOTS, root_document(new.root, new.link_certificate), step="post-root-certificate")
    assert r.status == 201, r.text
    assert r.headers["Location"] == f"{ROOTS}/{fingerprint(new.root)}"
    [event] = await gwa.wait_event("root-certificate-added")
    assert event.details["fingerprint"] == fingerprint(new.root)
    await settled(gateway)
    assert_transcript(70, gateway, gwa)
    assert trusted(gateway) == {root1, fingerprint(new.root)}
    listed = await channel.request("GET", ROOTS)
    assert listed.status == 200 and listed.text.count("<root ") == 2


async def test_root_certificate_bad_input_changes_nothing(gateway, gwa, pki, tmp_path):
    new = new_gwa_identity(pki, tmp_path / "new", NEW_GWA, new_root=True)
    other = new_gwa_identity(pki, tmp_path / "other", "GWA-NEW-0003", new_root=True, root_name="SM-Test-Root-CA-3")
    channel = await wake_channel(gateway, gwa)
    # a link certificate issued by a root the gateway does not trust (the other new root)
    other_key = generate_key(pki.curve)
    forged_link = issue_certificate(subject_cn="SM-Test-Root-CA-2", org_unit="root", public_key=new.root.public_key(),
                                    issuer_cert=other.root, issuer_key=other_key, ca=True, path_length=1)
    sub_ca = pki.cert("sub-ca-emt")
    cases = [
        (root_document(new.root, forged_link), 422, "invalid-certificate", "link-certificate"),
        (root_document(new.root, other.link_certificate), 422, "invalid-certificate", "link-certificate"),
        (root_document(sub_ca, new.link_certificate), 422, "invalid-certificate", "certificate"),
        (root_document(pki.cert("root-ca"), new.link_certificate), 409, "duplicate-root", "certificate"),
        (b'<root-certificate xmlns="urn:smgw-emu:keybank:1"><certificate>zz</certificate></root-certificate>', 400,
         "bad-xml", "certificate"),
        (b'<root-certificate xmlns="urn:smgw-emu:keybank:1"><certificate>3003020101</certificate></root-certificate>',
         400, "bad-xml", "link-certificate"),
        (b"<root-certificate", 400, "malformed", None),
    ]
    before = (gateway.store.key_banks(), trusted(gateway))
    for body, status, code, field in cases:
        r = await channel.request("POST", ROOTS, body)
        error = error_of(r.body)
        assert (r.status, error.code, error.field) == (status, code, field), r.text
        assert (gateway.store.key_banks(), trusted(gateway)) == before
    failed = [e.details["code"] for e in gateway.store.logs("system") if e.event == "request-failed"]
    assert failed == [code for _, _, code, _ in cases]


async def test_fig71_delete_root_certificate(gateway, gwa, pki, tmp_path):
    new = new_gwa_identity(pki, tmp_path / "new", NEW_GWA, new_root=True)
    root1, root2 = fingerprint(pki.cert("root-ca")), fingerprint(new.root)
    await add_root(gateway, gwa, new)
    mark(gateway, gwa)
    channel = await wake_channel(gateway, gwa)
    r = await channel.request("DELETE", f"{ROOTS}/{root2}", step="delete-root-certificate")
    assert r.status == 204, r.text
    [event] = await gwa.wait_event("root-certificate-deleted")
    assert event.details["fingerprint"] == root2
    await settled(gateway)
    assert_transcript(71, gateway, gwa)
    assert trusted(gateway) == {root1}


async def test_root_delete_refused_while_in_use(gateway, gwa, pki, tmp_path):
    new = new_gwa_identity(pki, tmp_path / "new", NEW_GWA, new_root=True)
    root1, root2 = fingerprint(pki.cert("root-ca")), fingerprint(new.root)
    await add_root(gateway, gwa, new)
    channel = await wake_channel(gateway, gwa)
    before = (gateway.store.key_banks(), trusted(gateway))
    # the GWA in charge chains to root 1
    r = await channel.request("DELETE", f"{ROOTS}/{root1}")
    error = error_of(r.body)
    assert (r.status, error.code) == (409, "root-in-use") and f"ACTIVE {gateway.gwa.id} tls" in error.message
    r = await channel.request("DELETE", f"{ROOTS}/{'ab' * 32}")
    assert (r.status, error_of(r.body).code) == (404, "unknown-root")
    assert (gateway.store.key_banks(), trusted(gateway)) == before
    # root 2 is free: deleted; root 1 is then the last one
    assert (await channel.request("DELETE", f"{ROOTS}/{root2}")).status == 204
    r = await channel.request("DELETE", f"{ROOTS}/{root1}")
    assert (r.status, error_of(r.body).code) == (409, "root-in-use") and "last root" in error_of(r.body).message
    assert trusted(gateway) == {root1}


async def test_gwa_change_to_a_gwa_under_a_new_root(gateway, gwa, pki, tmp_path):
    """6.7.3 then 6.6: the gateway reaches a GWA whose TLS certificate chains to a root it learnt
    at run time (the rebuilt TLS context), and refuses to delete that root afterwards."""
    new = new_gwa_identity(pki, tmp_path / "new", NEW_GWA, new_root=True)
    await add_root(gateway, gwa, new)
    async with new_gwa_running(new, gwa) as new_gwa:
        channel = await wake_channel(gateway, gwa)
        for step, path, body, status in (
            ("post-reserve-gwapre", "/reserve", b"", 200),
            ("post-gwapre-profile", "/profile", profile_of(new, new_gwa), 201),
            # the new GWA's sub-CA comes along: the gateway knows only its root
            ("post-gwapre-certificates", "/certificates", certificates_document(new), 201),
        ):
            r = await channel.request("POST", GWAPRE + path, body, step=step)
            assert r.status == status, r.text
        await switch_and_leave(gateway, channel)
        new_channel, _ = await verify_new_gwa(gateway, new_gwa)  # TLS against root 2
        r = await new_channel.request("POST", GWAPRE + "/final-profile", profile_of(new, new_gwa))
        assert r.status == 201, r.text
        r = await new_channel.request("POST", GWAPRE + "/confirm", confirm_document(bank_digest(r.body)))
        assert r.status == 200, r.text
        await new_gwa.wait_event("gwa-change-completed")
        r = await new_channel.request("DELETE", f"{ROOTS}/{fingerprint(new.root)}")
        error = error_of(r.body)
        assert (r.status, error.code) == (409, "root-in-use") and f"ACTIVE {NEW_GWA}" in error.message
        await close(gateway, new_channel)
        await settled(gateway)


# -- 6.7.1 personalisation, 6.7.2 gateway key change ------------------------------------------------


async def renew_keys(channel, pki, purpose: str) -> dict[str, x509.Certificate]:
    """Generate, read the requests, bring the certificates the SM-PKI issued for them."""
    r = await channel.request("POST", KEYS + "/generate", generate_document(purpose), step="post-generate-key-pairs")
    assert r.status == 200 and b'pending="generated"' in r.body, r.text
    r = await channel.request("GET", KEYS + "/requests", step="get-certificate-requests")
    assert r.status == 200, r.text
    issued = issue_gateway_certificates(pki, r.body)
    r = await channel.request("PUT", KEYS + "/certificates", gateway_certificates_document(issued),
                              step="put-gateway-certificates")
    assert r.status == 200, r.text
    return issued


async def presents(gateway, gwa, certificate: x509.Certificate) -> None:
    """A new MANAGEMENT channel shows the gateway's TLS certificate; a sealed answer its signature key."""
    channel = await wake_channel(gateway, gwa, step="wakeup-check")
    assert der(channel.peer_certificate) == der(certificate)
    r = await channel.request("GET", "/smgw/cosem", headers={"Accept": "application/pkcs7-mime"}, step="get-check")
    return channel, r


async def test_fig68_personalisation(gateway, gwa, pki):
    channel = await wake_channel(gateway, gwa)
    issued = await renew_keys(channel, pki, "personalisation")
    [event] = await gwa.wait_event("personalisation-completed")
    assert event.details["generation"] == "1"
    await settled(gateway)
    assert_transcript(68, gateway, gwa)
    assert gateway.store.key_banks()["gateway/ACTIVE"][0] == "personalised" and "gateway/PENDING" not in gateway.store.key_banks()
    await close(gateway, channel)
    channel, sealed = await presents(gateway, gwa, issued["tls"])
    opened = cms.open_sealed(sealed.body, pki.cert("gwa-enc"), pki.key("gwa-enc"), [issued["sig"]])
    assert b"<ldev-list" in opened.content
    # personalised once: again is refused (the key change is 6.7.2)
    r = await channel.request("POST", KEYS + "/generate", generate_document("personalisation"))
    assert (r.status, error_of(r.body).code, error_of(r.body).field) == (409, "state-conflict", "purpose")
    await close(gateway, channel)


async def test_fig69_gateway_key_change(pki, gwa, tmp_path):
    config = gateway_config(pki, gwa, tmp_path / "state")
    gateway = await started(Gateway(config), gwa)
    try:
        channel = await wake_channel(gateway, gwa)
        first = await renew_keys(channel, pki, "personalisation")
        await close(gateway, channel)
        await settled(gateway)
        mark(gateway, gwa)
        channel = await wake_channel(gateway, gwa)
        assert der(channel.peer_certificate) == der(first["tls"])
        issued = await renew_keys(channel, pki, "key-change")
        assert gateway.store.key_banks()["gateway/PENDING"][0] == "certified"
        r = await channel.request("POST", KEYS + "/activate", step="post-activate-new-keys")
        assert r.status == 200 and b'generation="2"' in r.body, r.text
        [event] = await gwa.wait_event("key-change-completed")
        assert (event.details["generation"], event.details["previous-generation"]) == ("2", "1")
        await settled(gateway)
        assert_transcript(69, gateway, gwa)
        await close(gateway, channel)
        channel, _ = await presents(gateway, gwa, issued["tls"])
        await close(gateway, channel)
    finally:
        await gateway.stop()
    # the new identity survives a restart
    gateway = await started(Gateway(config), gwa)
    try:
        channel, sealed = await presents(gateway, gwa, issued["tls"])
        assert cms.open_sealed(sealed.body, pki.cert("gwa-enc"), pki.key("gwa-enc"), [issued["sig"]]).content
        await close(gateway, channel)
    finally:
        await gateway.stop()


async def test_gateway_keys_bad_input_changes_nothing(gateway, gwa, pki, tmp_path):
    channel = await wake_channel(gateway, gwa)

    async def refused(method, path, body, status, code, field=None):
        banks = gateway.store.key_banks()
        last = gateway.store.log_tail("system", 1)[-1].record
        r = await channel.request(method, path, body)
        error = error_of(r.body)
        assert (r.status, error.code, error.field) == (status, code, field), (method, path, r.text)
        assert gateway.store.key_banks() == banks
        failed = [e for e in gateway.store.logs("system", since_record=last) if e.event == "request-failed"]
        assert failed and failed[-1].details["code"] == code

    await refused("POST", KEYS + "/generate", generate_document("key-change"), 409, "state-conflict", "purpose")
    await refused("POST", KEYS + "/generate", generate_document("rekey"), 409, "state-conflict", "purpose")
    await refused("POST", KEYS + "/generate", b'<generate xmlns="urn:smgw-emu:keybank:1"/>', 400, "bad-xml", "purpose")
    await refused("GET", KEYS + "/requests", b"", 409, "state-conflict", "pending")
    await refused("POST", KEYS + "/activate", b"", 409, "state-conflict", "pending")
    await refused("DELETE", KEYS + "/pending", b"", 409, "state-conflict", "pending")
    r = await channel.request("POST", KEYS + "/generate", generate_document("personalisation"))
    assert r.status == 200
    await refused("POST", KEYS + "/generate", generate_document("personalisation"), 409, "state-conflict", "pending")
    requests = (await channel.request("GET", KEYS + "/requests")).body
    initial = {u: pki.cert(f"gateway-{u}") for u in ("tls", "sig", "enc")}   # certificates of other keys
    await refused("PUT", KEYS + "/certificates", gateway_certificates_document(initial), 422, "invalid-certificate",
                  "certificate[tls]")
    await refused("PUT", KEYS + "/certificates",
                  gateway_certificates_document(issue_gateway_certificates(pki, requests, subject_cn="EXXX0099999999")),
                  422, "invalid-certificate", "certificate[tls]")
    stranger = init_pki(tmp_path / "stranger")
    await refused("PUT", KEYS + "/certificates",
                  gateway_certificates_document(issue_gateway_certificates(stranger, requests)), 422,
                  "invalid-certificate", "certificate[tls]")
    swapped = issue_gateway_certificates(pki, requests)
    swapped["tls"], swapped["sig"] = swapped["sig"], swapped["tls"]
    await refused("PUT", KEYS + "/certificates", gateway_certificates_document(swapped), 422, "invalid-certificate",
                  "certificate[tls]")
    await refused("POST", KEYS + "/activate", b"", 409, "state-conflict", "pending")
    assert (await channel.request("DELETE", KEYS + "/pending")).status == 204
    assert gateway.store.key_banks()["gateway/ACTIVE"][0] == "initial"
    await close(gateway, channel)
