"""Transfer into normal operation (Lastenheft 6.2, fig. 20), sans-IO.

[ours] (docs/decisions.md "Operating state"): a gateway leaves the factory in the operating state
`delivery`. After installation and personalisation the GWA reads it and calls the method
`enter_normal_operation`; the gateway switches to `normal` only when its personalisation is
complete and its last self test (5.15) did not fail. There is no way back through this API (a
gateway goes back to delivery by a new personalisation, 6.7.1).

What "personalisation complete" means here: the gateway's three certificates (TLS, signature,
encryption) are present, valid at the gateway's time and belong to its keys, and the GWA's
communication profile holds its TLS, signature and encryption certificates, each valid.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509

from smgw_emu.core.cosem.errors import CosemError

#: The operating states and their enum values (definitions.toml operating_state).
STATES = {"delivery": 0, "normal": 1}


class TransferRefused(CosemError):
    """The switch to normal operation is refused (409); nothing changes."""

    http_status = 409

    def __init__(self, code: str, message: str, *, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.code = code


@dataclass(frozen=True)
class Material:
    """One certificate the personalisation must have put in place."""

    name: str                          # e.g. gateway-tls, gwa-sig
    certificate: x509.Certificate | None
    key_matches: bool = True           # the gateway holds the key of its own certificate
    problem: str = ""                  # why it could not be read


def personalisation_gaps(material: Sequence[Material], now: _dt.datetime) -> list[str]:
    """What is missing or unusable, one line each; empty when the personalisation is complete."""
    gaps = []
    for item in material:
        cert = item.certificate
        if cert is None:
            gaps.append(f"{item.name}: missing{': ' + item.problem if item.problem else ''}")
        elif not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            gaps.append(f"{item.name}: not valid at {now.isoformat()}")
        elif not item.key_matches:
            gaps.append(f"{item.name}: the gateway's key does not belong to it")
    return gaps


@dataclass(frozen=True)
class Transfer:
    """The accepted switch: the new state, its log entry and event (same name)."""

    state: str
    since: _dt.datetime
    event: str
    message: str
    details: dict[str, str]


def enter_normal_operation(state: str, material: Sequence[Material], self_test: str | None,
                           now: _dt.datetime) -> Transfer:
    """Check and decide the switch. `self_test` is the result of the last self test (passed,
    warning, failed) or None if none ran."""
    if state == "normal":
        raise TransferRefused("state-conflict", "the gateway is already in normal operation", field="state")
    gaps = personalisation_gaps(material, now)
    if gaps:
        raise TransferRefused("personalisation-incomplete", "personalisation incomplete: " + "; ".join(gaps),
                              field=gaps[0].split(":")[0])
    if self_test is None:
        raise TransferRefused("self-test-missing", "no self test has run yet", field="self_test")
    if self_test == "failed":
        raise TransferRefused("self-test-failed", "the last self test failed; run it again once the cause is removed",
                              field="self_test")
    return Transfer("normal", now, "normal-operation", "gateway switched from delivery to normal operation",
                    {"previous-state": state, "state": "normal", "self-test": self_test,
                     "since": now.isoformat()})
