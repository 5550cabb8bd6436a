"""The gateway's own WAN keys (core/gatewaykeys.py): personalisation (6.7.1) and key change
(6.7.2) in memory, with the test SM-PKI issuing the certificates."""

from __future__ import annotations

import datetime as _dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from smgw_emu.core.certcheck import CertificateTrust
from smgw_emu.core.cosem.errors import CosemError
from smgw_emu.core.gatewaykeys import ROW_ACTIVE, ROW_PENDING, USAGES, GatewayKeys, Identity, chain_of
from smgw_emu.pki import issue_certificate

NOW = _dt.datetime.now(_dt.timezone.utc)
GW = "EXXX0012345678"
BITS = {"tls": (True, False), "sig": (True, False), "enc": (False, True)}


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def initial(pki) -> GatewayKeys:
    return GatewayKeys(Identity("initial", 0, {u: pki.key_path(f"gateway-{u}").read_text() for u in USAGES},
                                {u: der(pki.cert(f"gateway-{u}")) for u in USAGES}, (der(pki.cert("sub-ca-gw")),)))


def trust(pki) -> CertificateTrust:
    return CertificateTrust([pki.cert("root-ca")], x509.load_pem_x509_certificates(pki.ca_bundle.read_bytes()))


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.BrainpoolP256R1())


def issue(pki, requests, *, cn: str | None = None) -> dict[str, bytes]:
    issued = {}
    for usage, request in requests.items():
        csr = x509.load_der_x509_csr(request)
        assert csr.is_signature_valid
        ds, ka = BITS[usage]
        issued[usage] = der(issue_certificate(subject_cn=cn or GW, org_unit=f"gateway-{usage}", public_key=csr.public_key(),
                                              issuer_cert=pki.cert("sub-ca-gw"), issuer_key=pki.key("sub-ca-gw"),
                                              digital_signature=ds, key_agreement=ka))
    return issued


def test_generate_makes_signed_requests_for_this_gateway(initial):
    t = initial.generate("personalisation", GW, new_key, NOW)
    pending = t.after.pending
    assert (pending.purpose, pending.generation, pending.state) == ("personalisation", 1, "generated")
    assert t.writes() == {ROW_PENDING: ("generated", pending.to_json())} and not t.identity_changed
    for usage, request in pending.requests.items():
        csr = x509.load_der_x509_csr(request)
        assert csr.is_signature_valid and csr.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == GW
        usage_ext = csr.extensions.get_extension_for_class(x509.KeyUsage).value
        assert (usage_ext.digital_signature, usage_ext.key_agreement) == BITS[usage]


def test_personalisation_activates_with_its_certificates(pki, initial):
    generated = initial.generate("personalisation", GW, new_key, NOW).after
    t = generated.install(issue(pki, generated.pending.requests), [], trust(pki), GW, NOW)
    assert t.identity_changed and t.after.pending is None
    assert (t.after.active.stage, t.after.active.generation) == ("personalised", 1)
    assert t.after.active.chain == (der(pki.cert("sub-ca-gw")),)
    assert [e for e, _ in t.events] == ["personalisation-completed"]
    assert set(t.writes()) == {ROW_ACTIVE, ROW_PENDING} and t.writes()[ROW_PENDING] is None
    rows = {row: value for row, value in t.writes().items() if value is not None}
    assert GatewayKeys.from_rows(rows) == t.after
    with pytest.raises(CosemError) as excinfo:
        t.after.generate("personalisation", GW, new_key, NOW)
    assert (excinfo.value.code, excinfo.value.field) == ("state-conflict", "purpose")


def test_key_change_needs_activation(pki, initial):
    generated = initial.generate("personalisation", GW, new_key, NOW).after
    personalised = generated.install(issue(pki, generated.pending.requests), [], trust(pki), GW, NOW).after
    renewing = personalised.generate("key-change", GW, new_key, NOW).after
    with pytest.raises(CosemError):
        renewing.activate(NOW)  # no certificates yet
    certified = renewing.install(issue(pki, renewing.pending.requests), [], trust(pki), GW, NOW)
    assert not certified.identity_changed and certified.after.pending.state == "certified" and certified.events == ()
    with pytest.raises(CosemError):
        certified.after.install(issue(pki, renewing.pending.requests), [], trust(pki), GW, NOW)
    done = certified.after.activate(NOW)
    assert done.identity_changed and done.after.active.generation == 2 and done.after.pending is None
    assert dict(done.events[0][1])["previous-generation"] == "1"
    assert personalised.generate("key-change", GW, new_key, NOW).after.discard(NOW).after == personalised


def test_certificates_must_fit_the_new_keys(pki, initial, tmp_path):
    from smgw_emu.pki import init_pki

    generated = initial.generate("personalisation", GW, new_key, NOW).after
    requests = generated.pending.requests
    stranger = init_pki(tmp_path / "stranger")
    cases = {
        "another key": {u: der(pki.cert(f"gateway-{u}")) for u in USAGES},
        "another gateway": issue(pki, requests, cn="EXXX0099999999"),
        "untrusted issuer": issue(stranger, requests),
    }
    swapped = issue(pki, requests)
    swapped["tls"], swapped["sig"] = swapped["sig"], swapped["tls"]
    cases["swapped"] = swapped
    for name, certificates in cases.items():
        with pytest.raises(CosemError) as excinfo:
            generated.install(certificates, [], trust(pki), GW, NOW)
        assert (excinfo.value.code, excinfo.value.field) == ("invalid-certificate", "certificate[tls]"), name


def test_refusals_out_of_order(initial):
    for call in (lambda: initial.generate("key-change", GW, new_key, NOW), lambda: initial.activate(NOW),
                 lambda: initial.discard(NOW), lambda: initial.generate("other", GW, new_key, NOW)):
        with pytest.raises(CosemError) as excinfo:
            call()
        assert excinfo.value.code == "state-conflict"
    generated = initial.generate("personalisation", GW, new_key, NOW).after
    with pytest.raises(CosemError) as excinfo:
        generated.generate("personalisation", GW, new_key, NOW)
    assert excinfo.value.field == "pending"


def test_chain_of(pki):
    cas = x509.load_pem_x509_certificates(pki.ca_bundle.read_bytes())
    assert chain_of(pki.cert("gateway-tls"), cas, [pki.cert("root-ca")]) == (der(pki.cert("sub-ca-gw")),)
    assert chain_of(pki.cert("gateway-tls"), [], [pki.cert("root-ca")]) == ()
