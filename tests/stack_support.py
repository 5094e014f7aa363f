"""The real stack as tests use it: `./hack/stack.sh up`, kubectl, Gateway URLs, Envoy's admin in its Pod."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from hack.realparts import binary, go_available
from hack.stack import network
from hack.stack.__main__ import netns_name

ROOT = Path(__file__).resolve().parents[1]
STACK = ROOT / "hack" / "stack.sh"
T = TypeVar("T")


def eventually(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll `check` until it returns a truthy value; fail naming `what` and the last error."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
            last = value
        except Exception as err:  # the condition is not there yet
            last = err
        time.sleep(interval)
    raise AssertionError(f"{what} not within {timeout} s (last: {last!r})")


def status_conditions(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """An object's own status conditions and its parents' (pools: v1 `parents`, x-k8s `parent`)."""
    status = obj.get("status") or {}
    found = list(status.get("conditions") or [])
    for parent in status.get("parents") or status.get("parent") or []:
        found += parent.get("conditions") or []
    return found


class GatewayUrl:
    """What tests.e2e_support.send_many needs of a gateway: its URL."""

    def __init__(self, url: str) -> None:
        self._url = url

    def url(self) -> str:
        return self._url


class RealStack:
    def __init__(self, state: Path, runtime_flags: tuple[str, ...] = ()) -> None:
        self.state = state
        self.runtime_flags = runtime_flags
        self.lines: list[str] = []

    def up(self) -> RealStack:
        if not go_available():
            raise RuntimeError("the real-stack tests need the Go toolchain (>= 1.26) on PATH")
        cmd = [str(STACK), "up", "--state", str(self.state)]
        for flag in self.runtime_flags:
            cmd += ["--runtime-flag", flag]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"stack up failed:\n{done.stdout}\n{done.stderr[-4000:]}\n{self.logs_tail()}")
        self.lines = done.stdout.splitlines()
        return self

    def down(self) -> None:
        subprocess.run([str(STACK), "down", "--state", str(self.state)], capture_output=True)

    def logs_tail(self, lines: int = 40) -> str:
        out = []
        for log in sorted((self.state / "logs").glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {log.name}\n" + "\n".join(tail))
        return "\n".join(out)

    @property
    def kubeconfig(self) -> Path:
        return self.state / "kubeconfig"

    def kubectl(
        self, *args: str, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        cmd = [str(binary("kubectl")), f"--kubeconfig={self.kubeconfig}", *args]
        done = subprocess.run(cmd, capture_output=True, text=True, input=stdin)
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {done.stderr}")
        return done

    def get(self, *args: str) -> dict[str, Any]:
        return dict(json.loads(self.kubectl("get", *args, "-o", "json").stdout))

    def gateway_url(self, key: str, timeout: float = 90.0) -> str:
        def find() -> str | None:
            for line in (self.state / "gateways").read_text().splitlines():
                _, name, url = line.split()
                if name == key:
                    return url
            return None

        return eventually(find, timeout, f"GATEWAY {key}")

    def pod_netns(self, namespace: str, name: str) -> str:
        pod = self.get("pod", "-n", namespace, name)
        return network.netns_path(f"{netns_name(self.state)}-{pod['metadata']['uid'][:8]}")

    def node_netns(self) -> str:
        return network.netns_path(netns_name(self.state))

    def envoy_pods(self, gateway: str, namespace: str = "default") -> list[str]:
        selector = (
            f"gateway.envoyproxy.io/owning-gateway-name={gateway},"
            f"gateway.envoyproxy.io/owning-gateway-namespace={namespace}"
        )
        pods = self.get("pods", "-n", "envoy-gateway-system", "-l", selector)["items"]
        return [p["metadata"]["name"] for p in pods if p.get("status", {}).get("podIP")]

    def envoy_admin(self, gateway: str, path: str, namespace: str = "default") -> str:
        """GET `path` from the admin endpoint of the Gateway's Envoy (127.0.0.1:19000 inside its Pod)."""
        (pod,) = self.envoy_pods(gateway, namespace)[:1]
        netns = self.pod_netns("envoy-gateway-system", pod)
        with network.inside(netns), urllib.request.urlopen(f"http://127.0.0.1:19000{path}", timeout=5) as got:
            return str(got.read().decode())

    def in_node(self, url: str, timeout: float = 5) -> str:
        """GET a Pod-network URL (a Pod IP) from the node's namespace."""
        with network.inside(self.node_netns()), urllib.request.urlopen(url, timeout=timeout) as answer:
            return str(answer.read().decode())

    def restart_envoy_gateway(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> None:
        """Stop EG's process; the stack starts it again (as its Deployment would); wait until it is ready."""
        pid_file = self.state / "envoy-gateway.pid"
        old = pid_file.read_text()
        os.kill(int(old), sig)
        eventually(lambda: pid_file.read_text() != old, timeout, "Envoy Gateway started again")
        eventually(
            lambda: "ok" in self.in_node(f"http://{network.NODE_IP}:8081/readyz"),
            timeout,
            "Envoy Gateway ready",
        )

    def post_in_node(self, url: str, body: dict[str, Any], timeout: float = 5) -> str:
        """POST JSON to a Pod-network URL from the node's namespace."""
        request = urllib.request.Request(
            url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with network.inside(self.node_netns()), urllib.request.urlopen(request, timeout=timeout) as answer:
            return str(answer.read().decode())
