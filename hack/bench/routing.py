#!/usr/bin/env python3
"""Routing-quality benchmark: the picker against Envoy's load balancers and other LLM routers (issue 6).

For each workload it starts the local gateway (simulated fleet + extension server + picker + Envoy), the
baseline routers in front of the same fleet, measures the fleet's capacity (a short overload probe
through Envoy least_request), then sends the same seeded open-loop Poisson arrivals through every router
at 50% and 80% of capacity (95% too with --full), resetting the fleet's caches between runs.

    .venv/bin/python hack/bench/routing.py            # default matrix (~15 min on 2 cores), writes docs/
    .venv/bin/python hack/bench/routing.py --quick    # shared_prefix at 80%, Envoy baselines + picker, < 60 s
    .venv/bin/python hack/bench/routing.py --full     # adds 95% load

The last line is `routing: shared_prefix_p90_ttft_vs_round_robin=<r> worst_p90_ttft_vs_best_other=<r>`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import os
import platform
import random
import resource
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import structlog
import yaml

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from hack.bench import loadgen  # noqa: E402
from hack.bench.routers import (  # noqa: E402
    ENVOY_POLICIES,
    EXTERNAL_ROUTERS,
    PickerRouter,
    Router,
    external_router_available,
    process_cpu_seconds,
    start_envoy_router,
    start_external_router,
)
from hack.bench.workloads import (  # noqa: E402
    SERVICE_HEADER,
    WORKLOADS,
    Arrival,
    FleetSettings,
    Workload,
    arrivals,
    manifests,
    services,
)
from localgateway.ports import free_port  # noqa: E402
from simulator import SimFleet, SimServerConfig  # noqa: E402
from simulator.latency import decode_step_ms, prefill_ms  # noqa: E402

MAX_OVERHEAD_FRACTION = 0.02  # the picker's real overhead must stay under 2% of TTFT
SATURATED_MACHINE_BUSY = 0.97
MAX_SEND_LATENESS_MS = 25.0
MAX_FAILED_FOR_COMPARISON = 0.01  # a router failing more requests than this is not a "best other"


@dataclass(frozen=True)
class Matrix:
    """What one run measures."""

    workloads: tuple[str, ...]
    loads: tuple[float, ...]
    routers: tuple[str, ...]
    duration: float  # seconds of arrivals per run
    warmup: float  # seconds at the start of each run left out of the stats
    probe_seconds: float
    fleet: FleetSettings
    servers: int
    seed: int = 20261124
    capacity: float | None = None  # req/s; None: measured by the overload probe


@dataclass
class CellResult:
    workload: str
    load: float
    router: str
    rate: float
    summary: dict[str, Any] | None
    cpu: dict[str, float] = field(default_factory=dict)
    lateness_p99_ms: float = 0.0
    machine_busy: float = 0.0
    fleet: dict[str, float] = field(default_factory=dict)
    valid: bool = True
    note: str = ""


# machine --------------------------------------------------------------------------------------------


def cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine."""
    parts = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0.0)
    total = sum(parts[:8])
    return total - idle, total


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine_facts() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kb = int(Path("/proc/meminfo").read_text().splitlines()[0].split()[1])
    return {
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "memory_gb": round(mem_kb / 1e6, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_at_start": list(os.getloadavg()),
    }


# the fleet ------------------------------------------------------------------------------------------


def _sim_config_for(workload: Workload, fleet: FleetSettings) -> Any:
    """Per-pod simulator settings for this run: KV budget, LoRA load time, each Deployment's speed."""
    slowdown = {d.name: d.slowdown for d in workload.deployments}

    def adjust(pod: Any, config: SimServerConfig) -> SimServerConfig:
        return dataclasses.replace(
            config,
            max_loras=fleet.max_loras,
            max_num_seqs=fleet.max_num_seqs,
            kv_cache_tokens=fleet.kv_cache_tokens,
            lora_load_ms=fleet.lora_load_ms,
            time_scale=fleet.time_scale * slowdown.get(pod.deployment, 1.0),
            default_max_tokens=SimServerConfig().default_max_tokens,
        )

    return adjust


def addresses_by_deployment(pods: Sequence[Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for pod in pods:
        out.setdefault(pod.deployment, []).append(pod.address)
    return out


FleetTotals = tuple[float, float, float, float, float, float]


def fleet_totals(fleet: SimFleet) -> list[FleetTotals]:
    """Per server: (prompt tokens, cached prompt tokens, LoRA loads, requests, TTFTs, TTFT sum) so far."""
    return [
        (
            s.engine.counters.prompt_tokens,
            s.engine.counters.prompt_tokens_cached,
            s.engine.counters.lora_loads,
            sum(s.stats.requests_by_model.values()),
            s.engine.counters.ttft_count,
            s.engine.counters.ttft_sum,
        )
        for s in fleet.servers
    ]


def fleet_counters(before: list[FleetTotals], after: list[FleetTotals]) -> dict[str, float]:
    """Prefix-cache hit rate, LoRA loads, the busiest server's share of requests and the servers' own
    mean TTFT (simulated ms: routing quality without the router's path overhead) between two totals."""
    deltas = [tuple(a - b for a, b in zip(x, y, strict=True)) for x, y in zip(after, before, strict=True)]
    prompt = sum(d[0] for d in deltas)
    cached = sum(d[1] for d in deltas)
    requests = [d[3] for d in deltas]
    total = sum(requests)
    return {
        "prefix_hit_rate": cached / prompt if prompt else 0.0,
        "lora_loads": float(sum(d[2] for d in deltas)),
        "busiest_server_share": max(requests) / total if total else 0.0,
        "server_ttft_mean_ms": 1000 * sum(d[5] for d in deltas) / max(1.0, sum(d[4] for d in deltas)),
    }


async def reset_fleet(fleet: SimFleet, timeout: float = 30.0) -> None:
    """Wait until idle, then forget prefix caches and LoRA residency, so every router starts cold."""
    deadline = time.monotonic() + timeout
    while any(s.engine.snapshot().running or s.engine.snapshot().waiting for s in fleet.servers):
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    for server in fleet.servers:
        server.engine.reset()
        server.reset_stats()


def estimated_capacity(workload: Workload, fs: FleetSettings, samples: int = 400) -> float:
    """Requests/s (real time) the fleet sustains by the latency model, counting every prefill in full."""
    rng = random.Random(7)
    reqs = [workload.sample(rng) for _ in range(samples)]
    prompt = statistics.mean(len(r.prompt) / 4 for r in reqs)
    out = statistics.mean(r.max_tokens for r in reqs)
    s = fs.max_num_seqs
    step = decode_step_ms(s, s * (prompt + out / 2))
    per_request_ms = prefill_ms(int(prompt)) + out * step / s
    per_server = 1000.0 / per_request_ms
    servers = sum(d.replicas / d.slowdown for d in workload.deployments)
    return per_server * servers / fs.time_scale


# running one cell -----------------------------------------------------------------------------------


def job_of(router: Router, plan: Sequence[Arrival], deadline: float | None = None) -> dict[str, Any]:
    requests = []
    for arrival in plan:
        req = arrival.request
        headers = {SERVICE_HEADER: req.service} if router.direct else {}
        requests.append({"at": arrival.at, "body": req.body(direct=router.direct), "headers": headers})
    job: dict[str, Any] = {"url": router.url + "/v1/completions", "timeout": 600, "requests": requests}
    if deadline is not None:
        job["deadline"] = deadline
    return job


async def run_loadgen(job: dict[str, Any], work_dir: Path) -> dict[str, Any]:
    """Run the load generator in its own process and return its result."""
    job_path = work_dir / "job.json"
    out_path = work_dir / "out.json"
    job_path.write_text(json.dumps(job))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hack.bench.loadgen", str(job_path), str(out_path), env=env, cwd=str(REPO)
    )
    rc = await proc.wait()
    if rc != 0:
        raise RuntimeError(f"load generator exited with {rc}")
    result: dict[str, Any] = json.loads(out_path.read_text())
    return result


async def run_cell(
    workload: Workload,
    load: float,
    rate: float,
    router: Router,
    plan: Sequence[Arrival],
    m: Matrix,
    work_dir: Path,
    fleet: SimFleet,
) -> CellResult:
    pids = router.pids()
    router_cpu_before = {pid: process_cpu_seconds(pid) for pid in pids}
    own_before = self_cpu_seconds()
    busy_before, total_before = cpu_times()
    wall_before = time.monotonic()
    totals_before = fleet_totals(fleet)
    result = await run_loadgen(job_of(router, plan), work_dir)
    wall = max(time.monotonic() - wall_before, 1e-9)
    busy_after, total_after = cpu_times()
    records = loadgen.records_of(result)
    summary = loadgen.summarize(records, warmup=m.warmup)
    router_cpu = sum(process_cpu_seconds(pid) - router_cpu_before[pid] for pid in pids)
    machine_busy = (busy_after - busy_before) / max(total_after - total_before, 1e-9)
    cell = CellResult(
        workload=workload.name,
        load=load,
        router=router.name,
        rate=rate,
        summary=asdict(summary),
        cpu={
            "loadgen": result["cpu_fraction"],
            "fleet_and_harness": (self_cpu_seconds() - own_before) / wall,
            "router": router_cpu / wall,
        },
        lateness_p99_ms=float(result["lateness_p99_ms"]),
        machine_busy=machine_busy,
        fleet=fleet_counters(totals_before, fleet_totals(fleet)),
    )
    problems = []
    if machine_busy > SATURATED_MACHINE_BUSY:
        problems.append(f"machine {machine_busy:.0%} busy")
    if cell.lateness_p99_ms > MAX_SEND_LATENESS_MS:
        problems.append(f"load generator sent late (p99 {cell.lateness_p99_ms:.0f} ms)")
    if problems:
        cell.valid = False
        cell.note = "; ".join(problems)
    return cell


async def probe_capacity(workload: Workload, router: Router, m: Matrix, work_dir: Path) -> dict[str, float]:
    """Offer well over the estimated capacity briefly; completions/s in the steady part = capacity."""
    estimate = estimated_capacity(workload, m.fleet)
    offered = 2.5 * estimate
    plan = arrivals(workload, offered, m.probe_seconds, m.seed + 1)
    result = await run_loadgen(job_of(router, plan, deadline=m.probe_seconds), work_dir)
    records = loadgen.records_of(result)
    start = 0.3 * m.probe_seconds
    done = [r for r in records if r.ok and r.e2e is not None and start <= r.sent + r.e2e <= m.probe_seconds]
    measured = len(done) / (m.probe_seconds - start)
    if measured <= 0:  # nothing finished in the window (a very slow fleet): fall back to the model's estimate
        measured = estimate
    return {
        "estimate": estimate,
        "offered": offered,
        "measured": measured,
        "saturated": measured < 0.9 * offered,
    }


async def overhead_probe(workload: Workload, routers: Sequence[Router], count: int = 8) -> dict[str, float]:
    """Median TTFT of sequential one-token requests on an idle fleet, per router (real ms)."""
    rng = random.Random(99)
    probes = [workload.sample(rng) for _ in range(count)]  # the same requests for every router
    out: dict[str, float] = {}
    async with aiohttp.ClientSession() as session:
        for router in routers:
            ttfts = []
            for i, base in enumerate(probes):
                req = replace(base, prompt=f"overhead probe {router.name} {i} " + "x" * 60, max_tokens=1)
                headers = {SERVICE_HEADER: req.service} if router.direct else {}
                rec = await loadgen.send_one(
                    session,
                    router.url + "/v1/completions",
                    {"body": req.body(direct=router.direct), "headers": headers},
                    0.0,
                    asyncio.get_running_loop().time(),
                )
                if rec.ok and rec.ttft is not None:
                    ttfts.append(rec.ttft * 1000)
            out[router.name] = statistics.median(ttfts) if ttfts else math.nan
    return out


# one workload ---------------------------------------------------------------------------------------


def local_gateway(workload: Workload, fleet: FleetSettings, work_dir: Path) -> Any:
    """The local gateway (not started) serving `workload` from its manifests, on a simulated fleet."""
    from localgateway.run import LocalGateway, LocalGatewayOptions

    manifest_path = work_dir / "manifests.yaml"
    manifest_path.write_text(yaml.safe_dump_all(manifests(workload, fleet)))
    options = LocalGatewayOptions(
        manifests=[manifest_path],
        listener_ports={8081: free_port()},
        ip_prefix=f"127.{100 + os.getpid() % 100}.{random.randint(1, 250)}.",
        time_scale=fleet.time_scale,
        work_dir=work_dir / "gateway",
        watch=False,
        log_level="warning",
        sim_config=_sim_config_for(workload, fleet),
    )
    return LocalGateway(options)


async def run_workload(name: str, m: Matrix, work_root: Path, log: Any) -> dict[str, Any]:
    workload = WORKLOADS[name]() if name == "canary" else WORKLOADS[name](m.servers)  # type: ignore[call-arg]
    work_dir = work_root / name
    work_dir.mkdir(parents=True, exist_ok=True)
    gateway = local_gateway(workload, m.fleet, work_dir)
    cells: list[CellResult] = []
    skipped: dict[str, str] = {}
    routers: list[Router] = []
    try:
        await gateway.start()
        fleet = gateway.fleet
        assert fleet is not None, "the local gateway starts its fleet"
        by_deployment = addresses_by_deployment(gateway.pods)
        service_addresses = services(workload, by_deployment)
        every = [a for addrs in by_deployment.values() for a in addrs]
        for router_name in m.routers:
            if router_name in ENVOY_POLICIES:
                routers.append(await start_envoy_router(router_name, service_addresses))
            elif router_name == "picker":
                routers.append(PickerRouter(gateway))
            elif router_name in EXTERNAL_ROUTERS:
                why = external_router_available(router_name)
                if why is None and len(workload.deployments) > 1:
                    why = "one pool of identical workers only: it cannot split `qwq` over two base models"
                if why is None:
                    try:
                        routers.append(await start_external_router(router_name, every))
                    except RuntimeError as exc:
                        why = str(exc)
                if why is not None:
                    skipped[router_name] = why
                    log(f"  {router_name}: skipped ({why.splitlines()[0]})")
        by_name = {r.name: r for r in routers}
        probe_router = by_name.get("least_request") or routers[0]
        if m.capacity is None:
            capacity = await probe_capacity(workload, probe_router, m, work_dir)
        else:
            estimate = estimated_capacity(workload, m.fleet)
            capacity = {"estimate": estimate, "offered": 0.0, "measured": m.capacity, "saturated": False}
        log(
            f"  capacity: {capacity['measured']:.1f} req/s "
            f"(estimate {capacity['estimate']:.1f}, offered {capacity['offered']:.1f})"
        )
        await reset_fleet(fleet)
        overhead = await overhead_probe(workload, routers)
        log("  idle TTFT ms: " + ", ".join(f"{k}={v:.1f}" for k, v in overhead.items()))
        for load in m.loads:
            rate = load * capacity["measured"]
            plan = arrivals(workload, rate, m.duration, m.seed)
            for router in routers:
                await reset_fleet(fleet)
                if isinstance(router, PickerRouter):
                    await router.restart_picker()
                cell = await run_cell(workload, load, rate, router, plan, m, work_dir, fleet)
                cells.append(cell)
                s = cell.summary or {}
                log(
                    f"  {name} {load:.0%} {router.name:>14}: ttft p50/p90/p99 "
                    + "/".join(f"{s.get(k, 0):.0f}" for k in ("ttft_p50_ms", "ttft_p90_ms", "ttft_p99_ms"))
                    + " ms, "
                    f"{s.get('tokens_per_s', 0):.0f} tok/s, err {s.get('error_rate', 0):.1%}, "
                    f"prefix hits {cell.fleet['prefix_hit_rate']:.0%}, "
                    f"lora loads {cell.fleet['lora_loads']:.0f}"
                    + ("" if cell.valid else f"  INVALID: {cell.note}")
                )
    finally:
        for router in routers:
            with contextlib.suppress(Exception):
                await router.stop()
        await gateway.stop()
    return {
        "workload": name,
        "description": workload.description,
        "servers": workload.servers,
        "deployments": [asdict(d) for d in workload.deployments],
        "capacity": capacity,
        "idle_ttft_ms": overhead,
        "skipped_routers": skipped,
        "cells": [asdict(c) for c in cells],
    }


# the verdict ----------------------------------------------------------------------------------------


def ratios(results: Sequence[dict[str, Any]]) -> dict[str, float]:
    """picker/round_robin p90 TTFT on shared_prefix at the top load, and the worst picker/best other."""
    shared = math.nan
    worst = math.nan
    for wl in results:
        by_load: dict[float, dict[str, float]] = {}
        for cell in wl["cells"]:
            if cell["summary"] is not None:
                failed = cell["summary"]["error_rate"] + cell["summary"]["shed_rate"]
                if cell["router"] == "picker" or failed <= MAX_FAILED_FOR_COMPARISON:
                    by_load.setdefault(cell["load"], {})[cell["router"]] = cell["summary"]["ttft_p90_ms"]
        for _load, p90 in sorted(by_load.items()):
            if "picker" not in p90:
                continue
            others = [v for k, v in p90.items() if k != "picker" and not math.isnan(v)]
            if others:
                r = p90["picker"] / min(others)
                worst = r if math.isnan(worst) else max(worst, r)
            if wl["workload"] == "shared_prefix" and "round_robin" in p90:
                shared = p90["picker"] / p90["round_robin"]  # the last (highest) load wins
    return {"shared_prefix_p90_ttft_vs_round_robin": shared, "worst_p90_ttft_vs_best_other": worst}


def picker_overhead(results: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Idle TTFT of the picker path minus round_robin's (real ms), and as a fraction of the picker's TTFT.

    Only single-Deployment workloads count: on the canary the picker draws its own targets (slow or fast).
    """
    deltas = []
    fractions = []
    for wl in results:
        if len(wl["deployments"]) != 1:
            continue
        idle = wl["idle_ttft_ms"]
        if "picker" in idle and "round_robin" in idle:
            delta = idle["picker"] - idle["round_robin"]
            deltas.append(delta)
            fractions.append(max(delta, 0.0) / idle["picker"])
    if not deltas:
        return {}
    return {"overhead_ms": max(deltas), "overhead_fraction": max(fractions)}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick", action="store_true", help="shared_prefix at 80%%, Envoy baselines + picker (< 60 s)"
    )
    mode.add_argument("--full", action="store_true", help="also 95%% load")
    p.add_argument("--workloads", nargs="+", choices=sorted(WORKLOADS), help="subset of workloads")
    p.add_argument("--routers", nargs="+", help="subset of routers")
    p.add_argument("--loads", nargs="+", type=float, help="loads as fractions of capacity, e.g. 0.8")
    p.add_argument("--duration", type=float, help="seconds of arrivals per run")
    p.add_argument("--capacity", type=float, help="fleet capacity in req/s: skip the probe (repeatable runs)")
    p.add_argument("--servers", type=int, default=8)
    p.add_argument("--time-scale", type=float, default=FleetSettings().time_scale)
    p.add_argument("--seed", type=int, default=20261124)
    p.add_argument(
        "--out", type=Path, help="results JSON (default: docs/img/routing-results.json; quick: temp)"
    )
    p.add_argument("--no-report", action="store_true", help="do not render docs/benchmarks.md")
    return p.parse_args(argv)


def matrix_of(args: argparse.Namespace) -> Matrix:
    fleet = FleetSettings(time_scale=args.time_scale)
    all_routers = ("round_robin", "least_request", "random", "picker", "vllm-router", "sglang-router")
    if args.quick:
        workloads: tuple[str, ...] = ("shared_prefix",)
        loads: tuple[float, ...] = (0.8,)
        routers: tuple[str, ...] = ("round_robin", "least_request", "random", "picker")
        # Half the run warms the prefix caches: 48 system prompts need ~100 requests before their first
        # touches (a miss under every router) stop dominating p90; 15% of 5 s measured mostly those.
        duration, probe, warmup = 6.0, 3.0, 0.5
    else:
        workloads = ("sharegpt", "shared_prefix", "multi_lora", "canary")
        loads = (0.5, 0.8, 0.95) if args.full else (0.5, 0.8)
        routers = all_routers
        duration, probe, warmup = 15.0, 8.0, 0.15
    return Matrix(
        workloads=tuple(args.workloads or workloads),
        loads=tuple(args.loads or loads),
        routers=tuple(args.routers or routers),
        duration=args.duration or duration,
        warmup=warmup * (args.duration or duration),
        probe_seconds=probe,
        fleet=fleet,
        servers=args.servers,
        seed=args.seed,
        capacity=args.capacity,
    )


async def main_async(args: argparse.Namespace) -> int:
    m = matrix_of(args)
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    facts = machine_facts()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-routing-") as tmp:
        for name in m.workloads:
            log(f"workload {name}")
            results.append(await run_workload(name, m, Path(tmp), log))
    facts["loadavg_at_end"] = list(os.getloadavg())
    verdict = ratios(results)
    document = {
        "matrix": {**asdict(m), "fleet": asdict(m.fleet)},
        "mode": "quick" if args.quick else "full" if args.full else "default",
        "machine": facts,
        "elapsed_s": time.monotonic() - started,
        "overhead": picker_overhead(results),
        "ratios": verdict,
        "workloads": results,
    }
    out = args.out or (
        Path(tempfile.gettempdir()) / "routing-quick.json"
        if args.quick
        else REPO / "docs/img/routing-results.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=1))
    log(f"results: {out}")
    if not args.quick and not args.no_report:
        from hack.bench import report

        report.render(document, REPO / "docs")
        log("report: docs/benchmarks.md")
    print(
        "routing: "
        f"shared_prefix_p90_ttft_vs_round_robin={verdict['shared_prefix_p90_ttft_vs_round_robin']:.3f} "
        f"worst_p90_ttft_vs_best_other={verdict['worst_p90_ttft_vs_best_other']:.3f}",
        flush=True,
    )
    return 0


def quiet_logs() -> None:
    """Only fatal logs from the in-process fleet and gateway (streams aborted by a probe are expected)."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    logging.getLogger().setLevel(logging.CRITICAL)


async def main_cancellable(args: argparse.Namespace) -> int:
    """SIGTERM/SIGINT cancel the run, so every child (Envoys, picker, routers) is stopped on the way out."""
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        if task is not None:
            loop.add_signal_handler(sig, task.cancel)
    try:
        return await main_async(args)
    except asyncio.CancelledError:
        print("routing: interrupted", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    quiet_logs()
    return asyncio.run(main_cancellable(parse_args(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    sys.exit(main())
