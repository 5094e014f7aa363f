"""Readiness probes as a kubelet runs them: httpGet, grpc (the standard health service), tcpSocket."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

TIMEOUT = 1.0


async def _http(ip: str, port: int, path: str) -> bool:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), TIMEOUT)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {ip}:{port}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), TIMEOUT)
        parts = line.split()
        return len(parts) >= 2 and 200 <= int(parts[1]) < 400
    finally:
        writer.close()


async def _grpc(ip: str, port: int, service: str) -> bool:
    async with grpc.aio.insecure_channel(f"{ip}:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        answer = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT)
        return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


async def _tcp(ip: str, port: int) -> bool:
    _, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), TIMEOUT)
    writer.close()
    return True


def _port(value: Any, ports: Mapping[str, int]) -> int:
    return int(ports[value]) if isinstance(value, str) and not value.isdigit() else int(value)


async def check(ip: str, probe: Mapping[str, Any] | None, ports: Mapping[str, int] | None = None) -> bool:
    """True when the probe passes now; a container without a probe is ready once it runs."""
    if not probe:
        return True
    names = ports or {}
    with contextlib.suppress(Exception):
        if "httpGet" in probe:
            spec = probe["httpGet"]
            return await _http(ip, _port(spec["port"], names), str(spec.get("path") or "/"))
        if "grpc" in probe:
            spec = probe["grpc"]
            return await _grpc(ip, int(spec["port"]), str(spec.get("service") or ""))
        if "tcpSocket" in probe:
            return await _tcp(ip, _port(probe["tcpSocket"]["port"], names))
        return True  # exec probes: nothing to exec into
    return False
