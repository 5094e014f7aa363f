"""``python -m hack.stack up|down|supervise --state DIR``: the real control plane on this machine.

`up` builds the real parts on first use, starts the supervisor in the background and returns once
Envoy Gateway, the extension server and the picker are ready; it prints `KUBECONFIG=<path>` and, for
every Gateway listener that exists, `GATEWAY <ns>/<name>:<port> http://127.0.0.1:<port>` (also kept up
to date in DIR/gateways). `down` stops everything `up` started and removes its network namespaces.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import structlog

from hack.realparts import STACK_PARTS, binary
from hack.stack import network
from hack.stack.podlet import STACK_MARKER

UP_TIMEOUT = 300.0


def netns_name(state: Path) -> str:
    return "igw-" + hashlib.sha256(str(state.resolve()).encode()).hexdigest()[:6]


def _pid(state: Path) -> int | None:
    try:
        pid = int((state / "supervisor.pid").read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def _print_gateways(state: Path) -> None:
    path = state / "gateways"
    if path.is_file():
        print(path.read_text(), end="")


def up(state: Path, options: dict[str, object]) -> int:
    state.mkdir(parents=True, exist_ok=True)
    if _pid(state) is not None and (state / "ready").is_file():
        print(f"KUBECONFIG={state / 'kubeconfig'}")
        _print_gateways(state)
        return 0
    for name in STACK_PARTS:  # the conformance parts build on first use
        binary(name)
    for stale in ("ready", "failed", "gateways"):
        (state / stale).unlink(missing_ok=True)
    (state / "logs").mkdir(exist_ok=True)
    name = netns_name(state)
    _cleanup(state, name)
    network.create_node(name)
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    print(
        f"[stack] starting etcd, kube-apiserver, kube-controller-manager, Envoy Gateway ({state})", flush=True
    )
    with (state / "logs" / "supervisor.log").open("ab") as out:
        child = subprocess.Popen(
            [
                *network.exec_prefix(name),
                sys.executable,
                "-m",
                "hack.stack",
                "supervise",
                "--state",
                str(state),
                "--host-netns",
                f"/proc/self/fd/{home}",
                "--options",
                json.dumps(options),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            pass_fds=(home,),
            start_new_session=True,
            cwd=Path(__file__).resolve().parents[2],
        )
    (state / "supervisor.pid").write_text(str(child.pid))
    deadline = time.monotonic() + UP_TIMEOUT
    while time.monotonic() < deadline:
        if (state / "ready").is_file():
            print(f"KUBECONFIG={state / 'kubeconfig'}")
            print(f"KUBECTL={binary('kubectl')}")
            _print_gateways(state)
            return 0
        if (state / "failed").is_file() or child.poll() is not None:
            break
        time.sleep(0.3)
    reason = (state / "failed").read_text().strip() if (state / "failed").is_file() else "timed out"
    print(f"[stack] failed to start: {reason}; logs in {state / 'logs'}", file=sys.stderr)
    down(state)
    return 1


def _cleanup(state: Path, name: str) -> None:
    """Kill whatever still runs in the stack's namespaces and remove them."""
    netns_dir = Path("/run/netns")
    names = sorted(p.name for p in netns_dir.glob(f"{name}*")) if netns_dir.is_dir() else []
    for ns in names:
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
        for pid in pids:
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
    for ns in names:
        network.delete(ns)
    # A Pod program can outlive its namespace's name (a stop cut short): find it by the node's marker.
    marker = f"{STACK_MARKER}={name}".encode()
    for environ in Path("/proc").glob("[0-9]*/environ"):
        with contextlib.suppress(OSError, ValueError):
            if marker in environ.read_bytes().split(b"\0"):
                os.kill(int(environ.parent.name), signal.SIGKILL)


def down(state: Path) -> int:
    pid = _pid(state)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _pid(state) is not None:
            time.sleep(0.2)
    _cleanup(state, netns_name(state))
    for stale in ("ready", "gateways", "supervisor.pid"):
        (state / stale).unlink(missing_ok=True)
    print(f"[stack] down ({state})")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="hack/stack.sh", description=__doc__)
    parser.add_argument("command", choices=("up", "down", "supervise"))
    parser.add_argument("--state", type=Path, required=True, help="directory for the stack's state and logs")
    parser.add_argument("--host-netns", help=argparse.SUPPRESS)
    parser.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    parser.add_argument(
        "--runtime-flag",
        action="append",
        default=[],
        help="an Envoy Gateway runtime flag, e.g. XDSNameSchemeV2",
    )
    parser.add_argument(
        "--envoy-deploy",
        choices=("ControllerNamespace", "GatewayNamespace"),
        default="ControllerNamespace",
        help="where Envoy Gateway deploys each Gateway's Envoy (its provider.kubernetes.deploy.type)",
    )
    args = parser.parse_args()
    state = args.state.resolve()
    if args.command == "up":
        options: dict[str, object] = {"runtime_flags": args.runtime_flag}
        if args.envoy_deploy != "ControllerNamespace":
            deploy = {"deploy": {"type": args.envoy_deploy}}
            options["eg_extra"] = {"provider": {"type": "Kubernetes", "kubernetes": deploy}}
        return up(state, options)
    if args.command == "down":
        return down(state)
    from hack.stack.supervisor import supervise

    structlog.configure(
        processors=[structlog.processors.TimeStamper(fmt="iso"), structlog.dev.ConsoleRenderer(colors=False)]
    )
    (state / "supervisor.pid").write_text(str(os.getpid()))
    asyncio.run(supervise(state, netns_name(state), args.host_netns, json.loads(args.options)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
