"""Consumer authentication at the HAN interface, sans-IO (docs/domain.md §7: user name and
password, or a certificate of his own).

* Passwords are stored as salted scrypt hashes (``hashlib.scrypt``) in one self-describing
  string: ``scrypt$<n>$<r>$<p>$<salt hex>$<hash hex>``. :func:`hash_password` makes one (also
  ``smgw-emu han hash-password``), :func:`verify_password` checks a password in constant time.
  The cost parameters travel with the hash, so a lab can raise them without a code change.
* :func:`parse_basic` reads an HTTP ``Authorization: Basic`` header (RFC 7617, UTF-8).
* :class:`FailureLimiter`: token buckets (``core/ratelimit.TokenBucket``) charged by password
  *failures* only, one per key (source address, user name). While a bucket is empty every
  password attempt of that key is refused before the hash is computed, the right password
  included, so guessing costs time and CPU stays bounded.

[ours] (docs/decisions.md "HAN consumer view"): the hash format and its bounds
(:data:`SCRYPT_LIMITS`), the default cost (:data:`DEFAULT_SCRYPT`), the limiter's behaviour.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Hashable

from smgw_emu.core.ratelimit import TokenBucket

__all__ = [
    "DEFAULT_SCRYPT", "SCRYPT_LIMITS", "PasswordHash", "HashFormatError", "BadAuthorization", "hash_password",
    "parse_hash", "verify_password", "parse_basic", "FailureLimiter", "DUMMY_HASH",
]

#: [ours] default cost: n=2**14, r=8, p=1 (16 MiB, about 80 ms here), 16-byte salt, 32-byte hash.
DEFAULT_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
#: [ours] bounds a stored hash must keep (a hash outside them is a configuration error).
SCRYPT_LIMITS = {"n": (2**10, 2**20), "r": (1, 32), "p": (1, 16), "salt": (16, 64), "hash": (16, 64)}
_HASH_RE = re.compile(r"scrypt\$(\d{1,8})\$(\d{1,3})\$(\d{1,3})\$([0-9a-f]+)\$([0-9a-f]+)\Z")
#: Longest password looked at (a longer one is refused without hashing).
MAX_PASSWORD_BYTES = 1024


class HashFormatError(ValueError):
    """A stored password hash is not in the form ``scrypt$n$r$p$salt$hash`` or out of bounds."""


class BadAuthorization(ValueError):
    """An Authorization header that is not valid HTTP Basic."""


@dataclass(frozen=True)
class PasswordHash:
    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    def __str__(self) -> str:
        return f"scrypt${self.n}${self.r}${self.p}${self.salt.hex()}${self.digest.hex()}"


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=length, maxmem=256 * r * n * p + 2**20)


def hash_password(password: str, *, n: int = DEFAULT_SCRYPT["n"], r: int = DEFAULT_SCRYPT["r"],
                  p: int = DEFAULT_SCRYPT["p"], salt: bytes | None = None) -> str:
    """A new stored form of `password` (fresh random salt unless one is given)."""
    salt = os.urandom(16) if salt is None else salt
    parse_hash(str(PasswordHash(n, r, p, salt, bytes(32))))  # the bounds of a configured hash, before the work
    return str(PasswordHash(n, r, p, salt, _scrypt(password.encode("utf-8"), salt, n, r, p, 32)))


def parse_hash(text: str) -> PasswordHash:
    match = _HASH_RE.match(text or "")
    if not match:
        raise HashFormatError("expected scrypt$<n>$<r>$<p>$<salt hex>$<hash hex> (lower-case hex; "
                              "make one with: smgw-emu han hash-password)")
    n, r, p = (int(match.group(i)) for i in (1, 2, 3))
    if len(match.group(4)) % 2 or len(match.group(5)) % 2:
        raise HashFormatError("the salt and the hash need an even number of hex digits")
    salt, digest = bytes.fromhex(match.group(4)), bytes.fromhex(match.group(5))
    limits = SCRYPT_LIMITS
    if n & (n - 1) or not limits["n"][0] <= n <= limits["n"][1]:
        raise HashFormatError(f"n={n} must be a power of two in {limits['n'][0]}..{limits['n'][1]}")
    for name, value in (("r", r), ("p", p)):
        low, high = limits[name]
        if not low <= value <= high:
            raise HashFormatError(f"{name}={value} must lie in {low}..{high}")
    for name, value in (("salt", salt), ("hash", digest)):
        low, high = limits[name]
        if not low <= len(value) <= high:
            raise HashFormatError(f"the {name} must be {low}..{high} bytes")
    return PasswordHash(n, r, p, salt, digest)


def verify_password(stored: PasswordHash, password: str) -> bool:
    """True if `password` gives `stored`; the comparison takes the same time either way."""
    data = password.encode("utf-8", "surrogatepass")
    if len(data) > MAX_PASSWORD_BYTES:
        return False
    return hmac.compare_digest(_scrypt(data, stored.salt, stored.n, stored.r, stored.p, len(stored.digest)),
                               stored.digest)


#: Checked for an unknown user name, so that an unknown user costs as much time as a known one.
DUMMY_HASH = PasswordHash(DEFAULT_SCRYPT["n"], DEFAULT_SCRYPT["r"], DEFAULT_SCRYPT["p"], b"\0" * 16, b"\0" * 32)


def parse_basic(header: str) -> tuple[str, str]:
    """(user, password) of an ``Authorization: Basic <base64(user:password)>`` header."""
    scheme, _, token = (header or "").strip().partition(" ")
    if scheme.lower() != "basic" or not token.strip():
        raise BadAuthorization("not HTTP Basic (Authorization: Basic <base64 of user:password>)")
    token = token.strip()
    if len(token) > 4 * (MAX_PASSWORD_BYTES + 256) // 3 + 4:
        raise BadAuthorization("credentials too long")
    try:
        raw = base64.b64decode(token, validate=True)
        text = raw.decode("utf-8")
    except (binascii.Error, ValueError):
        raise BadAuthorization("the Basic credentials are not base64 of UTF-8 text") from None
    user, colon, password = text.partition(":")
    if not colon or not user:
        raise BadAuthorization("the Basic credentials are not user:password")
    return user, password


class FailureLimiter:
    """One token bucket per key (`burst` failures, one more every `refill_s` seconds), for at
    most `max_keys` keys (the least recently used are forgotten). Times are monotonic seconds."""

    def __init__(self, burst: int, refill_s: float, *, max_keys: int = 4096) -> None:
        if burst < 1 or refill_s <= 0 or max_keys < 1:
            raise ValueError("burst >= 1, refill_s > 0 and max_keys >= 1 are required")
        self.burst, self.refill_s, self.max_keys = burst, refill_s, max_keys
        self._buckets: OrderedDict[Hashable, TokenBucket] = OrderedDict()

    def blocked(self, key: Hashable, now: float) -> bool:
        """True while `key` has no failure left: its attempts are refused unchecked."""
        bucket = self._buckets.get(key)
        return bucket is not None and bucket.tokens(now) < 1

    def retry_after(self, key: Hashable, now: float) -> int:
        """Whole seconds until `key` may try again (0 if it may now)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return 0
        missing = 1 - bucket.tokens(now)
        return max(0, int(missing * self.refill_s + 0.999))

    def failed(self, key: Hashable, now: float) -> None:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(1 / self.refill_s, self.burst, now)
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        bucket.try_take(now)
