"""The stack's supervisor: starts every part in order, forwards the API server and Gateways to loopback.

It runs inside the node namespace (so the control plane, EG and probes reach Pod IPs directly) and holds
the machine's network namespace open by a file descriptor, where its forwards listen on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import structlog
import yaml
from kubernetes import config as kube_config
from kubernetes.client import ApiClient

from api.sources.kubeapi import KubeApiError, request_json, resource_path
from hack.realparts import binary
from hack.stack import dns, network
from hack.stack.controlplane import APISERVER_PORT, ControlPlane
from hack.stack.envoygateway import NAMESPACE, EnvoyGateway, eg_config, eg_service_objects
from hack.stack.loadbalancer import LoadBalancer
from hack.stack.podlet import Podlet

log = structlog.get_logger(__name__)

REPO = Path(__file__).resolve().parents[2]
PROJECT_MANIFESTS = ("config/crd", "config/envoy-gateway", "config/extserver", "config/picker")
READY_DEPLOYMENTS = (
    (NAMESPACE, "inference-extserver"),
    ("default", "inference-gateway-ext-proc"),
)


class Stack:
    def __init__(self, state: Path, netns: str, host_netns: str, options: dict[str, Any]) -> None:
        self.state = state
        self.netns = netns
        self.host_netns = host_netns
        self.options = options
        self.control = ControlPlane(state, netns)
        self.forwards: dict[str, network.Forward] = {}
        self.eg: EnvoyGateway | None = None
        self.podlet: Podlet | None = None
        self.tasks: list[asyncio.Task[Any]] = []
        self.balancer: LoadBalancer | None = None

    # --- helpers -------------------------------------------------------------------------------------
    def kubectl(self, *args: str) -> None:
        config = self.state / "kubeconfig-node"
        cmd = [str(binary("kubectl")), f"--kubeconfig={config}", *args]
        done = subprocess.run(cmd, capture_output=True, text=True)
        with (self.state / "logs" / "kubectl.log").open("a") as out:
            out.write(f"$ {' '.join(cmd)}\n{done.stdout}{done.stderr}")
        if done.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()[-2000:]}")

    def api(self) -> ApiClient:
        return kube_config.new_client_from_config(str(self.state / "kubeconfig-node"))

    # --- start ---------------------------------------------------------------------------------------
    async def start(self) -> None:
        apiserver = network.Forward(self.host_netns, (network.NODE_IP, APISERVER_PORT))
        port = await apiserver.start()
        self.forwards["apiserver"] = apiserver
        self.control.admin_kubeconfig(self.state / "kubeconfig", f"https://127.0.0.1:{port}")
        await asyncio.to_thread(self.control.start, self.control.in_node_url)
        api = self.api()
        resolver = dns.ClusterResolver(api, {f"kubernetes.default.svc.{dns.DOMAIN}": network.NODE_IP})
        await dns.serve(resolver, network.NODE_IP)
        self.podlet = Podlet(self.api(), self.netns, self.state, self.control.pki.cert_path)
        self.tasks.append(asyncio.create_task(self.podlet.run()))
        await asyncio.to_thread(self._apply_base, api)
        self.eg = EnvoyGateway(self.state, self.state / "kubeconfig-node", self.control.pki.directory)
        await asyncio.to_thread(self.eg.certgen, {})
        config = eg_config(self.options.get("runtime_flags", ()), self.options.get("eg_extra"))
        await asyncio.to_thread(self._start_eg, api, config)
        await self._wait_deployments(api)
        self.balancer = LoadBalancer(api, self.host_netns, self.state)
        self.tasks.append(asyncio.create_task(self.balancer.run()))
        self.tasks.append(asyncio.create_task(self._keep_eg_running(api, config)))

    def _start_eg(self, api: ApiClient, config: dict[str, Any]) -> None:
        assert self.eg is not None
        process = self.eg.start(api, config)
        (self.state / "envoy-gateway.pid").write_text(str(process.pid))

    async def _keep_eg_running(self, api: ApiClient, config: dict[str, Any]) -> None:
        """As EG's Deployment would: a stopped or crashed Envoy Gateway is started again."""
        while True:
            await asyncio.sleep(0.5)
            if self.eg is not None and self.eg.process is not None and not self.eg.process.running:
                log.info(
                    "envoy_gateway_restart",
                    exit_code=self.eg.process.process and self.eg.process.process.returncode,
                )
                await asyncio.sleep(1.0)
                await asyncio.to_thread(self._start_eg, api, config)

    def _apply_base(self, api: ApiClient) -> None:
        namespace = self.state / "eg-namespace.yaml"
        namespace.write_text(
            yaml.safe_dump({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        )
        self.kubectl("apply", "-f", str(namespace))
        for crd in _eg_crds():
            self.kubectl("apply", "--server-side", "-f", str(crd))
        self.kubectl("apply", "-f", str(REPO / "config/crd"))
        self.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        for obj in eg_service_objects():
            path = self.state / f"eg-{obj['kind'].lower()}.yaml"
            path.write_text(yaml.safe_dump(obj))
            self.kubectl("apply", "-f", str(path))
        for directory in PROJECT_MANIFESTS[1:]:
            self.kubectl("apply", "-f", str(REPO / directory))

    async def _wait_deployments(self, api: ApiClient, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        for namespace, name in READY_DEPLOYMENTS:
            while True:
                if self.eg is not None and self.eg.process is not None:
                    self.eg.process.check_alive()
                with contextlib.suppress(KubeApiError):
                    obj = await asyncio.to_thread(
                        request_json, api, "GET", resource_path("apps/v1", "deployments", namespace, name)
                    )
                    status = obj.get("status") or {}
                    if status.get("readyReplicas", 0) >= (obj["spec"].get("replicas") or 1):
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"deployment {namespace}/{name} not ready after {timeout:.0f} s")
                await asyncio.sleep(0.5)

    # --- stop ----------------------------------------------------------------------------------------
    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        if self.eg is not None:
            await asyncio.to_thread(self.eg.stop)
        if self.podlet is not None:
            await self.podlet.stop_all()
        await asyncio.to_thread(self.control.stop)
        if self.balancer is not None:
            await self.balancer.stop()
        for forward in self.forwards.values():
            await forward.stop()


def _eg_crds() -> list[Path]:
    from hack.realparts import eg_crd_files

    return eg_crd_files()


async def supervise(state: Path, netns: str, host_netns: str, options: dict[str, Any]) -> None:
    stack = Stack(state, netns, host_netns, options)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await stack.start()
        (state / "ready").write_text(json.dumps({"kubeconfig": str(state / "kubeconfig")}))
        log.info("stack_ready")
        await stopping.wait()
    except Exception as err:
        log.exception("stack_failed")
        (state / "failed").write_text(f"{type(err).__name__}: {err}\n")
    finally:
        await stack.stop()
        log.info("stack_stopped")
