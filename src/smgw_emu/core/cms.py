"""CMS data containers: Lastenheft 5.10 "Daten entschlüsseln" and 5.11 "Daten verschlüsseln".

Sans-IO: bytes in, bytes out. ASN.1 structures come from asn1crypto, primitives from
`cryptography`; this module only wires them together as RFC 5652 (CMS), RFC 5083
(AuthEnvelopedData), RFC 5084 (AES-GCM in CMS) and RFC 5753 (ECC in CMS) prescribe.

Container shape of the "default" profile (docs/domain.md §2), outermost first:

    ContentInfo(AuthEnvelopedData)                      RFC 5083, version 0
      KeyAgreeRecipientInfo                             RFC 5753 ephemeral-static ECDH
        originatorKey = ephemeral EC public key (curve of the recipient certificate)
        keyEncryptionAlgorithm = dhSinglePass-stdDH-sha256kdf-scheme { aes128-wrap }
        rid = issuerAndSerialNumber of the recipient's encryption certificate
      AES-128-GCM content, 12-byte nonce, 16-byte ICV in `mac`
        ContentInfo(SignedData) as id-data (seal only)  ECDSA-SHA256, signed attributes
                                                        contentType, signingTime, messageDigest,
                                                        signer identified by issuerAndSerialNumber

Public API: sign / verify_signed, encrypt / decrypt, seal (5.11) / open_sealed (5.10).
Every failure on received data is a `CmsError` whose `code` is one of ERROR_CODES.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Callable, Collection, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from asn1crypto import cms, core, keys
from asn1crypto import x509 as ax509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, keywrap, padding, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF

__all__ = [
    "ACCEPTED_DIGESTS",
    "ACCEPTED_KDF_HASHES",
    "ERROR_CODES",
    "MAX_SIZE",
    "PROFILES",
    "CmsError",
    "ContainerProfile",
    "VerifiedContent",
    "decrypt",
    "encrypt",
    "get_profile",
    "open_sealed",
    "register_profile",
    "seal",
    "sign",
    "verify_signed",
]

MAX_SIZE = 16 * 1024 * 1024  # default input limit, bytes

ERROR_CODES = frozenset({
    "malformed",              # not parseable DER / structure violates the RFCs
    "not-for-us",             # no RecipientInfo names our certificate
    "decrypt-failed",         # key unwrap or GCM tag / padding check failed
    "signature-invalid",      # messageDigest, contentType attribute or ECDSA signature wrong
    "unknown-signer",         # signer certificate absent or not trusted
    "unsupported-algorithm",  # well-formed, but an algorithm or option we do not accept
    "wrong-content-type",     # e.g. a SignedData where an AuthEnvelopedData was expected
    "too-large",              # input exceeds max_size
})


class CmsError(Exception):
    """A container could not be built, opened or verified. `code` is stable, `detail` is not."""

    def __init__(self, code: str, detail: str):
        assert code in ERROR_CODES, code
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


@contextmanager
def _guard(code: str, what: str):
    """Turn any library exception into CmsError(code).

    asn1crypto parses lazily, so malformed input surfaces as ValueError, TypeError, KeyError,
    IndexError, even RecursionError, at whichever field access first touches it.
    """
    try:
        yield
    except CmsError:
        raise
    except Exception as exc:
        raise CmsError(code, f"{what}: {type(exc).__name__}: {exc}") from exc


# --------------------------------------------------------------------------- algorithm tables

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1, "sha224": hashes.SHA224, "sha256": hashes.SHA256,
    "sha384": hashes.SHA384, "sha512": hashes.SHA512,
}
# RFC 5753 §7.1.4: dhSinglePass-stdDH-<hash>kdf-scheme, the only KARI scheme we implement.
_KDF_SCHEMES = {
    "1.3.133.16.840.63.0.2": "sha1",
    "1.3.132.1.11.0": "sha224",
    "1.3.132.1.11.1": "sha256",
    "1.3.132.1.11.2": "sha384",
    "1.3.132.1.11.3": "sha512",
}
_KDF_SCHEME_OID = {h: oid for oid, h in _KDF_SCHEMES.items()}
_WRAP_KEY_LEN = {"aes128_wrap": 16, "aes192_wrap": 24, "aes256_wrap": 32}
_CIPHER_KEY_LEN = {
    "aes128_gcm": 16, "aes192_gcm": 24, "aes256_gcm": 32,
    "aes128_cbc": 16, "aes192_cbc": 24, "aes256_cbc": 32,
}
_SIG_DIGEST_OID = {"sha256": "sha256_ecdsa", "sha384": "sha384_ecdsa", "sha512": "sha512_ecdsa"}

#: What we accept on receipt. TR-03116-3 allows the SHA-2 family only. Note that OpenSSL 3.0's
#: `cms -encrypt` uses the SHA-1 KDF unless given `-keyopt ecdh_kdf_md:sha256` after `-recip`;
#: pass kdf_hashes=ACCEPTED_KDF_HASHES | {"sha1"} to decrypt/open_sealed to read such containers.
ACCEPTED_KDF_HASHES = frozenset({"sha256", "sha384", "sha512"})
ACCEPTED_DIGESTS = frozenset({"sha256", "sha384", "sha512"})

_NESTINGS = ("signed-data", "content-info")


# --------------------------------------------------------------------------- profiles

@dataclass(frozen=True)
class ContainerProfile:
    """A "Containerprofil" (Lastenheft 4.2.7): one named combination of algorithms.

    digest          hash of the SignedData: messageDigest and ecdsa-with-<digest>
    kdf_hash        X9.63 KDF hash, i.e. dhSinglePass-stdDH-<kdf_hash>kdf-scheme
    key_wrap        RFC 3394 wrap of the content-encryption key (aes128_wrap / aes256_wrap)
    content_cipher  *_gcm -> AuthEnvelopedData (RFC 5083/5084); *_cbc -> EnvelopedData
    nesting         how seal() puts the SignedData into the envelope:
                    "content-info" eContentType id-data, content = DER ContentInfo(SignedData):
                                   what `openssl cms -sign | openssl cms -encrypt` produces and
                                   `openssl cms -decrypt | openssl cms -verify` reads. Default.
                    "signed-data"  eContentType id-signedData, content = DER SignedData. RFC 5083
                                   §2.1 then requires authAttrs (contentType), which OpenSSL
                                   (3.0.19 here) cannot parse: it expected them under tag [2]
                                   (openssl issues #26101, #31635, fixed in 2026 releases).
    """

    name: str
    digest: str = "sha256"
    kdf_hash: str = "sha256"
    key_wrap: str = "aes128_wrap"
    content_cipher: str = "aes128_gcm"
    nesting: str = "content-info"

    def __post_init__(self):
        # Fail when a lab defines the profile, not when the first message goes out.
        checks = [
            (self.digest, _SIG_DIGEST_OID), (self.kdf_hash, _KDF_SCHEME_OID),
            (self.key_wrap, _WRAP_KEY_LEN), (self.content_cipher, _CIPHER_KEY_LEN),
            (self.nesting, _NESTINGS),
        ]
        for value, allowed in checks:
            if value not in allowed:
                raise ValueError(f"profile {self.name!r}: {value!r} is not one of {sorted(allowed)}")

    @property
    def gcm(self) -> bool:
        return self.content_cipher.endswith("_gcm")


#: The one place where container profiles live. Add one with register_profile().
PROFILES: dict[str, ContainerProfile] = {}


def register_profile(profile: ContainerProfile) -> ContainerProfile:
    PROFILES[profile.name] = profile
    return profile


register_profile(ContainerProfile("default"))
# OpenSSL 3.0 itself would pair aes256-wrap with its default KDF hash; SHA-384 matches the
# 192-bit strength of AES-256/brainpoolP384r1, and OpenSSL decrypts it fine.
register_profile(ContainerProfile(
    "aes256", digest="sha384", kdf_hash="sha384", key_wrap="aes256_wrap", content_cipher="aes256_gcm"))
# Legacy EnvelopedData with AES-CBC (no integrity of its own: use only inside seal()).
register_profile(ContainerProfile("cbc", content_cipher="aes128_cbc"))


def get_profile(profile: str | ContainerProfile) -> ContainerProfile:
    if isinstance(profile, ContainerProfile):
        return profile
    try:
        return PROFILES[profile]
    except KeyError:
        raise CmsError("unsupported-algorithm", f"unknown container profile {profile!r}") from None


# --------------------------------------------------------------------------- ASN.1 additions

class GCMParameters(core.Sequence):
    """RFC 5084 §3.2; asn1crypto leaves AES-GCM parameters untyped."""

    _fields = [("aes_nonce", core.OctetString), ("aes_icvlen", core.Integer, {"default": 12})]


class EccCmsSharedInfo(core.Sequence):
    """RFC 5753 §7.2: the X9.63 KDF's SharedInfo."""

    _fields = [
        ("key_info", cms.KeyEncryptionAlgorithm),
        ("entity_u_info", core.OctetString, {"explicit": 0, "optional": True}),
        ("supp_pub_info", core.OctetString, {"explicit": 2}),
    ]


def _set_of_der(tagged_attrs: core.Asn1Value) -> bytes:
    """DER of an implicitly tagged [n] SET OF attributes with its universal SET tag restored.

    Signatures over signedAttrs (RFC 5652 §5.4) and the GCM AAD over authAttrs (RFC 5083 §2.2)
    use the EXPLICIT SET OF encoding. Swapping only the one tag byte keeps the sender's exact
    content octets, so a sender's non-canonical ordering cannot break verification.
    """
    der = tagged_attrs.dump()
    return b"\x31" + der[1:]


@dataclass(frozen=True)
class VerifiedContent:
    content: bytes
    signer_cert: x509.Certificate
    signing_time: _dt.datetime | None = None
    content_type: str = "1.2.840.113549.1.7.1"  # eContentType (dotted OID), id-data by default


Trust = Sequence[x509.Certificate] | Callable[[x509.Certificate], bool]


# --------------------------------------------------------------------------- helpers

def _check_size(data: bytes, max_size: int) -> None:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_size:
        raise CmsError("too-large", f"{len(data)} bytes exceed the limit of {max_size}")


def _present(value: core.Asn1Value) -> bool:
    """An OPTIONAL field that is there (asn1crypto returns Void for absent ones)."""
    return not isinstance(value, core.Void)


def _asn1_cert(cert: x509.Certificate) -> ax509.Certificate:
    return ax509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))


def _ias(cert: x509.Certificate) -> cms.IssuerAndSerialNumber:
    a = _asn1_cert(cert)
    return cms.IssuerAndSerialNumber({"issuer": a.issuer, "serial_number": a.serial_number})


def _ski(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return None


def _matches(cert: x509.Certificate, ias: cms.IssuerAndSerialNumber | None, ski: bytes | None) -> bool:
    """Does a (issuerAndSerialNumber | subjectKeyIdentifier) identifier name this certificate?"""
    if ias is not None:
        if ias["serial_number"].native != cert.serial_number:
            return False
        # asn1crypto's Name equality (RFC 5280 string preparation) costs milliseconds: try the
        # exact encoding first, which is what every sender copying our certificate produces.
        issuer = _asn1_cert(cert).issuer
        return ias["issuer"].dump() == issuer.dump() or ias["issuer"] == issuer
    return ski is not None and ski == _ski(cert)


def _ec_public_key(cert: x509.Certificate) -> ec.EllipticCurvePublicKey:
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise CmsError("unsupported-algorithm", f"certificate key is {type(key).__name__}, not EC")
    return key


def _algorithm_id(cls: type, name: str) -> core.Asn1Value:
    """AlgorithmIdentifier with absent parameters.

    RFC 5754 §2 and RFC 5758 §3.2: SHA-2 and ecdsa-with-SHA2 identifiers SHOULD/MUST omit the
    parameters; asn1crypto would force NULL for the SHA-2 digests, so build from DER.
    """
    oid = cls._fields[0][1].unmap(name)
    body = core.ObjectIdentifier(oid).dump()
    return cls.load(bytes([0x30, len(body)]) + body)


def _load_content_info(der: bytes, max_size: int) -> tuple[str, core.Asn1Value]:
    _check_size(der, max_size)
    with _guard("malformed", "not a DER ContentInfo"):
        ci = cms.ContentInfo.load(bytes(der), strict=True)
        return ci["content_type"].native, ci["content"]


# --------------------------------------------------------------------------- key agreement

def _kek(private_key: ec.EllipticCurvePrivateKey, peer: ec.EllipticCurvePublicKey,
         kdf_hash: str, wrap: str, ukm: bytes | None) -> bytes:
    """ECDH, then the X9.63 KDF over DER ECC-CMS-SharedInfo (RFC 5753 §7.2)."""
    shared = private_key.exchange(ec.ECDH(), peer)
    length = _WRAP_KEY_LEN[wrap]
    info = {"key_info": {"algorithm": wrap}, "supp_pub_info": (8 * length).to_bytes(4, "big")}
    if ukm is not None:
        info["entity_u_info"] = ukm
    return X963KDF(_HASHES[kdf_hash](), length, EccCmsSharedInfo(info).dump()).derive(shared)


def _kari(cek: bytes, cert: x509.Certificate, profile: ContainerProfile) -> cms.RecipientInfo:
    peer = _ec_public_key(cert)
    ephemeral = ec.generate_private_key(peer.curve)  # fresh per message: no UKM needed
    kek = _kek(ephemeral, peer, profile.kdf_hash, profile.key_wrap, None)
    point = ephemeral.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    # RFC 5753 §3.1.1: originatorKey algorithm id-ecPublicKey, parameters absent (as OpenSSL does)
    originator = keys.PublicKeyInfo({"algorithm": {"algorithm": "ec"}, "public_key": point})
    return cms.RecipientInfo({"kari": cms.KeyAgreeRecipientInfo({
        "version": "v3",
        "originator": {"originator_key": originator},
        "key_encryption_algorithm": {
            "algorithm": _KDF_SCHEME_OID[profile.kdf_hash],
            "parameters": cms.KeyEncryptionAlgorithm({"algorithm": profile.key_wrap}),
        },
        "recipient_encrypted_keys": [{
            "rid": {"issuer_and_serial_number": _ias(cert)},
            "encrypted_key": keywrap.aes_key_wrap(kek, cek),
        }],
    })})


def _unwrap_cek(recipient_infos, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey,
                kdf_hashes: Collection[str]) -> bytes:
    """Find the KeyAgreeRecipientInfo addressed to `cert` and recover the content key."""
    found = None
    with _guard("malformed", "bad RecipientInfo"):
        for ri in recipient_infos:
            if ri.name != "kari":
                continue  # key transport / KEK / password recipients cannot be us (EC key)
            kari = ri.chosen
            for rek in kari["recipient_encrypted_keys"]:
                rid = rek["rid"]
                if rid.name == "issuer_and_serial_number":
                    hit = _matches(cert, rid.chosen, None)
                else:
                    hit = _matches(cert, None, rid.chosen["subject_key_identifier"].native)
                if hit:
                    found = (kari, rek["encrypted_key"].native)
                    break
            if found:
                break
    if found is None:
        raise CmsError("not-for-us", "no KeyAgreeRecipientInfo names our certificate")
    kari, wrapped = found

    with _guard("malformed", "bad KeyAgreeRecipientInfo"):
        scheme = kari["key_encryption_algorithm"]["algorithm"].dotted
        kdf_hash = _KDF_SCHEMES.get(scheme)
        if kdf_hash is None:
            raise CmsError("unsupported-algorithm", f"key agreement scheme {scheme}")
        if kdf_hash not in kdf_hashes:
            raise CmsError("unsupported-algorithm", f"KDF hash {kdf_hash} not accepted")
        wrap = kari["key_encryption_algorithm"]["parameters"].parse(cms.KeyEncryptionAlgorithm)
        wrap_name = wrap["algorithm"].native
        if wrap_name not in _WRAP_KEY_LEN:
            raise CmsError("unsupported-algorithm", f"key wrap {wrap_name}")
        ukm = kari["ukm"].native  # None when absent
        originator = kari["originator"]
        if originator.name != "originator_key":
            raise CmsError("unsupported-algorithm", "static-static ECDH (originator certificate)")
        okey = originator.chosen
        if okey["algorithm"]["algorithm"].native != "ec":
            raise CmsError("unsupported-algorithm", "originator key is not an EC key")
        curve = key.curve
        params = okey["algorithm"]["parameters"]
        if params.native is not None and (
            params.name != "named" or params.chosen.native.lower() != curve.name.lower()
        ):
            raise CmsError("malformed", "originator key is not on the recipient's curve")
        point = okey["public_key"].native
    with _guard("malformed", "bad originator public key"):
        peer = ec.EllipticCurvePublicKey.from_encoded_point(curve, point)
    try:
        return keywrap.aes_key_unwrap(_kek(key, peer, kdf_hash, wrap_name, ukm), wrapped)
    except (keywrap.InvalidUnwrap, ValueError) as exc:
        raise CmsError("decrypt-failed", "content-encryption key does not unwrap") from exc


# --------------------------------------------------------------------------- envelopes

def _envelope(content: bytes, content_type: str, recipients: Sequence[x509.Certificate],
              profile: ContainerProfile) -> bytes:
    cek = os.urandom(_CIPHER_KEY_LEN[profile.content_cipher])
    recipient_infos = [_kari(cek, cert, profile) for cert in recipients]
    aes = algorithms.AES(cek)
    if profile.gcm:
        nonce = os.urandom(12)  # RFC 5084 §3.2 recommends 12 bytes
        auth_attrs = None
        enc = Cipher(aes, modes.GCM(nonce)).encryptor()
        if content_type != "data":
            # RFC 5083 §2.1: authAttrs MUST be present, with contentType, if not id-data.
            auth_attrs = cms.CMSAttributes([{"type": "content_type", "values": [content_type]}])
            enc.authenticate_additional_data(auth_attrs.dump())
        ciphertext = enc.update(content) + enc.finalize()
        body = {
            "version": "v0",
            "recipient_infos": recipient_infos,
            "auth_encrypted_content_info": {
                "content_type": content_type,
                "content_encryption_algorithm": {
                    "algorithm": profile.content_cipher,
                    "parameters": GCMParameters({"aes_nonce": nonce, "aes_icvlen": 16}),
                },
                "encrypted_content": ciphertext,
            },
            "mac": enc.tag,
        }
        if auth_attrs is not None:
            body["auth_attrs"] = auth_attrs
        info = {"content_type": "authenticated_enveloped_data", "content": cms.AuthEnvelopedData(body)}
    else:
        iv = os.urandom(16)
        padder = padding.PKCS7(128).padder()
        enc = Cipher(aes, modes.CBC(iv)).encryptor()
        ciphertext = enc.update(padder.update(content) + padder.finalize()) + enc.finalize()
        info = {"content_type": "enveloped_data", "content": cms.EnvelopedData({
            "version": "v2",  # RFC 5652 §6.1: a RecipientInfo of version 3 -> version 2
            "recipient_infos": recipient_infos,
            "encrypted_content_info": {
                "content_type": content_type,
                "content_encryption_algorithm": {"algorithm": profile.content_cipher, "parameters": iv},
                "encrypted_content": ciphertext,
            },
        })}
    return cms.ContentInfo(info).dump()


def _decrypt(der: bytes, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey,
             max_size: int, kdf_hashes: Collection[str]) -> tuple[str, bytes]:
    """Open an (Auth)EnvelopedData; returns (inner content type name or dotted OID, content)."""
    outer, body = _load_content_info(der, max_size)
    if outer not in ("authenticated_enveloped_data", "enveloped_data"):
        raise CmsError("wrong-content-type", f"expected AuthEnvelopedData, got {outer}")
    gcm = outer == "authenticated_enveloped_data"
    with _guard("malformed", "bad enveloped data"):
        eci = body["auth_encrypted_content_info" if gcm else "encrypted_content_info"]
        inner_type = eci["content_type"].native
        alg = eci["content_encryption_algorithm"]
        cipher = alg["algorithm"].native
        if cipher not in _CIPHER_KEY_LEN or cipher.endswith("_gcm") != gcm:
            raise CmsError("unsupported-algorithm", f"content encryption {cipher} in {outer}")
        ciphertext = eci["encrypted_content"].native
        if ciphertext is None:
            raise CmsError("malformed", "detached encrypted content is not supported")
        if gcm:
            gcm_params = alg["parameters"].parse(GCMParameters)
            nonce, icv_len = gcm_params["aes_nonce"].native, gcm_params["aes_icvlen"].native
            tag = body["mac"].native
            if not 12 <= icv_len <= 16 or len(tag) != icv_len or not 7 <= len(nonce) <= 64:
                raise CmsError("malformed", "GCM nonce / ICV length out of range")
            aad = b""
            if _present(body["auth_attrs"]):
                aad = _set_of_der(body["auth_attrs"])
                for attr in body["auth_attrs"]:
                    if attr["type"].native == "content_type" and attr["values"][0].native != inner_type:
                        raise CmsError("malformed", "authenticated contentType does not match")
        else:
            iv = alg["parameters"].native
            if not isinstance(iv, bytes) or len(iv) != 16:
                raise CmsError("malformed", "AES-CBC IV must be 16 bytes")
        recipient_infos = body["recipient_infos"]

    cek = _unwrap_cek(recipient_infos, cert, key, kdf_hashes)
    if len(cek) != _CIPHER_KEY_LEN[cipher]:
        raise CmsError("decrypt-failed", "content-encryption key has the wrong length")
    aes = algorithms.AES(cek)
    try:
        if gcm:
            dec = Cipher(aes, modes.GCM(nonce, tag, min_tag_length=12)).decryptor()
            dec.authenticate_additional_data(aad)
            return inner_type, dec.update(ciphertext) + dec.finalize()
        dec = Cipher(aes, modes.CBC(iv)).decryptor()
        unpadder = padding.PKCS7(128).unpadder()
        return inner_type, unpadder.update(dec.update(ciphertext) + dec.finalize()) + unpadder.finalize()
    except (InvalidTag, ValueError) as exc:
        raise CmsError("decrypt-failed", "authentication tag or padding check failed") from exc


# --------------------------------------------------------------------------- signed data

def _signed_data(content: bytes, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey,
                 profile: ContainerProfile, content_type: str,
                 signing_time: _dt.datetime | None) -> cms.SignedData:
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CmsError("unsupported-algorithm", f"signer key is {type(key).__name__}, not EC")
    if key.public_key().public_numbers() != _ec_public_key(cert).public_numbers():
        raise ValueError("signer key does not belong to the signer certificate")
    h = hashes.Hash(_HASHES[profile.digest]())
    h.update(content)
    when = (signing_time or _dt.datetime.now(_dt.timezone.utc)).astimezone(_dt.timezone.utc)
    attrs = cms.CMSAttributes([
        {"type": "content_type", "values": [content_type]},
        # RFC 5652 §11.3: UTCTime up to 2049, whole seconds
        {"type": "signing_time", "values": [cms.Time({"utc_time": when.replace(microsecond=0)})]},
        {"type": "message_digest", "values": [h.finalize()]},
    ])
    signature = key.sign(attrs.dump(), ec.ECDSA(_HASHES[profile.digest]()))
    digest_alg = _algorithm_id(cms.DigestAlgorithm, profile.digest)
    return cms.SignedData({
        # RFC 5652 §5.1: version 1 for id-data with issuerAndSerialNumber, else 3
        "version": "v1" if content_type == "data" else "v3",
        "digest_algorithms": [digest_alg],
        "encap_content_info": {"content_type": content_type, "content": content},
        "certificates": [_asn1_cert(cert)],
        "signer_infos": [{
            "version": "v1",
            "sid": {"issuer_and_serial_number": _ias(cert)},
            "digest_algorithm": digest_alg,
            "signed_attrs": attrs,
            "signature_algorithm": _algorithm_id(cms.SignedDigestAlgorithm, _SIG_DIGEST_OID[profile.digest]),
            "signature": signature,
        }],
    })


def _is_trusted(cert: x509.Certificate, trusted: Trust) -> bool:
    if callable(trusted):
        return bool(trusted(cert))
    return any(cert == t for t in trusted)


def _verify_signed_data(sd: cms.SignedData, trusted: Trust) -> VerifiedContent:
    with _guard("malformed", "bad SignedData"):
        encap = sd["encap_content_info"]
        e_type = encap["content_type"].dotted
        content = encap["content"].native
        if content is None:
            raise CmsError("malformed", "detached signature: no encapsulated content")
        if not isinstance(content, bytes):  # PKCS#7-style v1 content that is not an OCTET STRING
            raise CmsError("malformed", "version 1 SignedData with non-data content")
        if len(sd["signer_infos"]) != 1:
            raise CmsError("malformed", f"expected one SignerInfo, got {len(sd['signer_infos'])}")
        si = sd["signer_infos"][0]
        sid = si["sid"]
        if sid.name == "issuer_and_serial_number":
            ias, ski = sid.chosen, None
        else:
            ias, ski = None, sid.chosen.native
        embedded = [
            x509.load_der_x509_certificate(c.chosen.dump())
            for c in (sd["certificates"] if _present(sd["certificates"]) else [])
            if c.name == "certificate"
        ]
        digest_name = si["digest_algorithm"]["algorithm"].native
        sig_alg = si["signature_algorithm"]
        signature = si["signature"].native
        signed_attrs = si["signed_attrs"] if _present(si["signed_attrs"]) else None

    # Who signed? Look among the embedded certificates and, when pinned, the trusted ones.
    candidates = (list(trusted) if not callable(trusted) else []) + embedded
    with _guard("malformed", "bad signer identifier"):  # the sid's Name is parsed lazily, here
        signer = next((c for c in candidates if _matches(c, ias, ski)), None)
    if signer is None:
        raise CmsError("unknown-signer", "signer certificate not found")
    # Trust before cryptography: an unknown sender must not cost us an ECDSA verification.
    if not _is_trusted(signer, trusted):
        raise CmsError("unknown-signer", f"signer {signer.subject.rfc4514_string()} is not trusted")

    try:
        sig_hash = sig_alg.hash_algo
        if sig_alg.signature_algo != "ecdsa":
            raise ValueError(sig_alg["algorithm"].dotted)
    except ValueError as exc:
        raise CmsError("unsupported-algorithm", f"signature algorithm {exc}") from exc
    for name in (digest_name, sig_hash):
        if name not in ACCEPTED_DIGESTS:
            raise CmsError("unsupported-algorithm", f"digest {name} not accepted")
    public_key = _ec_public_key(signer)

    signing_time = None
    if signed_attrs is None:
        # RFC 5652 §5.3: without signed attributes the signature covers the content itself,
        # which is only allowed for id-data.
        if e_type != "1.2.840.113549.1.7.1":
            raise CmsError("malformed", "signedAttrs missing for a non-data content type")
        signed = content
    else:
        with _guard("malformed", "bad signed attributes"):
            found: dict[str, object] = {}
            for attr in signed_attrs:
                name = attr["type"].native
                if name in found or len(attr["values"]) != 1:
                    raise CmsError("malformed", f"attribute {name} repeated or multi-valued")
                found[name] = attr["values"][0]
            if "content_type" not in found or "message_digest" not in found:
                raise CmsError("malformed", "contentType or messageDigest attribute missing")
            attr_type = found["content_type"].dotted
            attr_digest = found["message_digest"].native
            if "signing_time" in found:
                signing_time = found["signing_time"].native
            signed = _set_of_der(signed_attrs)
        h = hashes.Hash(_HASHES[digest_name]())
        h.update(content)
        if attr_type != e_type:
            raise CmsError("signature-invalid", "contentType attribute differs from eContentType")
        if attr_digest != h.finalize():
            raise CmsError("signature-invalid", "messageDigest does not match the content")
    try:
        public_key.verify(signature, signed, ec.ECDSA(_HASHES[sig_hash]()))
    except (InvalidSignature, ValueError) as exc:
        raise CmsError("signature-invalid", "ECDSA signature does not verify") from exc
    return VerifiedContent(content, signer, signing_time, e_type)


# --------------------------------------------------------------------------- public API

def sign(content: bytes, signer_cert: x509.Certificate, signer_key: ec.EllipticCurvePrivateKey,
         profile: str | ContainerProfile = "default", *, signing_time: _dt.datetime | None = None,
         max_size: int = MAX_SIZE) -> bytes:
    """DER ContentInfo(SignedData) over `content` (id-data), signer certificate included.

    `signing_time` defaults to the wall clock; pass the emulator's clock for reproducible runs.
    """
    _check_size(content, max_size)
    sd = _signed_data(bytes(content), signer_cert, signer_key, get_profile(profile), "data", signing_time)
    return cms.ContentInfo({"content_type": "signed_data", "content": sd}).dump()


def verify_signed(der: bytes, trusted: Trust, *, max_size: int = MAX_SIZE) -> VerifiedContent:
    """Verify a DER ContentInfo(SignedData) with exactly one ECDSA signer.

    `trusted` is either the list of pinned signer certificates (exact match; they may also
    supply a certificate the container does not embed) or a callback deciding about the signer
    certificate (e.g. chain validation against the key bank).
    """
    ctype, body = _load_content_info(der, max_size)
    if ctype != "signed_data":
        raise CmsError("wrong-content-type", f"expected SignedData, got {ctype}")
    return _verify_signed_data(body, trusted)


def encrypt(content: bytes, recipient_cert: x509.Certificate | Sequence[x509.Certificate],
            profile: str | ContainerProfile = "default", *, max_size: int = MAX_SIZE) -> bytes:
    """DER ContentInfo(AuthEnvelopedData) (EnvelopedData for CBC profiles) of id-data content,
    for one recipient certificate or several (one KeyAgreeRecipientInfo each)."""
    _check_size(content, max_size)
    recipients = [recipient_cert] if isinstance(recipient_cert, x509.Certificate) else list(recipient_cert)
    return _envelope(bytes(content), "data", recipients, get_profile(profile))


def decrypt(der: bytes, recipient_cert: x509.Certificate, recipient_key: ec.EllipticCurvePrivateKey,
            *, max_size: int = MAX_SIZE, kdf_hashes: Collection[str] = ACCEPTED_KDF_HASHES) -> bytes:
    """Content of an AuthEnvelopedData (or AES-CBC EnvelopedData) addressed to `recipient_cert`."""
    return _decrypt(der, recipient_cert, recipient_key, max_size, kdf_hashes)[1]


def seal(content: bytes, signer_cert: x509.Certificate, signer_key: ec.EllipticCurvePrivateKey,
         recipient_cert: x509.Certificate | Sequence[x509.Certificate],
         profile: str | ContainerProfile = "default", *, signing_time: _dt.datetime | None = None,
         max_size: int = MAX_SIZE) -> bytes:
    """5.11 "Daten verschlüsseln": sign with our signature key, then encrypt for the recipient."""
    _check_size(content, max_size)
    prof = get_profile(profile)
    recipients = [recipient_cert] if isinstance(recipient_cert, x509.Certificate) else list(recipient_cert)
    sd = _signed_data(bytes(content), signer_cert, signer_key, prof, "data", signing_time)
    if prof.nesting == "signed-data":
        return _envelope(sd.dump(), "signed_data", recipients, prof)
    inner = cms.ContentInfo({"content_type": "signed_data", "content": sd}).dump()
    return _envelope(inner, "data", recipients, prof)


def open_sealed(der: bytes, recipient_cert: x509.Certificate, recipient_key: ec.EllipticCurvePrivateKey,
                trusted_signers: Trust, *, max_size: int = MAX_SIZE,
                kdf_hashes: Collection[str] = ACCEPTED_KDF_HASHES) -> VerifiedContent:
    """5.10 "Daten entschlüsseln": decrypt, then verify the inner SignedData.

    Reads both nestings (see ContainerProfile.nesting): eContentType id-signedData, and id-data
    holding a DER ContentInfo(SignedData) as OpenSSL pipelines make it.
    """
    inner_type, inner = _decrypt(der, recipient_cert, recipient_key, max_size, kdf_hashes)
    if inner_type == "signed_data":
        with _guard("malformed", "bad inner SignedData"):
            sd = cms.SignedData.load(inner, strict=True)
    elif inner_type == "data":
        try:
            ctype, sd = _load_content_info(inner, max_size)
        except CmsError:
            ctype = None
        if ctype != "signed_data":
            raise CmsError("wrong-content-type", "sealed content is not signed")
    else:
        raise CmsError("wrong-content-type", f"sealed content type {inner_type}")
    return _verify_signed_data(sd, trusted_signers)
