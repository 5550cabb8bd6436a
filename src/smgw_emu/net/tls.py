"""TLS contexts for the TR-03116-3 profiles: the one place where TLS is configured.

The WAN profile (docs/domain.md §2): TLS 1.2 (1.3 optional), ECDHE-ECDSA suites only, groups
brainpoolP256r1/P384r1/P512r1 and P-256/P-384, ECDSA signatures with SHA-256/384/512, mutual
authentication, no compression, no renegotiation.

Python's `ssl` (3.11, OpenSSL 3.0) cannot set several key-exchange groups: `set_ecdh_curve` takes
one, and OpenSSL 3.0's default list has no brainpool group. We call OpenSSL's own
`SSL_CTX_set1_groups_list` and `SSL_CTX_set1_sigalgs_list` on the context that `ssl` made, through
ctypes, on the very libssl that Python's `_ssl` module is linked against. The SSL_CTX pointer is
the first field after the object header of CPython's PySSLContext; before using it we prove that
it is one by reading the context's options through OpenSSL and comparing them with
`SSLContext.options`. If that check fails (another Python build), we refuse to start with a clear
message instead of guessing. An OPENSSL_CONF file would be process-wide and must be in place before
the first context exists, which no library import order guarantees; this is per context.
"""

from __future__ import annotations

import ctypes
import hashlib
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import _ssl  # the extension module, for its libssl handle

# SSL_CTX_ctrl command numbers from OpenSSL's ssl.h (stable ABI across 1.1.1 and 3.x).
_SSL_CTRL_SET_GROUPS_LIST = 92
_SSL_CTRL_SET_SIGALGS_LIST = 98


class TlsConfigError(Exception):
    """A TLS profile cannot be applied (unknown group, cipher, or an unsupported Python build)."""


@dataclass(frozen=True)
class TlsProfile:
    """A named TR-03116-3 profile. Values are OpenSSL names."""

    name: str
    ciphers: tuple[str, ...]
    groups: tuple[str, ...]
    sigalgs: tuple[str, ...]
    allow_tls13: bool = False
    max_session_lifetime_s: int = 48 * 3600
    tls13_ciphersuites: tuple[str, ...] = ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384")


WAN_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256",    # TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 (mandatory from 2025)
    "ECDHE-ECDSA-AES128-SHA256",        # TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256 (mandatory)
    "ECDHE-ECDSA-AES256-GCM-SHA384",    # optional
)
WAN_GROUPS = ("brainpoolP256r1", "brainpoolP384r1", "brainpoolP512r1", "prime256v1", "secp384r1")
WAN_SIGALGS = ("ECDSA+SHA256", "ECDSA+SHA384", "ECDSA+SHA512")

WAN_PROFILE = TlsProfile("wan", WAN_CIPHERS, WAN_GROUPS, WAN_SIGALGS)
HAN_PROFILE = TlsProfile("han", WAN_CIPHERS, WAN_GROUPS, WAN_SIGALGS)
LMN_PROFILE = TlsProfile("lmn", WAN_CIPHERS, WAN_GROUPS, WAN_SIGALGS, max_session_lifetime_s=744 * 3600)
PROFILES = {p.name: p for p in (WAN_PROFILE, HAN_PROFILE, LMN_PROFILE)}


class _OpenSSL:
    """The libssl functions `ssl` does not expose, bound once."""

    def __init__(self) -> None:
        lib = ctypes.CDLL(_ssl.__file__)  # dlsym on it also finds the libssl it links
        self.ctrl = lib.SSL_CTX_ctrl
        self.ctrl.restype = ctypes.c_long
        self.ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
        self.get_options = lib.SSL_CTX_get_options
        self.get_options.restype = ctypes.c_uint64
        self.get_options.argtypes = [ctypes.c_void_p]

    def ctx_pointer(self, context: ssl.SSLContext) -> int:
        pointer = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
        if not pointer or self.get_options(pointer) != int(context.options):
            raise TlsConfigError(
                "cannot reach OpenSSL's SSL_CTX behind ssl.SSLContext on this Python build; "
                "the brainpool group list cannot be set (see smgw_emu/net/tls.py)"
            )
        return pointer

    def set_list(self, context: ssl.SSLContext, command: int, values: tuple[str, ...], what: str) -> None:
        text = ":".join(values).encode()
        if self.ctrl(self.ctx_pointer(context), command, 0, ctypes.c_char_p(text)) != 1:
            raise TlsConfigError(f"OpenSSL refused the {what} list {':'.join(values)!r}")


_openssl: _OpenSSL | None = None


def _lib() -> _OpenSSL:
    global _openssl
    if _openssl is None:
        _openssl = _OpenSSL()
    return _openssl


def set_groups(context: ssl.SSLContext, groups: tuple[str, ...]) -> None:
    """Offer exactly these key-exchange groups, in this order of preference."""
    _lib().set_list(context, _SSL_CTRL_SET_GROUPS_LIST, groups, "groups")


def set_sigalgs(context: ssl.SSLContext, sigalgs: tuple[str, ...]) -> None:
    _lib().set_list(context, _SSL_CTRL_SET_SIGALGS_LIST, sigalgs, "signature algorithms")


def _apply_profile(context: ssl.SSLContext, profile: TlsProfile) -> None:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.TLSv1_3 if profile.allow_tls13 else ssl.TLSVersion.TLSv1_2
    try:
        context.set_ciphers(":".join(profile.ciphers))
    except ssl.SSLError as exc:
        raise TlsConfigError(f"OpenSSL refused the cipher list: {exc}") from None
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_TICKET
    set_groups(context, profile.groups)
    set_sigalgs(context, profile.sigalgs)


def _load_identity(context: ssl.SSLContext, chain: Path, key: Path, cafile: Path) -> None:
    try:
        context.load_cert_chain(str(chain), str(key))
        context.load_verify_locations(cafile=str(cafile))
    except (OSError, ssl.SSLError) as exc:
        raise TlsConfigError(f"cannot load TLS identity ({chain}, {key}) or trust anchors {cafile}: {exc}") from None
    context.verify_mode = ssl.CERT_REQUIRED  # mutual authentication, always


def client_context(profile: TlsProfile, *, chain: Path, key: Path, cafile: Path) -> ssl.SSLContext:
    """The context of a TLS client (the gateway on the WAN: it opens every connection)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # The peer is identified by its certificate (compared with the one in the communication
    # profile), not by a host name: profiles may hold addresses, and SM-PKI certificates name
    # participants, not hosts.
    context.check_hostname = False
    _apply_profile(context, profile)
    _load_identity(context, chain, key, cafile)
    return context


def client_context_with_roots(profile: TlsProfile, *, chain: Path, key: Path, roots_pem: str) -> ssl.SSLContext:
    """As `client_context`, trusting exactly the root certificates given (PEM text) instead of a
    file: the gateway's trust anchors live in its state store and change at run time (Lastenheft
    6.7.3/6.7.4), and a context cannot forget a root, so a change builds a new context."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    _apply_profile(context, profile)
    try:
        context.load_cert_chain(str(chain), str(key))
        context.load_verify_locations(cadata=roots_pem)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise TlsConfigError(f"cannot load TLS identity ({chain}, {key}) or the trust anchors: {exc}") from None
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def server_context(profile: TlsProfile, *, chain: Path, key: Path, cafile: Path,
                   client_certificate: str = "required") -> ssl.SSLContext:
    """The context of a TLS server (the reference GWA, the HAN interface).

    `client_certificate="optional"` is for the consumer at the HAN interface (docs/domain.md §7), who
    signs in with a user name and password or his own certificate: a client may present none,
    but a certificate it presents must chain to `cafile` or the handshake fails."""
    if client_certificate not in ("required", "optional"):
        raise TlsConfigError(f"client_certificate must be 'required' or 'optional', not {client_certificate!r}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _apply_profile(context, profile)
    _load_identity(context, chain, key, cafile)
    if client_certificate == "optional":
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def client_context_without_identity(profile: TlsProfile, *, cafile: Path) -> ssl.SSLContext:
    """A TLS client that presents no certificate and checks the server's chain against `cafile`
    (the consumer who signs in with a password at the HAN interface, e.g. TRuDI)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    _apply_profile(context, profile)
    try:
        context.load_verify_locations(cafile=str(cafile))
    except (OSError, ssl.SSLError) as exc:
        raise TlsConfigError(f"cannot load trust anchors {cafile}: {exc}") from None
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def certificate_fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


@dataclass
class PeerCheck:
    """What the gateway demands of a WAN peer beyond a valid chain to its SM-PKI root."""

    expected_fingerprints: set[str] = field(default_factory=set)
    _verdicts: dict[bytes, str | None] = field(default_factory=dict, repr=False)

    def pin(self, fingerprints: set[str]) -> None:
        """Expect other certificates from now on (a GWA change): every channel holding this check
        follows, including a re-check of an open channel's peer (POST /smgw/auth)."""
        self.expected_fingerprints = set(fingerprints)
        self._verdicts.clear()

    def problem(self, peer_der: bytes | None) -> str | None:
        """None if the peer is acceptable, else the reason (for the log). Verdicts are cached per
        certificate: the GWA presents the same one on every channel."""
        if peer_der and peer_der in self._verdicts:
            return self._verdicts[peer_der]
        verdict = self._judge(peer_der)
        if peer_der and len(self._verdicts) < 64:
            self._verdicts[peer_der] = verdict
        return verdict

    def _judge(self, peer_der: bytes | None) -> str | None:
        from cryptography import x509

        if not peer_der:
            return "peer presented no certificate"
        cert = x509.load_der_x509_certificate(peer_der)
        try:
            usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        except x509.ExtensionNotFound:
            return "peer TLS certificate has no key usage extension"
        if not usage.digital_signature:
            return "peer TLS certificate lacks key usage digitalSignature"
        if self.expected_fingerprints and certificate_fingerprint(peer_der) not in self.expected_fingerprints:
            subject = cert.subject.rfc4514_string()
            return f"peer certificate {subject} is not the one in the communication profile"
        return None
