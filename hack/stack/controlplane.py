"""etcd, kube-apiserver and kube-controller-manager in the node namespace, and kubeconfigs to reach them."""

from __future__ import annotations

import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from hack.realparts import binary
from hack.stack import network
from hack.stack.pki import Authority, service_account_key
from localgateway.processes import ManagedProcess

APISERVER_PORT = 6443
SERVICE_CIDR = "10.96.0.0/16"
KUBERNETES_SERVICE_IP = "10.96.0.1"
ISSUER = "https://kubernetes.default.svc.cluster.local"
# What a kubelet-less node needs: Deployments make Pods, Services get EndpointSlices, namespaces get their
# default ServiceAccount and CA ConfigMap, owners' deletions cascade. No node lifecycle: nobody heartbeats.
CONTROLLERS = tuple(
    f"{name}-controller"
    for name in (
        "deployment",
        "replicaset",
        "endpointslice",
        "endpointslice-mirroring",
        "serviceaccount",
        "garbage-collector",
        "namespace",
        "root-ca-certificate-publisher",
        "disruption",
    )
)


@dataclass(frozen=True)
class Credentials:
    ca: Path
    cert: Path
    key: Path


def write_kubeconfig(path: Path, server: str, ca: Path, user: dict[str, str]) -> Path:
    """A one-context kubeconfig; `user` is {client-certificate, client-key} or {token} (file paths inline)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "stack", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": "user", "user": user}],
        "contexts": [{"name": "stack", "context": {"cluster": "stack", "user": "user"}}],
        "current-context": "stack",
    }
    path.write_text(yaml.safe_dump(config))
    return path


class ControlPlane:
    """The API server's processes; `start()` returns once /readyz answers through `host_port`."""

    def __init__(self, state: Path, netns: str) -> None:
        self.state = state
        self.netns = netns
        self.pki = Authority(state / "pki")
        self.processes: list[ManagedProcess] = []
        self.admin = Credentials(self.pki.cert_path, *self._admin_pair())

    def _admin_pair(self) -> tuple[Path, Path]:
        crt, key = self.pki.directory / "admin.crt", self.pki.directory / "admin.key"
        if not crt.is_file():
            self.pki.issue("admin", "stack-admin", organization="system:masters")
        return crt, key

    @property
    def in_node_url(self) -> str:
        return f"https://{network.NODE_IP}:{APISERVER_PORT}"

    def admin_kubeconfig(self, path: Path, server: str) -> Path:
        user = {"client-certificate": str(self.admin.cert), "client-key": str(self.admin.key)}
        return write_kubeconfig(path, server, self.admin.ca, user)

    def _spawn(self, name: str, cmd: list[str]) -> ManagedProcess:
        logs = self.state / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        process = ManagedProcess(name, network.exec_prefix(self.netns) + cmd, logs / f"{name}.log")
        process.start()
        self.processes.append(process)
        return process

    def start(self, host_url: str) -> None:
        serving = self.pki.issue(
            "apiserver",
            "kube-apiserver",
            dns_names=("kubernetes", "kubernetes.default", "kubernetes.default.svc", "localhost"),
            ips=("127.0.0.1", network.NODE_IP, KUBERNETES_SERVICE_IP),
            server=True,
        )
        sa_key, sa_pub = service_account_key(self.pki.directory)
        etcd_dir = self.state / "etcd"
        self._spawn(
            "etcd",
            [
                str(binary("etcd")),
                f"--data-dir={etcd_dir}",
                "--listen-client-urls=http://127.0.0.1:2379",
                "--advertise-client-urls=http://127.0.0.1:2379",
                "--listen-peer-urls=http://127.0.0.1:2380",
                "--initial-advertise-peer-urls=http://127.0.0.1:2380",
                "--initial-cluster=default=http://127.0.0.1:2380",
                "--listen-metrics-urls=http://127.0.0.1:2381",
                "--unsafe-no-fsync",  # a throwaway store: losing it on a crash is fine, fsync is slow here
                "--log-level=warn",
            ],
        )
        self._spawn(
            "kube-apiserver",
            [
                str(binary("kube-apiserver")),
                "--etcd-servers=http://127.0.0.1:2379",
                f"--bind-address={network.NODE_IP}",
                f"--advertise-address={network.NODE_IP}",
                f"--secure-port={APISERVER_PORT}",
                f"--tls-cert-file={serving[0]}",
                f"--tls-private-key-file={serving[1]}",
                f"--client-ca-file={self.pki.cert_path}",
                "--authorization-mode=RBAC",
                f"--service-account-issuer={ISSUER}",
                f"--service-account-key-file={sa_pub}",
                f"--service-account-signing-key-file={sa_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--cert-dir={self.state / 'apiserver-certs'}",
                "--allow-privileged=true",
                "--profiling=false",
                "--v=1",
            ],
        )
        self.wait_ready(host_url)
        kcm_config = self.admin_kubeconfig(self.state / "kubeconfig-node", self.in_node_url)
        self._spawn(
            "kube-controller-manager",
            [
                str(binary("kube-controller-manager")),
                f"--kubeconfig={kcm_config}",
                f"--controllers={','.join(CONTROLLERS)}",
                f"--root-ca-file={self.pki.cert_path}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--leader-elect=false",
                "--secure-port=0",
                "--concurrent-deployment-syncs=5",
                "--v=1",
            ],
        )

    def wait_ready(self, host_url: str, timeout: float = 90.0) -> None:
        context = ssl.create_default_context(cafile=str(self.admin.ca))
        context.load_cert_chain(str(self.admin.cert), str(self.admin.key))
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for process in self.processes:
                process.check_alive()
            try:
                with urllib.request.urlopen(f"{host_url}/readyz", context=context, timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError) as err:
                last = str(err)
            time.sleep(0.3)
        raise RuntimeError(f"kube-apiserver not ready after {timeout:.0f} s: {last}")

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()
