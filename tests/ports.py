"""Free loopback ports for tests that need a port number before the server binds it.

`bind(0)` hands out a port from the kernel's ephemeral range, the same range every outgoing
connection takes its source port from; between closing the probe and the server's bind, a
connection of this suite (or of another process) may take it ("address already in use"). So the
ports come from below that range, at random, and are probed for TCP and UDP both."""
from __future__ import annotations

import random
import socket
from pathlib import Path

HOST = "127.0.0.1"
_LOWEST = 10_000


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def _is_free(port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                return False
    return True


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A loopback port no one listens on, for a TCP server or a UDP socket (`kind` is accepted for
    the callers that name it; the port is free for both)."""
    del kind
    high = max(_LOWEST + 1_000, _ephemeral_start() - 1)
    for _ in range(200):
        port = random.randint(_LOWEST, high)
        if _is_free(port):
            return port
    raise RuntimeError(f"no free loopback port in {_LOWEST}..{high}")
