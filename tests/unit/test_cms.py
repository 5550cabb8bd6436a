"""CMS containers (Lastenheft 5.10 / 5.11): round trips, profiles and bad input, no subprocess.

Interop with the `openssl cms` binary lives in test_cms_openssl.py.
"""

from __future__ import annotations

import datetime as dt

import pytest
from asn1crypto import cms as acms
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smgw_emu.core import cms
from smgw_emu.core.cms import CmsError


@pytest.fixture(scope="module")
def keys(pki):
    """Certificates and keys by entity-usage name, loaded once."""
    names = ("gateway-enc", "gateway-sig", "gwa-enc", "gwa-sig", "emt-sig")
    return {n: (pki.cert(n), pki.key(n)) for n in names}


def code_of(fn, *args, **kwargs) -> str:
    with pytest.raises(CmsError) as info:
        fn(*args, **kwargs)
    assert info.value.code in cms.ERROR_CODES
    return info.value.code


def redump(der: bytes, edit) -> bytes:
    """Parse a ContentInfo, let `edit` change it in place, re-encode everything."""
    ci = acms.ContentInfo.load(der)
    edit(ci["content"])
    return ci.dump(force=True)


# --------------------------------------------------------------------------- round trips

@pytest.mark.parametrize("profile", sorted(cms.PROFILES))
def test_encrypt_decrypt_round_trip(keys, profile):
    cert, key = keys["gateway-enc"]
    der = cms.encrypt(b"TAF-7 readings", cert, profile)
    outer = acms.ContentInfo.load(der)["content_type"].native
    assert outer == ("enveloped_data" if profile == "cbc" else "authenticated_enveloped_data")
    assert cms.decrypt(der, cert, key) == b"TAF-7 readings"


def test_default_container_shape(keys):
    """The algorithms docs/domain.md §2 names, in the fields RFC 5083/5753/5084 put them."""
    der = cms.encrypt(b"x", keys["gateway-enc"][0])
    aed = acms.ContentInfo.load(der)["content"]
    assert aed["version"].native == "v0"
    kari = aed["recipient_infos"][0].chosen
    assert kari["version"].native == "v3"
    assert kari["originator"].name == "originator_key"
    kea = kari["key_encryption_algorithm"]
    assert kea["algorithm"].dotted == "1.3.132.1.11.1"  # dhSinglePass-stdDH-sha256kdf-scheme
    assert kea["parameters"].parse(acms.KeyEncryptionAlgorithm)["algorithm"].native == "aes128_wrap"
    assert kari["recipient_encrypted_keys"][0]["rid"].name == "issuer_and_serial_number"
    eci = aed["auth_encrypted_content_info"]
    assert eci["content_encryption_algorithm"]["algorithm"].native == "aes128_gcm"
    params = eci["content_encryption_algorithm"]["parameters"].parse(cms.GCMParameters)
    assert len(params["aes_nonce"].native) == 12 and params["aes_icvlen"].native == 16
    assert len(aed["mac"].native) == 16


def test_sign_verify_and_signed_attributes(keys):
    cert, key = keys["gwa-sig"]
    when = dt.datetime(2026, 11, 25, 12, 0, 1, 999, tzinfo=dt.timezone.utc)
    der = cms.sign(b"payload", cert, key, signing_time=when)
    result = cms.verify_signed(der, [cert])
    assert result.content == b"payload"
    assert result.signer_cert == cert
    assert result.signing_time == when.replace(microsecond=0)
    si = acms.ContentInfo.load(der)["content"]["signer_infos"][0]
    assert si["sid"].name == "issuer_and_serial_number"
    assert si["signature_algorithm"]["algorithm"].native == "sha256_ecdsa"
    assert [a["type"].native for a in si["signed_attrs"]] == ["content_type", "signing_time", "message_digest"]


def test_verify_with_callback_and_signer_not_embedded(keys):
    cert, key = keys["gwa-sig"]
    der = cms.sign(b"p", cert, key)
    seen = []
    assert cms.verify_signed(der, lambda c: seen.append(c) or True).content == b"p"
    assert seen == [cert]
    # A pinned certificate also serves as the signer certificate when none is embedded.
    stripped = redump(der, lambda sd: sd.__setitem__("certificates", None))
    assert cms.verify_signed(stripped, [cert]).signer_cert == cert
    assert code_of(cms.verify_signed, stripped, lambda c: True) == "unknown-signer"


@pytest.mark.parametrize("profile", sorted(cms.PROFILES))
def test_seal_open_round_trip(keys, profile):
    sig_cert, sig_key = keys["gwa-sig"]
    enc_cert, enc_key = keys["gateway-enc"]
    der = cms.seal(b"command", sig_cert, sig_key, enc_cert, profile)
    result = cms.open_sealed(der, enc_cert, enc_key, [sig_cert])
    assert (result.content, result.signer_cert) == (b"command", sig_cert)


def test_seal_signed_data_nesting(keys):
    """The RFC 5083 nesting (eContentType id-signedData + authenticated contentType) round-trips."""
    profile = cms.ContainerProfile("nested", nesting="signed-data")
    sig_cert, sig_key = keys["gwa-sig"]
    enc_cert, enc_key = keys["gateway-enc"]
    der = cms.seal(b"nested", sig_cert, sig_key, enc_cert, profile)
    aed = acms.ContentInfo.load(der)["content"]
    assert aed["auth_encrypted_content_info"]["content_type"].native == "signed_data"
    assert [a["type"].native for a in aed["auth_attrs"]] == ["content_type"]
    assert cms.open_sealed(der, enc_cert, enc_key, [sig_cert]).content == b"nested"
    # authAttrs are GCM associated data: changing them breaks the tag.
    def edit(aed):
        aed["auth_attrs"] = [{"type": "content_type", "values": ["data"]}]
        aed["auth_encrypted_content_info"]["content_type"] = "data"
    assert code_of(cms.decrypt, redump(der, edit), enc_cert, enc_key) == "decrypt-failed"


def test_several_recipients(keys):
    gw_cert, gw_key = keys["gateway-enc"]
    gwa_cert, gwa_key = keys["gwa-enc"]
    der = cms.encrypt(b"both", [gw_cert, gwa_cert])
    assert cms.decrypt(der, gw_cert, gw_key) == cms.decrypt(der, gwa_cert, gwa_key) == b"both"


def test_recipient_by_subject_key_identifier(keys):
    """rKeyId recipients (what `openssl cms -encrypt -keyid` makes) are found too."""
    cert, key = keys["gateway-enc"]
    der = cms.encrypt(b"ski", cert)
    ski = cms._ski(cert)
    rid = acms.KeyAgreementRecipientIdentifier({"r_key_id": {"subject_key_identifier": ski}})
    def edit(aed):
        aed["recipient_infos"][0].chosen["recipient_encrypted_keys"][0]["rid"] = rid
    assert cms.decrypt(redump(der, edit), cert, key) == b"ski"


def test_custom_profile_registration(keys):
    profile = cms.ContainerProfile("lab-512", digest="sha512", kdf_hash="sha512",
                                   key_wrap="aes256_wrap", content_cipher="aes256_gcm")
    cms.register_profile(profile)
    try:
        sig_cert, sig_key = keys["gwa-sig"]
        enc_cert, enc_key = keys["gateway-enc"]
        der = cms.seal(b"lab", sig_cert, sig_key, enc_cert, "lab-512")
        assert cms.open_sealed(der, enc_cert, enc_key, [sig_cert]).content == b"lab"
    finally:
        del cms.PROFILES["lab-512"]


def test_profile_validation_and_unknown_profile(keys):
    with pytest.raises(ValueError):
        cms.ContainerProfile("bad", content_cipher="des_cbc")
    with pytest.raises(ValueError):
        cms.ContainerProfile("bad", digest="sha1")
    assert code_of(cms.encrypt, b"x", keys["gateway-enc"][0], "no-such-profile") == "unsupported-algorithm"


def test_sender_side_mistakes(keys):
    with pytest.raises(ValueError):
        cms.sign(b"x", keys["gwa-sig"][0], keys["gateway-sig"][1])  # key of another certificate
    assert code_of(cms.encrypt, b"x" * 11, keys["gateway-enc"][0], max_size=10) == "too-large"
    assert code_of(cms.sign, b"x" * 11, *keys["gwa-sig"], max_size=10) == "too-large"


# --------------------------------------------------------------------------- bad input

@pytest.fixture(scope="module")
def samples(keys):
    sig_cert, sig_key = keys["gwa-sig"]
    enc_cert = keys["gateway-enc"][0]
    return {
        "enveloped": cms.encrypt(b"secret reading 4711", enc_cert),
        "signed": cms.sign(b"meter reading 4711", sig_cert, sig_key),
        "sealed": cms.seal(b"sealed reading 4711", sig_cert, sig_key, enc_cert),
    }


@pytest.mark.parametrize("bad", [b"", b"\x00", b"garbage, not DER at all", bytes(range(256)), b"\x30\x84\xff\xff\xff\xff"])
def test_garbage_is_malformed(keys, bad):
    enc_cert, enc_key = keys["gateway-enc"]
    assert code_of(cms.decrypt, bad, enc_cert, enc_key) == "malformed"
    assert code_of(cms.verify_signed, bad, [keys["gwa-sig"][0]]) == "malformed"
    assert code_of(cms.open_sealed, bad, enc_cert, enc_key, [keys["gwa-sig"][0]]) == "malformed"


@pytest.mark.parametrize("cut", [1, 19, 100])
def test_truncated_is_malformed(keys, samples, cut):
    enc_cert, enc_key = keys["gateway-enc"]
    assert code_of(cms.decrypt, samples["enveloped"][:-cut], enc_cert, enc_key) == "malformed"
    assert code_of(cms.verify_signed, samples["signed"][:-cut], [keys["gwa-sig"][0]]) == "malformed"
    assert code_of(cms.open_sealed, samples["sealed"][:-cut], enc_cert, enc_key, []) == "malformed"


def test_trailing_bytes_are_malformed(keys, samples):
    assert code_of(cms.decrypt, samples["enveloped"] + b"\x00", *keys["gateway-enc"]) == "malformed"


@pytest.mark.parametrize("offset", [-1, -19])  # last ICV byte, last ciphertext byte
def test_tampered_ciphertext_or_tag(keys, samples, offset):
    der = bytearray(samples["enveloped"])
    der[offset] ^= 0x01
    assert code_of(cms.decrypt, bytes(der), *keys["gateway-enc"]) == "decrypt-failed"


def test_tampered_wrapped_key(keys, samples):
    def edit(aed):
        rek = aed["recipient_infos"][0].chosen["recipient_encrypted_keys"][0]
        wrapped = bytearray(rek["encrypted_key"].native)
        wrapped[3] ^= 0x80
        rek["encrypted_key"] = bytes(wrapped)
    assert code_of(cms.decrypt, redump(samples["enveloped"], edit), *keys["gateway-enc"]) == "decrypt-failed"


def test_tampered_signed_content(keys, samples):
    sig_cert = keys["gwa-sig"][0]
    der = samples["signed"].replace(b"reading 4711", b"reading 4712")
    assert code_of(cms.verify_signed, der, [sig_cert]) == "signature-invalid"


def test_tampered_signature_and_attributes(keys, samples):
    sig_cert = keys["gwa-sig"][0]
    def flip_sig(sd):
        si = sd["signer_infos"][0]
        sig = bytearray(si["signature"].native)
        sig[-1] ^= 0x01
        si["signature"] = bytes(sig)
    assert code_of(cms.verify_signed, redump(samples["signed"], flip_sig), [sig_cert]) == "signature-invalid"
    def new_time(sd):
        attrs = sd["signer_infos"][0]["signed_attrs"]
        attrs[1] = {"type": "signing_time", "values": [acms.Time({"utc_time": dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)})]}
    assert code_of(cms.verify_signed, redump(samples["signed"], new_time), [sig_cert]) == "signature-invalid"


def test_wrong_recipient(keys, samples):
    gw_cert = keys["gateway-enc"][0]
    gwa_cert, gwa_key = keys["gwa-enc"]
    # Right certificate, wrong private key: the KEK differs, so the unwrap check fails.
    assert code_of(cms.decrypt, samples["enveloped"], gw_cert, gwa_key) == "decrypt-failed"
    # Another party's certificate: no RecipientInfo for us at all.
    assert code_of(cms.decrypt, samples["enveloped"], gwa_cert, gwa_key) == "not-for-us"
    assert code_of(cms.open_sealed, samples["sealed"], gwa_cert, gwa_key, []) == "not-for-us"


def test_untrusted_signer(keys, samples):
    enc_cert, enc_key = keys["gateway-enc"]
    other = keys["emt-sig"][0]
    assert code_of(cms.verify_signed, samples["signed"], [other]) == "unknown-signer"
    assert code_of(cms.verify_signed, samples["signed"], []) == "unknown-signer"
    assert code_of(cms.verify_signed, samples["signed"], lambda c: False) == "unknown-signer"
    assert code_of(cms.open_sealed, samples["sealed"], enc_cert, enc_key, [other]) == "unknown-signer"


def test_wrong_content_types(keys, samples):
    enc_cert, enc_key = keys["gateway-enc"]
    sig_cert = keys["gwa-sig"][0]
    assert code_of(cms.decrypt, samples["signed"], enc_cert, enc_key) == "wrong-content-type"
    assert code_of(cms.open_sealed, samples["signed"], enc_cert, enc_key, [sig_cert]) == "wrong-content-type"
    assert code_of(cms.verify_signed, samples["enveloped"], [sig_cert]) == "wrong-content-type"
    # Encrypted but not signed: 5.10 must not hand it out as verified.
    assert code_of(cms.open_sealed, samples["enveloped"], enc_cert, enc_key, [sig_cert]) == "wrong-content-type"


def test_oversized_input(keys, samples):
    enc_cert, enc_key = keys["gateway-enc"]
    n = len(samples["sealed"]) - 1
    assert code_of(cms.decrypt, samples["enveloped"], enc_cert, enc_key, max_size=10) == "too-large"
    assert code_of(cms.verify_signed, samples["signed"], [], max_size=10) == "too-large"
    assert code_of(cms.open_sealed, samples["sealed"], enc_cert, enc_key, [], max_size=n) == "too-large"
    assert cms.open_sealed(samples["sealed"], enc_cert, enc_key, [keys["gwa-sig"][0]], max_size=n + 1)


def test_unsupported_algorithms(keys, samples):
    enc_cert, enc_key = keys["gateway-enc"]
    def sha1_kdf(aed):
        aed["recipient_infos"][0].chosen["key_encryption_algorithm"]["algorithm"] = "1.3.133.16.840.63.0.2"
    assert code_of(cms.decrypt, redump(samples["enveloped"], sha1_kdf), enc_cert, enc_key) == "unsupported-algorithm"
    def ccm(aed):
        aed["auth_encrypted_content_info"]["content_encryption_algorithm"]["algorithm"] = "aes128_ccm"
    assert code_of(cms.decrypt, redump(samples["enveloped"], ccm), enc_cert, enc_key) == "unsupported-algorithm"


def test_non_ec_recipient_certificate(pki, keys):
    from cryptography.hazmat.primitives.asymmetric import rsa

    from smgw_emu.pki import issue_certificate

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    cert = issue_certificate(subject_cn="rsa", org_unit="test", public_key=rsa_key.public_key(),
                             issuer_cert=pki.cert("sub-ca-gw"), issuer_key=pki.key("sub-ca-gw"))
    assert code_of(cms.encrypt, b"x", cert) == "unsupported-algorithm"


# --------------------------------------------------------------------------- properties

PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(content=st.binary(max_size=2048), profile=st.sampled_from(["default", "aes256", "cbc"]))
def test_property_encrypt_decrypt(keys, content, profile):
    cert, key = keys["gateway-enc"]
    assert cms.decrypt(cms.encrypt(content, cert, profile), cert, key) == content


@PROPS
@given(content=st.binary(max_size=2048), profile=st.sampled_from(["default", "aes256"]))
def test_property_seal_open(keys, content, profile):
    sig_cert, sig_key = keys["gateway-sig"]
    enc_cert, enc_key = keys["gwa-enc"]
    result = cms.open_sealed(cms.seal(content, sig_cert, sig_key, enc_cert, profile), enc_cert, enc_key, [sig_cert])
    assert result.content == content and result.signer_cert == sig_cert


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_property_corruption_never_escapes_raw(keys, samples, data):
    """Any corrupted container yields a CmsError, or (if the byte was not protected, like the
    version number) the original content: never a raw library exception, never other content."""
    name = data.draw(st.sampled_from(["enveloped", "signed", "sealed"]))
    der = bytearray(samples[name])
    if data.draw(st.booleans()):
        pos = data.draw(st.integers(0, len(der) - 1))
        der[pos] ^= data.draw(st.integers(1, 255))
    else:
        der = der[: data.draw(st.integers(0, len(der) - 1))]
    enc_cert, enc_key = keys["gateway-enc"]
    sig_cert = keys["gwa-sig"][0]
    try:
        if name == "enveloped":
            assert cms.decrypt(bytes(der), enc_cert, enc_key) == b"secret reading 4711"
        elif name == "signed":
            assert cms.verify_signed(bytes(der), [sig_cert]).content == b"meter reading 4711"
        else:
            assert cms.open_sealed(bytes(der), enc_cert, enc_key, [sig_cert]).content == b"sealed reading 4711"
    except CmsError as exc:
        assert exc.code in cms.ERROR_CODES

