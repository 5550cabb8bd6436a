"""What a user meets at the command line (issue 7, item 6): a reader that closes the pipe early,
a second `run` on the same state directory, the exit status of `gwa request`, what `gwa serve`
prints, the `run` hint and the start-up self test's time warning.

Everything runs as a user runs it: the installed `smgw-emu` script as a subprocess, real files,
real sockets on 127.0.0.1 with free ports.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from smgw_emu.reference.gwa import ReferenceGwa

from .test_cli import free_port, write_config

SMGW_EMU = Path(sys.executable).parent / "smgw-emu"
pytestmark = pytest.mark.skipif(not SMGW_EMU.exists(), reason="needs the installed smgw-emu script next to python")
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
BUFFERED = {name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"}


def gateway_config(tmp_path: Path, pki, **replace: str) -> tuple[Path, dict[str, int]]:
    """The embedded default configuration with free ports, the test PKI and a state directory
    in `tmp_path` (write_config)."""
    ports = {"wake": free_port(socket.SOCK_DGRAM), "management": free_port(), "service": free_port()}
    path = write_config(tmp_path, pki.root, **{
        "port = 47110": f"port = {ports['wake']}", "management_port = 47111": f"management_port = {ports['management']}",
        "127.0.0.1:47112": f"127.0.0.1:{ports['service']}", **replace,
    })
    return path, ports


class Run:
    """One `smgw-emu run` process; `started()` reads its output up to the `next, ...` line."""

    def __init__(self, *args: str, cwd: Path | None = None, argv0: str | None = None) -> None:
        self.proc = subprocess.Popen([argv0 or str(SMGW_EMU), "run", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=ENV, cwd=cwd)
        self.output = ""

    def started(self, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while "\nnext" not in "\n" + self.output and time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.output += line
        assert "\nnext" in "\n" + self.output, self.output + (self.proc.stderr.read() if self.proc.poll() is not None else "")
        return self.output

    def stop(self) -> tuple[int, str]:
        """SIGTERM; the exit status and everything the process wrote to stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            status = self.proc.wait(20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        return status, self.proc.stderr.read()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture
def runs():
    """Factory for `smgw-emu run` processes; every one is ended at teardown."""
    started: list[Run] = []

    def start(*args: str, **kwargs) -> Run:
        started.append(Run(*args, **kwargs))
        return started[-1]

    yield start
    for run in started:
        run.kill()


def cli(*args: str, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(SMGW_EMU), *args], capture_output=True, text=True, timeout=timeout, **kwargs)


def into_closed_pipe(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run with standard output a pipe whose reader is gone before the first byte: the extreme
    of `smgw-emu ... | head -1`."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([str(SMGW_EMU), *args], stdout=write_end, stderr=subprocess.PIPE, text=True,
                              timeout=timeout)
    finally:
        os.close(write_end)


def assert_quiet_broken_pipe(status: int, stderr: str) -> None:
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr and "Exception ignored" not in stderr, stderr
    assert status == 141, (status, stderr)  # 128 + SIGPIPE, what the shell shows for `yes | head -1`


# -- 1. a reader that closes early: no traceback, exit 141 --------------------------------------------
def test_processes_into_a_closed_pipe_ends_quietly():
    result = into_closed_pipe("processes")
    assert_quiet_broken_pipe(result.returncode, result.stderr)


def test_processes_json_into_head_ends_quietly():
    """More than a pipe holds, and the reader takes one line and closes: `processes --json | head -1`."""
    proc = subprocess.Popen([str(SMGW_EMU), "processes", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"["
        proc.stdout.close()
        status = proc.wait(60)
        stderr = proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert_quiet_broken_pipe(status, stderr)


def test_shell_pipeline_into_head_prints_the_line_and_no_traceback():
    result = subprocess.run(["sh", "-c", f"'{SMGW_EMU}' processes --json | head -1"], capture_output=True, text=True,
                            timeout=60)
    assert result.stdout == "[\n" and result.stderr == "", result.stderr


def test_gwa_demo_into_a_closed_pipe_ends_quietly(tmp_path, pki, runs):
    path, _ = gateway_config(tmp_path, pki)
    runs("--config", str(path)).started()
    result = into_closed_pipe("gwa", "demo", "--config", str(path))
    assert_quiet_broken_pipe(result.returncode, result.stderr)


# -- 3. gwa request: an error status is a failed command ----------------------------------------------
def test_gwa_request_exits_1_on_an_error_status_and_prints_the_response(tmp_path, pki, runs):
    path, _ = gateway_config(tmp_path, pki)
    runs("--config", str(path)).started()
    missing = cli("gwa", "request", "GET", "/smgw/no-such-resource", "--config", str(path))
    assert missing.returncode == 1, missing.stdout + missing.stderr
    assert "GET /smgw/no-such-resource -> 404" in missing.stdout
    assert "transcript:" in missing.stdout
    assert "Traceback" not in missing.stderr
    found = cli("gwa", "request", "GET", "/smgw/info", "--config", str(path))
    assert found.returncode == 0, found.stdout + found.stderr
    assert "GET /smgw/info -> 200" in found.stdout


# -- 4. gwa serve says what arrives ---------------------------------------------------------------------
def _read_until(proc: subprocess.Popen, fragment: str, seen: list[str], timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in seen:
            if fragment in line:
                return line
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
    raise AssertionError(f"no line with {fragment!r} in:\n{''.join(seen)}")


def test_gwa_serve_prints_one_line_per_channel_and_report(tmp_path, pki, runs):
    path, ports = gateway_config(tmp_path, pki)
    serve = subprocess.Popen([str(SMGW_EMU), "gwa", "serve", "--config", str(path)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=BUFFERED)  # serve has to flush itself
    seen: list[str] = []
    try:
        _read_until(serve, "waiting for channels and reports", seen)
        gateway = runs("--config", str(path))
        gateway.started()
        report = _read_until(serve, "report received", seen)
        assert "gateway-started" in report and "id=" in report and "EXXX0012345678" in report, report
        wakeup = ReferenceGwa(pki).build_wakeup("EXXX0012345678")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(wakeup, ("127.0.0.1", ports["wake"]))
        opened = _read_until(serve, "channel opened", seen)
        assert "EXXX0012345678" in opened and "TLS" in opened, opened
        assert gateway.stop()[0] == 0
        closed = _read_until(serve, "channel closed", seen)
        assert "EXXX0012345678" in closed, closed
    finally:
        serve.send_signal(signal.SIGINT)
        try:
            status = serve.wait(20)
        finally:
            if serve.poll() is None:
                serve.kill()
                serve.wait()
    stderr = serve.stderr.read()
    assert status == 0 and stderr == "", stderr
    assert len([line for line in seen if "report received" in line]) >= 1


# -- 5. one `run` per state directory ------------------------------------------------------------------
def _self_tests(state_dir: Path) -> int:
    conn = sqlite3.connect(f"file:{state_dir / 'state.sqlite3'}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT count(*) FROM log WHERE event='self-test-run'").fetchone()[0]
    finally:
        conn.close()


def test_second_run_on_the_same_state_directory_is_refused_before_touching_it(tmp_path, pki, runs):
    path, _ = gateway_config(tmp_path, pki)
    state_dir = tmp_path / "state"
    first = runs("--config", str(path))
    first.started()
    before = _self_tests(state_dir)
    second = runs("--config", str(path))
    status = second.proc.wait(30)
    stderr = second.proc.stderr.read()
    assert status == 2, (status, stderr)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("smgw-emu: "), stderr  # no self test, no log lines
    assert f"PID {first.proc.pid}" in lines[0] and str(state_dir) in lines[0], lines[0]
    assert second.proc.stdout.read() == ""
    assert _self_tests(state_dir) == before
    assert first.proc.poll() is None  # the holder runs on
    assert first.stop()[0] == 0
    third = runs("--config", str(path))  # released on exit
    third.started()
    assert third.stop()[0] == 0


def test_run_after_a_killed_holder_starts(tmp_path, pki, runs):
    path, _ = gateway_config(tmp_path, pki)
    holder = runs("--config", str(path))
    holder.started()
    holder.proc.send_signal(signal.SIGKILL)
    holder.proc.wait(20)
    assert (tmp_path / "state" / "smgw-emu.lock").read_text().strip() == str(holder.proc.pid)  # stale, not held
    after = runs("--config", str(path))
    assert "running" in after.started()
    assert (tmp_path / "state" / "smgw-emu.lock").read_text().strip() == str(after.proc.pid)
    assert after.stop()[0] == 0


# -- 6. the hint names the executable by its absolute path ---------------------------------------------
def test_run_hint_names_the_executable_absolutely(tmp_path, pki, runs):
    path, _ = gateway_config(tmp_path, pki)
    bin_dir = SMGW_EMU.parent
    output = runs("--config", str(path), cwd=bin_dir, argv0="./smgw-emu").started()  # as `make run` calls it
    hint = output.strip().splitlines()[-1]
    assert hint.startswith("next, in another terminal: "), hint
    command = hint.removeprefix("next, in another terminal: ").split()
    assert command[0] == os.path.abspath(SMGW_EMU), hint
    assert command[1:] == ["gwa", "demo", "--config", str(path)], hint


# -- 7. the start-up self test says why the time check warns -------------------------------------------
def test_default_start_says_why_the_time_check_warns(tmp_path, pki, runs):
    path, _ = gateway_config(tmp_path, pki)
    gateway = runs("--config", str(path))
    gateway.started()
    status, log = gateway.stop()
    assert status == 0, log
    [line] = [line for line in log.splitlines() if "self-test-run" in line]
    assert " WARNING " in line, line  # the result is a warning: the status word says "system time invalid"
    assert "time not yet synchronised" in line and "no time source configured yet" in line, line
    assert "operations.time_sync_interval_s" in line, line  # and what to configure
