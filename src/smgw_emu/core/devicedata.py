"""Technical device data (Lastenheft 6.5.11) and the removal signal (6.5.4/6.5.5), sans-IO.

[ours] (docs/decisions.md "Technical device data"): the data are one COSEM object of class
DeviceData in the gateway's own LDEV: manufacturer, model, gateway id, firmware version and
digest, hardware version, the gateway's certificates with their validity at the gateway's time,
the gateway's half of the status word, its WAN (wake-up) address and the time it started.
This module turns those facts into the plain values of that object.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from cryptography import x509

__all__ = ["DeviceFacts", "SignalConflict", "certificate_info", "device_data_values", "removal_signal_change"]


def certificate_info(usage: str, cert: x509.Certificate, now: _dt.datetime) -> dict:
    """Plain values for the COSEM type ``certificate_info``."""
    return {
        "usage": usage,
        "subject": cert.subject.rfc4514_string()[:255],
        "issuer": cert.issuer.rfc4514_string()[:255],
        "serial_number": cert.serial_number.to_bytes((cert.serial_number.bit_length() + 7) // 8 or 1, "big"),
        "not_before": cert.not_valid_before_utc,
        "not_after": cert.not_valid_after_utc,
        "valid": cert.not_valid_before_utc <= now <= cert.not_valid_after_utc,
    }


@dataclass(frozen=True)
class DeviceFacts:
    manufacturer: str
    model: str
    gateway_id: str
    firmware_version: str
    firmware_digest: str          # hex
    hardware_version: str
    certificates: tuple[tuple[str, x509.Certificate], ...]
    status_hex: str               # the gateway's half, 8 hex digits
    wan_address: str
    wan_port: int
    started_at: _dt.datetime | None


def device_data_values(facts: DeviceFacts, now: _dt.datetime) -> dict:
    """Attribute name -> plain value of the DeviceData object at `now`."""
    return {
        "manufacturer": facts.manufacturer, "model": facts.model, "gateway_id": facts.gateway_id,
        "firmware_version": facts.firmware_version, "firmware_digest": bytes.fromhex(facts.firmware_digest),
        "hardware_version": facts.hardware_version,
        "certificates": [certificate_info(usage, cert, now) for usage, cert in facts.certificates],
        "status_word": bytes.fromhex(facts.status_hex), "wan_address": facts.wan_address,
        "wan_port": facts.wan_port, "started_at": facts.started_at,
    }


class SignalConflict(ValueError):
    """The removal signal is already in the state the request asks for."""


def removal_signal_change(active: bool, method: str) -> tuple[bool, str]:
    """6.5.4 / 6.5.5: the new state and the event name of a removal-signal method, or
    SignalConflict (setting a set signal, ending one that is not set)."""
    if method == "start_deinstallation_signal":
        if active:
            raise SignalConflict("the removal signal is already set")
        return True, "deinstallation-signal-set"
    if method == "stop_deinstallation_signal":
        if not active:
            raise SignalConflict("the removal signal is not set")
        return False, "deinstallation-signal-ended"
    raise ValueError(f"unknown removal-signal method {method!r}")
