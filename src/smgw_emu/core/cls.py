"""The CLS proxy, sans-IO (Lastenheft 6.8, docs/domain.md §5 "CLS-Proxyprofil").

An active EMT (aEMT) reaches a controllable local system (CLS device on the HAN) through the
gateway. The gateway terminates TLS on both sides (WAN: the EMT's certificate of its
communication profile, pinned; HAN: the CLS device's certificate) and relays the application
bytes in both directions, within the limits of the CLS proxy profile (class 28500).

This module holds the rules: what each Kommunikationsszenario (HKS) means, who may connect, the
SOCKS5 request a CLS device sends in HKS 3, the bandwidth budget and the session limit, and the
state of one connection. It never touches a socket or reads a clock: the caller passes the
monotonic time. `smgw_emu.net.cls_proxy` moves the bytes, `smgw_emu.app.cls` wires both.

[ours] The normative text of the HKS is not public. Our reading (docs/decisions.md "CLS proxy"),
in one table, :data:`SCENARIOS`:

* HKS 3: the CLS device initiates. It opens TLS to the gateway's HAN interface and names the EMT
  in a SOCKS5 CONNECT request (RFC 1928) inside that TLS session; the gateway checks the request
  against the device's proxy profiles and opens TLS to the EMT (address and pinned certificate
  from the EMT's communication profile, never from the request).
* HKS 4: the EMT initiates. It asks the GWA (not on the gateway's wire); the GWA wakes the
  gateway and calls method 2 ``connect`` of the proxy profile on the MANAGEMENT channel; the
  gateway opens TLS to the EMT, then TLS to the CLS device (address in the profile).
* HKS 5: the gateway initiates. A standing channel: the gateway's own periodic check (on its
  clock, every ``cls.hks5_interval_s``) opens the channel of every HKS 5 profile that has none;
  it opens TLS to the EMT, then to the CLS device. After the GWA disconnected it (fig. 77) the
  channel stays down until the profile changes or the gateway restarts.

In every HKS the EMT is the TLS server (every WAN connection is opened by the gateway, docs/domain.md
§1); a profile allows exactly one HKS, and at most one connection per profile is open at a time.
"""

from __future__ import annotations

import ipaddress
import math
import re
import struct
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from cryptography import x509
from cryptography.x509.oid import NameOID

from smgw_emu.core.ratelimit import TokenBucket

__all__ = [
    "BANDWIDTH_POLICIES",
    "ClsConnection",
    "ClsLimits",
    "ClsProfile",
    "ClsRefused",
    "DirectionBudget",
    "Scenario",
    "SCENARIOS",
    "SocksError",
    "SocksRequest",
    "authorise_hks3",
    "check_cls_certificate",
    "cls_device_id_of",
    "gateway_dials_cls",
    "han_address_problem",
    "parse_han_address",
    "parse_socks_greeting",
    "parse_socks_request",
    "socks_method_reply",
    "socks_reply",
]


# ---------------------------------------------------------------------------------------------
# [ours] The scenarios: one table
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    hks: int
    initiator: str          # who starts it: "cls", "emt" (through the GWA), "gateway"
    trigger: str            # what the gateway sees: "han-connect", "gwa-connect", "standing-check"
    gateway_dials_cls: bool  # True: the gateway is the TLS client on the HAN (the CLS device serves)
    description: str


SCENARIOS: dict[int, Scenario] = {
    3: Scenario(3, "cls", "han-connect", False,
                "the CLS device opens TLS to the gateway's HAN interface and names the EMT in a SOCKS5 "
                "CONNECT; the gateway opens TLS to the EMT of the profile"),
    4: Scenario(4, "emt", "gwa-connect", True,
                "the EMT asks the GWA, the GWA calls connect (method 2) of the proxy profile; the "
                "gateway opens TLS to the EMT, then to the CLS device"),
    5: Scenario(5, "gateway", "standing-check", True,
                "standing channel: the gateway's periodic check opens TLS to the EMT, then to the CLS "
                "device, whenever the profile's channel is down"),
}

#: What the relay does when a sender exceeds the profile's max_bandwidth_kbps (config cls.bandwidth_policy):
#: "shape" holds the bytes back until the budget allows them (the sender is slowed by TCP flow
#: control); "close" ends the connection (reason bandwidth-limit).
BANDWIDTH_POLICIES = ("shape", "close")
#: [ours] kbit/s are 1000 bit/s; the budget holds at most BURST_S seconds of the rate, and a held
#: back relay waits until REFILL_FRACTION of that burst is available again.
BURST_S = 1.0
REFILL_FRACTION = 0.25
#: [ours] A relay reads at most this many bytes at a time.
CHUNK_BYTES = 64 * 1024


def gateway_dials_cls(hks: int) -> bool:
    return SCENARIOS[hks].gateway_dials_cls


# ---------------------------------------------------------------------------------------------
# Profiles
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClsProfile:
    """A CLS proxy profile (class 28500) as the proxy needs it."""

    profile_id: str
    cls_device_id: str
    emt_id: str
    hks: int
    max_bandwidth_kbps: int
    max_session_s: int
    cls_address: str = ""   # "host:port" of the CLS device on the HAN (HKS 4/5)

    @property
    def cls_endpoint(self) -> tuple[str, int]:
        return parse_han_address(self.cls_address)

    @property
    def limits(self) -> "ClsLimits":
        return ClsLimits(self.max_bandwidth_kbps, self.max_session_s)

    @property
    def scenario(self) -> Scenario:
        return SCENARIOS[self.hks]


_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")


def parse_han_address(address: str) -> tuple[str, int]:
    """[ours] "host:port" or "[IPv6]:port" (the form of the meter profile's lmn_address); ValueError if not."""
    host, sep, port = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        ipaddress.IPv6Address(host)
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{address[:60]!r} is not host:port (port 1..65535)")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOST.fullmatch(host):
            raise ValueError(f"{host[:60]!r} is neither an IP address nor a host name") from None
    return host, int(port)


def han_address_problem(hks: int, address: str) -> str | None:
    """Why the profile's cls_address does not do for ``hks`` (None: it does)."""
    if address:
        try:
            parse_han_address(address)
        except ValueError as exc:
            return f"cls_address must be host:port: {exc}"
    elif hks in SCENARIOS and gateway_dials_cls(hks):
        return f"HKS {hks}: the gateway connects to the CLS device, so cls_address (host:port) is required"
    return None


# ---------------------------------------------------------------------------------------------
# Who is it: the CLS device's certificate
# ---------------------------------------------------------------------------------------------


class ClsRefused(Exception):
    """A CLS connection is refused; ``reason`` is a stable code (log detail), ``socks_reply`` the
    SOCKS5 reply code the CLS device gets in HKS 3 (None: its greeting is answered "no acceptable
    method", 0xFF)."""

    def __init__(self, reason: str, message: str, socks_reply: int | None = 0x02) -> None:
        super().__init__(message)
        self.reason = reason
        self.socks_reply = socks_reply


def cls_device_id_of(peer_der: bytes | None) -> str:
    """[ours] A CLS device is named by the subject CN of its HAN TLS certificate (which TLS already
    chained to the gateway's SM-PKI root); the certificate must carry keyUsage digitalSignature."""
    if not peer_der:
        raise ClsRefused("bad-certificate", "the CLS device presented no certificate")
    try:
        cert = x509.load_der_x509_certificate(peer_der)
    except ValueError:
        raise ClsRefused("bad-certificate", "the CLS device's certificate is not DER X.509") from None
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise ClsRefused("bad-certificate", "the CLS device's TLS certificate has no key usage extension") from None
    if not usage.digital_signature:
        raise ClsRefused("bad-certificate", "the CLS device's TLS certificate lacks key usage digitalSignature")
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        raise ClsRefused("bad-certificate", "the CLS device's TLS certificate has no common name")
    return str(names[0].value)


def check_cls_certificate(peer_der: bytes | None, expected_device_id: str) -> str | None:
    """None if the peer is the CLS device of the profile (HKS 4/5, the gateway dialled it), else why not."""
    try:
        device = cls_device_id_of(peer_der)
    except ClsRefused as exc:
        return str(exc)
    if device != expected_device_id:
        return f"the CLS device's certificate names {device[:64]!r}, the profile names {expected_device_id!r}"
    return None


# ---------------------------------------------------------------------------------------------
# HKS 3: the CLS device's SOCKS5 request (RFC 1928), gateway side
# ---------------------------------------------------------------------------------------------

SOCKS_VERSION = 5
METHOD_NO_AUTH, METHOD_NONE_ACCEPTABLE = 0x00, 0xFF
CMD_CONNECT = 0x01
ATYP_IPV4, ATYP_DOMAIN, ATYP_IPV6 = 0x01, 0x03, 0x04
REPLY_SUCCEEDED = 0x00
REPLY_GENERAL_FAILURE = 0x01
REPLY_NOT_ALLOWED = 0x02
REPLY_HOST_UNREACHABLE = 0x04
REPLY_CONNECTION_REFUSED = 0x05
REPLY_COMMAND_NOT_SUPPORTED = 0x07
REPLY_ADDRESS_TYPE_NOT_SUPPORTED = 0x08
#: [ours] A greeting and a request together never need more than this (a 255-byte domain name).
SOCKS_MAX_BYTES = 2 + 255 + 4 + 1 + 255 + 2


class SocksError(ClsRefused):
    """A malformed or unsupported SOCKS5 message (reason ``socks-error``)."""

    def __init__(self, message: str, socks_reply: int | None) -> None:
        super().__init__("socks-error", message, socks_reply)


@dataclass(frozen=True)
class SocksRequest:
    host: str
    port: int
    address_type: int


def parse_socks_greeting(data: bytes) -> tuple[int, bytes] | None:
    """(bytes consumed, offered methods), or None while incomplete."""
    if not data:
        return None
    if data[0] != SOCKS_VERSION:
        raise SocksError(f"not a SOCKS5 greeting (version byte {data[0]})", None)
    if len(data) < 2:
        return None
    count = data[1]
    if count == 0:
        raise SocksError("SOCKS5 greeting offers no method", None)
    if len(data) < 2 + count:
        return None
    methods = bytes(data[2:2 + count])
    if METHOD_NO_AUTH not in methods:
        # [ours] TLS with the device certificate authenticates the CLS device; SOCKS adds none.
        raise SocksError("SOCKS5 greeting does not offer 'no authentication' (the TLS certificate authenticates)", None)
    return 2 + count, methods


def socks_method_reply(ok: bool = True) -> bytes:
    return bytes([SOCKS_VERSION, METHOD_NO_AUTH if ok else METHOD_NONE_ACCEPTABLE])


def parse_socks_request(data: bytes) -> tuple[int, SocksRequest] | None:
    """(bytes consumed, request), or None while incomplete. Only CONNECT is supported."""
    if len(data) < 5:
        return None
    version, command, reserved, address_type = data[0], data[1], data[2], data[3]
    if version != SOCKS_VERSION or reserved != 0:
        raise SocksError(f"malformed SOCKS5 request (version {version}, reserved {reserved})", REPLY_GENERAL_FAILURE)
    if command != CMD_CONNECT:
        raise SocksError(f"SOCKS5 command {command} is not supported (only CONNECT)", REPLY_COMMAND_NOT_SUPPORTED)
    if address_type == ATYP_IPV4:
        end = 4 + 4
        if len(data) < end + 2:
            return None
        host = str(ipaddress.IPv4Address(bytes(data[4:end])))
    elif address_type == ATYP_IPV6:
        end = 4 + 16
        if len(data) < end + 2:
            return None
        host = str(ipaddress.IPv6Address(bytes(data[4:end])))
    elif address_type == ATYP_DOMAIN:
        length = data[4]
        end = 5 + length
        if len(data) < end + 2:
            return None
        raw = bytes(data[5:end])
        if not length or not re.fullmatch(rb"[A-Za-z0-9_.:-]{1,255}", raw):
            raise SocksError("SOCKS5 domain name is empty or not printable ASCII", REPLY_GENERAL_FAILURE)
        host = raw.decode("ascii")
    else:
        raise SocksError(f"SOCKS5 address type {address_type} is unknown", REPLY_ADDRESS_TYPE_NOT_SUPPORTED)
    (port,) = struct.unpack("!H", bytes(data[end:end + 2]))
    return end + 2, SocksRequest(host, port, address_type)


def socks_reply(code: int) -> bytes:
    """[ours] The bound address of a reply is 0.0.0.0:0: the gateway does not disclose its WAN side."""
    return bytes([SOCKS_VERSION, code, 0, ATYP_IPV4, 0, 0, 0, 0, 0, 0])


# ---------------------------------------------------------------------------------------------
# HKS 3: may this device reach that EMT?
# ---------------------------------------------------------------------------------------------


def _names_emt(request: SocksRequest, emt_id: str, emt_address: tuple[str, int] | None) -> bool:
    """[ours] The CLS device names the EMT by its partner id (a SOCKS5 domain name, any port), or
    by the host and port of the EMT's communication profile."""
    if request.host == emt_id:
        return True
    return emt_address is not None and (request.host, request.port) == (emt_address[0], emt_address[1])


def authorise_hks3(profiles: Iterable[ClsProfile], device_id: str, request: SocksRequest,
                   emt_addresses: Mapping[str, tuple[str, int]]) -> ClsProfile:
    """The profile that lets ``device_id`` reach the EMT named in ``request`` in HKS 3, or ClsRefused:
    ``unknown-device`` (no profile names the device), ``emt-not-allowed`` (none of its profiles
    names that EMT), ``wrong-hks`` (a profile does, but not with HKS 3)."""
    own = [p for p in profiles if p.cls_device_id == device_id]
    if not own:
        raise ClsRefused("unknown-device", f"no CLS proxy profile names the CLS device {device_id}")
    target = [p for p in own if _names_emt(request, p.emt_id, emt_addresses.get(p.emt_id))]
    if not target:
        allowed = ", ".join(sorted({p.emt_id for p in own}))
        raise ClsRefused("emt-not-allowed", f"CLS device {device_id} may not reach {request.host[:64]}:{request.port} "
                                            f"(its profiles name {allowed})")
    hks3 = sorted((p for p in target if p.hks == 3), key=lambda p: p.profile_id)
    if not hks3:
        names = ", ".join(f"{p.profile_id} (HKS {p.hks})" for p in target)
        raise ClsRefused("wrong-hks", f"CLS device {device_id} may reach {target[0].emt_id} only in another HKS: {names}")
    return hks3[0]


# ---------------------------------------------------------------------------------------------
# Limits
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClsLimits:
    max_bandwidth_kbps: int
    max_session_s: int

    @property
    def bytes_per_s(self) -> float:
        return self.max_bandwidth_kbps * 1000 / 8

    @property
    def burst_bytes(self) -> int:
        return max(1, int(self.bytes_per_s * BURST_S))


class DirectionBudget:
    """The bandwidth budget of one direction: a token bucket of bytes, full at the start."""

    def __init__(self, limits: ClsLimits, now: float) -> None:
        self.limits = limits
        self._bucket = TokenBucket(limits.bytes_per_s, limits.burst_bytes, now)

    def allowance(self, now: float) -> int:
        """Bytes that may pass now (at most CHUNK_BYTES)."""
        return min(CHUNK_BYTES, int(math.floor(self._bucket.tokens(now))))

    def spend(self, size: int, now: float) -> bool:
        """Take ``size`` bytes from the budget; False (nothing taken) when they exceed it."""
        return self._bucket.try_take(now, size)

    def wait_s(self, now: float) -> float:
        """Seconds until a held-back relay may read again."""
        wanted = max(1.0, self.limits.burst_bytes * REFILL_FRACTION)
        missing = wanted - self._bucket.tokens(now)
        return max(0.0, missing / self.limits.bytes_per_s)


# ---------------------------------------------------------------------------------------------
# One connection
# ---------------------------------------------------------------------------------------------

TO_EMT, TO_CLS = "to-emt", "to-cls"


@dataclass
class ClsConnection:
    """The state of one CLS connection: connecting -> open -> closed, and what crossed it."""

    connection_id: str
    profile: ClsProfile
    initiator: str
    created_at: float
    state: str = "connecting"
    opened_at: float | None = None
    closed_at: float | None = None
    reason: str | None = None
    bytes: dict[str, int] = field(default_factory=lambda: {TO_EMT: 0, TO_CLS: 0})
    limited: set[str] = field(default_factory=set)
    budgets: dict[str, DirectionBudget] = field(default_factory=dict)

    def open(self, now: float) -> float:
        """Both legs are up: the session limit starts now. Returns its deadline."""
        if self.state != "connecting":
            raise ValueError(f"connection {self.connection_id} is {self.state}")
        self.state = "open"
        self.opened_at = now
        limits = self.profile.limits
        self.budgets = {TO_EMT: DirectionBudget(limits, now), TO_CLS: DirectionBudget(limits, now)}
        return self.deadline

    @property
    def deadline(self) -> float:
        start = self.opened_at if self.opened_at is not None else self.created_at
        return start + self.profile.max_session_s

    def due(self, now: float) -> str | None:
        """"session-limit" once the session has run max_session_s."""
        return "session-limit" if self.state == "open" and now >= self.deadline else None

    def count(self, direction: str, size: int) -> None:
        self.bytes[direction] += size

    def note_limited(self, direction: str) -> bool:
        """True the first time ``direction`` is held back (logged once per connection and direction)."""
        if direction in self.limited:
            return False
        self.limited.add(direction)
        return True

    def close(self, reason: str, now: float) -> bool:
        """True for the first close (its reason is the connection's); later closes change nothing."""
        if self.state == "closed":
            return False
        self.state = "closed"
        self.reason = reason
        self.closed_at = now
        return True

    @property
    def is_open(self) -> bool:
        return self.state == "open"

    def details(self) -> dict[str, str]:
        """Log and event details of this connection."""
        p = self.profile
        result = {"connection": self.connection_id, "profile": p.profile_id, "cls-device": p.cls_device_id,
                  "emt": p.emt_id, "hks": str(p.hks), "initiator": self.initiator}
        if self.state == "closed":
            duration = (self.closed_at or 0.0) - (self.opened_at if self.opened_at is not None else self.created_at)
            result.update({"reason": self.reason or "", "bytes-to-emt": str(self.bytes[TO_EMT]),
                           "bytes-to-cls": str(self.bytes[TO_CLS]), "duration-s": f"{max(0.0, duration):.3f}"})
        else:
            result.update({"max-bandwidth-kbps": str(p.max_bandwidth_kbps), "max-session-s": str(p.max_session_s)})
        return result
