"""Envoy Gateway out of cluster: its certificates made by `envoy-gateway certgen`, its config from config/.

With the Kubernetes provider EG reads its xDS server certificates from the fixed directory /certs (as
its Deployment mounts them). The machine's / stays untouched: EG runs chrooted into a directory of the
stack's own that bind-mounts the system's /usr, /lib, /dev and /proc, with /certs, its config, a
kubeconfig and a resolv.conf that points at the cluster DNS (so EG dials the extension server by its
Service name, as in a cluster). In GatewayNamespace deploy mode it also holds a ServiceAccount token at
the in-cluster path, for the TokenReviews that authenticate each Envoy.
"""

from __future__ import annotations

import base64
import copy
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from kubernetes.client import ApiClient

from api.sources.kubeapi import KubeApiError, request_json, resource_path
from hack.realparts import binary
from hack.stack import network
from hack.stack.controlplane import APISERVER_PORT
from localgateway.processes import ManagedProcess

NAMESPACE = "envoy-gateway-system"
CONFIG_FILE = Path(__file__).resolve().parents[2] / "config" / "envoy-gateway" / "envoy-gateway-config.yaml"
XDS_PORT = 18000
_SYSTEM_DIRS = ("usr", "lib", "lib64", "bin", "sbin", "dev", "proc", "etc/ssl")
SERVICE_ACCOUNT = "envoy-gateway"
IN_CLUSTER_DIR = "var/run/secrets/kubernetes.io/serviceaccount"
TOKEN_SECONDS = 7 * 24 * 3600


def gateway_namespace_mode(config: dict[str, Any]) -> bool:
    """EG deploys each Gateway's Envoy in the Gateway's namespace (provider.kubernetes.deploy.type)."""
    deploy = ((config.get("provider") or {}).get("kubernetes") or {}).get("deploy") or {}
    return bool(deploy.get("type") == "GatewayNamespace")


def eg_config(runtime_flags: Sequence[str] = (), extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The EnvoyGateway document of config/envoy-gateway, with runtime flags and top-level keys added."""
    configmap = yaml.safe_load(CONFIG_FILE.read_text())
    document = yaml.safe_load(configmap["data"]["envoy-gateway.yaml"])
    document = copy.deepcopy(document)
    if runtime_flags:
        document.setdefault("runtimeFlags", {}).setdefault("enabled", []).extend(runtime_flags)
    for key, value in (extra or {}).items():
        document[key] = value
    return dict(document)


def eg_service_objects() -> list[dict[str, Any]]:
    """The Service Envoy dials for xDS (EG's bootstrap names envoy-gateway.<ns>.svc): it is the node."""
    ports = [{"name": "grpc", "port": XDS_PORT, "protocol": "TCP"}]
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "envoy-gateway", "namespace": NAMESPACE},
            "spec": {"ports": [{"name": "grpc", "port": XDS_PORT, "targetPort": XDS_PORT}]},
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "envoy-gateway-node",
                "namespace": NAMESPACE,
                "labels": {
                    "kubernetes.io/service-name": "envoy-gateway",
                    "endpointslice.kubernetes.io/managed-by": "stack.inference-gateway",
                },
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [network.NODE_IP], "conditions": {"ready": True}}],
            "ports": ports,
        },
    ]


class EnvoyGateway:
    """Runs `envoy-gateway server` in its chroot; `start()` after the CRDs and certgen."""

    def __init__(self, state: Path, admin_kubeconfig: Path, pki_dir: Path) -> None:
        self.state = state
        self.root = state / "envoy-gateway-root"
        self.admin_kubeconfig = admin_kubeconfig
        self.pki_dir = pki_dir
        self.process: ManagedProcess | None = None
        # Found once: a restart runs in the node namespace, which cannot reach the Go module proxy should the
        # cache's stamp have changed meanwhile (another checkout with other parts rewrote it).
        self.binary = binary("envoy-gateway")

    def certgen(self, env: dict[str, str]) -> None:
        import subprocess

        log = self.state / "logs" / "envoy-gateway-certgen.log"
        with log.open("ab") as out:
            subprocess.run(
                [str(self.binary), "certgen", "--disable-topology-injector"],
                check=True,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**env, "KUBECONFIG": str(self.admin_kubeconfig), "ENVOY_GATEWAY_NAMESPACE": NAMESPACE},
            )

    def _write_root(self, api: ApiClient, config: dict[str, Any]) -> None:
        for sub in ("certs", "config", "etc", "tmp", "pki", *_SYSTEM_DIRS):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        secret = request_json(api, "GET", resource_path("v1", "secrets", NAMESPACE, "envoy-gateway"))
        for key in ("ca.crt", "tls.crt", "tls.key"):
            (self.root / "certs" / key).write_bytes(base64.b64decode(secret["data"][key]))
        (self.root / "config" / "envoy-gateway.yaml").write_text(yaml.safe_dump(config))
        (self.root / "etc" / "resolv.conf").write_text(f"nameserver {network.NODE_IP}\n")
        (self.root / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
        kubeconfig = yaml.safe_load(self.admin_kubeconfig.read_text())
        for name in ("ca.crt", "admin.crt", "admin.key"):
            (self.root / "pki" / name).write_bytes((self.pki_dir / name).read_bytes())
        kubeconfig["clusters"][0]["cluster"]["certificate-authority"] = "/pki/ca.crt"
        kubeconfig["clusters"][0]["cluster"]["server"] = f"https://{network.NODE_IP}:6443"
        kubeconfig["users"][0]["user"] = {
            "client-certificate": "/pki/admin.crt",
            "client-key": "/pki/admin.key",
        }
        (self.root / "kubeconfig").write_text(yaml.safe_dump(kubeconfig))
        if gateway_namespace_mode(config):
            self._write_service_account(api)
        target = self.root / "envoy-gateway"
        target.unlink(missing_ok=True)
        target.write_bytes(self.binary.read_bytes())
        target.chmod(0o755)

    def _write_service_account(self, api: ApiClient) -> None:
        """In GatewayNamespace mode EG checks each Envoy's ServiceAccount token with a TokenReview, through
        an in-cluster client that reads its own token at the fixed in-cluster path: give it one there, of
        a ServiceAccount allowed to review tokens (system:auth-delegator), as EG's Deployment has."""
        account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": SERVICE_ACCOUNT}}
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": f"{SERVICE_ACCOUNT}-token-review"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:auth-delegator",
            },
            "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}],
        }
        for path, obj in (
            (resource_path("v1", "serviceaccounts", NAMESPACE), account),
            ("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", binding),
        ):
            try:
                request_json(api, "POST", path, body=obj)
            except KubeApiError as err:
                if err.status != 409:  # 409: there already
                    raise
        request: dict[str, Any] = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": TOKEN_SECONDS},
        }
        answer = request_json(
            api,
            "POST",
            resource_path("v1", "serviceaccounts", NAMESPACE, SERVICE_ACCOUNT, "token"),
            body=request,
        )
        directory = self.root / IN_CLUSTER_DIR
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "token").write_text(str(answer["status"]["token"]))
        (directory / "ca.crt").write_bytes((self.pki_dir / "ca.crt").read_bytes())
        (directory / "namespace").write_text(NAMESPACE)

    def start(self, api: ApiClient, config: dict[str, Any]) -> ManagedProcess:
        self._write_root(api, config)
        root = shlex.quote(str(self.root))
        binds = " && ".join(f"mount --rbind /{d} {root}/{d}" for d in _SYSTEM_DIRS if Path(f"/{d}").is_dir())
        script = (
            f"{binds} && exec chroot {root} /envoy-gateway server --config-path /config/envoy-gateway.yaml"
        )
        cmd = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script]
        env = {
            "KUBECONFIG": "/kubeconfig",
            "ENVOY_GATEWAY_NAMESPACE": NAMESPACE,
            "HOME": "/tmp",
            # What an in-cluster client needs besides its token (GatewayNamespace mode's TokenReviews).
            "KUBERNETES_SERVICE_HOST": network.NODE_IP,
            "KUBERNETES_SERVICE_PORT": str(APISERVER_PORT),
        }
        self.process = ManagedProcess("envoy-gateway", cmd, self.state / "logs" / "envoy-gateway.log", env)
        self.process.start()
        return self.process

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
