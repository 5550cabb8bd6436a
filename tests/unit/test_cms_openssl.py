"""CMS interop with the real `openssl cms` binary, both directions, on three curves.

OpenSSL quirks these tests pin down (OpenSSL 3.0):
- `cms -encrypt` with an EC recipient uses dhSinglePass-stdDH-sha1kdf-scheme unless
  `-keyopt ecdh_kdf_md:sha256` follows the `-recip` it applies to.
- `cms -decrypt` writes the inner content raw, so a sealed container is only verifiable by
  `openssl cms -verify` if the SignedData travels as a ContentInfo inside id-data
  (ContainerProfile.nesting = "content-info", the default).
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from smgw_emu.core import cms
from smgw_emu.pki import init_pki

OPENSSL = shutil.which("openssl")
pytestmark = [pytest.mark.openssl, pytest.mark.skipif(OPENSSL is None, reason="needs the openssl binary")]

SHA256_KDF = ("-keyopt", "ecdh_kdf_md:sha256")


def openssl(*args, stdin: bytes = b"") -> bytes:
    proc = subprocess.run([OPENSSL, *map(str, args)], input=stdin, capture_output=True, timeout=30)
    if proc.returncode:
        raise AssertionError(f"openssl {' '.join(map(str, args))} failed:\n{proc.stderr.decode()}")
    return proc.stdout


@pytest.fixture(scope="module", params=["brainpoolP256r1", "brainpoolP384r1", "prime256v1"])
def cpki(request, pki, tmp_path_factory):
    """The session PKI for its own curve, a fresh one for each other curve."""
    if request.param == pki.curve:
        return pki
    return init_pki(tmp_path_factory.mktemp(request.param), curve=request.param)


def o_encrypt(cpki, data: bytes, *opts: str, cipher: str = "-aes-128-gcm", recip: str = "gateway-enc") -> bytes:
    return openssl("cms", "-encrypt", cipher, "-binary", "-outform", "DER",
                   "-recip", cpki.cert_path(recip), *opts, stdin=data)


def o_decrypt(cpki, der: bytes, who: str = "gateway-enc") -> bytes:
    return openssl("cms", "-decrypt", "-inform", "DER", "-binary",
                   "-inkey", cpki.key_path(who), "-recip", cpki.cert_path(who), stdin=der)


def o_sign(cpki, data: bytes, *opts: str, md: str = "sha256", who: str = "gwa-sig") -> bytes:
    return openssl("cms", "-sign", "-md", md, "-nodetach", "-binary", "-outform", "DER",
                   "-signer", cpki.cert_path(who), "-inkey", cpki.key_path(who), *opts, stdin=data)


def o_verify(cpki, der: bytes) -> bytes:
    return openssl("cms", "-verify", "-inform", "DER", "-binary", "-CAfile", cpki.ca_bundle, stdin=der)


# --------------------------------------------------------------------------- openssl -> us

@pytest.mark.parametrize("cipher", ["-aes-128-gcm", "-aes-256-gcm", "-aes-128-cbc"])
def test_openssl_encrypt_we_decrypt(cpki, cipher):
    der = o_encrypt(cpki, b"from openssl\x00\xff", *SHA256_KDF, cipher=cipher)
    assert cms.decrypt(der, cpki.cert("gateway-enc"), cpki.key("gateway-enc")) == b"from openssl\x00\xff"


def test_openssl_encrypt_keyid_we_decrypt(cpki):
    """-keyid names the recipient by subjectKeyIdentifier (rKeyId) instead of issuer+serial."""
    der = o_encrypt(cpki, b"by keyid", "-keyid", *SHA256_KDF)
    assert cms.decrypt(der, cpki.cert("gateway-enc"), cpki.key("gateway-enc")) == b"by keyid"


def test_openssl_default_sha1_kdf(pki):
    """OpenSSL 3.0's default KDF hash is SHA-1: refused unless the caller accepts it."""
    der = o_encrypt(pki, b"sha1 kdf")
    cert, key = pki.cert("gateway-enc"), pki.key("gateway-enc")
    with pytest.raises(cms.CmsError) as info:
        cms.decrypt(der, cert, key)
    assert info.value.code == "unsupported-algorithm"
    assert cms.decrypt(der, cert, key, kdf_hashes=cms.ACCEPTED_KDF_HASHES | {"sha1"}) == b"sha1 kdf"


@pytest.mark.parametrize("md", ["sha256", "sha384"])
def test_openssl_sign_we_verify(cpki, md):
    der = o_sign(cpki, b"signed by openssl", md=md)
    result = cms.verify_signed(der, [cpki.cert("gwa-sig")])
    assert result.content == b"signed by openssl"
    assert result.signer_cert == cpki.cert("gwa-sig")
    assert result.signing_time is not None


@pytest.mark.parametrize("opts", [("-keyid",), ("-noattr",), ("-nocerts",)], ids=lambda o: o[0])
def test_openssl_sign_variants_we_verify(pki, opts):
    """Signer by subjectKeyIdentifier; no signed attributes; signer certificate not embedded
    (then the pinned certificate supplies it)."""
    der = o_sign(pki, b"variant", *opts)
    assert cms.verify_signed(der, [pki.cert("gwa-sig")]).content == b"variant"
    with pytest.raises(cms.CmsError) as info:
        cms.verify_signed(der, [pki.cert("emt-sig")])
    assert info.value.code == "unknown-signer"


def test_openssl_sign_then_encrypt_we_open_sealed(cpki):
    inner = o_sign(cpki, b"sign+encrypt by openssl", who="gwa-sig")
    der = o_encrypt(cpki, inner, *SHA256_KDF)
    result = cms.open_sealed(der, cpki.cert("gateway-enc"), cpki.key("gateway-enc"), [cpki.cert("gwa-sig")])
    assert result.content == b"sign+encrypt by openssl"
    assert result.signer_cert == cpki.cert("gwa-sig")


def test_openssl_tampered_signature_rejected(pki):
    der = o_sign(pki, b"amount=100")
    with pytest.raises(cms.CmsError) as info:
        cms.verify_signed(der.replace(b"amount=100", b"amount=900"), [pki.cert("gwa-sig")])
    assert info.value.code == "signature-invalid"


# --------------------------------------------------------------------------- us -> openssl

@pytest.mark.parametrize("profile", ["default", "aes256", "cbc"])
def test_we_encrypt_openssl_decrypts(cpki, profile):
    der = cms.encrypt(b"to openssl\n\r\x00", cpki.cert("gateway-enc"), profile)
    assert o_decrypt(cpki, der) == b"to openssl\n\r\x00"


@pytest.mark.parametrize("profile", ["default", "aes256"])
def test_we_sign_openssl_verifies(cpki, profile):
    der = cms.sign(b"signed by us", cpki.cert("gateway-sig"), cpki.key("gateway-sig"), profile)
    assert o_verify(cpki, der) == b"signed by us"


@pytest.mark.parametrize("profile", ["default", "aes256", "cbc"])
def test_we_seal_openssl_decrypts_and_verifies(cpki, profile):
    der = cms.seal(b"sealed by us", cpki.cert("gateway-sig"), cpki.key("gateway-sig"),
                   cpki.cert("gwa-enc"), profile)
    assert o_verify(cpki, o_decrypt(cpki, der, who="gwa-enc")) == b"sealed by us"


def test_we_seal_for_two_recipients(pki):
    der = cms.seal(b"two", pki.cert("gateway-sig"), pki.key("gateway-sig"),
                   [pki.cert("gwa-enc"), pki.cert("emt-enc")])
    for who in ("gwa-enc", "emt-enc"):
        assert o_verify(pki, o_decrypt(pki, der, who=who)) == b"two"
