"""Free TCP ports for local runs, benchmarks and tests (asked from the OS, never fixed numbers)."""

from __future__ import annotations

import socket
from collections.abc import Sequence


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port the OS reports free on `host` (bound and released at once)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def common_free_port(hosts: Sequence[str], attempts: int = 100) -> int:
    """A TCP port free on every host at once (a pool's pods share one target port on distinct addresses)."""
    for _ in range(attempts):
        probes: list[socket.socket] = []
        try:
            first = socket.socket()
            probes.append(first)
            first.bind((hosts[0], 0))
            port = int(first.getsockname()[1])
            for host in hosts[1:]:
                probe = socket.socket()
                probes.append(probe)
                probe.bind((host, port))
            return port
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
    raise OSError(f"no common free port on {len(hosts)} hosts after {attempts} attempts")
