"""Technical device data and the removal signal rule (core/devicedata.py)."""

from __future__ import annotations

import datetime as _dt

import pytest

from smgw_emu.core.cosem import default_definitions
from smgw_emu.core.devicedata import DeviceFacts, SignalConflict, certificate_info, device_data_values, removal_signal_change

UTC = _dt.timezone.utc


def test_certificate_info_and_validity(pki):
    cert = pki.cert("gateway-tls")
    info = certificate_info("gateway-tls", cert, _dt.datetime.now(UTC))
    assert info["valid"] is True and info["not_after"] == cert.not_valid_after_utc
    assert int.from_bytes(info["serial_number"], "big") == cert.serial_number
    assert certificate_info("gateway-tls", cert, cert.not_valid_after_utc + _dt.timedelta(seconds=1))["valid"] is False


def test_device_data_values_build_the_class(pki):
    facts = DeviceFacts("ACME", "GW-1", "EXXX0012345678", "1.2.3", "ab" * 32, "rev C",
                        (("gateway-tls", pki.cert("gateway-tls")),), "00000002", "127.0.0.1", 47110, None)
    values = device_data_values(facts, _dt.datetime.now(UTC))
    cls = default_definitions().cls(28630)
    built = {name: cls.attribute_named(name).spec.build(value, name) for name, value in values.items()}
    assert built["status_word"].value == bytes.fromhex("00000002") and built["started_at"].is_null
    assert len(built["certificates"].value) == 1


def test_removal_signal_transitions():
    assert removal_signal_change(False, "start_deinstallation_signal") == (True, "deinstallation-signal-set")
    assert removal_signal_change(True, "stop_deinstallation_signal") == (False, "deinstallation-signal-ended")
    with pytest.raises(SignalConflict):
        removal_signal_change(True, "start_deinstallation_signal")
    with pytest.raises(SignalConflict):
        removal_signal_change(False, "stop_deinstallation_signal")
    with pytest.raises(ValueError):
        removal_signal_change(False, "toggle")
