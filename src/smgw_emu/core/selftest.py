"""The self test (Lastenheft 5.15) as rules, sans-IO.

The application layer gathers the inputs (the installed firmware's files, the gateway's keys and
certificates, the time of the last time synchronisation, SQLite's integrity check) and these
functions judge them. Each check has an outcome `passed`, `warning` or `failed`; the result of the
self test is the worst of them.

[ours] What is checked (docs/decisions.md "Self test"):
* **firmware**: the SHA-256 digest over the installed package's files (:func:`firmware_digest`)
  equals the digest recorded for this firmware version (at personalisation, at a firmware
  update, or given in the configuration);
* **keys**: each of the gateway's private keys belongs to its certificate, and each certificate is
  valid at the gateway's time; a certificate that expires within
  :data:`CERTIFICATE_WARNING_DAYS` days is a warning;
* **time**: the clock was synchronised within the allowed age; never, or too long ago, is a
  warning (and sets the status bit "system time invalid");
* **storage**: SQLite's ``PRAGMA integrity_check`` answers ``ok``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from dataclasses import dataclass
from typing import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import serialization

__all__ = [
    "CERTIFICATE_WARNING_DAYS",
    "CheckResult",
    "KeyMaterial",
    "OUTCOMES",
    "SelfTestReport",
    "check_firmware",
    "check_keys",
    "check_storage",
    "check_time",
    "firmware_digest",
]

#: Outcomes, best first (the order is the enum value of COSEM type check_outcome).
OUTCOMES = ("passed", "warning", "failed")
#: [ours] A certificate closer than this to its end is a warning.
CERTIFICATE_WARNING_DAYS = 30


@dataclass(frozen=True)
class CheckResult:
    check: str        # firmware, keys, time, storage
    outcome: str      # passed, warning, failed
    detail: str


@dataclass(frozen=True)
class SelfTestReport:
    time: _dt.datetime
    trigger: str      # start-up, gwa, schedule
    checks: tuple[CheckResult, ...]

    @property
    def result(self) -> str:
        return max((c.outcome for c in self.checks), key=OUTCOMES.index, default="passed")

    def outcome_of(self, check: str) -> str:
        return next((c.outcome for c in self.checks if c.check == check), "")

    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if c.outcome != "passed"]

    def details(self) -> dict[str, str]:
        """For events and log entries: `result` and one `<check>` outcome per check."""
        details = {"result": self.result, "trigger": self.trigger}
        for c in self.checks:
            details[c.check] = c.outcome
        problems = "; ".join(f"{c.check}: {c.detail}" for c in self.failed())
        if problems:
            details["problems"] = problems
        return details

    def status_flags(self) -> set[str]:
        """The gateway status bits (core.statusword) this result sets."""
        flags: set[str] = set()
        if self.result == "failed":
            flags.add("fatal-error")
        if self.outcome_of("time") not in ("", "passed"):
            flags.add("system-time-invalid")
        return flags


def firmware_digest(files: Iterable[tuple[str, bytes]]) -> str:
    """SHA-256 over the files (relative path, content), in path order, each framed by its path
    and length so that moving bytes between files changes the digest."""
    digest = hashlib.sha256()
    for path, content in sorted(files, key=lambda item: item[0]):
        name = path.replace("\\", "/").encode("utf-8")
        digest.update(len(name).to_bytes(4, "big") + name + len(content).to_bytes(8, "big"))
        digest.update(content)
    return digest.hexdigest()


def check_firmware(current: str, expected: str, version: str) -> CheckResult:
    if not expected:
        return CheckResult("firmware", "failed", f"no digest recorded for firmware {version}")
    if current != expected:
        return CheckResult("firmware", "failed",
                           f"firmware {version}: installed files have digest {current[:16]}..., recorded {expected[:16]}...")
    return CheckResult("firmware", "passed", f"firmware {version}, digest {current[:16]}...")


@dataclass(frozen=True)
class KeyMaterial:
    """One of the gateway's key pairs as found: `problem` is set when it could not be read."""

    usage: str                                # e.g. gateway-tls
    certificate: x509.Certificate | None
    private_key: object | None                # a cryptography private key
    problem: str = ""


def _spki(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def check_keys(material: Iterable[KeyMaterial], now: _dt.datetime) -> CheckResult:
    failures: list[str] = []
    warnings: list[str] = []
    names: list[str] = []
    for item in material:
        names.append(item.usage)
        if item.problem or item.certificate is None or item.private_key is None:
            failures.append(f"{item.usage}: {item.problem or 'missing'}")
            continue
        cert = item.certificate
        try:
            matches = _spki(item.private_key.public_key()) == _spki(cert.public_key())  # type: ignore[attr-defined]
        except (AttributeError, ValueError, TypeError):
            matches = False
        if not matches:
            failures.append(f"{item.usage}: private key does not belong to the certificate")
            continue
        if now < cert.not_valid_before_utc:
            failures.append(f"{item.usage}: certificate not valid before {cert.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ}")
        elif now > cert.not_valid_after_utc:
            failures.append(f"{item.usage}: certificate expired {cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}")
        elif cert.not_valid_after_utc - now < _dt.timedelta(days=CERTIFICATE_WARNING_DAYS):
            warnings.append(f"{item.usage}: certificate expires {cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}")
    if not names:
        return CheckResult("keys", "failed", "no key material")
    if failures:
        return CheckResult("keys", "failed", "; ".join(failures))
    if warnings:
        return CheckResult("keys", "warning", "; ".join(warnings))
    return CheckResult("keys", "passed", f"{', '.join(names)}: keys match certificates, certificates valid")


def check_time(now: _dt.datetime, last_sync: _dt.datetime | None, max_age: _dt.timedelta, *,
               why_never: str = "") -> CheckResult:
    """`why_never`: the caller's account of why no synchronisation happened yet (e.g. no time
    source configured yet), shown when the clock was never synchronised."""
    if last_sync is None:
        because = f": {why_never}" if why_never else ""
        return CheckResult("time", "warning",
                           f"time not yet synchronised{because} (the clock was never synchronised with the GWA)")
    age = now - last_sync
    if age > max_age:
        return CheckResult("time", "warning",
                           f"last synchronised {age.total_seconds():.0f} s ago (allowed {max_age.total_seconds():.0f} s)")
    return CheckResult("time", "passed", f"synchronised {max(0.0, age.total_seconds()):.0f} s ago")


def check_storage(problems: Iterable[str]) -> CheckResult:
    found = [p for p in problems if p != "ok"]
    if found:
        shown = "; ".join(found[:3]) + (f" (+{len(found) - 3} more)" if len(found) > 3 else "")
        return CheckResult("storage", "failed", f"integrity check: {shown}")
    return CheckResult("storage", "passed", "integrity check ok")
