"""The self-test rules (core/selftest.py) with real keys and certificates of the test SM-PKI."""

from __future__ import annotations

import datetime as _dt

from smgw_emu.core import selftest
from smgw_emu.pki import generate_key

UTC = _dt.timezone.utc


def _material(pki, names=("gateway-tls", "gateway-sig", "gateway-enc")):
    return [selftest.KeyMaterial(n, pki.cert(n), pki.key(n)) for n in names]


def test_firmware_digest_is_order_independent_and_framed():
    a = selftest.firmware_digest([("a.py", b"12"), ("b.py", b"3")])
    assert a == selftest.firmware_digest([("b.py", b"3"), ("a.py", b"12")])
    assert a != selftest.firmware_digest([("a.py", b"1"), ("b.py", b"23")])  # bytes moved between files
    assert a != selftest.firmware_digest([("a.py", b"12"), ("c.py", b"3")])  # a file renamed
    assert len(a) == 64


def test_firmware_check():
    assert selftest.check_firmware("ab" * 32, "ab" * 32, "1.0").outcome == "passed"
    changed = selftest.check_firmware("ab" * 32, "cd" * 32, "1.0")
    assert changed.outcome == "failed" and "recorded cdcd" in changed.detail
    assert selftest.check_firmware("ab" * 32, "", "1.0").outcome == "failed"


def test_keys_pass_with_the_pki(pki):
    now = _dt.datetime.now(UTC)
    result = selftest.check_keys(_material(pki), now)
    assert result.outcome == "passed", result.detail


def test_a_key_of_another_certificate_fails(pki):
    now = _dt.datetime.now(UTC)
    material = _material(pki)
    material[1] = selftest.KeyMaterial("gateway-sig", pki.cert("gateway-sig"), generate_key(pki.curve))
    result = selftest.check_keys(material, now)
    assert result.outcome == "failed" and "gateway-sig: private key does not belong" in result.detail


def test_certificate_validity_at_the_gateways_time(pki):
    cert = pki.cert("gateway-tls")
    material = _material(pki, ("gateway-tls",))
    assert selftest.check_keys(material, cert.not_valid_after_utc + _dt.timedelta(seconds=1)).outcome == "failed"
    assert selftest.check_keys(material, cert.not_valid_before_utc - _dt.timedelta(seconds=1)).outcome == "failed"
    soon = cert.not_valid_after_utc - _dt.timedelta(days=selftest.CERTIFICATE_WARNING_DAYS - 1)
    assert selftest.check_keys(material, soon).outcome == "warning"


def test_unreadable_or_missing_material_fails(pki):
    now = _dt.datetime.now(UTC)
    assert selftest.check_keys([selftest.KeyMaterial("gateway-enc", None, None, "unreadable")], now).outcome == "failed"
    assert selftest.check_keys([], now).outcome == "failed"


def test_time_check():
    now = _dt.datetime(2026, 11, 25, tzinfo=UTC)
    day = _dt.timedelta(days=1)
    assert selftest.check_time(now, None, day).outcome == "warning"
    assert selftest.check_time(now, now - 2 * day, day).outcome == "warning"
    assert selftest.check_time(now, now - day / 2, day).outcome == "passed"


def test_storage_check():
    assert selftest.check_storage(["ok"]).outcome == "passed"
    bad = selftest.check_storage(["row 1 missing from index x", "a", "b", "c"])
    assert bad.outcome == "failed" and "(+1 more)" in bad.detail


def test_report_result_is_the_worst_and_sets_status_flags():
    now = _dt.datetime(2026, 11, 25, tzinfo=UTC)
    passed = selftest.CheckResult("storage", "passed", "")
    time_warning = selftest.CheckResult("time", "warning", "never")
    keys_failed = selftest.CheckResult("keys", "failed", "expired")
    assert selftest.SelfTestReport(now, "gwa", (passed,)).result == "passed"
    warn = selftest.SelfTestReport(now, "gwa", (passed, time_warning))
    assert warn.result == "warning" and warn.status_flags() == {"system-time-invalid"}
    fail = selftest.SelfTestReport(now, "gwa", (keys_failed, time_warning, passed))
    assert fail.result == "failed" and fail.status_flags() == {"fatal-error", "system-time-invalid"}
    details = fail.details()
    assert details["result"] == "failed" and details["keys"] == "failed" and details["problems"] == "keys: expired; time: never"
