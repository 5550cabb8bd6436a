"""Fixtures for the TLS integration tests: the real `openssl` binary as an outside peer, and real
gateways pointed at it, all on 127.0.0.1 with free ports.

Every subprocess and gateway a test starts is stopped in the fixture's teardown, whatever the test
did. `openssl s_server` runs with `-naccept 1`: it exits after its one connection, which flushes
its output, so a test reads the complete transcript after the connection ended.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import sqlite3
from pathlib import Path

import pytest

from smgw_emu.app.config import load_config
from smgw_emu.app.gateway import Gateway
from smgw_emu.pki import PkiDir
from tests.ports import free_port

HOST = "127.0.0.1"

#: Tables of the state store that hold the gateway's persistent state (not its logs, outbox
#: or wake-up nonces).
PERSISTENT_TABLES = ("ldevs", "objects", "key_banks", "kv", "firmware", "meter_values")


pick_free_port = free_port


class OpenSslProcess:
    """One `openssl s_server` / `s_client` subprocess; stdout and stderr are collected together."""

    def __init__(self, args: list[str]) -> None:
        self.args = args
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []
        self._reader: asyncio.Task | None = None
        self._changed = asyncio.Event()

    async def start(self, ready: str | None) -> "OpenSslProcess":
        self.proc = await asyncio.create_subprocess_exec(
            "openssl", *self.args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        self._reader = asyncio.create_task(self._read())
        if ready:
            await self.wait_output(ready)
        return self

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.append(line.decode("utf-8", "replace"))
            self._changed.set()
        self._changed.set()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    @property
    def exited(self) -> bool:
        return self._reader is not None and self._reader.done()

    async def wait_output(self, text: str, timeout: float = 10.0) -> None:
        async def wait() -> None:
            while text not in self.output:
                if self.exited:
                    raise AssertionError(f"openssl exited before printing {text!r}:\n{self.output}")
                self._changed.clear()
                await self._changed.wait()
        try:
            await asyncio.wait_for(wait(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"openssl did not print {text!r} within {timeout}s:\n{self.output}") from None

    async def send(self, data: bytes) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(data)
        await self.proc.stdin.drain()

    async def close_stdin(self) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        if not self.proc.stdin.is_closing():
            self.proc.stdin.close()

    async def wait_exit(self, timeout: float = 10.0) -> str:
        """Wait until the process ended (all output read); returns the whole output."""
        assert self.proc is not None and self._reader is not None
        try:
            await asyncio.wait_for(asyncio.shield(self._reader), timeout)
            await asyncio.wait_for(self.proc.wait(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"openssl {self.args[0]} did not exit within {timeout}s:\n{self.output}") from None
        return self.output

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
            await self.proc.wait()
        if self._reader is not None:
            try:
                await asyncio.wait_for(self._reader, 5)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                self._reader.cancel()


@pytest.fixture(name="free_port")
def free_port_fixture():
    return free_port


@pytest.fixture
async def openssl_peer():
    """Factory: `await openssl_peer("s_server", ..., ready="ACCEPT")`. All are killed at teardown."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl binary")
    started: list[OpenSslProcess] = []

    async def start(*args: str, ready: str | None = None) -> OpenSslProcess:
        process = OpenSslProcess(list(args))
        started.append(process)
        return await process.start(ready)

    try:
        yield start
    finally:
        for process in started:
            await process.kill()


def s_server_args(pki: PkiDir, port: int, *extra: str, entity: str = "gwa", version: str = "-tls1_2") -> list[str]:
    """`openssl s_server` as a GWA of `pki`: mutual TLS (1.2 unless `version` says otherwise),
    one connection, then exit."""
    return [
        "s_server", "-accept", f"{HOST}:{port}", "-naccept", "1",
        "-cert", str(pki.cert_path(f"{entity}-tls")), "-key", str(pki.key_path(f"{entity}-tls")),
        "-cert_chain", str(pki.root / "sub-ca-emt.crt"), "-CAfile", str(pki.ca_bundle),
        "-Verify", "3", "-verify_return_error", version, *extra,
    ]


def wan_config(pki: PkiDir, state_dir: Path, *, management_port: int, service_port: int, **sections):
    """The embedded default configuration pointed at `pki`, a state directory and a GWA on
    127.0.0.1 (MANAGEMENT on `management_port`, ADMIN-SERVICE and INFO-REPORT on `service_port`)."""
    base = load_config()
    cfg = dataclasses.replace(
        base,
        gateway=dataclasses.replace(base.gateway, state_dir=state_dir, pki_dir=pki.root),
        wakeup=dataclasses.replace(base.wakeup, host=HOST, port=0),
        gwa=dataclasses.replace(
            base.gwa, host=HOST, management_port=management_port,
            admin_service_url=f"https://{HOST}:{service_port}/admin-service/",
            info_report_url=f"https://{HOST}:{service_port}/info-report",
        ),
        channels=dataclasses.replace(base.channels, connect_timeout_s=5, retry_initial_s=0.05, retry_max_s=0.5),
    )
    for name, changes in sections.items():
        cfg = dataclasses.replace(cfg, **{name: dataclasses.replace(getattr(cfg, name), **changes)})
    return cfg


@pytest.fixture
async def wan_gateway(tmp_path):
    """Factory: `await wan_gateway(pki, management_port=..., service_port=...)` starts a real
    gateway with its own state directory. All are stopped at teardown."""
    gateways: list[Gateway] = []

    async def start(pki: PkiDir, *, management_port: int, service_port: int, **sections) -> Gateway:
        state_dir = tmp_path / f"state-{len(gateways)}"
        gateway = Gateway(wan_config(pki, state_dir, management_port=management_port, service_port=service_port, **sections))
        gateways.append(gateway)
        await gateway.start()
        return gateway

    try:
        yield start
    finally:
        for gateway in gateways:
            await gateway.stop()


def persistent_state(gateway: Gateway) -> dict[str, list[tuple]]:
    """Every row of the persistent-state tables, read through a connection of our own."""
    assert gateway.store is not None
    conn = sqlite3.connect(f"file:{gateway.store.path}?mode=ro", uri=True)
    try:
        return {table: conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall() for table in PERSISTENT_TABLES}
    finally:
        conn.close()


def write_identity(directory: Path, name: str, cert, key, chain: list) -> tuple[Path, Path]:
    """Write a certificate (+ its chain) and key as PEM files; returns (chain file, key file)."""
    from cryptography.hazmat.primitives import serialization

    def pem(c) -> bytes:
        return c.public_bytes(serialization.Encoding.PEM)

    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.crt").write_bytes(pem(cert))
    (directory / f"{name}.chain.pem").write_bytes(pem(cert) + b"".join(pem(c) for c in chain))
    (directory / f"{name}.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return directory / f"{name}.chain.pem", directory / f"{name}.key"


def rsa_gwa_identity(pki: PkiDir, directory: Path) -> tuple[Path, Path]:
    """An RSA-2048 TLS certificate for the GWA's name, issued by the SM-PKI's EMT sub-CA: what a
    peer that can only do RSA suites presents."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    from smgw_emu.pki import issue_certificate

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = pki.cert("sub-ca-emt")
    cert = issue_certificate(
        subject_cn=pki.identities.gwa, org_unit="gwa-tls", public_key=key.public_key(),  # type: ignore[arg-type]
        issuer_cert=ca, issuer_key=pki.key("sub-ca-emt"), san_ip=(HOST,),
    )
    return write_identity(directory, "gwa-tls-rsa", cert, key, [ca])
