"""The demo: one seed scenario through the local gateway, N requests like the article's curl, the split."""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import logging
import signal
import sys
import tempfile
from pathlib import Path

import aiohttp
import structlog

from api.model import InferenceModel
from api.parse import owns, parse_object
from localgateway import mirror_demo
from localgateway.ports import free_port
from localgateway.run import LocalGateway, LocalGatewayOptions
from localgateway.translation import load_manifests
from simulator import SERVER_HEADER

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = {
    "lora": ROOT / "config/samples/seed-lora-canary.yaml",
    "base": ROOT / "config/samples/seed-base-model-canary.yaml",
    "mirror": mirror_demo.SAMPLE,
}
# Each scenario's Gateway listener (the article's port for the seeds).
GATEWAYS = {"lora": "default/inference-gateway:8081", "base": "default/inference-gateway:8081"}
GATEWAYS["mirror"] = mirror_demo.GATEWAY
# The article's requests for each scenario.
REQUESTS = {
    "lora": (
        "/v1/completions",
        {
            "model": "lora-request",
            "prompt": "Write as if you were a critic: San Francisco",
            "max_tokens": 100,
            "temperature": 0,
        },
    ),
    "base": ("/v1/chat/completions", {"model": "qwq", "messages": [{"role": "user", "content": "你是谁?"}]}),
    "mirror": (
        "/v1/completions",
        {"model": "chat", "prompt": "Write as if you were a critic: San Francisco", "max_tokens": 16},
    ),
}


def inference_model(manifest: Path) -> InferenceModel:
    for obj in load_manifests([manifest]):
        if owns(obj) and obj.get("kind") == "InferenceModel":
            parsed = parse_object(obj)
            assert isinstance(parsed, InferenceModel)
            return parsed
    raise SystemExit(f"{manifest}: no InferenceModel")


async def send(
    gw: LocalGateway, scenario: str, count: int, concurrency: int = 16
) -> tuple[collections.Counter[str], collections.Counter[str], collections.Counter[int]]:
    path, body = REQUESTS[scenario]
    models: collections.Counter[str] = collections.Counter()
    pods: collections.Counter[str] = collections.Counter()
    statuses: collections.Counter[int] = collections.Counter()
    todo = iter(range(count))
    async with aiohttp.ClientSession() as session:

        async def worker() -> None:
            for _ in todo:
                async with session.post(gw.url() + path, json=body) as response:
                    statuses[response.status] += 1
                    answer = await response.read()
                    if response.status == 200:
                        models[json.loads(answer)["model"]] += 1
                        pods[response.headers.get(SERVER_HEADER, "?")] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return models, pods, statuses


async def until_interrupted() -> None:
    """--keep: everything stays up until Ctrl-C (or SIGTERM)."""
    print("running; Ctrl-C stops everything")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def split_line(model: InferenceModel, models: collections.Counter[str]) -> str:
    total = sum(models.values()) or 1
    parts = [f"{t.name}={100.0 * models[t.name] / total:.1f}%" for t in model.weighted_targets()]
    return "split: " + " ".join(parts)


def _received_locally(gw: LocalGateway) -> mirror_demo.Received:
    """Pool name -> what its simulated pods were asked for."""
    assert gw.fleet is not None
    by_address = {s.address: s for s in gw.fleet.servers}
    out: dict[str, collections.Counter[str]] = {}
    for name, pool in mirror_demo.pools().items():
        counter = out.setdefault(name, collections.Counter())
        for pod in gw.pods:
            server = by_address.get(f"{pod.ip}:{pod.port}")
            if server is not None and pool.selects(dict(pod.labels)):
                counter.update(server.stats.requests_by_model)
    return out


async def run(scenario: str, count: int, keep: bool) -> int:
    manifest = SAMPLES[scenario]
    model = inference_model(manifest)
    gateway_port = int(GATEWAYS[scenario].rpartition(":")[2])
    with contextlib.closing(__import__("socket").socket()) as probe:
        port = gateway_port if probe.connect_ex(("127.0.0.1", gateway_port)) != 0 else free_port()
    options = LocalGatewayOptions(
        manifests=[manifest], listener_ports={gateway_port: port}, log_level="warning"
    )
    print(f"starting the local gateway for {manifest.relative_to(ROOT)} ...", flush=True)
    async with LocalGateway(options) as gw:
        print(f"gateway listening on {gw.url()}  (logs in {gw.log_dir})")
        for pod in gw.pods:
            print(
                f"  pod {pod.name:<24} {pod.address:<16} serves {pod.served_model_name}"
                + (f" + {len(pod.lora_adapters)} LoRA adapters" if pod.lora_adapters else "")
            )
        path, body = REQUESTS[scenario]
        print(f"sending {count} requests: POST {path} {json.dumps(body, ensure_ascii=False)}")
        before = _received_locally(gw) if scenario == "mirror" else {}
        models, pods, statuses = await send(gw, scenario, count)
        print("answers by status: " + ", ".join(f"{s}={n}" for s, n in sorted(statuses.items())))
        print("answers by model:  " + ", ".join(f"{m}={n}" for m, n in models.most_common()))
        print("requests per pod:  " + ", ".join(f"{p}={n}" for p, n in sorted(pods.items())))
        print("where to look:")
        print(f"  Envoy config:   curl {gw.admin_url}/config_dump")
        print(f"  Envoy stats:    curl '{gw.admin_url}/stats?filter=inference'")
        print(f"  picker metrics: curl {gw.picker_metrics_url}")
        print(f"  models:         curl {gw.url()}/v1/models")
        if scenario == "mirror":

            async def read() -> mirror_demo.Received:
                return _received_locally(gw)

            received = mirror_demo.since(await mirror_demo.settled(read), before)
            print("\n".join(mirror_demo.report(models, received, count)), flush=True)
        if keep:
            await until_interrupted()
    if scenario != "mirror":
        print(split_line(model, models), flush=True)
    return 0 if statuses.get(200, 0) == count else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hack/demo.sh", description="Run a seed scenario through the local gateway."
    )
    parser.add_argument("scenario", nargs="?", choices=sorted(SAMPLES), default="lora")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--keep", action="store_true", help="keep running after the requests until Ctrl-C")
    parser.add_argument(
        "--stand-in",
        action="store_true",
        help="use the local gateway (EG stand-in) even where Go is installed",
    )
    parser.add_argument("--state", type=Path, help="the real stack's state directory (default: a fresh one)")
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    from hack.realparts import go_available

    real = not args.stand_in and go_available()
    if not real and not args.stand_in:
        print("no Go toolchain on PATH: running on the local gateway (EG stand-in) instead of the real stack")
    try:
        if real:
            from hack.stack.demo import run as run_on_stack

            state = args.state or Path(tempfile.mkdtemp(prefix="inference-gateway-demo-"))
            return run_on_stack(args.scenario, args.requests, args.keep, state)
        return asyncio.run(run(args.scenario, args.requests, args.keep))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
