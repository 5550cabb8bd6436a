"""The wake-up packet (Lastenheft 5.1): codec, builder and the gateway's verifier.

Sans-IO: no sockets, no asyncio, the current time is always passed in.

[ours] The wire format is the ASN.1 module of docs/domain.md section 3 in DER (one packet per
datagram, at most 1,024 bytes), not yet the binary format of TR-03109-1 (Detailspezifikation
§2.1; the difference is listed in docs/domain.md §3). Everything that knows the format lives in
`DerWakeUpCodec`; the verifier only sees the `WakeUpCodec` interface, so the normative format can
replace it without touching the checks.

The verifier checks in the order docs/domain.md fixes: size, DER form, version, recipient, sender key
id, signature algorithm and signature, time window, nonce. `precheck` runs the cheap checks (up
to the signature algorithm) and `finish` the rest, so a caller can put a rate limiter in front
of the expensive signature check without charging it for packets that fail cheaply.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import heapq
import os
from dataclasses import dataclass
from enum import StrEnum
from typing import Iterable, Mapping, Protocol

from asn1crypto import algos
from asn1crypto import core as asn1
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

WAKEUP_VERSION = 1
NONCE_SIZE = 16
DEFAULT_WINDOW = _dt.timedelta(seconds=60)
DEFAULT_MAX_SIZE = 1024
#: [ours] bound of the replay store; only validly signed packets enter it.
DEFAULT_MAX_NONCES = 10_000

ECDSA_WITH_SHA256 = "1.2.840.10045.4.3.2"
ECDSA_WITH_SHA384 = "1.2.840.10045.4.3.3"
SIGNATURE_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    ECDSA_WITH_SHA256: hashes.SHA256,
    ECDSA_WITH_SHA384: hashes.SHA384,
}
_HASH_NAMES = {"sha256": ECDSA_WITH_SHA256, "sha384": ECDSA_WITH_SHA384}


class RejectReason(StrEnum):
    """Stable reason codes: they end up in logs, counters and the gateway's system log."""

    EMPTY = "empty"
    TOO_LARGE = "too-large"
    MALFORMED = "malformed"
    BAD_VERSION = "bad-version"
    WRONG_RECIPIENT = "wrong-recipient"
    UNKNOWN_SENDER = "unknown-sender"
    UNSUPPORTED_ALGORITHM = "unsupported-algorithm"
    BAD_SIGNATURE = "bad-signature"
    STALE = "stale"
    FUTURE = "future"
    REPLAYED_NONCE = "replayed-nonce"
    # [ours] beyond docs/domain.md: X.509 rule for extensions, and the bounded replay store.
    UNSUPPORTED_EXTENSION = "unsupported-extension"
    NONCE_STORE_FULL = "nonce-store-full"
    # Decided by the network adapter's rate limiter, never by the verifier.
    RATE_LIMITED = "rate-limited"


# --- ASN.1 module (docs/domain.md section 3) ------------------------------------------------------


class Extensions(asn1.SequenceOf):
    _child_spec = asn1_x509.Extension


class WakeUpContent(asn1.Sequence):
    _fields = [
        ("version", asn1.Integer),
        ("recipient_id", asn1.UTF8String),
        ("sender_key_id", asn1.OctetString),
        ("created_at", asn1.GeneralizedTime),
        ("nonce", asn1.OctetString),
        ("extensions", Extensions, {"explicit": 0, "optional": True}),
    ]


class WakeUpPacket(asn1.Sequence):
    _fields = [
        ("content", WakeUpContent),
        ("signature_algorithm", algos.SignedDigestAlgorithm),
        ("signature_value", asn1.OctetBitString),
    ]


# --- decoded form, independent of the byte format ---------------------------------------------


@dataclass(frozen=True)
class WakeUpExtension:
    oid: str  # dotted
    critical: bool
    value: bytes  # contents of extnValue, opaque here


@dataclass(frozen=True)
class WakeUpData:
    """The signed content of a wake-up packet."""

    version: int
    recipient_id: str
    sender_key_id: bytes
    created_at: _dt.datetime  # aware, UTC, whole seconds
    nonce: bytes
    extensions: tuple[WakeUpExtension, ...] = ()


@dataclass(frozen=True)
class SignedWakeUp:
    """A decoded packet: the content, the exact bytes the signature covers, and the signature."""

    data: WakeUpData
    signed_bytes: bytes
    signature_algorithm: str  # dotted OID
    signature_parameters: bytes | None  # DER of AlgorithmIdentifier.parameters, if present
    signature: bytes  # DER Ecdsa-Sig-Value


class MalformedPacket(ValueError):
    """The bytes are not a wake-up packet in the codec's strict encoding."""


class WakeUpCodec(Protocol):
    """The one seam to the byte format."""

    def decode(self, data: bytes) -> SignedWakeUp:
        """Strictly decode one packet; raise MalformedPacket for anything else."""

    def encode_content(self, data: WakeUpData) -> bytes:
        """The bytes a signature covers."""

    def encode_packet(
        self, signed_bytes: bytes, signature_algorithm: str, signature: bytes,
        signature_parameters: bytes | None = None,
    ) -> bytes:
        """Wrap signed content and its signature into one packet."""


class DerWakeUpCodec:
    """docs/domain.md section 3 in DER, with asn1crypto."""

    def encode_content(self, data: WakeUpData) -> bytes:
        if data.created_at.tzinfo is None or data.created_at.microsecond:
            raise ValueError("createdAt must be an aware time in whole seconds")
        created_at = data.created_at.astimezone(_dt.timezone.utc)
        fields: dict = {
            "version": data.version,
            "recipient_id": data.recipient_id,
            "sender_key_id": data.sender_key_id,
            "created_at": created_at,
            "nonce": data.nonce,
        }
        if data.extensions:
            fields["extensions"] = [
                {"extn_id": e.oid, "critical": e.critical, "extn_value": asn1.ParsableOctetString(e.value)}
                for e in data.extensions
            ]
        return WakeUpContent(fields).dump()

    def encode_packet(
        self, signed_bytes: bytes, signature_algorithm: str, signature: bytes,
        signature_parameters: bytes | None = None,
    ) -> bytes:
        algorithm: dict = {"algorithm": signature_algorithm}
        if signature_parameters is not None:
            algorithm["parameters"] = asn1.Any.load(signature_parameters)
        return WakeUpPacket(
            {
                "content": WakeUpContent.load(signed_bytes),
                "signature_algorithm": algorithm,
                "signature_value": signature,
            }
        ).dump()

    def decode(self, data: bytes) -> SignedWakeUp:
        try:
            decoded = self._decode_loosely(data)
            # Strict DER: the only accepted encoding is the one we would produce ourselves. This
            # rejects indefinite and non-minimal lengths, non-minimal integers, BOOLEAN other than
            # FF, non-zero unused bits, fractional seconds or offsets in createdAt.
            canonical = self.encode_packet(
                self.encode_content(decoded.data), decoded.signature_algorithm,
                decoded.signature, decoded.signature_parameters,
            )
        except MalformedPacket:
            raise
        except Exception as exc:  # asn1crypto raises many types on hostile input
            raise MalformedPacket(f"not a wake-up packet: {type(exc).__name__}") from None
        if canonical != data:
            raise MalformedPacket("not in DER (distinguished) encoding")
        return decoded

    @staticmethod
    def _decode_loosely(data: bytes) -> SignedWakeUp:
        packet = WakeUpPacket.load(data, strict=True)  # strict: trailing bytes are an error
        content = packet["content"]
        created_at = content["created_at"].native
        if not isinstance(created_at, _dt.datetime) or created_at.tzinfo is None:
            raise MalformedPacket("createdAt is not a UTC time")
        if created_at.microsecond:
            raise MalformedPacket("createdAt has fractional seconds")
        nonce = content["nonce"].native
        if len(nonce) != NONCE_SIZE:
            raise MalformedPacket(f"nonce is {len(nonce)} bytes, not {NONCE_SIZE}")
        extensions: tuple[WakeUpExtension, ...] = ()
        if not isinstance(content["extensions"], asn1.Void):
            extensions = tuple(
                WakeUpExtension(e["extn_id"].dotted, bool(e["critical"].native), e["extn_value"].contents)
                for e in content["extensions"]
            )
        parameters = packet["signature_algorithm"]["parameters"]
        return SignedWakeUp(
            data=WakeUpData(
                version=content["version"].native,
                recipient_id=content["recipient_id"].native,
                sender_key_id=content["sender_key_id"].native,
                created_at=created_at.astimezone(_dt.timezone.utc),
                nonce=nonce,
                extensions=extensions,
            ),
            signed_bytes=content.dump(),
            signature_algorithm=packet["signature_algorithm"]["algorithm"].dotted,
            signature_parameters=None if isinstance(parameters, asn1.Void) else parameters.dump(),
            signature=packet["signature_value"].native,
        )


DEFAULT_CODEC: WakeUpCodec = DerWakeUpCodec()


# --- building (used by the reference GWA and by tests) ---------------------------------------


def key_id_of(cert: x509.Certificate) -> bytes:
    """The certificate's subjectKeyIdentifier, or the RFC 5280 method-1 value if it has none."""
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest


def build_wakeup(
    *,
    recipient_id: str,
    signer_key: ec.EllipticCurvePrivateKey,
    signer_cert: x509.Certificate,
    created_at: _dt.datetime,
    nonce: bytes | None = None,
    hash: str = "sha256",
    extensions: Iterable[WakeUpExtension] | None = None,
    version: int = WAKEUP_VERSION,
    codec: WakeUpCodec = DEFAULT_CODEC,
) -> bytes:
    """Build a signed wake-up packet. `created_at` must be aware; sub-seconds are dropped."""
    if created_at.tzinfo is None:
        raise ValueError("created_at must be timezone-aware")
    if hash not in _HASH_NAMES:
        raise ValueError(f"hash must be one of {', '.join(_HASH_NAMES)}")
    nonce = os.urandom(NONCE_SIZE) if nonce is None else nonce
    if len(nonce) != NONCE_SIZE:
        raise ValueError(f"nonce must be {NONCE_SIZE} bytes")
    data = WakeUpData(
        version=version,
        recipient_id=recipient_id,
        sender_key_id=key_id_of(signer_cert),
        created_at=created_at.astimezone(_dt.timezone.utc).replace(microsecond=0),
        nonce=nonce,
        extensions=tuple(extensions or ()),
    )
    algorithm = _HASH_NAMES[hash]
    signed_bytes = codec.encode_content(data)
    signature = signer_key.sign(signed_bytes, ec.ECDSA(SIGNATURE_HASHES[algorithm]()))
    return codec.encode_packet(signed_bytes, algorithm, signature)


# --- verifying --------------------------------------------------------------------------------


@dataclass(frozen=True)
class WakeUpDecision:
    """Outcome of the checks. `content` is set whenever the packet could be decoded."""

    reason: RejectReason | None  # None: accepted
    content: WakeUpData | None = None
    detail: str = ""

    @property
    def accepted(self) -> bool:
        return self.reason is None

    @classmethod
    def reject(cls, reason: RejectReason, detail: str = "", content: WakeUpData | None = None):
        return cls(reason, content, detail)


@dataclass(frozen=True)
class PendingSignatureCheck:
    """A packet that passed the cheap checks; `WakeUpVerifier.finish` does the rest."""

    packet: SignedWakeUp
    public_key: ec.EllipticCurvePublicKey
    hash_algorithm: type[hashes.HashAlgorithm]


class NonceStore:
    """Nonces of accepted packets, each kept until its packet can no longer pass the time check.

    Bounded: when full of unexpired nonces it refuses new ones (fail closed) rather than forget
    one early, which would reopen a replay.
    """

    def __init__(self, max_entries: int = DEFAULT_MAX_NONCES):
        self.max_entries = max_entries
        self._expiry: dict[bytes, _dt.datetime] = {}
        self._by_expiry: list[tuple[_dt.datetime, bytes]] = []  # heap

    def __len__(self) -> int:
        return len(self._expiry)

    def forget_expired(self, now: _dt.datetime) -> None:
        while self._by_expiry and self._by_expiry[0][0] < now:
            expires_at, nonce = heapq.heappop(self._by_expiry)
            if self._expiry.get(nonce) == expires_at:
                del self._expiry[nonce]

    def seen(self, nonce: bytes, now: _dt.datetime) -> bool:
        self.forget_expired(now)
        return nonce in self._expiry

    def add(self, nonce: bytes, expires_at: _dt.datetime, now: _dt.datetime) -> bool:
        self.forget_expired(now)
        if nonce not in self._expiry and len(self._expiry) >= self.max_entries:
            return False
        current = self._expiry.get(nonce)
        if current is None or expires_at > current:
            self._expiry[nonce] = expires_at
            heapq.heappush(self._by_expiry, (expires_at, nonce))
        return True

    def snapshot(self) -> dict[bytes, _dt.datetime]:
        return dict(self._expiry)


class WakeUpVerifier:
    """The gateway's checks on one received packet. Not thread-safe; one per listener."""

    def __init__(
        self,
        gateway_id: str,
        gwa_signature_certs: Iterable[x509.Certificate],
        window: _dt.timedelta = DEFAULT_WINDOW,
        max_size: int = DEFAULT_MAX_SIZE,
        *,
        codec: WakeUpCodec = DEFAULT_CODEC,
        max_nonces: int = DEFAULT_MAX_NONCES,
        supported_versions: frozenset[int] = frozenset({WAKEUP_VERSION}),
        understood_extensions: frozenset[str] = frozenset(),
    ):
        self.gateway_id = gateway_id
        self.window = window
        self.max_size = max_size
        self.codec = codec
        self.supported_versions = supported_versions
        self.understood_extensions = understood_extensions
        self._nonces = NonceStore(max_nonces)
        self._keys: dict[bytes, ec.EllipticCurvePublicKey] = {}
        self.set_gwa_certificates(gwa_signature_certs)

    def set_gwa_certificates(self, certs: Iterable[x509.Certificate]) -> None:
        """Replace the GWA signature certificates (e.g. on a GWA change)."""
        keys = {}
        for cert in certs:
            public_key = cert.public_key()
            if not isinstance(public_key, ec.EllipticCurvePublicKey):
                raise ValueError(f"GWA signature certificate {cert.subject.rfc4514_string()} has no EC key")
            keys[key_id_of(cert)] = public_key
        self._keys = keys

    @property
    def sender_key_ids(self) -> frozenset[bytes]:
        return frozenset(self._keys)

    def check(self, data: bytes, now: _dt.datetime) -> WakeUpDecision:
        pending = self.precheck(data)
        return pending if isinstance(pending, WakeUpDecision) else self.finish(pending, now)

    def precheck(self, data: bytes) -> WakeUpDecision | PendingSignatureCheck:
        """Size, DER form, version, recipient, sender key id, signature algorithm."""
        if not data:
            return WakeUpDecision.reject(RejectReason.EMPTY)
        if len(data) > self.max_size:
            return WakeUpDecision.reject(RejectReason.TOO_LARGE, f"{len(data)} > {self.max_size} bytes")
        try:
            packet = self.codec.decode(data)
        except MalformedPacket as exc:
            return WakeUpDecision.reject(RejectReason.MALFORMED, str(exc))
        content = packet.data
        if content.version not in self.supported_versions:
            return WakeUpDecision.reject(RejectReason.BAD_VERSION, f"version {content.version}", content)
        if content.recipient_id != self.gateway_id:
            return WakeUpDecision.reject(RejectReason.WRONG_RECIPIENT, f"for {content.recipient_id!r}", content)
        public_key = self._keys.get(content.sender_key_id)
        if public_key is None:
            return WakeUpDecision.reject(
                RejectReason.UNKNOWN_SENDER, f"key id {content.sender_key_id.hex()}", content
            )
        hash_algorithm = SIGNATURE_HASHES.get(packet.signature_algorithm)
        if hash_algorithm is None or packet.signature_parameters is not None:
            # RFC 5758: ECDSA AlgorithmIdentifiers carry no parameters.
            return WakeUpDecision.reject(
                RejectReason.UNSUPPORTED_ALGORITHM, f"algorithm {packet.signature_algorithm}", content
            )
        return PendingSignatureCheck(packet, public_key, hash_algorithm)

    def finish(self, pending: PendingSignatureCheck, now: _dt.datetime) -> WakeUpDecision:
        """Signature, time window, nonce; remembers the nonce when the packet is accepted."""
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        packet, content = pending.packet, pending.packet.data
        try:
            pending.public_key.verify(packet.signature, packet.signed_bytes, ec.ECDSA(pending.hash_algorithm()))
        except (InvalidSignature, ValueError):
            return WakeUpDecision.reject(RejectReason.BAD_SIGNATURE, content=content)
        age = now - content.created_at
        if age > self.window:
            return WakeUpDecision.reject(RejectReason.STALE, f"created {age.total_seconds():.0f} s ago", content)
        if -age > self.window:
            return WakeUpDecision.reject(
                RejectReason.FUTURE, f"created {-age.total_seconds():.0f} s ahead", content
            )
        if self._nonces.seen(content.nonce, now):
            return WakeUpDecision.reject(RejectReason.REPLAYED_NONCE, f"nonce {content.nonce.hex()}", content)
        unknown_critical = [e.oid for e in content.extensions if e.critical and e.oid not in self.understood_extensions]
        if unknown_critical:
            return WakeUpDecision.reject(
                RejectReason.UNSUPPORTED_EXTENSION, f"critical {', '.join(unknown_critical)}", content
            )
        # Keep the nonce at least one window after it was seen and until its packet is stale, so
        # neither a skewed createdAt nor a clock step back reopens a replay.
        if not self._nonces.add(content.nonce, max(content.created_at, now) + self.window, now):
            return WakeUpDecision.reject(RejectReason.NONCE_STORE_FULL, content=content)
        return WakeUpDecision(None, content)

    def seen_nonces(self, now: _dt.datetime | None = None) -> dict[bytes, _dt.datetime]:
        """Nonce -> time until which it is remembered, for persisting across restarts."""
        if now is not None:
            self._nonces.forget_expired(now)
        return self._nonces.snapshot()

    def restore_nonces(self, entries: Mapping[bytes, _dt.datetime], now: _dt.datetime) -> None:
        """Reload what `seen_nonces` returned before a restart; expired entries are dropped."""
        for nonce, expires_at in entries.items():
            if expires_at >= now:
                self._nonces.add(bytes(nonce), expires_at, now)


def describe(data: bytes, codec: WakeUpCodec = DEFAULT_CODEC) -> dict:
    """A log-friendly summary of a datagram; never raises, verifies nothing."""
    summary: dict = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    try:
        packet = codec.decode(data)
    except MalformedPacket as exc:
        return summary | {"well_formed": False, "error": str(exc)}
    content = packet.data
    return summary | {
        "well_formed": True,
        "version": content.version,
        "recipient_id": content.recipient_id,
        "sender_key_id": content.sender_key_id.hex(),
        "created_at": content.created_at.isoformat(),
        "nonce": content.nonce.hex(),
        "extensions": [{"oid": e.oid, "critical": e.critical, "value": e.value.hex()} for e in content.extensions],
        "signature_algorithm": {ECDSA_WITH_SHA256: "ecdsa-with-SHA256", ECDSA_WITH_SHA384: "ecdsa-with-SHA384"}.get(
            packet.signature_algorithm, packet.signature_algorithm
        ),
        "signature": packet.signature.hex(),
    }
