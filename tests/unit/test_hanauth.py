"""Consumer sign-in at the HAN (core/hanauth.py) and the [han] configuration (app/hanconfig.py)."""

from __future__ import annotations

import base64
import dataclasses

import pytest

from smgw_emu.app.config import ConfigError, load_config, parse_config, render_config
from smgw_emu.app.hanconfig import HanConsumer
from smgw_emu.core import hanauth
from smgw_emu.core.hanauth import BadAuthorization, FailureLimiter, HashFormatError, parse_basic, parse_hash

FAST = {"n": 1024}  # the lowest cost the configuration accepts: fast tests


def basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


# -- password hashes --------------------------------------------------------------------------------

def test_a_hash_verifies_its_password_only_and_carries_its_cost():
    stored = hanauth.hash_password("geheim ä", **FAST)
    assert stored.startswith("scrypt$1024$8$1$")
    parsed = parse_hash(stored)
    assert hanauth.verify_password(parsed, "geheim ä")
    assert not hanauth.verify_password(parsed, "geheim a")
    assert not hanauth.verify_password(parsed, "x" * 2000)  # longer than looked at: refused unhashed
    assert hanauth.hash_password("geheim ä", **FAST) != stored  # fresh salt


@pytest.mark.parametrize("text, reason", [
    ("", "expected scrypt"), ("pbkdf2$1$2$3$00$00", "expected scrypt"),
    ("scrypt$1000$8$1$" + "00" * 16 + "$" + "00" * 32, "power of two"),
    ("scrypt$512$8$1$" + "00" * 16 + "$" + "00" * 32, "power of two in 1024"),
    ("scrypt$1024$0$1$" + "00" * 16 + "$" + "00" * 32, "r=0"),
    ("scrypt$1024$8$99$" + "00" * 16 + "$" + "00" * 32, "p=99"),
    ("scrypt$1024$8$1$" + "00" * 4 + "$" + "00" * 32, "salt"),
    ("scrypt$1024$8$1$" + "00" * 16 + "$" + "0" * 63, "even number"),
    ("scrypt$1024$8$1$" + "AB" * 16 + "$" + "00" * 32, "expected scrypt"),  # upper-case hex
])
def test_a_malformed_or_weak_hash_is_refused_with_the_reason(text, reason):
    with pytest.raises(HashFormatError, match=reason):
        parse_hash(text)


# -- HTTP Basic -------------------------------------------------------------------------------------

def test_basic_credentials_are_read_as_utf8_with_colons_in_the_password():
    assert parse_basic(basic("anna:pa:ss wört")) == ("anna", "pa:ss wört")
    assert parse_basic("basic " + base64.b64encode(b"u:").decode()) == ("u", "")


@pytest.mark.parametrize("header", [
    "", "Bearer abc", "Basic", "Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode(),
    "Basic " + base64.b64encode(b":pw").decode(), "Basic " + base64.b64encode(b"\xff\xfe:x").decode(),
    "Basic " + "A" * 5000,
])
def test_malformed_basic_credentials_are_refused(header):
    with pytest.raises(BadAuthorization):
        parse_basic(header)


# -- the failure limiter ----------------------------------------------------------------------------

def test_failures_empty_the_bucket_and_time_refills_it():
    limiter = FailureLimiter(3, 60)
    for _ in range(3):
        assert not limiter.blocked("ip", 0)
        limiter.failed("ip", 0)
    assert limiter.blocked("ip", 0) and limiter.retry_after("ip", 0) == 60
    assert not limiter.blocked("other", 0)          # one source's failures do not block another
    assert limiter.blocked("ip", 59) and limiter.retry_after("ip", 59) == 1
    assert not limiter.blocked("ip", 60)            # one more attempt after the refill time
    limiter.failed("ip", 60)
    assert limiter.blocked("ip", 60)


def test_the_limiter_forgets_the_least_recently_failed_keys():
    limiter = FailureLimiter(1, 60, max_keys=2)
    for key in ("a", "b", "c"):
        limiter.failed(key, 0)
    assert not limiter.blocked("a", 0) and limiter.blocked("b", 0) and limiter.blocked("c", 0)


# -- the [han] section ------------------------------------------------------------------------------

HASH = hanauth.hash_password("pw", **FAST)
FP = "ab" * 32


def han_toml(consumers: str, extra: str = "") -> str:
    base = """
[gateway]
id = "EXXX0012345678"
state_dir = "s"
pki_dir = "p"
[gwa]
id = "GWA"
host = "127.0.0.1"
management_port = 1
admin_service_url = "https://127.0.0.1/a/"
info_report_url = "https://127.0.0.1/i"
[han]
enabled = true
"""
    return base + extra + consumers


def consumer(**fields) -> str:
    values = {"id": "LV-1", "meters": ["1XXX0098765432"], "user": "anna", "password_hash": HASH}
    values.update(fields)
    lines = ["[[han.consumers]]"]
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, list):
            lines.append(f"{key} = [{', '.join(repr(v).replace(chr(39), chr(34)) for v in value)}]")
        elif isinstance(value, str):
            lines.append(f'{key} = "{value}"')
        else:
            lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


def test_the_default_has_the_han_interface_off():
    han = load_config().han
    assert not han.enabled and han.consumers == ()


def test_consumers_parse_and_render_back():
    text = han_toml(consumer(certificate_sha256=FP.upper(), data_from="2026-01-01T00:00:00Z", usage_point_id="DE01")
                    + consumer(id="LV-2", user=None, password_hash=None, certificate_sha256="cd" * 32,
                               meters=["7XXX0000000001"]))
    cfg = parse_config(text)
    first, second = cfg.han.consumers
    assert first.certificate_sha256 == FP and first.user == "anna" and first.data_from.year == 2026
    assert second.user == "" and second.meters == ("7XXX0000000001",)
    assert parse_config(render_config(cfg)).han == cfg.han


@pytest.mark.parametrize("consumers, extra, message", [
    (consumer(password_hash=None), "", r"han.consumers\[0\].password_hash: user and password_hash go together"),
    (consumer(user=None), "", "user and password_hash go together"),
    (consumer(password_hash="plain"), "", r"password_hash: expected scrypt"),
    (consumer(user=None, password_hash=None), "", "give user and password_hash, or certificate_sha256"),
    (consumer(certificate_sha256="1234"), "", "certificate_sha256: must be the SHA-256"),
    (consumer(meters=[]), "", "meters: expected a non-empty list"),
    (consumer(meters=["1XXX009876543"]), "", r"meters\[0\]: '1XXX009876543' is not a meter id"),
    (consumer(meters=["1XXX0098765432", "1XXX0098765432"]), "", "listed twice"),
    (consumer(user="a:b"), "", "without ':'"),
    (consumer(id="LV 1"), "", r"han.consumers\[0\].id"),
    (consumer(colour="red"), "", r"colour: unknown field"),
    (consumer(data_from="yesterday"), "", "data_from: expected an ISO 8601"),
    (consumer() + consumer(user="bob"), "", r"han.consumers\[1\].id: 'LV-1' is already used"),
    (consumer() + consumer(id="LV-2"), "", r"han.consumers\[1\].user: 'anna' is already used"),
    (consumer() + consumer(id="LV-2", user="bob"), "", "a meter belongs to one consumer"),
    (consumer(certificate_sha256=FP) + consumer(id="LV-2", user="bob", meters=["1XXX0000000002"],
                                                 certificate_sha256=FP), "", "certificate_sha256: .* is already used"),
    ("consumers = 3\n", "", "han.consumers: expected a list"),
    ("", "port = 70000\n", "han.port: port 70000 is out of range"),
    ("", "host = \"not a host\"\n", "han.host"),
    ("", "password_failures = 0\n", "han.password_failures"),
    ("", "max_range_days = 0\n", "han.max_range_days"),
    ("", "default_range_h = 100000\n", "han.default_range_h"),
    ("", "certificate = \"../x\"\n", "han.certificate"),
    ("", "idle_timeout_s = \"60\"\n", "han.idle_timeout_s: expected a number"),
])
def test_invalid_han_settings_are_refused_naming_the_field(consumers, extra, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(han_toml(consumers, extra))


def test_render_of_a_replaced_section_round_trips():
    cfg = load_config()
    han = dataclasses.replace(cfg.han, enabled=True, consumers=(HanConsumer("LV-1", ("1XXX0098765432",), "a\"b", HASH),))
    cfg = dataclasses.replace(cfg, han=han)
    assert parse_config(render_config(cfg)).han == han
