"""The stack's node agent: what a kubelet does for Pods, with local programs in place of containers.

It registers one Node, binds unscheduled Pods to it (there is no scheduler), gives each Pod a network
namespace and an IP on the node's bridge, writes its volumes, starts its containers' programs
(`runners.py`), runs their readiness probes and reports all of it in the Pod's status. A Pod being
deleted has its programs stopped and is then removed, as a kubelet confirms a deletion.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import signal
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from kubernetes.client import ApiClient

from api.sources.kubeapi import (
    MERGE_PATCH,
    KubeApiError,
    iter_json_lines,
    open_request,
    request_json,
    resource_path,
)
from hack.stack import network, probes
from hack.stack.controlplane import APISERVER_PORT, write_kubeconfig
from hack.stack.runners import Plan, Unsupported, expand, localize, localize_files, plan
from hack.stack.volumes import VolumeMaker

log = structlog.get_logger(__name__)

NODE_NAME = "stack-node"
STACK_MARKER = "INFERENCE_GATEWAY_STACK"
REPO_ROOT = Path(__file__).resolve().parents[2]


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Container:
    name: str
    plan: Plan
    argv: tuple[str, ...]
    env: dict[str, str]
    probe: Mapping[str, Any] | None
    ports: Mapping[str, int]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    ready: bool = False

    @property
    def running(self) -> bool:
        return not self.plan.argv or (self.process is not None and self.process.poll() is None)


@dataclass
class LocalPod:
    uid: str
    namespace: str
    name: str
    ip: str
    netns: str
    directory: Path
    containers: list[Container] = field(default_factory=list)
    reported: tuple[bool, ...] = ()
    started_at: str = field(default_factory=_now)


class Podlet:
    """Runs every Pod of the cluster on one node; `run()` until cancelled, `stop_all()` on the way out."""

    def __init__(self, api: ApiClient, node_netns: str, state: Path, ca: Path) -> None:
        self.api = api
        self.node_netns = node_netns
        self.state = state
        self.ca = ca
        self.addresses = network.AddressPool()
        self.pods: dict[str, LocalPod] = {}
        self.pending: dict[str, str] = {}  # uid -> why it cannot run (reported once)
        self.retry: dict[
            str, dict[str, Any]
        ] = {}  # uid -> a Pod whose start failed (e.g. its Secret is not there yet)
        self.volumes = VolumeMaker(api)
        self.resolv_conf = state / "resolv.conf"
        self._lock = asyncio.Lock()

    # --- the API -------------------------------------------------------------------------------------
    async def _call(self, method: str, path: str, body: Any = None, content_type: str | None = None) -> Any:
        return await asyncio.to_thread(request_json, self.api, method, path, (), body, content_type, 10)

    async def register_node(self) -> None:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": NODE_NAME,
                "labels": {"kubernetes.io/hostname": NODE_NAME, "kubernetes.io/os": "linux"},
            },
        }
        with contextlib.suppress(KubeApiError):
            await self._call("POST", "/api/v1/nodes", node)
        resources = {"cpu": "64", "memory": "256Gi", "pods": "250"}
        status = {
            "status": {
                "capacity": resources,
                "allocatable": resources,
                "addresses": [
                    {"type": "InternalIP", "address": network.NODE_IP},
                    {"type": "Hostname", "address": NODE_NAME},
                ],
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "StackNodeReady",
                        "message": "the stack's podlet runs this node's Pods",
                        "lastHeartbeatTime": _now(),
                        "lastTransitionTime": _now(),
                    }
                ],
            }
        }
        await self._call("PATCH", f"/api/v1/nodes/{NODE_NAME}/status", status, MERGE_PATCH)
        self.resolv_conf.write_text(f"nameserver {network.NODE_IP}\nsearch svc.cluster.local cluster.local\n")

    # --- the watch -----------------------------------------------------------------------------------
    async def run(self) -> None:
        await self.register_node()
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        thread = threading.Thread(target=self._watch, args=(loop, queue, stop), daemon=True)
        thread.start()
        prober = asyncio.create_task(self._probe_loop())
        try:
            while True:
                event = await queue.get()
                try:
                    await self._reconcile(event["type"], event["object"])
                except Exception as err:  # one Pod's trouble must not stop the node
                    meta = event["object"].get("metadata") or {}
                    log.warning(
                        "pod_reconcile_failed",
                        pod=f"{meta.get('namespace')}/{meta.get('name')}",
                        error=str(err),
                    )
        finally:
            stop.set()
            prober.cancel()

    def _watch(
        self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[dict[str, Any]], stop: threading.Event
    ) -> None:
        while not stop.is_set():
            try:
                listing = request_json(self.api, "GET", "/api/v1/pods")
                for item in listing.get("items") or []:
                    loop.call_soon_threadsafe(queue.put_nowait, {"type": "ADDED", "object": item})
                version = listing["metadata"]["resourceVersion"]
                query = [("watch", "true"), ("resourceVersion", version), ("allowWatchBookmarks", "true")]
                response = open_request(self.api, "GET", "/api/v1/pods", query, timeout=(5, 330))
                for event in iter_json_lines(response):
                    if stop.is_set():
                        return
                    if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                        loop.call_soon_threadsafe(queue.put_nowait, event)
            except Exception as err:  # reconnect: a broken watch is normal
                log.info("pod_watch_restart", error=str(err))
                stop.wait(1.0)

    async def _reconcile(self, kind: str, pod: dict[str, Any]) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        uid = meta["uid"]
        async with self._lock:
            if kind == "DELETED":
                await self._stop(uid)
                return
            if meta.get("deletionTimestamp"):
                await self._stop(uid)
                if spec.get("nodeName") == NODE_NAME:
                    await self._confirm_deletion(pod)
                return
            if not spec.get("nodeName"):
                await self._bind(pod)
                return
            if spec["nodeName"] == NODE_NAME and uid not in self.pods and uid not in self.pending:
                try:
                    await self._start(pod)
                    self.retry.pop(uid, None)
                except Exception as err:
                    await self._stop(uid)
                    self.retry[uid] = pod
                    log.info("pod_start_retry", pod=f"{meta['namespace']}/{meta['name']}", error=str(err))

    async def _bind(self, pod: Mapping[str, Any]) -> None:
        meta = pod["metadata"]
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": meta["name"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": NODE_NAME},
        }
        with contextlib.suppress(KubeApiError):  # already bound: the watch brings the update
            await self._call(
                "POST", resource_path("v1", "pods", meta["namespace"], meta["name"], "binding"), binding
            )

    async def _confirm_deletion(self, pod: Mapping[str, Any]) -> None:
        meta = pod["metadata"]
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": meta["uid"]},
        }
        with contextlib.suppress(KubeApiError):
            await self._call("DELETE", resource_path("v1", "pods", meta["namespace"], meta["name"]), body)

    # --- starting and stopping -----------------------------------------------------------------------
    async def _start(self, pod: dict[str, Any]) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        uid = meta["uid"]
        try:
            # In a thread: an image's binary may be built on first use (minutes), and probes go on meanwhile.
            plans = await asyncio.to_thread(lambda: [(c, plan(c)) for c in spec.get("containers") or []])
        except Unsupported as err:
            self.pending[uid] = str(err)
            await self._patch_status(
                pod["metadata"],
                {
                    "phase": "Pending",
                    "conditions": [
                        {"type": "PodScheduled", "status": "True"},
                        {"type": "Ready", "status": "False", "reason": "NoLocalProgram", "message": str(err)},
                    ],
                },
            )
            log.info("pod_unsupported", pod=f"{meta['namespace']}/{meta['name']}", reason=str(err))
            return
        ip = self.addresses.take()
        netns = f"{self.node_netns}-{uid[:8]}"
        directory = self.state / "pods" / f"{meta['namespace']}_{meta['name']}_{uid[:8]}"
        directory.mkdir(parents=True, exist_ok=True)
        local = LocalPod(uid, meta["namespace"], meta["name"], ip, netns, directory)
        self.pods[uid] = local
        await asyncio.to_thread(network.create_pod, self.node_netns, netns, ip)
        volumes = await asyncio.to_thread(self.volumes.make, pod, directory)
        for container, container_plan in plans:
            local.containers.append(self._container(pod, local, container, container_plan, volumes))
        for container in local.containers:
            self._launch(local, container)
        log.info(
            "pod_started",
            pod=f"{local.namespace}/{local.name}",
            ip=ip,
            containers=[c.name for c in local.containers],
        )
        await self._report(local, force=True)

    def _container(
        self,
        pod: Mapping[str, Any],
        local: LocalPod,
        container: Mapping[str, Any],
        container_plan: Plan,
        volumes: Mapping[str, Path],
    ) -> Container:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(local.directory),
            "HOSTNAME": local.name,
            "POD_IP": local.ip,
            STACK_MARKER: self.node_netns,  # `down` finds every program the node started by it
            "PYTHONPATH": str(REPO_ROOT),
            "KUBERNETES_SERVICE_HOST": network.NODE_IP,
            "KUBERNETES_SERVICE_PORT": str(APISERVER_PORT),
        }
        for item in container.get("env") or []:
            if "value" in item:
                env[item["name"]] = expand(str(item["value"]), env)
            elif "fieldRef" in (item.get("valueFrom") or {}):
                env[item["name"]] = _field_value(pod, local, item["valueFrom"]["fieldRef"]["fieldPath"])
        env.update(container_plan.env)
        mounts = {
            str(m["mountPath"]): str(volumes[m["name"]] / m.get("subPath", ""))
            for m in container.get("volumeMounts") or []
            if m.get("name") in volumes
        }
        argv = localize(tuple(expand(w, env) for w in container_plan.argv), mounts)
        for local_dir in set(mounts.values()):
            localize_files(Path(local_dir), mounts)
        if container_plan.in_cluster:
            argv = self._in_cluster(argv, local, mounts)
        if container_plan.kubeconfig_env:
            env["KUBECONFIG"] = str(self._token_kubeconfig(local, mounts))
        ports = {
            str(p["name"]): int(p["containerPort"]) for p in container.get("ports") or [] if p.get("name")
        }
        return Container(
            str(container["name"]),
            container_plan,
            argv,
            env,
            container.get("readinessProbe"),
            ports,
            local.directory / f"{container['name']}.log",
        )

    def _token_kubeconfig(self, local: LocalPod, mounts: Mapping[str, str]) -> Path:
        """The Pod's mounted ServiceAccount token and CA as a kubeconfig (in-cluster reads a fixed path)."""
        account = mounts.get("/var/run/secrets/kubernetes.io/serviceaccount")
        if account is None:
            raise Unsupported("the API server is reachable only with a mounted ServiceAccount token")
        return write_kubeconfig(
            local.directory / "kubeconfig",
            f"https://{network.NODE_IP}:{APISERVER_PORT}",
            Path(account) / "ca.crt",
            {"tokenFile": str(Path(account) / "token")},
        )

    def _in_cluster(
        self, argv: tuple[str, ...], local: LocalPod, mounts: Mapping[str, str]
    ) -> tuple[str, ...]:
        """--in-cluster reads the token at a fixed path: hand the same token over as a kubeconfig."""
        config = self._token_kubeconfig(local, mounts)
        out: list[str] = []
        for word in argv:
            out += ["--kubeconfig", str(config)] if word == "--in-cluster" else [word]
        return tuple(out)

    def _launch(self, local: LocalPod, container: Container) -> None:
        if not container.plan.argv:
            container.ready = True
            return
        wrapper = [
            *network.exec_prefix(local.netns),
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            # Each container has its own /dev/shm (two Envoys share no hot-restart memory) and resolv.conf.
            'mount -t tmpfs -o size=64m shm /dev/shm && mount --bind "$0" /etc/resolv.conf && exec "$@"',
            str(self.resolv_conf),
        ]
        with container.log_path.open("ab") as out:
            container.process = subprocess.Popen(
                [*wrapper, *container.argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=container.env,
                cwd=REPO_ROOT,
                start_new_session=True,
            )

    async def _stop(self, uid: str) -> None:
        self.pending.pop(uid, None)
        self.retry.pop(uid, None)
        local = self.pods.pop(uid, None)
        if local is None:
            return
        await asyncio.to_thread(_terminate, [c.process for c in local.containers if c.process])
        await asyncio.to_thread(network.delete, local.netns)
        self.addresses.release(local.ip)
        log.info("pod_stopped", pod=f"{local.namespace}/{local.name}")

    async def stop_all(self) -> None:
        for uid in list(self.pods):
            await self._stop(uid)

    # --- probes and status ---------------------------------------------------------------------------
    async def _probe_loop(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(0.5)
            ticks += 1
            if ticks % 4 == 0:
                for pod in list(self.retry.values()):
                    await self._reconcile("MODIFIED", pod)
            for local in list(self.pods.values()):
                with contextlib.suppress(Exception):
                    await self._probe(local)

    async def _probe(self, local: LocalPod) -> None:
        for container in local.containers:
            if container.plan.argv and container.process is not None and container.process.poll() is not None:
                container.restarts += 1
                container.ready = False
                log.info("container_restart", pod=f"{local.namespace}/{local.name}", container=container.name)
                self._launch(local, container)
                continue
            if container.plan.argv:
                container.ready = container.running and await probes.check(
                    local.ip, container.probe, container.ports
                )
        await self._report(local)

    async def _report(self, local: LocalPod, force: bool = False) -> None:
        state = tuple(c.ready for c in local.containers)
        if state == local.reported and not force:
            return
        if self.pods.get(local.uid) is not local:
            return
        ready = "True" if all(state) else "False"
        now = _now()
        status = {
            "phase": "Running",
            "hostIP": network.NODE_IP,
            "hostIPs": [{"ip": network.NODE_IP}],
            "podIP": local.ip,
            "podIPs": [{"ip": local.ip}],
            "startTime": local.started_at,
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": local.started_at},
                {"type": "Initialized", "status": "True", "lastTransitionTime": local.started_at},
                {"type": "ContainersReady", "status": ready, "lastTransitionTime": now},
                {"type": "Ready", "status": ready, "lastTransitionTime": now},
            ],
            "containerStatuses": [
                {
                    "name": c.name,
                    "ready": c.ready,
                    "started": c.running,
                    "restartCount": c.restarts,
                    "image": "local",
                    "imageID": "",
                    "state": {"running": {"startedAt": local.started_at}},
                }
                for c in local.containers
            ],
        }
        await self._patch_status({"namespace": local.namespace, "name": local.name}, status)
        local.reported = state

    async def _patch_status(self, meta: Mapping[str, Any], status: Mapping[str, Any]) -> None:
        path = resource_path("v1", "pods", meta["namespace"], meta["name"], "status")
        with contextlib.suppress(KubeApiError):
            await self._call("PATCH", path, {"status": status}, MERGE_PATCH)


def _field_value(pod: Mapping[str, Any], local: LocalPod, path: str) -> str:
    if path == "status.podIP":
        return local.ip
    if path == "status.hostIP":
        return network.NODE_IP
    if path == "spec.nodeName":
        return NODE_NAME
    value: Any = pod
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return "" if value is None else str(value)


def _terminate(processes: list[subprocess.Popen[bytes]], grace: float = 5.0) -> None:
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
