"""The GWA's key banks and the gateway's trust anchors (Lastenheft 6.6, 6.7.3, 6.7.4), sans-IO.

A key bank holds what the gateway needs to work with one GWA: its communication profile
(partner id, address, ADMIN-SERVICE and INFO-REPORT URLs) and its TLS, signature and encryption
certificates (with the CA certificates between them and an SM-PKI root). [ours] Two banks:

* ``ACTIVE``: the GWA in charge (from personalisation, 6.7.1, or a completed GWA change);
* ``GWAPRE``: the reserved bank in which the new GWA's material is prepared during a GWA
  change (6.6). It exists only while a change runs, or after a fallback until the old GWA
  releases it.

The GWA change is a state machine on GWAPRE (the *phase*); each transition is one
:class:`Transition` that the application layer stores in one transaction:

====================  =========================================  ================================
phase                 reached by                                 GWA in use
====================  =========================================  ================================
(none)                start; confirm; release                    ACTIVE
``reserved``          old GWA: reserve (6.6.4)                   ACTIVE
``profiled``          old GWA: GWAPRE profile (6.6.5)            ACTIVE
``prepared``          old GWA: new GWA's certificates (6.6.6)    ACTIVE
``switched``          old GWA: switch (6.6.7); fallback timer    GWAPRE
``verified``          first AUTH with the new GWA (6.6.8)        GWAPRE
``finalised``         new GWA: final profile (6.6.9)             GWAPRE
``rolled-back``       fallback timer expired in switched,         ACTIVE
                      verified or finalised (61-67)
====================  =========================================  ================================

``confirm`` (6.6.10, new GWA, in ``finalised``, with the digest of GWAPRE it verified) copies
GWAPRE into ACTIVE and frees GWAPRE: the change is complete. ``release`` (old GWA: DELETE
GWAPRE) in ``reserved``, ``profiled``, ``prepared`` or ``rolled-back`` frees GWAPRE: the rollback
of every failure case. While the gateway uses GWAPRE (``switched``..``finalised``) GWAPRE cannot
be released: only confirmation or the fallback timer ends that phase, so a gateway is never
left without a reachable GWA.

Trust anchors (6.7.3/6.7.4): the SM-PKI root certificates the gateway accepts, for TLS and for
certificate checks. [ours] A root is added only with a link certificate (the new root's subject
and key, issued by a root the gateway trusts now); a root is deleted only if it is not the last
one and no certificate the gateway uses (GWA banks, EMT profiles, meters) depends on it.

Everything here is pure: time is passed in, results are values. Errors are CosemErrors with a
stable ``code``, an ``http_status`` and the ``field`` at fault.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Iterable, Mapping

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from smgw_emu.core.certcheck import CertificateTrust
from smgw_emu.core.cosem.errors import CosemError
from smgw_emu.core.profiles import InvalidCertificate, ProfileError, StateConflict, _check_host, _check_url

__all__ = [
    "ACTIVE",
    "BANKS",
    "DigestMismatch",
    "DuplicateRoot",
    "GWAPRE",
    "GwaCertificates",
    "GwaMaterial",
    "GwaPre",
    "GwaProfile",
    "KeyBanks",
    "Phase",
    "PROFILE_ATTRIBUTES",
    "RootInUse",
    "STORE_ROWS",
    "Transition",
    "TRUST_ROW",
    "UnknownKeyBank",
    "UnknownRoot",
    "certificate_fingerprint",
    "check_new_root",
    "roots_in_use",
    "validate_certificates",
    "validate_profile",
]

# ---------------------------------------------------------------------------------------------
# [ours] Names, phases and rules: one place
# ---------------------------------------------------------------------------------------------

ACTIVE = "ACTIVE"
GWAPRE = "GWAPRE"
BANKS = (ACTIVE, GWAPRE)
#: Rows of the state store's key_banks table (beside the meters' ``meter/<id>/...`` banks).
STORE_ROWS = {ACTIVE: "gwa/ACTIVE", GWAPRE: "gwa/GWAPRE"}
TRUST_ROW = "trust/roots"


class Phase(StrEnum):
    RESERVED = "reserved"
    PROFILED = "profiled"
    PREPARED = "prepared"
    SWITCHED = "switched"
    VERIFIED = "verified"
    FINALISED = "finalised"
    ROLLED_BACK = "rolled-back"


#: Phases in which the gateway works with the new GWA (GWAPRE is the bank in use).
IN_USE_PHASES = frozenset({Phase.SWITCHED, Phase.VERIFIED, Phase.FINALISED})
#: Phases in which the old GWA may release GWAPRE (the rollback).
RELEASABLE_PHASES = frozenset({Phase.RESERVED, Phase.PROFILED, Phase.PREPARED, Phase.ROLLED_BACK})
#: Phases in which a release abandons a change still in preparation (event gwa-change-aborted).
PREPARING_PHASES = frozenset({Phase.RESERVED, Phase.PROFILED, Phase.PREPARED})

#: Attributes of a communication profile (class 28100) that a GWA key bank takes. The
#: certificates come with their own step (6.6.6); channel timing is the gateway's [channels].
PROFILE_ATTRIBUTES = ("partner_id", "partner_role", "host", "port", "admin_service_url", "info_report_url")
PARTNER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
USAGES = ("tls", "sig", "enc")
MAX_CA_CERTIFICATES = 4


# ---------------------------------------------------------------------------------------------
# Errors (CosemError: code, http_status, message, field)
# ---------------------------------------------------------------------------------------------


class UnknownKeyBank(CosemError):
    code = "unknown-keybank"
    http_status = 404


class DigestMismatch(CosemError):
    code = "digest-mismatch"
    http_status = 409


class DuplicateRoot(CosemError):
    code = "duplicate-root"
    http_status = 409


class RootInUse(CosemError):
    code = "root-in-use"
    http_status = 409


class UnknownRoot(CosemError):
    code = "unknown-root"
    http_status = 404


# ---------------------------------------------------------------------------------------------
# Bank content
# ---------------------------------------------------------------------------------------------


def certificate_fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


@dataclass(frozen=True)
class GwaProfile:
    partner_id: str
    host: str
    port: int
    admin_service_url: str
    info_report_url: str

    def to_json(self) -> dict[str, Any]:
        return {"partner_id": self.partner_id, "host": self.host, "port": self.port,
                "admin_service_url": self.admin_service_url, "info_report_url": self.info_report_url}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "GwaProfile":
        return cls(data["partner_id"], data["host"], int(data["port"]), data["admin_service_url"],
                   data["info_report_url"])


@dataclass(frozen=True)
class GwaCertificates:
    tls: bytes
    sig: bytes
    enc: bytes
    cas: tuple[bytes, ...] = ()   # CA certificates between these and a root (the new GWA's sub-CA)

    def of(self, usage: str) -> bytes:
        return {"tls": self.tls, "sig": self.sig, "enc": self.enc}[usage]

    def to_json(self) -> dict[str, Any]:
        return {"tls": self.tls.hex(), "sig": self.sig.hex(), "enc": self.enc.hex(), "cas": [c.hex() for c in self.cas]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "GwaCertificates":
        return cls(bytes.fromhex(data["tls"]), bytes.fromhex(data["sig"]), bytes.fromhex(data["enc"]),
                   tuple(bytes.fromhex(c) for c in data.get("cas", ())))


@dataclass(frozen=True)
class GwaMaterial:
    """A bank's content: the GWA's profile and certificates (either may still be missing in GWAPRE)."""

    profile: GwaProfile | None = None
    certificates: GwaCertificates | None = None

    @property
    def complete(self) -> bool:
        return self.profile is not None and self.certificates is not None

    def to_json(self) -> dict[str, Any]:
        return {"profile": self.profile.to_json() if self.profile else None,
                "certificates": self.certificates.to_json() if self.certificates else None}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "GwaMaterial":
        profile, certificates = data.get("profile"), data.get("certificates")
        return cls(GwaProfile.from_json(profile) if profile else None,
                   GwaCertificates.from_json(certificates) if certificates else None)

    def digest(self) -> str:
        """[ours] What the new GWA confirms (6.6.10): SHA-256 of the canonical JSON of the bank."""
        text = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class GwaPre:
    phase: Phase
    material: GwaMaterial
    reserved_at: str                       # ISO 8601, gateway time
    fallback_at: str | None = None         # ISO 8601: when the gateway returns to ACTIVE (switched..finalised)
    reason: str = ""                       # why it was rolled back

    def to_json(self) -> dict[str, Any]:
        return {"material": self.material.to_json(), "reserved_at": self.reserved_at,
                "fallback_at": self.fallback_at, "reason": self.reason}

    @classmethod
    def from_row(cls, state: str, data: Mapping[str, Any]) -> "GwaPre":
        return cls(Phase(state), GwaMaterial.from_json(data["material"]), data["reserved_at"],
                   data.get("fallback_at"), data.get("reason", ""))


@dataclass(frozen=True)
class Transition:
    """One accepted step: the rows to write in one transaction, its log entry and events."""

    action: str
    before: "KeyBanks"
    after: "KeyBanks"
    log_event: str
    message: str
    details: Mapping[str, str] = field(default_factory=dict)
    events: tuple[tuple[str, Mapping[str, str]], ...] = ()

    def writes(self) -> dict[str, tuple[str, dict] | None]:
        """Store row -> (state, material), or None to delete the row: the difference before/after."""
        rows: dict[str, tuple[str, dict] | None] = {}
        if self.after.active != self.before.active:
            rows[STORE_ROWS[ACTIVE]] = ("active", self.after.active.to_json())
        if self.after.gwapre != self.before.gwapre:
            pre = self.after.gwapre
            rows[STORE_ROWS[GWAPRE]] = (pre.phase.value, pre.to_json()) if pre else None
        return rows

    @property
    def in_use_changed(self) -> bool:
        return self.after.in_use != self.before.in_use

    @property
    def fallback_at(self) -> _dt.datetime | None:
        return self.after.fallback_at


def _iso(now: _dt.datetime) -> str:
    return now.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ---------------------------------------------------------------------------------------------
# The state and its transitions
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyBanks:
    active: GwaMaterial
    gwapre: GwaPre | None = None

    # -- reading --------------------------------------------------------------------------------
    @classmethod
    def from_rows(cls, rows: Mapping[str, tuple[str, Mapping[str, Any]]]) -> "KeyBanks | None":
        """From the store's key_banks rows; None when the gateway has no ACTIVE bank yet."""
        active = rows.get(STORE_ROWS[ACTIVE])
        if active is None:
            return None
        pre = rows.get(STORE_ROWS[GWAPRE])
        return cls(GwaMaterial.from_json(active[1]), GwaPre.from_row(pre[0], pre[1]) if pre else None)

    @property
    def phase(self) -> Phase | None:
        return self.gwapre.phase if self.gwapre else None

    @property
    def in_use_bank(self) -> str:
        return GWAPRE if self.gwapre and self.gwapre.phase in IN_USE_PHASES else ACTIVE

    @property
    def in_use(self) -> GwaMaterial:
        return self.gwapre.material if self.in_use_bank == GWAPRE else self.active  # type: ignore[union-attr]

    @property
    def fallback_at(self) -> _dt.datetime | None:
        if self.gwapre and self.gwapre.phase in IN_USE_PHASES and self.gwapre.fallback_at:
            return _dt.datetime.fromisoformat(self.gwapre.fallback_at.replace("Z", "+00:00"))
        return None

    def bank(self, name: str) -> GwaMaterial | None:
        if name == ACTIVE:
            return self.active
        if name == GWAPRE:
            return self.gwapre.material if self.gwapre else None
        raise UnknownKeyBank(f"no key bank {name[:40]!r} (key banks: {', '.join(BANKS)})", field="bank")

    def _need(self, phases: Iterable[Phase], action: str) -> GwaPre:
        phases = tuple(phases)
        pre = self.gwapre
        if pre is None or pre.phase not in phases:
            now = f"GWAPRE is {pre.phase.value}" if pre else "GWAPRE is not reserved"
            raise StateConflict(f"{action} needs GWAPRE {' or '.join(p.value for p in phases)}; {now}", field="phase")
        return pre

    def _step(self, action: str, after: "KeyBanks", log_event: str, message: str,
              events: tuple[tuple[str, Mapping[str, str]], ...] = (), **details: str) -> Transition:
        details = {"phase": after.phase.value if after.phase else "free", "in-use": after.in_use_bank, **details}
        return Transition(action, self, after, log_event, message, details, events)

    # -- 6.6.4 reserve -------------------------------------------------------------------------
    def reserve(self, now: _dt.datetime) -> Transition:
        if self.gwapre is not None:
            raise StateConflict(f"GWAPRE is already reserved ({self.gwapre.phase.value}); a GWA change runs or "
                                "awaits its release (DELETE /smgw/keybanks/GWAPRE)", field="phase")
        after = replace(self, gwapre=GwaPre(Phase.RESERVED, GwaMaterial(), _iso(now)))
        return self._step("reserve", after, "gwapre-reserved", "key bank GWAPRE reserved for a GWA change")

    # -- 6.6.5 GWAPRE profile ------------------------------------------------------------------
    def install_profile(self, profile: GwaProfile, now: _dt.datetime, taken_ids: Iterable[str] = ()) -> Transition:
        pre = self._need((Phase.RESERVED, Phase.PROFILED), "a GWAPRE profile")
        _check_partner_free(profile.partner_id, self, taken_ids)
        after = replace(self, gwapre=replace(pre, phase=Phase.PROFILED, material=GwaMaterial(profile)))
        return self._step("profile", after, "gwapre-profile-installed",
                          f"GWAPRE profile of GWA {profile.partner_id} at {profile.host}:{profile.port} installed",
                          partner=profile.partner_id, host=profile.host, port=str(profile.port))

    # -- 6.6.6 certificates of the new GWA -----------------------------------------------------
    def install_certificates(self, certificates: GwaCertificates, trust: CertificateTrust,
                             now: _dt.datetime) -> Transition:
        pre = self._need((Phase.PROFILED, Phase.PREPARED), "the new GWA's certificates")
        assert pre.material.profile is not None
        validate_certificates(certificates, pre.material.profile.partner_id, trust, now)
        after = replace(self, gwapre=replace(pre, phase=Phase.PREPARED,
                                             material=replace(pre.material, certificates=certificates)))
        return self._step("certificates", after, "gwapre-certificates-installed",
                          f"certificates of GWA {pre.material.profile.partner_id} installed in GWAPRE",
                          partner=pre.material.profile.partner_id,
                          tls=certificate_fingerprint(certificates.tls)[:16])

    # -- 6.6.7 switch ------------------------------------------------------------------------
    def switch(self, now: _dt.datetime, fallback_s: float, taken_ids: Iterable[str] = ()) -> Transition:
        pre = self._need((Phase.PREPARED,), "the switch to GWAPRE")
        assert pre.material.profile is not None
        _check_partner_free(pre.material.profile.partner_id, self, taken_ids)
        fallback_at = now + _dt.timedelta(seconds=fallback_s)
        after = replace(self, gwapre=replace(pre, phase=Phase.SWITCHED, fallback_at=_iso(fallback_at)))
        profile = pre.material.profile
        return self._step("switch", after, "gwapre-switched",
                          f"switched to GWAPRE: GWA {profile.partner_id} at {profile.host}:{profile.port} is in use; "
                          f"back to {self.active.profile.partner_id if self.active.profile else 'ACTIVE'} at "
                          f"{_iso(fallback_at)} unless confirmed", partner=profile.partner_id,
                          fallback_at=_iso(fallback_at))

    # -- 6.6.8 GWAPRE verified ---------------------------------------------------------------
    def verified(self, now: _dt.datetime) -> Transition | None:
        """The gateway reached the new GWA (MANAGEMENT channel in AUTH): None unless switched."""
        if self.phase != Phase.SWITCHED:
            return None
        assert self.gwapre is not None and self.gwapre.material.profile is not None
        after = replace(self, gwapre=replace(self.gwapre, phase=Phase.VERIFIED))
        return self._step("verify", after, "gwapre-verified",
                          f"GWAPRE verified: MANAGEMENT channel with GWA {self.gwapre.material.profile.partner_id} "
                          "in AUTH", partner=self.gwapre.material.profile.partner_id)

    # -- 6.6.9 final profile -------------------------------------------------------------------
    def install_final_profile(self, profile: GwaProfile, now: _dt.datetime) -> Transition:
        pre = self._need((Phase.VERIFIED, Phase.FINALISED), "the final GWA profile")
        assert pre.material.profile is not None
        if profile.partner_id != pre.material.profile.partner_id:
            raise ProfileError(f"partner_id must stay {pre.material.profile.partner_id} (the GWA the certificates "
                               f"in GWAPRE name), not {profile.partner_id[:40]!r}", field="partner_id")
        after = replace(self, gwapre=replace(pre, phase=Phase.FINALISED, material=replace(pre.material, profile=profile)))
        return self._step("final-profile", after, "gwapre-final-profile-installed",
                          f"final profile of GWA {profile.partner_id} at {profile.host}:{profile.port} installed",
                          partner=profile.partner_id, host=profile.host, port=str(profile.port),
                          digest=after.gwapre.material.digest())  # type: ignore[union-attr]

    # -- 6.6.10 confirm --------------------------------------------------------------------------
    def confirm(self, digest: str, now: _dt.datetime) -> Transition:
        pre = self._need((Phase.FINALISED,), "the confirmation of the final GWA")
        expected = pre.material.digest()
        if digest.lower() != expected:
            raise DigestMismatch(f"digest {digest[:64]!r} is not that of GWAPRE as the gateway holds it ({expected}); "
                                 "read GWAPRE again and confirm what it holds", field="digest")
        assert pre.material.profile is not None
        previous = self.active.profile.partner_id if self.active.profile else ""
        after = KeyBanks(active=pre.material, gwapre=None)
        gwa = pre.material.profile.partner_id
        details = {"gwa": gwa, "previous-gwa": previous, "digest": expected}
        return self._step("confirm", after, "gwa-change-completed",
                          f"GWA change completed: GWA {gwa} is in charge (was {previous}); GWAPRE freed",
                          events=(("gwa-change-completed", details),), **details)

    # -- fallback (61-67: the new GWA did not complete in time) -------------------------------
    def fallback(self, now: _dt.datetime, reason: str = "fallback timer expired") -> Transition | None:
        """None unless GWAPRE is in use and its fallback time has come."""
        due = self.fallback_at
        if due is None or now < due:
            return None
        assert self.gwapre is not None and self.gwapre.material.profile is not None
        failed_in = self.gwapre.phase
        after = replace(self, gwapre=replace(self.gwapre, phase=Phase.ROLLED_BACK, fallback_at=None,
                                             reason=f"{reason} in phase {failed_in.value}"))
        old = self.active.profile.partner_id if self.active.profile else ""
        details = {"gwa": old, "new-gwa": self.gwapre.material.profile.partner_id, "failed-in": failed_in.value,
                   "reason": reason}
        return self._step("fallback", after, "gwa-change-fallback",
                          f"GWA change failed ({reason} in phase {failed_in.value}): back to GWA {old} (ACTIVE); "
                          "GWAPRE kept until the GWA releases it",
                          events=(("gwa-change-failed", details),), **details)

    # -- release (rollback by the old GWA) -----------------------------------------------------
    def release(self, now: _dt.datetime) -> Transition:
        pre = self._need(RELEASABLE_PHASES, "releasing GWAPRE")
        after = replace(self, gwapre=None)
        partner = pre.material.profile.partner_id if pre.material.profile else ""
        details = {"released-in": pre.phase.value, **({"new-gwa": partner} if partner else {})}
        events: tuple = ()
        if pre.phase in PREPARING_PHASES:
            events = (("gwa-change-aborted", {"gwa": self.active.profile.partner_id if self.active.profile else "",
                                              **details}),)
        return self._step("release", after, "gwapre-released",
                          f"GWAPRE released ({pre.phase.value}); GWA {self.active.profile.partner_id if self.active.profile else ''} "
                          "stays in charge", events=events, **details)


def _check_partner_free(partner_id: str, banks: KeyBanks, taken_ids: Iterable[str]) -> None:
    current = banks.active.profile.partner_id if banks.active.profile else None
    if partner_id != current and partner_id in set(taken_ids):
        raise ProfileError(f"partner_id {partner_id} names an existing profile of the gateway", field="partner_id")


# ---------------------------------------------------------------------------------------------
# Validation of what a GWA sends
# ---------------------------------------------------------------------------------------------


def validate_profile(values: Mapping[str, Any]) -> GwaProfile:
    """A GWA communication profile from the attributes of a class 28100 document (by name)."""
    for name in values:
        if name not in PROFILE_ATTRIBUTES:
            hint = ("certificates come with POST /smgw/keybanks/GWAPRE/certificates" if name.endswith("_certificate")
                    else "a GWA key bank takes " + ", ".join(PROFILE_ATTRIBUTES))
            raise ProfileError(f"{name} is not part of a GWA key bank profile: {hint}", field=name)
    for name in ("partner_id", "host", "port", "admin_service_url", "info_report_url"):
        if name not in values:
            raise ProfileError(f"{name} is required in a GWA profile", field=name)
    role = values.get("partner_role", "gwa")
    if role != "gwa":
        raise ProfileError(f"partner_role must be gwa in a GWA key bank, not {role}", field="partner_role")
    partner = values["partner_id"]
    if not isinstance(partner, str) or not PARTNER_ID.fullmatch(partner):
        raise ProfileError("partner_id must be 1..64 of A-Z a-z 0-9 . _ - (starting with a letter or digit)",
                           field="partner_id")
    _check_host(values["host"], "host")
    port = values["port"]
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise ProfileError("port must be 1..65535", field="port")
    for name in ("admin_service_url", "info_report_url"):
        _check_url(values[name], name)
    return GwaProfile(partner, values["host"], port, values["admin_service_url"], values["info_report_url"])


def _common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def _load(der: bytes, field_name: str) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(bytes(der))
    except (ValueError, TypeError):
        raise InvalidCertificate(f"{field_name}: not a DER X.509 certificate", field=field_name) from None


def validate_certificates(certificates: GwaCertificates, partner_id: str, trust: CertificateTrust,
                          now: _dt.datetime) -> None:
    """The new GWA's certificates: each fit for its usage and chaining to a trusted root (through the
    given CA certificates or the gateway's), each naming the GWA of the profile (subject CN)."""
    if len(certificates.cas) > MAX_CA_CERTIFICATES:
        raise InvalidCertificate(f"at most {MAX_CA_CERTIFICATES} CA certificates", field="ca-certificate")
    cas = []
    for i, der in enumerate(certificates.cas):
        cert = _load(der, f"ca-certificate[{i}]")
        try:
            is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            raise InvalidCertificate(f"ca-certificate[{i}]: not a CA certificate", field=f"ca-certificate[{i}]")
        cas.append(cert)
    extended = CertificateTrust(trust.roots, [*trust.cas, *cas])
    for usage in USAGES:
        name = f"certificate[{usage}]"
        der = certificates.of(usage)
        problem = extended.problem(der, usage, now)
        if problem:
            raise InvalidCertificate(f"{name}: {problem}", field=name)
        cn = _common_name(_load(der, name))
        if cn != partner_id:
            raise InvalidCertificate(f"{name}: names {cn[:64]!r}, not the GWA of the GWAPRE profile ({partner_id})",
                                     field=name)


# ---------------------------------------------------------------------------------------------
# Trust anchors (6.7.3, 6.7.4)
# ---------------------------------------------------------------------------------------------


def _public_der(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def check_new_root(root_der: bytes, link_der: bytes, roots: list[x509.Certificate],
                   now: _dt.datetime) -> x509.Certificate:
    """The new root, if it may be added: a self-signed EC CA certificate valid now, not yet
    trusted, vouched for by a link certificate (same subject and key) issued by a trusted root."""
    root = _load(root_der, "certificate")
    if not isinstance(root.public_key(), ec.EllipticCurvePublicKey):
        raise InvalidCertificate("certificate: not an EC key (the SM-PKI uses ECDSA keys only)", field="certificate")
    if not _is_ca(root) or root.subject != root.issuer:
        raise InvalidCertificate("certificate: not a self-signed CA certificate (a root)", field="certificate")
    try:
        root.verify_directly_issued_by(root)
    except (ValueError, TypeError, InvalidSignature):
        raise InvalidCertificate("certificate: its self-signature does not verify", field="certificate") from None
    if not root.not_valid_before_utc <= now <= root.not_valid_after_utc:
        raise InvalidCertificate(f"certificate: not valid at {now:%Y-%m-%dT%H:%M:%SZ}", field="certificate")
    fingerprint = certificate_fingerprint(root_der)
    for present in roots:
        if certificate_fingerprint(present.public_bytes(serialization.Encoding.DER)) == fingerprint \
                or _public_der(present) == _public_der(root):
            raise DuplicateRoot(f"root {root.subject.rfc4514_string()} is already trusted", field="certificate")
    link = _load(link_der, "link-certificate")
    if link.subject != root.subject or _public_der(link) != _public_der(root):
        raise InvalidCertificate("link-certificate: does not carry the new root's subject and key",
                                 field="link-certificate")
    if not _is_ca(link):
        raise InvalidCertificate("link-certificate: not a CA certificate", field="link-certificate")
    if not link.not_valid_before_utc <= now <= link.not_valid_after_utc:
        raise InvalidCertificate(f"link-certificate: not valid at {now:%Y-%m-%dT%H:%M:%SZ}", field="link-certificate")
    for present in roots:
        if present.subject != link.issuer:
            continue
        try:
            link.verify_directly_issued_by(present)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return root
    raise InvalidCertificate(f"link-certificate: not issued by a root the gateway trusts (issuer "
                             f"{link.issuer.rfc4514_string()})", field="link-certificate")


def roots_in_use(fingerprint: str, roots: list[x509.Certificate], intermediates: list[x509.Certificate],
                 used: Iterable[tuple[str, bytes, str]], now: _dt.datetime) -> list[str]:
    """Labels of the certificates in `used` (label, DER, usage) that chain to a trusted root now
    and would not any more without the root `fingerprint`."""
    remaining = [r for r in roots if certificate_fingerprint(r.public_bytes(serialization.Encoding.DER)) != fingerprint]
    with_all = CertificateTrust(roots, intermediates)
    without = CertificateTrust(remaining, intermediates)
    return [label for label, der, usage in used
            if with_all.problem(der, usage, now) is None and without.problem(der, usage, now) is not None]
