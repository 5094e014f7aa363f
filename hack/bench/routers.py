"""The routers a benchmark compares, each started in front of the same simulated fleet.

- Envoy `round_robin` / `least_request` / `random`: a static Envoy with one STATIC cluster per
  Deployment (what a Kubernetes Service per Deployment gives); the client picks the Service with the
  `x-bench-service` header (for the canary the client also makes the 50/50 split itself).
- the picker: the local gateway (extension server + picker + Envoy over ADS) from the workload's manifests.
- `vllm-router` / `sglang-router` (PyPI, cache-aware policy) when installed into ROUTERS_VENV; single
  Service workloads only, since they know no InferenceModel split.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from hack.bench.workloads import SERVICE_HEADER
from localgateway.envoy import EnvoyProcess
from localgateway.ports import free_port

ROUTERS_VENV = Path(os.environ.get("BENCH_ROUTERS_VENV", str(Path.home() / ".cache" / "bench-routers-venv")))
ENVOY_POLICIES = {"round_robin": "ROUND_ROBIN", "least_request": "LEAST_REQUEST", "random": "RANDOM"}


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process from /proc (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


class Router(Protocol):
    """A started router: where clients send requests and which processes do its work."""

    name: str
    direct: bool  # True: clients send target models and the Service header themselves

    @property
    def url(self) -> str: ...

    def pids(self) -> list[int]: ...

    async def stop(self) -> None: ...


# Envoy baselines -----------------------------------------------------------------------------------


def _cluster(name: str, policy: str, addresses: Sequence[str]) -> dict[str, Any]:
    endpoints = []
    for address in addresses:
        host, port = address.rsplit(":", 1)
        endpoints.append(
            {"endpoint": {"address": {"socket_address": {"address": host, "port_value": int(port)}}}}
        )
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "lb_policy": policy,
        # Envoy's default circuit breakers (1024) would shed load before the fleet does.
        "circuit_breakers": {
            "thresholds": [
                {"max_connections": 100000, "max_pending_requests": 100000, "max_requests": 100000}
            ]
        },
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": endpoints}]},
    }


def envoy_baseline_bootstrap(
    policy: str, port: int, service_addresses: Mapping[str, Sequence[str]]
) -> dict[str, Any]:
    """Static Envoy: route on the Service header to that Service's cluster, default to all pods."""
    lb = ENVOY_POLICIES[policy]
    every = [a for addresses in service_addresses.values() for a in addresses]
    clusters = [_cluster(f"svc-{svc}", lb, addrs) for svc, addrs in sorted(service_addresses.items())]
    clusters.append(_cluster("svc-all", lb, every))
    routes: list[dict[str, Any]] = [
        {
            "match": {"prefix": "/", "headers": [{"name": SERVICE_HEADER, "string_match": {"exact": svc}}]},
            "route": {"cluster": f"svc-{svc}", "timeout": "0s"},
        }
        for svc in sorted(service_addresses)
    ]
    routes.append({"match": {"prefix": "/"}, "route": {"cluster": "svc-all", "timeout": "0s"}})
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
        ".HttpConnectionManager",
        "stat_prefix": "bench",
        "route_config": {
            "name": "bench",
            "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}],
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    return {
        "node": {"id": f"bench-{policy}", "cluster": "bench"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "bench",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                    "filter_chains": [
                        {
                            "filters": [
                                {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                            ]
                        }
                    ],
                }
            ],
            "clusters": clusters,
        },
        "layered_runtime": {
            "layers": [
                {"name": "static", "static_layer": {"overload": {"global_downstream_max_connections": 50000}}}
            ]
        },
    }


@dataclass
class EnvoyRouter:
    name: str
    envoy: EnvoyProcess
    port: int
    direct: bool = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        return [self.envoy.process.pid] if self.envoy.process is not None else []

    async def stop(self) -> None:
        await asyncio.to_thread(self.envoy.stop)


async def start_envoy_router(policy: str, service_addresses: Mapping[str, Sequence[str]]) -> EnvoyRouter:
    port = free_port()
    envoy = EnvoyProcess(envoy_baseline_bootstrap(policy, port, service_addresses), concurrency=2)
    await asyncio.to_thread(envoy.start)
    await wait_http(f"http://127.0.0.1:{port}/", timeout=20, accept_any_status=True)
    return EnvoyRouter(policy, envoy, port)


# external routers (vllm-router, sglang-router) -----------------------------------------------------

EXTERNAL_ROUTERS = {
    "vllm-router": ["vllm-router", "--policy", "cache_aware", "--log-level", "warning"],
    "sglang-router": ["sglang-router", "launch", "--policy", "cache_aware", "--log-level", "warn"],
}


def external_router_available(name: str) -> str | None:
    """None when the router's executable is installed, else why not."""
    binary = ROUTERS_VENV / "bin" / EXTERNAL_ROUTERS[name][0]
    if not binary.exists():
        return f"{binary} not installed (pip install {name} into {ROUTERS_VENV})"
    return None


@dataclass
class ExternalRouter:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    direct: bool = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        return [self.process.pid]

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                await asyncio.to_thread(self.process.wait, 10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                await asyncio.to_thread(self.process.wait)


async def start_external_router(
    name: str, worker_addresses: Sequence[str], timeout: float = 60
) -> ExternalRouter:
    why = external_router_available(name)
    if why is not None:
        raise RuntimeError(why)
    port = free_port()
    exe, *args = EXTERNAL_ROUTERS[name]
    cmd = [
        str(ROUTERS_VENV / "bin" / exe), *args, "--host", "127.0.0.1", "--port", str(port),
        # Each gets its own metrics port (their defaults collide with each other and with other runs).
        "--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port()),
        "--worker-urls", *(f"http://{a}" for a in worker_addresses),
    ]  # fmt: skip
    log_path = Path(tempfile.mkdtemp(prefix=f"{name}-")) / "router.log"
    with log_path.open("wb") as log_file:
        process = await asyncio.to_thread(
            subprocess.Popen, cmd, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    router = ExternalRouter(name, process, port, log_path)
    try:
        await wait_http(f"{router.url}/health", timeout=timeout, process=process)
    except BaseException:
        await router.stop()
        tail = router.log_tail(3).strip().splitlines()
        raise RuntimeError(f"{name} did not become ready: {tail[-1] if tail else 'no output'}") from None
    return router


# the picker through the local gateway --------------------------------------------------------------


@dataclass
class PickerRouter:
    """The local gateway (it owns the simulated fleet; baselines reuse `gateway.fleet`)."""

    gateway: Any  # localgateway.run.LocalGateway
    name: str = "picker"
    direct: bool = False

    @property
    def url(self) -> str:
        return str(self.gateway.url())

    def pids(self) -> list[int]:
        pids = []
        for part in (self.gateway.envoy, self.gateway.picker):
            process = getattr(part, "process", None) if part is not None else None
            if process is not None:
                pids.append(int(process.pid))
        return pids

    async def restart_picker(self) -> None:
        """A fresh picker (empty prefix index, no stale state from the previous run)."""
        await asyncio.to_thread(self.gateway.stop_picker)
        self.gateway.start_picker()
        await self.gateway.wait_picker_ready()

    async def stop(self) -> None:  # the gateway is stopped with the fleet
        return None


# helpers -------------------------------------------------------------------------------------------


async def wait_http(
    url: str,
    timeout: float,
    *,
    accept_any_status: bool = False,
    process: subprocess.Popen[bytes] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode}")
        try:
            await asyncio.to_thread(_get, url)
            return
        except urllib.error.HTTPError:
            if accept_any_status:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} not answering after {timeout}s")
        await asyncio.sleep(0.2)


def _get(url: str) -> None:
    with urllib.request.urlopen(url, timeout=2) as response:
        response.read()


def envoy_available() -> bool:
    from localgateway.envoy import envoy_binary

    try:
        return bool(shutil.which(envoy_binary()) or Path(envoy_binary()).exists())
    except RuntimeError:
        return False
