"""Checks of certificates a profile names (sans-IO): chain to an SM-PKI root, validity, usage.

A communication profile carries the partner's TLS, signature and encryption certificates, a meter
profile the meter's TLS certificate. Before the gateway stores one it checks, in this order:

1. DER X.509, an EC public key, not a CA;
2. valid at the gateway's time;
3. key usage: ``tls`` and ``sig`` need digitalSignature, ``enc`` needs keyAgreement (TR-03109-4
   gives every participant three certificates with these usages);
4. it chains, by issuer name and signature, through valid CA certificates of the gateway's trust
   list to one of its root certificates (at most 4 CA certificates above it).

`CertificateTrust.problem` returns None or a one-line reason. Revocation is not checked
(no CRL/OCSP source in the emulator yet).
"""

from __future__ import annotations

import datetime as _dt
from typing import Iterable

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["CertificateTrust", "USAGES"]

USAGES = ("tls", "sig", "enc")
_MAX_DEPTH = 4


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _valid_at(cert: x509.Certificate, at: _dt.datetime) -> bool:
    return cert.not_valid_before_utc <= at <= cert.not_valid_after_utc


class CertificateTrust:
    def __init__(self, roots: Iterable[x509.Certificate], intermediates: Iterable[x509.Certificate] = ()) -> None:
        self.roots = list(roots)
        self._root_ders = {r.tbs_certificate_bytes for r in self.roots}
        self.cas = [c for c in (*self.roots, *intermediates) if _is_ca(c)]

    def problem(self, der: bytes, usage: str, at: _dt.datetime) -> str | None:
        """None if ``der`` is a certificate fit for ``usage`` at ``at``, else the reason."""
        if usage not in USAGES:
            raise ValueError(f"unknown usage {usage!r}")
        try:
            cert = x509.load_der_x509_certificate(bytes(der))
        except (ValueError, TypeError):
            return "not a DER X.509 certificate"
        try:
            public_key = cert.public_key()
        except (ValueError, TypeError):
            return "unsupported public key"
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            return "not an EC key (the SM-PKI uses ECDSA/ECDH keys only)"
        if _is_ca(cert):
            return "a CA certificate, not a participant's"
        if not _valid_at(cert, at):
            return f"not valid at {at:%Y-%m-%dT%H:%M:%SZ} (valid {cert.not_valid_before_utc:%Y-%m-%d} .. {cert.not_valid_after_utc:%Y-%m-%d})"
        try:
            key_usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        except x509.ExtensionNotFound:
            return "no keyUsage extension"
        needed = "key_agreement" if usage == "enc" else "digital_signature"
        if not getattr(key_usage, needed):
            return f"keyUsage lacks {'keyAgreement' if usage == 'enc' else 'digitalSignature'} (needed for a {usage} certificate)"
        return self._chain_problem(cert, at)

    def _chain_problem(self, cert: x509.Certificate, at: _dt.datetime) -> str | None:
        current = cert
        for _ in range(_MAX_DEPTH + 1):
            issuer = self._issuer_of(current)
            if issuer is None:
                return f"issuer {current.issuer.rfc4514_string()} is not in the gateway's SM-PKI trust list"
            if not _valid_at(issuer, at):
                return f"issuing CA {issuer.subject.rfc4514_string()} not valid at {at:%Y-%m-%d}"
            if issuer.tbs_certificate_bytes in self._root_ders:
                return None
            current = issuer
        return "certificate chain too long"

    def _issuer_of(self, cert: x509.Certificate) -> x509.Certificate | None:
        for candidate in self.cas:
            if candidate.subject != cert.issuer or candidate is cert:
                continue
            try:
                cert.verify_directly_issued_by(candidate)
            except (ValueError, TypeError, InvalidSignature):  # wrong key, or an unsupported algorithm
                continue
            return candidate
        return None
