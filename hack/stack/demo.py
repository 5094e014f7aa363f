"""The demo on the real stack: `kubectl apply` a seed file, send the article's requests, print the split."""

from __future__ import annotations

import asyncio
import collections
import json
import subprocess
import time
from pathlib import Path

from hack.realparts import binary, stack_version_line
from hack.stack import network
from hack.stack.__main__ import netns_name
from localgateway import mirror_demo
from localgateway.demo import (
    GATEWAYS,
    REQUESTS,
    SAMPLES,
    inference_model,
    send,
    split_line,
    until_interrupted,
)

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "hack" / "stack.sh"


class _Gateway:
    """What `send` needs of a gateway: its URL."""

    def __init__(self, url: str) -> None:
        self._url = url

    def url(self) -> str:
        return self._url


def kubectl(state: Path, *args: str) -> str:
    cmd = [str(binary("kubectl")), f"--kubeconfig={state / 'kubeconfig'}", *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def gateway_url(state: Path, gateway: str, timeout: float = 120.0) -> str:
    """The forwarded URL of `gateway` (ns/name:port) once the stack wrote it to DIR/gateways."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        path = state / "gateways"
        if path.is_file():
            for line in path.read_text().splitlines():
                _, key, url = line.split()
                if key == gateway:
                    return url
        time.sleep(0.3)
    raise SystemExit(f"Gateway {gateway} got no Envoy within {timeout:.0f} s (see {state / 'logs'})")


async def wait_serving(url: str, scenario: str, timeout: float = 120.0) -> None:
    """Until the article's request answers 200 (Envoy has the compiled config and a ready pod)."""
    import aiohttp

    path, body = REQUESTS[scenario]
    deadline = time.monotonic() + timeout
    last = ""
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.post(
                    url + path, json=body, timeout=aiohttp.ClientTimeout(total=5)
                ) as answer:
                    if answer.status == 200:
                        return
                    last = f"{answer.status} {(await answer.text())[:200]}"
            except (aiohttp.ClientError, TimeoutError) as err:
                last = str(err)
            await asyncio.sleep(0.5)
    raise SystemExit(f"the gateway at {url} did not serve within {timeout:.0f} s: {last}")


def pod_lines(state: Path) -> list[str]:
    pods = json.loads(kubectl(state, "get", "pods", "-n", "default", "-o", "json"))
    lines = []
    for pod in pods["items"]:
        ready = any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in pod.get("status", {}).get("conditions", [])
        )
        ip = pod.get("status", {}).get("podIP", "-")
        lines.append(f"  pod {pod['metadata']['name']:<40} {ip:<12} {'Ready' if ready else 'NotReady'}")
    return lines


def run(scenario: str, count: int, keep: bool, state: Path) -> int:
    """Up, apply, send, down (unless --keep); the up's progress (first builds) goes to the terminal."""
    if subprocess.run([str(STACK), "up", "--state", str(state)]).returncode != 0:
        return 1
    try:
        return asyncio.run(_demo(scenario, count, keep, state))
    finally:
        subprocess.run([str(STACK), "down", "--state", str(state)], capture_output=True)


async def _demo(scenario: str, count: int, keep: bool, state: Path) -> int:
    manifest = SAMPLES[scenario]
    model = inference_model(manifest)
    print(f"applying {manifest.relative_to(ROOT)} with kubectl ...", flush=True)
    kubectl(state, "apply", "-f", str(manifest))
    url = gateway_url(state, GATEWAYS[scenario])
    await wait_serving(url, scenario)
    print(f"gateway listening on {url}  (KUBECONFIG={state / 'kubeconfig'})")
    print("\n".join(pod_lines(state)))
    path, body = REQUESTS[scenario]
    print(f"sending {count} requests: POST {path} {json.dumps(body, ensure_ascii=False)}")
    before = await asyncio.to_thread(_received_on_stack, state) if scenario == "mirror" else {}
    models, pods, statuses = await send(_Gateway(url), scenario, count)  # type: ignore[arg-type]
    print("answers by status: " + ", ".join(f"{s}={n}" for s, n in sorted(statuses.items())))
    print("answers by model:  " + ", ".join(f"{m}={n}" for m, n in models.most_common()))
    print("requests per pod:  " + ", ".join(f"{p}={n}" for p, n in sorted(pods.items())))
    print("where to look:")
    print(
        f"  kubectl:        {binary('kubectl')} --kubeconfig {state / 'kubeconfig'} get inferencepool -o yaml"
    )
    print(f"  logs:           {state / 'logs'}")
    print(stack_version_line())
    if scenario == "mirror":

        async def read() -> mirror_demo.Received:
            return await asyncio.to_thread(_received_on_stack, state)

        received = mirror_demo.since(await mirror_demo.settled(read), before)
        print("\n".join(mirror_demo.report(models, received, count)), flush=True)
    if keep:
        await until_interrupted()
    if scenario != "mirror":
        print(split_line(model, models), flush=True)
    return 0 if statuses.get(200, 0) == count else 1


def _received_on_stack(state: Path) -> mirror_demo.Received:
    """Pool name -> what its pods' simulators were asked for (their /sim/stats, from the node network)."""
    import urllib.request

    out: dict[str, collections.Counter[str]] = {}
    for name, pool in mirror_demo.pools().items():
        selector = ",".join(f"{k}={v}" for k, v in pool.selector)
        pods = json.loads(kubectl(state, "get", "pods", "-n", "default", "-l", selector, "-o", "json"))
        counter = out.setdefault(name, collections.Counter())
        for pod in pods["items"]:
            ip = pod.get("status", {}).get("podIP")
            if not ip:
                continue
            url = f"http://{ip}:{pool.target_ports[0]}/sim/stats"
            with (
                network.inside(network.netns_path(netns_name(state))),
                urllib.request.urlopen(url, timeout=5) as r,
            ):
                counter.update(json.loads(r.read())["requests_by_model"])
    return out
