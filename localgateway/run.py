"""The local gateway: Envoy Gateway's part played locally, around the real extension server, picker and Envoy.

This stand-in replaces Envoy Gateway only for local runs and tests. From a set of manifests it starts a
simulated model server per Deployment replica (each on its own loopback address, at the pod's port), the
extension server and the picker (both reading the same manifests plus the generated Pods), and a real
Envoy fed over ADS. Translation calls the extension server's hooks over gRPC in EG's order; a change to
any manifest re-runs it. Service names such as `inference-gateway-ext-proc.default.svc.cluster.local`
resolve to the local picker through a small host map.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import structlog
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from api.errors import ValidationError
from api.model import InferencePool
from api.parse import owns, parse_object
from extserver.eg.facts import container_port
from extserver.eg.standin import build_eg_xds_by_gateway
from localgateway.ads import AdsServer, serve_ads
from localgateway.envoy import EnvoyProcess, ads_bootstrap
from localgateway.pods import AddressAllocator, LocalPod, pods_from_deployments
from localgateway.ports import free_port
from localgateway.processes import ManagedProcess
from localgateway.translation import Translator, load_manifests, picker_hosts
from simulator import SimFleet, SimServerConfig

log = structlog.get_logger("local-gateway")


@dataclass
class LocalGatewayOptions:
    manifests: Sequence[Path]
    listen_host: str = "127.0.0.1"
    listener_ports: dict[int, int] = field(default_factory=dict)  # Gateway port -> local port (default: same)
    ip_prefix: str = "127.0.0."
    time_scale: float = 0.02
    default_max_tokens: int = 16
    max_num_seqs: int | None = None
    work_dir: Path | None = None
    watch: bool = True
    log_level: str = "info"
    # Adjusts each pod's simulator (e.g. benchmarks set KV budgets or slow one Deployment down).
    sim_config: Callable[[LocalPod, SimServerConfig], SimServerConfig] | None = None


class LocalGateway:
    """Everything of a local run; `async with LocalGateway(options) as gw:` then send requests to gw.url()."""

    def __init__(self, options: LocalGatewayOptions) -> None:
        self.options = options
        self.work_dir = options.work_dir or Path(tempfile.mkdtemp(prefix="local-gateway-"))
        self.log_dir = self.work_dir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.pods_file = self.work_dir / "pods.yaml"
        self.pods: list[LocalPod] = []
        self.fleet: SimFleet | None = None
        self.ads = AdsServer()
        self.envoy: EnvoyProcess | None = None
        self.extserver: ManagedProcess | None = None
        self.picker: ManagedProcess | None = None
        self.ports: dict[str, int] = {}
        self.gateway_ports: dict[int, tuple[str, int]] = {}
        self._grpc_server: grpc.aio.Server | None = None
        self._translator: Translator | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._translate_lock = asyncio.Lock()

    # lifecycle -----------------------------------------------------------------------------------

    async def __aenter__(self) -> LocalGateway:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        objects = load_manifests(self.options.manifests)
        self._make_pods(objects)
        await self._start_fleet()
        self.ports = {
            name: free_port() for name in ("extserver", "picker", "picker_health", "picker_metrics", "ads")
        }
        self._start_extserver()
        self.start_picker()
        await self._start_ads()
        self.gateway_ports = self._listener_ports(objects)
        self._translator = Translator(
            self.manifest_paths,
            f"127.0.0.1:{self.ports['extserver']}",
            self.ads,
            self._picker_hosts(objects),
            self.gateway_ports,
        )
        version = await asyncio.wait_for(self._translator.translate(), timeout=60)
        self.envoy = EnvoyProcess(ads_bootstrap(self.ports["ads"]))
        await asyncio.to_thread(self.envoy.start)
        await self.ads.wait_acked(version, timeout=30)
        await self.wait_ready()
        if self.options.watch:
            self._watch_task = asyncio.create_task(self._watch())
            await asyncio.sleep(0)  # the watcher takes its first signature before start() returns

    async def stop(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watch_task
        if self.envoy is not None:
            await asyncio.to_thread(self.envoy.stop)
        for process in (self.picker, self.extserver):
            if process is not None:
                await asyncio.to_thread(process.stop)
        if self._translator is not None:
            await self._translator.close()
        if self._grpc_server is not None:
            await self._grpc_server.stop(grace=0)
        if self.fleet is not None:
            await self.fleet.stop()

    # parts ---------------------------------------------------------------------------------------

    @property
    def manifest_paths(self) -> list[Path]:
        return [*self.options.manifests, self.pods_file]

    def _manifest_args(self) -> list[str]:
        """`--manifests PATH` for each manifest path, as the extension server and the picker take them."""
        return [arg for path in self.manifest_paths for arg in ("--manifests", str(path))]

    def _make_pods(self, objects: Sequence[dict[str, object]]) -> None:
        self.pods = pods_from_deployments(objects, AddressAllocator(self.options.ip_prefix))
        self.pods_file.write_text(yaml.safe_dump_all([pod.manifest() for pod in self.pods]))

    async def _start_fleet(self) -> None:
        defaults = [
            SimServerConfig(
                host=pod.ip,
                port=pod.port,
                served_model_name=pod.served_model_name,
                lora_modules={name: f"/adapters/{name}" for name in pod.lora_adapters},
                max_loras=max(1, pod.max_loras),
                max_num_seqs=self.options.max_num_seqs or pod.max_num_seqs,
                time_scale=self.options.time_scale,
                default_max_tokens=self.options.default_max_tokens,
                name=pod.name,
                degrade=pod.degradations(),
            )
            for pod in self.pods
        ]
        adjust = self.options.sim_config
        configs = [
            adjust(pod, config) if adjust else config for pod, config in zip(self.pods, defaults, strict=True)
        ]
        self.fleet = SimFleet(configs)
        await self.fleet.start()

    def _python(self, name: str, *args: str) -> ManagedProcess:
        return ManagedProcess(name, [sys.executable, "-m", *args], self.log_dir / f"{name}.log")

    def _start_extserver(self) -> None:
        manifests = self._manifest_args()
        self.extserver = self._python(
            "extserver",
            "extserver",
            "--log-level",
            self.options.log_level,
            "serve",
            *manifests,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.ports["extserver"]),
        )
        self.extserver.start()

    def start_picker(self) -> None:
        """Start (or restart) the picker; FailOpen/FailClose tests stop it with stop_picker()."""
        manifests = self._manifest_args()
        self.picker = self._python(
            "picker",
            "picker",
            "serve",
            *manifests,
            "--host",
            "127.0.0.1",
            "--grpc-port",
            str(self.ports["picker"]),
            "--health-port",
            str(self.ports["picker_health"]),
            "--metrics-port",
            str(self.ports["picker_metrics"]),
            "--log-format",
            "console",
            "--log-level",
            self.options.log_level,
        )
        self.picker.start()

    def stop_picker(self) -> None:
        if self.picker is not None:
            self.picker.stop()

    async def wait_picker_ready(self, timeout: float = 60.0) -> None:
        await self._wait_health(f"127.0.0.1:{self.ports['picker_health']}", "readiness", timeout, self.picker)

    async def _start_ads(self) -> None:
        self._grpc_server = await serve_ads(self.ads, self.ports["ads"])

    def _pools(self, objects: Sequence[dict[str, object]]) -> list[InferencePool]:
        pools = []
        for obj in objects:
            if owns(obj) and obj.get("kind") == "InferencePool":
                with contextlib.suppress(ValidationError):
                    parsed = parse_object(obj)
                    assert isinstance(parsed, InferencePool)
                    pools.append(parsed)
        return pools

    def _picker_hosts(self, objects: Sequence[dict[str, object]]) -> dict[str, tuple[str, int]]:
        """Every pool's picker Service resolves to the one local picker."""
        return picker_hosts(self._pools(objects), ("127.0.0.1", self.ports["picker"]))

    def _listener_ports(self, objects: Sequence[dict[str, object]]) -> dict[int, tuple[str, int]]:
        mapping: dict[int, tuple[str, int]] = {}
        for xds in build_eg_xds_by_gateway(objects).values():
            for listener in xds.listeners:
                envoy_port = listener.address.socket_address.port_value
                gateway_port = next(
                    (p for p in self.options.listener_ports if container_port(p) == envoy_port), envoy_port
                )
                local = self.options.listener_ports.get(gateway_port, gateway_port)
                mapping[envoy_port] = (self.options.listen_host, local)
        return mapping

    async def _wait_health(
        self, address: str, service: str, timeout: float, process: ManagedProcess | None
    ) -> None:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            deadline = asyncio.get_running_loop().time() + timeout
            while True:
                if process is not None:
                    process.check_alive()
                with contextlib.suppress(grpc.aio.AioRpcError):
                    answer = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
                    if answer.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(f"{address} {service!r} not serving after {timeout}s")
                await asyncio.sleep(0.1)

    async def wait_ready(self, timeout: float = 60.0) -> None:
        await self.wait_picker_ready(timeout)
        await self.wait_listening(timeout)
        await self.wait_endpoints()

    async def wait_endpoints(self, timeout: float = 15.0) -> None:
        """Until each inference target cluster has hosts from the picker's EDS (or `timeout` passes).

        Envoy warms an EDS cluster for at most its initial_fetch_timeout and then serves it empty: on a
        loaded machine the first requests would get "no healthy upstream". A target no pod serves stays
        empty for good, so running out of time here is not an error.
        """
        assert self.envoy is not None
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            text = await asyncio.to_thread(self.envoy.admin_get, "/clusters?format=json")
            statuses = json.loads(text).get("cluster_statuses", [])
            targets = [c for c in statuses if c["name"].startswith("inference/")]
            targets = [c for c in targets if not c["name"].endswith("/picker")]
            if targets and all(c.get("host_statuses") for c in targets):
                return
            await asyncio.sleep(0.1)

    async def wait_listening(self, timeout: float = 60.0) -> None:
        """Until Envoy accepts connections on every Gateway listener (it warms them after the ACK)."""
        deadline = asyncio.get_running_loop().time() + timeout
        for host, port in self.gateway_ports.values():
            while True:
                try:
                    _, writer = await asyncio.open_connection(host, port)
                    writer.close()
                    break
                except OSError:
                    if (
                        self.envoy is not None
                        and self.envoy.process
                        and self.envoy.process.poll() is not None
                    ):
                        raise RuntimeError(f"envoy exited:\n{self.envoy.log_tail()}") from None
                    if asyncio.get_running_loop().time() > deadline:
                        raise TimeoutError(f"envoy not listening on {host}:{port}") from None
                    await asyncio.sleep(0.05)

    # translation ---------------------------------------------------------------------------------

    async def translate(self) -> int:
        """Re-run translation now (as EG does on a watched object's change); returns the ADS version."""
        assert self._translator is not None
        async with self._translate_lock:
            return await self._translator.translate()

    def _manifest_signature(self) -> tuple[tuple[str, int, int], ...]:
        files = []
        for path in self.options.manifests:
            candidates = path.rglob("*") if path.is_dir() else [path]
            for file in candidates:
                if file.suffix in (".yaml", ".yml"):
                    with contextlib.suppress(OSError):
                        stat = file.stat()
                        files.append((str(file), stat.st_mtime_ns, stat.st_size))
        return tuple(sorted(files))

    async def _watch(self, interval: float = 0.1) -> None:
        """Re-translate when a manifest changes, as EG does when a watched object's generation changes.

        Polling stat() is immune to editors that replace files and to watcher start-up races.
        """
        seen = self._manifest_signature()
        while True:
            await asyncio.sleep(interval)
            current = self._manifest_signature()
            if current == seen:
                continue
            seen = current
            try:
                version = await self.translate()
                log.info("retranslated", version=version)
            except Exception as exc:  # keep the last good config, as EG does with failOpen false
                log.warning("translation failed", error=str(exc))

    # addresses -----------------------------------------------------------------------------------

    def url(self, gateway_port: int | None = None) -> str:
        if gateway_port is None:
            host, port = next(iter(self.gateway_ports.values()))
        else:
            host, port = self.gateway_ports[container_port(gateway_port)]
        return f"http://{host}:{port}"

    @property
    def admin_url(self) -> str:
        assert self.envoy is not None
        return self.envoy.admin_url

    @property
    def picker_metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['picker_metrics']}/metrics"
