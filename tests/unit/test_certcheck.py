"""Certificates a profile names: chain to the SM-PKI root, validity, key usage."""

from __future__ import annotations

import datetime as _dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from smgw_emu.core.certcheck import CertificateTrust
from smgw_emu.pki import generate_key, init_pki, issue_certificate

NOW = _dt.datetime.now(_dt.timezone.utc)


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def trust(pki) -> CertificateTrust:
    bundle = x509.load_pem_x509_certificates(pki.ca_bundle.read_bytes())
    return CertificateTrust([pki.cert("root-ca")], bundle)


@pytest.mark.parametrize("name,usage", [("emt-tls", "tls"), ("emt-sig", "sig"), ("emt-enc", "enc"),
                                        ("meter-tls", "tls"), ("gwa-enc", "enc")])
def test_participant_certificates_pass(pki, trust, name, usage):
    assert trust.problem(der(pki.cert(name)), usage, NOW) is None


def test_refusals_say_why(pki, trust, tmp_path):
    other = init_pki(tmp_path / "other")
    sub_key = pki.key("sub-ca-emt")
    sub = pki.cert("sub-ca-emt")
    expired = issue_certificate(subject_cn="old", org_unit="emt-tls", public_key=generate_key().public_key(),
                                issuer_cert=sub, issuer_key=sub_key,
                                not_before=NOW - _dt.timedelta(days=10), not_after=NOW - _dt.timedelta(days=1))
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_cert = issue_certificate(subject_cn="rsa", org_unit="emt-tls", public_key=rsa_key.public_key(),
                                 issuer_cert=sub, issuer_key=sub_key)
    cases = [
        (b"garbage", "tls", "not a DER X.509"),
        (der(pki.cert("emt-tls")), "enc", "keyAgreement"),
        (der(pki.cert("emt-enc")), "sig", "digitalSignature"),
        (der(pki.cert("sub-ca-emt")), "tls", "CA certificate"),
        (der(expired), "tls", "not valid at"),
        (der(other.cert("emt-tls")), "tls", "not in the gateway's SM-PKI trust list"),
        (der(rsa_cert), "tls", "not an EC key"),
    ]
    for data, usage, reason in cases:
        problem = trust.problem(data, usage, NOW)
        assert problem is not None and reason in problem, (reason, problem)
    with pytest.raises(ValueError):
        trust.problem(der(pki.cert("emt-tls")), "email", NOW)


def test_a_sub_ca_outside_its_validity_breaks_the_chain(pki, trust):
    far = NOW + _dt.timedelta(days=365 * 20)
    assert "not valid at" in trust.problem(der(pki.cert("emt-tls")), "tls", far)


def test_forged_issuer_name_is_not_enough(pki, trust, tmp_path):
    """A certificate naming the real sub-CA as issuer but signed by another key."""
    impostor_key = generate_key()
    forged = issue_certificate(subject_cn="EMT-FORGED", org_unit="emt-tls", public_key=generate_key().public_key(),
                               issuer_cert=pki.cert("sub-ca-emt"), issuer_key=impostor_key)
    assert "trust list" in trust.problem(der(forged), "tls", NOW)
