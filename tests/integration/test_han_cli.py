"""`smgw-emu han hash-password` and a [han] section through `config check`, as a user runs them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from smgw_emu.app.config import DEFAULT_CONFIG_TOML
from smgw_emu.core.hanauth import parse_hash, verify_password

CLI = [sys.executable, "-m", "smgw_emu.cli"]


def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], input=stdin, capture_output=True, text=True, timeout=60)


def test_hash_password_prints_a_hash_the_configuration_takes(tmp_path):
    result = run("han", "hash-password", "--stdin", "--n", "1024", stdin="geheim ä\n")
    assert result.returncode == 0, result.stderr
    stored = result.stdout.strip()
    assert verify_password(parse_hash(stored), "geheim ä")
    config = tmp_path / "gateway.toml"
    config.write_text(DEFAULT_CONFIG_TOML.replace("enabled = false", "enabled = true")
                      + f'[[han.consumers]]\nid = "LV-1"\nmeters = ["1XXX0098765432"]\nuser = "anna"\n'
                        f'password_hash = "{stored}"\n')
    checked = run("config", "check", str(config))
    assert checked.returncode == 0, checked.stderr


def test_bad_hash_input_gives_one_clear_error(tmp_path):
    for args, stdin, fragment in ((("--n", "1000"), "pw\n", "power of two"), ((), "\n", "empty password")):
        result = run("han", "hash-password", "--stdin", *args, stdin=stdin)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert result.stderr.startswith("smgw-emu: ") and fragment in result.stderr
    config = tmp_path / "gateway.toml"
    config.write_text(DEFAULT_CONFIG_TOML + '[[han.consumers]]\nid = "LV-1"\nmeters = ["1XXX0098765432"]\n'
                      'user = "anna"\npassword_hash = "geheim"\n')
    result = run("config", "check", str(config))
    assert result.returncode == 2 and "han.consumers[0].password_hash" in result.stderr


@pytest.mark.parametrize("stdin", ["", "geheim\n"], ids=["empty-stdin", "password-on-stdin"])
def test_hash_password_without_a_terminal_says_to_pass_stdin(stdin):
    """No controlling terminal (a new session, as under CI or cron) and no --stdin: one line, exit 2,
    whether or not something waits on standard input (it is read only with --stdin)."""
    result = subprocess.run([*CLI, "han", "hash-password"], input=stdin, capture_output=True, text=True,
                            timeout=60, start_new_session=True)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "EOFError" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("smgw-emu: ") and "--stdin" in lines[0], result.stderr
    assert result.stdout == ""
