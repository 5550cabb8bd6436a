"""The gateway's HAN and LMN TLS identities (core/localidentity.py): generate, install, discard."""

from __future__ import annotations

import datetime as _dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from smgw_emu.core.certcheck import CertificateTrust
from smgw_emu.core.cosem.errors import CosemError
from smgw_emu.core.localidentity import LocalIdentity, rows_of
from smgw_emu.pki import issue_certificate

NOW = _dt.datetime.now(_dt.timezone.utc)
GW = "EXXX0012345678"


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def trust(pki) -> CertificateTrust:
    return CertificateTrust([pki.cert("root-ca")], x509.load_pem_x509_certificates(pki.ca_bundle.read_bytes()))


def issue(pki, request: bytes, *, cn: str = GW, digital_signature: bool = True) -> bytes:
    csr = x509.load_der_x509_csr(request)
    assert csr.is_signature_valid
    return der(issue_certificate(subject_cn=cn, org_unit="gateway-han", public_key=csr.public_key(),
                                 issuer_cert=pki.cert("sub-ca-gw"), issuer_key=pki.key("sub-ca-gw"),
                                 digital_signature=digital_signature, key_agreement=not digital_signature))


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.BrainpoolP256R1())


@pytest.mark.parametrize("domain", ["han", "lmn"])
def test_generate_then_install_activates_at_once(pki, domain):
    start = LocalIdentity.from_rows(domain, {})
    assert start.active is None and start.generation == 0
    generated = start.generate(GW, new_key, NOW)
    csr = x509.load_der_x509_csr(generated.after.pending.requests["tls"])
    assert csr.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == GW
    assert csr.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == f"gateway-{domain}"
    assert set(generated.writes()) == {rows_of(domain)[1]} and not generated.identity_changed
    cert = issue(pki, generated.after.pending.requests["tls"])
    installed = generated.after.install(cert, [], trust(pki), GW, NOW)
    assert installed.identity_changed and installed.after.pending is None
    assert installed.after.generation == 1 and installed.after.active.certificates["tls"] == cert
    assert installed.events[0][0] == f"{domain}-certificate-changed"
    writes = installed.writes()
    assert writes[rows_of(domain)[1]] is None and writes[rows_of(domain)[0]][0] == "active"
    # what the store holds reads back to the same identity
    rows = {rows_of(domain)[0]: writes[rows_of(domain)[0]]}
    assert LocalIdentity.from_rows(domain, rows) == installed.after


def test_refusals_change_nothing(pki, tmp_path):
    start = LocalIdentity.from_rows("han", {})
    with pytest.raises(CosemError) as e:
        start.install(der(pki.cert("gateway-tls")), [], trust(pki), GW, NOW)
    assert e.value.field == "pending"
    with pytest.raises(CosemError):
        start.discard(NOW)
    pending = start.generate(GW, new_key, NOW).after
    with pytest.raises(CosemError) as e:
        pending.generate(GW, new_key, NOW)
    assert e.value.field == "pending"
    request = pending.pending.requests["tls"]
    for bad in (der(pki.cert("gateway-tls")),                     # another key
                issue(pki, request, cn="EXXX0099999999"),         # another gateway
                issue(pki, request, digital_signature=False),     # no digitalSignature
                b"not a certificate"):
        with pytest.raises(CosemError) as e:
            pending.install(bad, [], trust(pki), GW, NOW)
        assert (e.value.code, e.value.field) == ("invalid-certificate", "certificate")
    with pytest.raises(CosemError) as e:
        pending.install(issue(pki, request), [b"junk"], trust(pki), GW, NOW)
    assert e.value.field == "ca-certificate[0]"
    discarded = pending.discard(NOW)
    assert discarded.after == start and discarded.writes() == {rows_of("han")[1]: None}


def test_unknown_domain():
    with pytest.raises(ValueError):
        LocalIdentity.from_rows("wan", {})
