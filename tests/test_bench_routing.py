"""The routing benchmark: workloads, load-generator statistics, baselines, and a --quick smoke run."""

from __future__ import annotations

import json
import math
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hack.bench import loadgen, workloads
from hack.bench.loadgen import Record, percentile, summarize
from hack.bench.routers import envoy_baseline_bootstrap, start_envoy_router
from localgateway.pods import AddressAllocator, pods_from_deployments
from simulator import SimFleet, SimServerConfig

REPO = Path(__file__).resolve().parents[1]


# workloads -------------------------------------------------------------------------------------------


def test_poisson_arrivals_are_seeded_sorted_and_near_the_rate() -> None:
    times = workloads.poisson_times(50.0, 100.0, random.Random(1))
    assert times == sorted(times)
    assert all(0 <= t < 100 for t in times)
    assert 4500 < len(times) < 5500  # 5000 expected; a Poisson count's sd is ~71
    assert times == workloads.poisson_times(50.0, 100.0, random.Random(1))


def test_poisson_rejects_non_positive_rate() -> None:
    with pytest.raises(ValueError, match="rate"):
        workloads.poisson_times(0.0, 10.0, random.Random(1))


def test_same_seed_gives_same_arrivals_for_every_router() -> None:
    wl = workloads.shared_prefix(servers=4)
    a = workloads.arrivals(wl, 10.0, 5.0, seed=3)
    b = workloads.arrivals(wl, 10.0, 5.0, seed=3)
    assert a == b
    assert a != workloads.arrivals(wl, 10.0, 5.0, seed=4)


def test_shared_prefix_requests_share_long_system_prompts() -> None:
    wl = workloads.shared_prefix(servers=4, groups=3, system_tokens=512)
    rng = random.Random(5)
    reqs = [wl.sample(rng) for _ in range(60)]
    prefixes = {r.prompt[: 512 * workloads.BYTES_PER_TOKEN] for r in reqs}
    assert len(prefixes) == 3
    assert len({r.prompt for r in reqs}) == 60


def test_multi_lora_uses_20_adapters_with_zipf_popularity() -> None:
    wl = workloads.multi_lora()
    assert len(wl.deployments[0].lora_adapters) == 20
    weights = workloads.zipf_weights(20, 1.1)
    assert math.isclose(sum(weights), 1.0)
    assert weights == sorted(weights, reverse=True)
    rng = random.Random(2)
    counts: dict[str, int] = {}
    for _ in range(2000):
        r = wl.sample(rng)
        counts[r.model] = counts.get(r.model, 0) + 1
        assert r.service == workloads.BASE_MODEL and r.direct_model == r.model
    assert counts["adapter-00"] > counts.get("adapter-19", 0) * 5


def test_canary_sends_qwq_to_the_picker_and_a_target_to_baselines() -> None:
    wl = workloads.canary()
    rng = random.Random(9)
    reqs = [wl.sample(rng) for _ in range(400)]
    assert {r.model for r in reqs} == {"qwq"}
    targets = [r.direct_model for r in reqs]
    assert set(targets) == {"qwq-32b", "deepseek-r1"}
    assert 150 < targets.count("qwq-32b") < 250
    assert all(r.service == r.direct_model for r in reqs)
    assert reqs[0].body(direct=False)["model"] == "qwq"
    assert reqs[0].body(direct=True)["model"] == reqs[0].direct_model


def test_manifests_give_the_local_gateway_the_fleet_shape() -> None:
    fleet = workloads.FleetSettings(max_num_seqs=12, max_loras=3)
    objects = workloads.manifests(workloads.multi_lora(servers=5), fleet)
    pods = pods_from_deployments(objects, AddressAllocator("127.0.0."))
    assert len(pods) == 5
    assert pods[0].max_num_seqs == 12 and pods[0].max_loras == 3
    assert len(pods[0].lora_adapters) == 20
    kinds = [o["kind"] for o in objects]
    assert kinds.count("InferenceModel") == 20 and kinds.count("InferencePool") == 1
    canary = workloads.manifests(workloads.canary(), fleet)
    model = next(o for o in canary if o["kind"] == "InferenceModel")
    assert model["spec"]["targetModels"] == [
        {"name": "qwq-32b", "weight": 50},
        {"name": "deepseek-r1", "weight": 50},
    ]


# load-generator statistics ---------------------------------------------------------------------------


def test_percentile_interpolates_and_handles_empty() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([5.0], 99) == 5.0
    assert math.isnan(percentile([], 90))


def test_summarize_counts_errors_sheds_and_skips_warmup() -> None:
    records = [
        Record(scheduled=0.1, sent=0.1, status=200, ttft=9.0, e2e=9.5, output_tokens=100),  # warm-up
        Record(scheduled=1.0, sent=1.0, status=200, ttft=0.1, e2e=1.0, output_tokens=10),
        Record(scheduled=1.5, sent=1.5, status=200, ttft=0.3, e2e=1.5, output_tokens=20),
        Record(scheduled=2.0, sent=2.0, status=429, ttft=None, e2e=None, output_tokens=0, error="http 429"),
        Record(scheduled=2.5, sent=2.5, status=500, ttft=None, e2e=None, output_tokens=0, error="http 500"),
    ]
    s = summarize(records, warmup=0.5)
    assert s.requests == 4 and s.ok == 2
    assert s.shed_rate == 0.25 and s.error_rate == 0.25
    assert s.ttft_p50_ms == pytest.approx(200.0)
    assert s.tokens_per_s == pytest.approx(30 / 2.0)  # sends from 1.0, last finish at 3.0
    assert s.requests_per_s == pytest.approx(1.0)


async def test_loadgen_records_streamed_requests_against_a_simulated_server() -> None:
    async with SimFleet([SimServerConfig(time_scale=0.01, max_num_seqs=4)]) as fleet:
        url = fleet.servers[0].url + "/v1/completions"
        job = {
            "url": url,
            "requests": [
                {"at": 0.0, "body": {"model": "sim-model", "prompt": "hi", "max_tokens": 5, "stream": True,
                                      "stream_options": {"include_usage": True}}},
                {"at": 0.01, "body": {"model": "nope", "prompt": "hi", "max_tokens": 5, "stream": True}},
            ],
        }  # fmt: skip
        result = await loadgen.run_job(job)
    records = loadgen.records_of(result)
    good, bad = records
    assert good.ok and good.output_tokens == 5 and good.ttft is not None and good.e2e is not None
    assert good.e2e >= good.ttft
    assert bad.status == 404 and not bad.ok
    assert result["cpu_seconds"] >= 0


# baselines -------------------------------------------------------------------------------------------


def test_envoy_baseline_routes_by_service_header() -> None:
    boot = envoy_baseline_bootstrap("least_request", 1234, {"a": ["127.0.0.2:8000"], "b": ["127.0.0.3:8000"]})
    clusters = {c["name"]: c for c in boot["static_resources"]["clusters"]}
    assert set(clusters) == {"svc-a", "svc-b", "svc-all"}
    assert all(c["lb_policy"] == "LEAST_REQUEST" for c in clusters.values())
    assert len(clusters["svc-all"]["load_assignment"]["endpoints"][0]["lb_endpoints"]) == 2


async def test_envoy_round_robin_spreads_over_the_fleet() -> None:
    configs = [SimServerConfig(host=f"127.0.0.{i}", time_scale=0.01) for i in (2, 3)]
    async with SimFleet(configs) as fleet:
        router = await start_envoy_router("round_robin", {"sim-model": [s.address for s in fleet.servers]})
        try:
            job = {
                "url": router.url + "/v1/completions",
                "requests": [
                    {"at": i * 0.01, "headers": {workloads.SERVICE_HEADER: "sim-model"},
                     "body": {"model": "sim-model", "prompt": "x", "max_tokens": 2, "stream": True}}
                    for i in range(6)
                ],
            }  # fmt: skip
            result = await loadgen.run_job(job)
        finally:
            await router.stop()
        assert all(r.ok for r in loadgen.records_of(result))
        assert all(n > 0 for n in fleet.requests_by_server().values())  # per-worker round robin: both used


# smoke -----------------------------------------------------------------------------------------------


def test_quick_run_prints_the_verdict_line_and_every_router_has_results(tmp_path: Path) -> None:
    out = tmp_path / "routing.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "hack/bench/routing.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert re.fullmatch(
        r"routing: shared_prefix_p90_ttft_vs_round_robin=\d+\.\d+ worst_p90_ttft_vs_best_other=\d+\.\d+",
        lines[-1],
    ), lines[-1]
    document = json.loads(out.read_text())
    routers = set(document["matrix"]["routers"])
    assert routers == {"round_robin", "least_request", "random", "picker"}
    cells = document["workloads"][0]["cells"]
    assert {c["router"] for c in cells} == routers
    for cell in cells:
        assert cell["summary"]["ok"] > 0, cell
