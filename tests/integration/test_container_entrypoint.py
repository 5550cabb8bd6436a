"""The Dockerfile's entry point, run as a plain process (no Docker engine here)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .test_cli import free_port, write_config

ROOT = Path(__file__).resolve().parents[2]


def test_entrypoint_makes_pki_on_first_start_and_runs_the_gateway(tmp_path):
    home = tmp_path / "home"
    wake = free_port()
    config = write_config(tmp_path, home / "pki", **{"port = 47110": f"port = {wake}"})
    smgw = Path(sys.executable).parent / "smgw-emu"
    env = {**os.environ, "SMGW_HOME": str(home), "SMGW_BIN": str(smgw), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(["sh", str(ROOT / "docker" / "entrypoint.sh"), "run", "--config", str(config)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        output = ""
        deadline = time.monotonic() + 30
        while "next" not in output and time.monotonic() < deadline and process.poll() is None:
            output += process.stdout.readline()
        assert "test SM-PKI (brainpoolP256r1) written" in output, output
        assert f"udp://127.0.0.1:{wake}" in output, output
        assert (home / "pki" / "pki.json").is_file()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
