"""The gateway's own WAN key pairs and certificates: personalisation (Lastenheft 6.7.1) and the
gateway key change (6.7.2), sans-IO.

[ours] The gateway leaves the manufacturer with an *initial* identity (the TLS, signature and
encryption certificates and keys of its PKI directory, "Initialzertifikate"), the first GWA's
material and the trust anchors (app/keybanks.py). Over the MANAGEMENT channel the GWA then

1. makes the gateway generate new key pairs (``generate``; purpose ``personalisation`` while the
   identity is initial, ``key-change`` once it is personalised);
2. reads the certificate requests (PKCS#10, each signed with its new key: proof of possession);
3. brings the certificates the SM-PKI sub-CA issued for them (``install``); each must certify
   exactly the new key, name the gateway (subject CN), carry the key usage of its role and chain
   to a trust anchor. For personalisation this completes the process: the new identity is active
   at once. For a key change the certificates wait:
4. ``activate`` switches to the new keys (key change only), for the next connections.

The identity in use and the pending one are rows ``gateway/ACTIVE`` and ``gateway/PENDING`` of
the key_banks table; every step is one transaction. Private keys are PKCS#8 PEM text in the
store (the emulator's secure element). The HAN and LMN identities (figs. 72, 73) are not this.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from smgw_emu.core.certcheck import CertificateTrust
from smgw_emu.core.keybanks import certificate_fingerprint
from smgw_emu.core.profiles import InvalidCertificate, StateConflict

__all__ = ["GatewayKeys", "Identity", "KeyTransition", "Pending", "PURPOSES", "ROW_ACTIVE", "ROW_PENDING", "USAGES",
           "certificate_request", "chain_of", "key_pem", "load_key"]

USAGES = ("tls", "sig", "enc")
ROW_ACTIVE = "gateway/ACTIVE"
ROW_PENDING = "gateway/PENDING"
INITIAL, PERSONALISED = "initial", "personalised"
PERSONALISATION, KEY_CHANGE = "personalisation", "key-change"
PURPOSES = (PERSONALISATION, KEY_CHANGE)
GENERATED, CERTIFIED = "generated", "certified"
#: Key usage of each role's certificate (TR-03109-4): (digitalSignature, keyAgreement).
_USAGE_BITS = {"tls": (True, False), "sig": (True, False), "enc": (False, True)}


def key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def load_key(pem: str) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def _hash_for(key: ec.EllipticCurvePrivateKey) -> hashes.HashAlgorithm:
    size = key.curve.key_size
    return hashes.SHA512() if size > 384 else hashes.SHA384() if size > 256 else hashes.SHA256()


def _hexes(values: Mapping[str, bytes]) -> dict[str, str]:
    return {k: v.hex() for k, v in values.items()}


def _bytes(values: Mapping[str, str]) -> dict[str, bytes]:
    return {k: bytes.fromhex(v) for k, v in values.items()}


@dataclass(frozen=True)
class Identity:
    stage: str                          # initial | personalised
    generation: int                     # 0: the initial identity
    keys: Mapping[str, str]             # usage -> PKCS#8 PEM
    certificates: Mapping[str, bytes]   # usage -> DER
    chain: tuple[bytes, ...] = ()       # CA certificates above them, issuer first (not the root)

    def to_json(self) -> dict[str, Any]:
        return {"stage": self.stage, "generation": self.generation, "keys": dict(self.keys),
                "certificates": _hexes(self.certificates), "chain": [c.hex() for c in self.chain]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Identity":
        return cls(data["stage"], int(data["generation"]), dict(data["keys"]), _bytes(data["certificates"]),
                   tuple(bytes.fromhex(c) for c in data.get("chain", ())))


@dataclass(frozen=True)
class Pending:
    purpose: str
    generation: int
    keys: Mapping[str, str]
    requests: Mapping[str, bytes]                       # usage -> PKCS#10 DER
    certificates: Mapping[str, bytes] = field(default_factory=dict)
    chain: tuple[bytes, ...] = ()

    @property
    def state(self) -> str:
        return CERTIFIED if self.certificates else GENERATED

    def to_json(self) -> dict[str, Any]:
        return {"purpose": self.purpose, "generation": self.generation, "keys": dict(self.keys),
                "requests": _hexes(self.requests), "certificates": _hexes(self.certificates),
                "chain": [c.hex() for c in self.chain]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Pending":
        return cls(data["purpose"], int(data["generation"]), dict(data["keys"]), _bytes(data["requests"]),
                   _bytes(data.get("certificates", {})), tuple(bytes.fromhex(c) for c in data.get("chain", ())))

    def identity(self) -> Identity:
        return Identity(PERSONALISED, self.generation, self.keys, self.certificates, self.chain)


@dataclass(frozen=True)
class KeyTransition:
    before: "GatewayKeys"
    after: "GatewayKeys"
    log_event: str
    message: str
    details: Mapping[str, str] = field(default_factory=dict)
    events: tuple[tuple[str, Mapping[str, str]], ...] = ()

    def writes(self) -> dict[str, tuple[str, dict] | None]:
        rows: dict[str, tuple[str, dict] | None] = {}
        if self.after.active != self.before.active:
            rows[ROW_ACTIVE] = (self.after.active.stage, self.after.active.to_json())
        if self.after.pending != self.before.pending:
            pending = self.after.pending
            rows[ROW_PENDING] = (pending.state, pending.to_json()) if pending else None
        return rows

    @property
    def identity_changed(self) -> bool:
        return self.after.active != self.before.active


def chain_of(cert: x509.Certificate, cas: list[x509.Certificate], roots: list[x509.Certificate]) -> tuple[bytes, ...]:
    """The CA certificates from `cert`'s issuer up to (not including) a root, as far as `cas` hold them."""
    root_tbs = {r.tbs_certificate_bytes for r in roots}
    chain: list[bytes] = []
    current = cert
    for _ in range(4):
        issuer = next((c for c in cas if c.subject == current.issuer and c is not current
                       and _issued_by(current, c)), None)
        if issuer is None or issuer.tbs_certificate_bytes in root_tbs:
            break
        chain.append(issuer.public_bytes(serialization.Encoding.DER))
        current = issuer
    return tuple(chain)


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except Exception:  # wrong key or an unsupported algorithm: not this issuer
        return False


@dataclass(frozen=True)
class GatewayKeys:
    active: Identity
    pending: Pending | None = None

    @classmethod
    def from_rows(cls, rows: Mapping[str, tuple[str, Mapping[str, Any]]]) -> "GatewayKeys | None":
        active = rows.get(ROW_ACTIVE)
        if active is None:
            return None
        pending = rows.get(ROW_PENDING)
        return cls(Identity.from_json(active[1]), Pending.from_json(pending[1]) if pending else None)

    @property
    def purpose_now(self) -> str:
        return PERSONALISATION if self.active.stage == INITIAL else KEY_CHANGE

    # -- 1. generate -----------------------------------------------------------------------------
    def generate(self, purpose: str, gateway_id: str, new_key: Callable[[], ec.EllipticCurvePrivateKey],
                 now: _dt.datetime) -> KeyTransition:
        if purpose not in PURPOSES:
            raise StateConflict(f"purpose must be {' or '.join(PURPOSES)}", field="purpose")
        if purpose != self.purpose_now:
            why = ("the gateway is personalised already: renew its keys with purpose key-change (6.7.2)"
                   if purpose == PERSONALISATION else "the gateway is not personalised yet (6.7.1 first)")
            raise StateConflict(why, field="purpose")
        if self.pending is not None:
            raise StateConflict(f"new key pairs are pending already ({self.pending.state}); install their "
                                "certificates or discard them (DELETE /smgw/keys/pending)", field="pending")
        keys = {usage: new_key() for usage in USAGES}
        requests = {usage: _request(keys[usage], gateway_id, usage) for usage in USAGES}
        pending = Pending(purpose, self.active.generation + 1, {u: key_pem(k) for u, k in keys.items()}, requests)
        return KeyTransition(self, replace(self, pending=pending), "gateway-keys-generated",
                             f"{purpose}: new TLS, signature and encryption key pairs generated (generation "
                             f"{pending.generation}); certificate requests ready",
                             {"purpose": purpose, "generation": str(pending.generation)})

    # -- 3. certificates -------------------------------------------------------------------------
    def install(self, certificates: Mapping[str, bytes], cas: list[bytes], trust: CertificateTrust,
                gateway_id: str, now: _dt.datetime) -> KeyTransition:
        pending = self.pending
        if pending is None:
            raise StateConflict("no pending key pairs: generate them first (POST /smgw/keys/generate)", field="pending")
        if pending.state == CERTIFIED:
            raise StateConflict("the pending key pairs are certified already; activate or discard them", field="pending")
        ca_certs = []
        for i, der in enumerate(cas):
            try:
                ca_certs.append(x509.load_der_x509_certificate(der))
            except ValueError:
                raise InvalidCertificate(f"ca-certificate[{i}]: not a DER X.509 certificate",
                                         field=f"ca-certificate[{i}]") from None
        extended = CertificateTrust(trust.roots, [*trust.cas, *ca_certs])
        for usage in USAGES:
            name = f"certificate[{usage}]"
            der = certificates[usage]
            problem = extended.problem(der, usage, now)
            if problem:
                raise InvalidCertificate(f"{name}: {problem}", field=name)
            cert = x509.load_der_x509_certificate(der)
            own = load_key(pending.keys[usage]).public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
            given = cert.public_key().public_bytes(serialization.Encoding.DER,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
            if given != own:
                raise InvalidCertificate(f"{name}: certifies another key than the gateway's new {usage} key",
                                         field=name)
            cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            if not cns or cns[0].value != gateway_id:
                raise InvalidCertificate(f"{name}: does not name this gateway ({gateway_id})", field=name)
        tls = x509.load_der_x509_certificate(certificates["tls"])
        chain = chain_of(tls, extended.cas, trust.roots)
        certified = replace(pending, certificates={u: certificates[u] for u in USAGES}, chain=chain)
        details = {"purpose": pending.purpose, "generation": str(pending.generation),
                   "tls": certificate_fingerprint(certificates["tls"])[:16]}
        if pending.purpose == PERSONALISATION:  # 6.7.1 ends here: the new identity is the gateway's
            after = GatewayKeys(certified.identity(), None)
            return KeyTransition(self, after, "personalisation-completed",
                                 f"gateway personalised: certificates installed, identity generation "
                                 f"{pending.generation} active", details, (("personalisation-completed", details),))
        return KeyTransition(self, replace(self, pending=certified), "gateway-certificates-installed",
                             f"certificates for the new keys (generation {pending.generation}) installed; "
                             "they become active with POST /smgw/keys/activate", details)

    # -- 4. activate (key change) -------------------------------------------------------------------
    def activate(self, now: _dt.datetime) -> KeyTransition:
        pending = self.pending
        if pending is None or pending.state != CERTIFIED:
            state = pending.state if pending else "none"
            raise StateConflict(f"activation needs certified pending key pairs; pending: {state}", field="pending")
        details = {"generation": str(pending.generation), "previous-generation": str(self.active.generation),
                   "tls": certificate_fingerprint(pending.certificates["tls"])[:16]}
        return KeyTransition(self, GatewayKeys(pending.identity(), None), "key-change-completed",
                             f"gateway key change completed: generation {pending.generation} active for the next "
                             "connections", details, (("key-change-completed", details),))

    def discard(self, now: _dt.datetime) -> KeyTransition:
        if self.pending is None:
            raise StateConflict("no pending key pairs", field="pending")
        return KeyTransition(self, replace(self, pending=None), "gateway-keys-discarded",
                             f"pending key pairs (generation {self.pending.generation}, {self.pending.state}) "
                             "discarded; the active keys stay", {"generation": str(self.pending.generation)})


def _request(key: ec.EllipticCurvePrivateKey, gateway_id: str, usage: str, unit: str | None = None) -> bytes:
    """PKCS#10 for ``key`` (subject CN = gateway id, OU ``unit`` or gateway-<usage>), signed with it."""
    digital_signature, key_agreement = _USAGE_BITS[usage]
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, gateway_id),
                                 x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit or f"gateway-{usage}")]))
        .add_extension(x509.KeyUsage(digital_signature=digital_signature, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=key_agreement,
                                     key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False),
                       critical=True)
        .sign(key, _hash_for(key))
    )
    return csr.public_bytes(serialization.Encoding.DER)


#: Public name of the PKCS#10 builder, for the gateway's other identities (core/localidentity.py).
certificate_request = _request
