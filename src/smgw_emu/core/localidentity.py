"""The gateway's HAN and LMN TLS identities and their change (Lastenheft 6.7.5 HAN certificate
change, fig. 72; 6.7.6 LMN certificate change, fig. 73), sans-IO.

[ours] The same pattern as the WAN key change (`core/gatewaykeys.py`), for one TLS key per
network: until its first change an identity is the PKI directory's gateway TLS certificate
(generation 0, the *initial* one, not stored). A change is

1. ``generate``: the gateway generates a new key pair on the curve of its WAN TLS key and a
   PKCS#10 request for it (subject CN = gateway id, OU ``gateway-han`` / ``gateway-lmn``,
   digitalSignature, signed with the new key: proof of possession);
2. ``install``: the GWA brings the certificate the SM-PKI sub-CA issued for it; it must certify
   exactly the new key, name the gateway, carry digitalSignature and chain to a trust anchor. It
   is active at once (there is no separate activation as for the WAN keys: nothing on the HAN or
   the LMN authenticates the gateway by a key of the other generation).

Rows ``han/ACTIVE``, ``han/PENDING``, ``lmn/ACTIVE``, ``lmn/PENDING`` of the key_banks table;
every step is one transaction. The reaction of the networks (listeners presenting the new
certificate, meters being shown it) is wiring: `app/localidentity.py`.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from smgw_emu.core.certcheck import CertificateTrust
from smgw_emu.core.gatewaykeys import Identity, Pending, certificate_request, chain_of, key_pem, load_key
from smgw_emu.core.keybanks import certificate_fingerprint
from smgw_emu.core.profiles import InvalidCertificate, StateConflict

__all__ = ["DOMAINS", "LocalIdentity", "LocalTransition", "rows_of"]

#: [ours] the networks with a TLS identity of their own, and what their change is called
#: (log entries and events ``<domain>-certificate-changed``).
DOMAINS = {"han": "HAN (CLS devices, consumers)", "lmn": "LMN (meters)"}
PURPOSE = "certificate-change"
GENERATED, CERTIFIED = "generated", "certified"


def rows_of(domain: str) -> tuple[str, str]:
    return f"{domain}/ACTIVE", f"{domain}/PENDING"


@dataclass(frozen=True)
class LocalTransition:
    before: "LocalIdentity"
    after: "LocalIdentity"
    log_event: str
    message: str
    details: Mapping[str, str] = field(default_factory=dict)
    events: tuple[tuple[str, Mapping[str, str]], ...] = ()

    def writes(self) -> dict[str, tuple[str, dict] | None]:
        active_row, pending_row = rows_of(self.after.domain)
        rows: dict[str, tuple[str, dict] | None] = {}
        if self.after.active != self.before.active and self.after.active is not None:
            rows[active_row] = ("active", self.after.active.to_json())
        if self.after.pending != self.before.pending:
            pending = self.after.pending
            rows[pending_row] = (pending.state, pending.to_json()) if pending else None
        return rows

    @property
    def identity_changed(self) -> bool:
        return self.after.active != self.before.active


@dataclass(frozen=True)
class LocalIdentity:
    domain: str
    active: Identity | None = None      # None: the initial identity (PKI directory's gateway-tls)
    pending: Pending | None = None

    @classmethod
    def from_rows(cls, domain: str, rows: Mapping[str, tuple[str, Mapping[str, Any]]]) -> "LocalIdentity":
        if domain not in DOMAINS:
            raise ValueError(f"unknown identity domain {domain!r}")
        active_row, pending_row = rows_of(domain)
        active, pending = rows.get(active_row), rows.get(pending_row)
        return cls(domain, Identity.from_json(active[1]) if active else None,
                   Pending.from_json(pending[1]) if pending else None)

    @property
    def generation(self) -> int:
        return self.active.generation if self.active else 0

    def generate(self, gateway_id: str, new_key: Callable[[], ec.EllipticCurvePrivateKey],
                 now: _dt.datetime) -> LocalTransition:
        if self.pending is not None:
            raise StateConflict(f"a new {self.domain} key pair is pending already ({self.pending.state}); install "
                                f"its certificate or discard it (DELETE /smgw/keys/{self.domain}/pending)",
                                field="pending")
        key = new_key()
        request = certificate_request(key, gateway_id, "tls", unit=f"gateway-{self.domain}")
        pending = Pending(PURPOSE, self.generation + 1, {"tls": key_pem(key)}, {"tls": request})
        return LocalTransition(self, replace(self, pending=pending), f"{self.domain}-key-generated",
                               f"new {self.domain.upper()} TLS key pair generated (generation {pending.generation}); "
                               "certificate request ready", {"generation": str(pending.generation)})

    def install(self, certificate: bytes, cas: list[bytes], trust: CertificateTrust, gateway_id: str,
                now: _dt.datetime) -> LocalTransition:
        pending = self.pending
        if pending is None:
            raise StateConflict(f"no pending {self.domain} key pair: generate it first "
                                f"(POST /smgw/keys/{self.domain}/generate)", field="pending")
        ca_certs = []
        for i, der in enumerate(cas):
            try:
                ca_certs.append(x509.load_der_x509_certificate(der))
            except ValueError:
                raise InvalidCertificate(f"ca-certificate[{i}]: not a DER X.509 certificate",
                                         field=f"ca-certificate[{i}]") from None
        extended = CertificateTrust(trust.roots, [*trust.cas, *ca_certs])
        name = "certificate"
        problem = extended.problem(certificate, "tls", now)
        if problem:
            raise InvalidCertificate(f"{name}: {problem}", field=name)
        cert = x509.load_der_x509_certificate(certificate)
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        own = load_key(pending.keys["tls"]).public_key().public_bytes(serialization.Encoding.DER, spki)
        if cert.public_key().public_bytes(serialization.Encoding.DER, spki) != own:
            raise InvalidCertificate(f"{name}: certifies another key than the gateway's new {self.domain} key",
                                     field=name)
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if not cns or cns[0].value != gateway_id:
            raise InvalidCertificate(f"{name}: does not name this gateway ({gateway_id})", field=name)
        chain = chain_of(cert, extended.cas, trust.roots)
        identity = Identity("personalised", pending.generation, pending.keys, {"tls": certificate}, chain)
        details = {"generation": str(pending.generation), "previous-generation": str(self.generation),
                   "tls": certificate_fingerprint(certificate)[:16]}
        event = f"{self.domain}-certificate-changed"
        return LocalTransition(self, LocalIdentity(self.domain, identity, None), event,
                               f"{self.domain.upper()} certificate changed: generation {pending.generation} "
                               "presented from the next connection on", details, ((event, details),))

    def discard(self, now: _dt.datetime) -> LocalTransition:
        if self.pending is None:
            raise StateConflict(f"no pending {self.domain} key pair", field="pending")
        return LocalTransition(self, replace(self, pending=None), f"{self.domain}-key-discarded",
                               f"pending {self.domain.upper()} key pair (generation {self.pending.generation}) "
                               "discarded; the certificate in use stays", {"generation": str(self.pending.generation)})
