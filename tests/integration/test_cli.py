"""The `smgw-emu` command as a user runs it: real processes, real files, real sockets."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from smgw_emu.app.config import DEFAULT_CONFIG_TOML
from tests.ports import free_port  # the CLI tests import it from here

CLI = [sys.executable, "-m", "smgw_emu.cli"]


def run(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout)


def write_config(directory: Path, pki_dir: Path, **replace: str) -> Path:
    text = DEFAULT_CONFIG_TOML.replace('pki_dir = "var/pki"', f'pki_dir = "{pki_dir}"')
    text = text.replace('state_dir = "var/gateway"', 'state_dir = "state"')
    for old, new in replace.items():
        text = text.replace(old, new)
    path = directory / "gateway.toml"
    path.write_text(text)
    return path


def assert_one_clear_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("smgw-emu: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


# -- bad input: one clear message, non-zero exit, no traceback ---------------------------------------
def test_missing_config_file(tmp_path):
    assert_one_clear_error(run("run", "--config", str(tmp_path / "nope.toml")), "nope.toml", "not found")


def test_config_that_is_not_toml(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[gateway\nid = ")
    assert_one_clear_error(run("run", "--config", str(bad)), "not valid TOML")


@pytest.mark.parametrize(("old", "new", "field"), [
    ('id = "EXXX0012345678"', 'id = "not-a-gateway"', "gateway.id"),
    ("port = 47110", "port = 99999", "wakeup.port"),
    ("idle_timeout_s = 300", 'idle_timeout_s = "long"', "channels.idle_timeout_s"),
    ("max_session_lifetime_s = 172800", "max_session_lifetime_s = 200000", "channels.max_session_lifetime_s"),
    ('info_report_url = "https://', 'info_report_url = "http://', "gwa.info_report_url"),
    ("auth_refused_status = 403", "auth_refused_status = 200", "policy.auth_refused_status"),
    ('mode = "real"', 'mode = "sundial"', "clock.mode"),
])
def test_invalid_field_is_named(tmp_path, old, new, field):
    path = write_config(tmp_path, tmp_path / "pki", **{old: new})
    assert_one_clear_error(run("config", "check", str(path)), field)
    assert_one_clear_error(run("run", "--config", str(path)), field)


def test_unknown_field_is_named(tmp_path):
    path = write_config(tmp_path, tmp_path / "pki", **{"[clock]\n": "[clock]\ncolour = 3\n"})
    assert_one_clear_error(run("config", "check", str(path)), "clock.colour", "unknown field")


def test_missing_pki_directory(tmp_path):
    path = write_config(tmp_path, tmp_path / "no-pki-here")
    assert_one_clear_error(run("run", "--config", str(path)), "no-pki-here", "pki init")


def test_unwritable_state_directory(tmp_path, pki):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    path = write_config(tmp_path, pki.root, **{'state_dir = "state"': f'state_dir = "{blocker}/state"'})
    assert_one_clear_error(run("run", "--config", str(path)), "state directory")


def test_pki_init_refuses_existing_and_unknown_curve(tmp_path):
    assert run("pki", "init", str(tmp_path / "p")).returncode == 0
    assert_one_clear_error(run("pki", "init", str(tmp_path / "p")), "already holds a PKI")
    assert_one_clear_error(run("pki", "init", str(tmp_path / "q"), "--curve", "curve25519"), "unknown curve")


# -- pki init: openssl verifies it, keys are brainpool -----------------------------------------------
@pytest.mark.openssl
@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl binary")
def test_pki_init_verifies_with_openssl_and_uses_brainpool(tmp_path):
    directory = tmp_path / "pki"
    result = run("pki", "init", str(directory))
    assert result.returncode == 0, result.stderr
    for leaf, sub in [("gateway-tls", "sub-ca-gw"), ("gateway-sig", "sub-ca-gw"), ("gateway-enc", "sub-ca-gw"),
                      ("gwa-tls", "sub-ca-emt"), ("gwa-sig", "sub-ca-emt"), ("gwa-enc", "sub-ca-emt"),
                      ("emt-tls", "sub-ca-emt"), ("emt-sig", "sub-ca-emt"), ("emt-enc", "sub-ca-emt"),
                      ("meter-tls", "sub-ca-gw"), ("cls-tls", "sub-ca-gw")]:
        verify = subprocess.run(["openssl", "verify", "-CAfile", str(directory / "root-ca.crt"), "-untrusted",
                                 str(directory / f"{sub}.crt"), str(directory / f"{leaf}.crt")],
                                capture_output=True, text=True)
        assert verify.returncode == 0 and f"{leaf}.crt: OK" in verify.stdout, verify.stdout + verify.stderr
        text = subprocess.run(["openssl", "x509", "-in", str(directory / f"{leaf}.crt"), "-noout", "-text"],
                              capture_output=True, text=True).stdout
        assert "ASN1 OID: brainpoolP256r1" in text
        usage = text.split("X509v3 Key Usage: critical")[1].splitlines()[1].strip()
        assert usage == ("Key Agreement" if leaf.endswith("-enc") else "Digital Signature"), (leaf, usage)
    assert oct((directory / "gateway-tls.key").stat().st_mode & 0o777) == "0o600"


def test_pki_init_other_curve(tmp_path):
    assert run("pki", "init", str(tmp_path / "p384"), "--curve", "brainpoolP384r1").returncode == 0
    assert json.loads((tmp_path / "p384" / "pki.json").read_text())["curve"] == "brainpoolP384r1"


# -- processes ---------------------------------------------------------------------------------------
def test_processes_table_and_json():
    table = run("processes")
    assert table.returncode == 0
    assert table.stdout.strip().splitlines()[-1].startswith("implemented ")
    assert "/77" in table.stdout.strip().splitlines()[-1]
    items = json.loads(run("processes", "--json").stdout)
    assert [i["figure"] for i in items] == list(range(1, 78))
    for item in items:
        assert {"figure", "chapter", "title", "status", "tests"} <= set(item)
        assert item["status"] in ("planned", "implemented")


# -- run + reference GWA demo: the two-terminal quick start, as processes -----------------------------
def test_run_prints_addresses_and_gwa_demo_talks_to_it(tmp_path, pki):
    wake, management, service = free_port(socket.SOCK_DGRAM), free_port(), free_port()
    path = write_config(tmp_path, pki.root, **{
        "port = 47110": f"port = {wake}", "management_port = 47111": f"management_port = {management}",
        "127.0.0.1:47112": f"127.0.0.1:{service}",
    })
    gateway = subprocess.Popen([*CLI, "run", "--config", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        lines = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = gateway.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("next"):
                break
        output = "".join(lines)
        assert f"udp://127.0.0.1:{wake}" in output, output + gateway.stderr.read() if gateway.poll() else output
        assert "smgw-emu gwa demo" in output
        demo = run("gwa", "demo", "--config", str(path), timeout=60)
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert "GET /smgw/info -> 200" in demo.stdout
        assert "management-tls-connect" in demo.stdout and "wakeup" in demo.stdout
    finally:
        gateway.send_signal(signal.SIGTERM)
        try:
            assert gateway.wait(20) == 0
        finally:
            if gateway.poll() is None:
                gateway.kill()


def test_pki_init_refuses_bad_gateway_id(tmp_path):
    assert_one_clear_error(run("pki", "init", str(tmp_path / "p"), "--gateway-id", "gateway-1"), "--gateway-id")
