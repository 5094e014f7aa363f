"""Per-model degradation of the simulator: slower TTFT and tokens, 500s, from a given moment, its controls."""

from __future__ import annotations

import asyncio
import itertools
import random
import statistics
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from localgateway.pods import AddressAllocator, pods_from_deployments
from localgateway.run import LocalGateway, LocalGatewayOptions
from simulator import SimFleet, SimServer, SimServerConfig
from simulator.__main__ import build_fleet
from simulator.config import server_config_from_mapping
from simulator.degradation import (
    DEGRADE_ENV,
    Degradation,
    Degradations,
    format_degradation,
    parse_degradations,
)

ADAPTERS = {"stable-lora": "/adapters/stable-lora", "canary-lora": "/adapters/canary-lora"}
WAIT_S = 15.0  # upper bound for polling a state to appear; never asserted as a timing
_prompt_ids = itertools.count()


@pytest.fixture
async def server() -> AsyncIterator[SimServer]:
    """A server whose base model and two adapters share one batch (a LoRA canary's pods)."""
    sim = SimServer(
        SimServerConfig(host="127.0.0.1", served_model_name="base", lora_modules=ADAPTERS, max_loras=2)
    )
    await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def control(http: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any]:
    async with http.post(url, json=body) as resp:
        return resp.status, await resp.json()


async def complete(http: aiohttp.ClientSession, sim: SimServer, model: str, **extra: Any) -> int:
    body = {"model": model, "prompt": "hello", "max_tokens": 1, **extra}
    async with http.post(sim.url + "/v1/completions", json=body) as resp:
        await resp.read()
        return resp.status


def fresh_prompt(chars: int = 6000) -> str:
    """A prompt with a first block of its own, so no prefix-cache hit shortens its prefill."""
    return f"{next(_prompt_ids):08d}-" + "x" * chars


async def timed(http: aiohttp.ClientSession, sim: SimServer, model: str, stream: bool) -> tuple[float, float]:
    """(time to first SSE chunk or to the whole answer, first-to-last token span) of one request."""
    prompt = fresh_prompt()
    body = {"model": model, "prompt": prompt, "max_tokens": 12 if stream else 1, "stream": stream}
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with http.post(sim.url + "/v1/completions", json=body) as resp:
        assert resp.status == 200
        if not stream:
            await resp.read()
            return loop.time() - start, 0.0
        token_times = []
        async for line in resp.content:
            if line.startswith(b"data: {"):
                token_times.append(loop.time())
    return token_times[0] - start, token_times[-1] - token_times[0]


async def medians(
    http: aiohttp.ClientSession, sim: SimServer, models: list[str], stream: bool, n: int = 5
) -> dict[str, tuple[float, float]]:
    """Median TTFT and token span per model, the models' requests interleaved one at a time."""
    samples: dict[str, list[tuple[float, float]]] = {m: [] for m in models}
    for _ in range(n):
        for model in models:
            samples[model].append(await timed(http, sim, model, stream))
    return {
        m: (statistics.median(s[0] for s in got), statistics.median(s[1] for s in got))
        for m, got in samples.items()
    }


# --- latency --------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
async def test_ttft_and_token_latency_of_the_degraded_model_only(
    server: SimServer, http: aiohttp.ClientSession, stream: bool
) -> None:
    models = ["stable-lora", "canary-lora", "base"]
    await medians(http, server, models, stream, n=1)  # adapters loaded once, before measuring
    before = await medians(http, server, models, stream)
    status, state = await control(
        http, server.url + "/sim/control", {"degrade": {"model": "canary-lora", "ttft": 3, "tpot": 2}}
    )
    assert status == 200 and state["degrade"]["canary-lora"]["started"]
    after = await medians(http, server, models, stream)
    ttft_ratio = {m: after[m][0] / before[m][0] for m in models}
    assert 2.4 < ttft_ratio["canary-lora"] < 3.6, ttft_ratio
    assert 0.75 < ttft_ratio["stable-lora"] < 1.33, ttft_ratio
    assert 0.75 < ttft_ratio["base"] < 1.33, ttft_ratio
    if stream:
        span_ratio = {m: after[m][1] / before[m][1] for m in models}
        assert 1.6 < span_ratio["canary-lora"] < 2.4, span_ratio
        assert 0.75 < span_ratio["stable-lora"] < 1.33, span_ratio


async def test_vllm_ttft_histogram_sees_the_stretched_ttft(
    server: SimServer, http: aiohttp.ClientSession
) -> None:
    # The engine observes the stretched TTFT, so the pod's own /metrics agrees with its clients.
    server.degrade(Degradation(model="canary-lora", ttft=4))
    for model in ("stable-lora", "canary-lora"):
        await complete(http, server, model)  # both adapters resident before measuring
    counters, sums = server.engine.counters, []
    for model in ("stable-lora", "canary-lora"):
        before = counters.ttft_sum
        await complete(http, server, model, prompt=fresh_prompt())
        sums.append(counters.ttft_sum - before)
    assert 3.0 < sums[1] / sums[0] < 5.0, sums


# --- errors ---------------------------------------------------------------------------------------


async def test_error_rate_is_seeded_and_counted(server: SimServer, http: aiohttp.ClientSession) -> None:
    p, n, seed = 0.1, 200, 7
    server.degrade(Degradation(model="canary-lora", error_rate=p, seed=seed))
    statuses: list[int] = []
    for _ in range(n // 20):
        batch = [complete(http, server, "canary-lora") for _i in range(20)]
        statuses += await asyncio.gather(*batch, complete(http, server, "stable-lora"))
    draws = random.Random(seed)
    expected = sum(draws.random() < p for _ in range(n))
    assert statuses.count(500) == expected
    assert abs(expected - p * n) < 4 * (n * p * (1 - p)) ** 0.5  # the seed is not a lucky one
    stats = server.stats_json()
    assert stats["responses_by_status"] == {"200": n + n // 20 - expected, "500": expected}
    degrade = stats["control"]["degrade"]["canary-lora"]
    assert (degrade["requests"], degrade["degraded"], degrade["errors"]) == (n, n, expected)


async def test_degraded_error_has_the_openai_shape(server: SimServer, http: aiohttp.ClientSession) -> None:
    server.degrade(Degradation(model="base", error_rate=1))
    for stream in (False, True):
        body = {"model": "base", "prompt": "x", "stream": stream}
        async with http.post(server.url + "/v1/completions", json=body) as resp:
            assert resp.status == 500
            error = (await resp.json())["error"]
    assert set(error) == {"message", "type", "param", "code"} and "base" in error["message"]
    assert await complete(http, server, "canary-lora") == 200


# --- from a given moment --------------------------------------------------------------------------


async def test_after_requests_degrades_from_the_next_one(
    server: SimServer, http: aiohttp.ClientSession
) -> None:
    await complete(http, server, "canary-lora")  # before the control: not counted
    await control(
        http,
        server.url + "/sim/control",
        {"degrade": "model=canary-lora,error_rate=1,after_requests=3"},
    )
    statuses = [await complete(http, server, "canary-lora") for _ in range(6)]
    assert statuses == [200, 200, 200, 500, 500, 500]


async def test_after_s_counts_real_seconds_from_the_control(
    server: SimServer, http: aiohttp.ClientSession
) -> None:
    url = server.url + "/sim/control"
    _, state = await control(http, url, {"degrade": {"model": "canary-lora", "error_rate": 1, "after_s": 1}})
    assert state["degrade"]["canary-lora"]["started"] is False
    assert 0 < state["degrade"]["canary-lora"]["starts_in_s"] <= 1
    early = await complete(http, server, "canary-lora")
    assert server.control_state()["degrade"]["canary-lora"]["started"] is False  # so it came before
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while not server.control_state()["degrade"]["canary-lora"]["started"]:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    assert (early, await complete(http, server, "canary-lora")) == (200, 500)


def test_start_and_ramp_on_a_clock() -> None:
    now = [100.0]
    degradations = Degradations(clock=lambda: now[0])
    degradations.set([Degradation(model="m", ttft=3, tpot=5, after_s=10, ramp_s=20, error_rate=1)])
    assert degradations.on_request("m") is None
    assert degradations.on_request("other") is None
    now[0] = 120.0  # half way up the ramp
    effect = degradations.on_request("m")
    assert effect is not None and (effect.ttft, effect.tpot) == (2.0, 3.0)
    now[0] = 200.0
    effect = degradations.on_request("m")
    assert effect is not None and (effect.ttft, effect.tpot, effect.fail) == (3.0, 5.0, True)
    assert degradations.state()["m"]["level"] == 1.0


def test_after_requests_and_after_s_both_hold_before_the_start() -> None:
    now = [0.0]
    degradations = Degradations(clock=lambda: now[0])
    degradations.set([Degradation(model="m", ttft=2, after_s=5, after_requests=1, ramp_s=10)])
    assert degradations.on_request("m") is None  # the one request let through
    assert degradations.on_request("m") is None  # too early
    assert degradations.state()["m"]["starts_in_s"] == 5.0
    now[0] = 10.0
    effect = degradations.on_request("m")
    assert effect is not None and effect.ttft == 1.5  # the ramp began at after_s, not at this request


# --- controls -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"model": "ghost", "ttft": 2},
        {"ttft": 2},
        {"model": "base", "ttft": 0.5},
        {"model": "base", "tpot": True},
        {"model": "base", "error_rate": 1.5},
        {"model": "base", "after_s": -1},
        {"model": "base", "after_requests": 1.5},
        {"model": "base", "bogus": 1},
        "model=base,ttft=fast",
        "model=base,ttft",
        5,
    ],
)
async def test_bad_degrade_is_a_400_that_changes_nothing(
    server: SimServer, http: aiohttp.ClientSession, bad: Any
) -> None:
    status, body = await control(http, server.url + "/sim/control", {"fail": True, "degrade": bad})
    assert status == 400 and "degrade" in body["error"]["message"]
    assert server.control_state()["fail"] is False
    assert server.control_state()["degrade"] == {}


async def test_clear_and_a_noop_entry_remove_degradations(
    server: SimServer, http: aiohttp.ClientSession
) -> None:
    url = server.url + "/sim/control"
    both = [{"model": "base", "error_rate": 1}, {"model": "canary-lora", "error_rate": 1}]
    _, state = await control(http, url, {"degrade": both})
    assert set(state["degrade"]) == {"base", "canary-lora"}
    _, state = await control(http, url, {"degrade": {"model": "base"}})
    assert set(state["degrade"]) == {"canary-lora"}
    assert await complete(http, server, "base") == 200
    _, state = await control(http, url, {"clear": True})
    assert state["degrade"] == {}
    assert await complete(http, server, "canary-lora") == 200
    async with http.get(server.url + "/sim/stats") as resp:
        assert (await resp.json())["control"]["degrade"] == {}


async def test_fleet_control_degrades_the_model_where_it_is_served(http: aiohttp.ClientSession) -> None:
    configs = [
        SimServerConfig(host="127.0.0.1", served_model_name="base", lora_modules=ADAPTERS, name="lora"),
        SimServerConfig(host="127.0.0.1", served_model_name="base", name="plain"),
    ]
    async with SimFleet(configs, admin_host="127.0.0.1") as fleet:
        url = f"{fleet.admin_url}/sim/fleet/control"
        status, body = await control(
            http, url, {"server": "*", "degrade": {"model": "canary-lora", "error_rate": 1}}
        )
        assert status == 200
        assert [set(s["degrade"]) for s in body["servers"]] == [{"canary-lora"}, set()]
        lora, plain = fleet.servers
        assert await complete(http, lora, "canary-lora") == 500
        status, _ = await control(http, url, {"server": "*", "degrade": {"model": "ghost", "ttft": 2}})
        assert status == 400
        status, _ = await control(http, url, {"server": "plain", "degrade": "model=canary-lora,ttft=2"})
        assert status == 400
        status, body = await control(http, url, {"server": "*", "degrade": "model=base,error_rate=1"})
        assert [set(s["degrade"]) for s in body["servers"]] == [{"base", "canary-lora"}, {"base"}]
        assert await complete(http, plain, "base") == 500
        await control(http, url, {"server": "*", "clear": True})
        assert [s.control_state()["degrade"] for s in fleet.servers] == [{}, {}]


# --- configuration --------------------------------------------------------------------------------


def test_text_form_round_trips() -> None:
    specs = parse_degradations(" model=a,ttft=3,after_s=2.5 ; model=b,error_rate=0.05,seed=9,ramp-s=4;")
    assert specs == (
        Degradation(model="a", ttft=3.0, after_s=2.5),
        Degradation(model="b", error_rate=0.05, seed=9, ramp_s=4.0),
    )
    assert parse_degradations(";".join(format_degradation(s) for s in specs)) == specs


def test_config_and_fleet_yaml_take_degrade() -> None:
    config = server_config_from_mapping(
        {"served-model-name": "base", "degrade": [{"model": "base", "tpot": 2}, "model=base,ttft=3"]}
    )
    assert config.degrade == (Degradation(model="base", tpot=2.0), Degradation(model="base", ttft=3.0))
    with pytest.raises(ValueError, match="unserved model ghost"):
        SimServerConfig(served_model_name="base", degrade=(Degradation(model="ghost", ttft=2),))
    with pytest.raises(ValueError, match=r"server\.degrade"):
        server_config_from_mapping({"degrade": "model=base,ttft=-1"})


def test_cli_flag_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DEGRADE_ENV, "model=base,error_rate=0.5;model=sql,ttft=2")
    fleet = build_fleet(
        ["--served-model-name", "base", "--lora-modules", "sql=/a", "--degrade", "model=base,ttft=3"]
    )
    assert fleet.servers[0].config.degrade == (
        Degradation(model="base", ttft=3.0),  # the flag replaces the environment's entry for base
        Degradation(model="sql", ttft=2.0),
    )
    assert set(fleet.servers[0].control_state()["degrade"]) == {"base", "sql"}


def test_pod_manifest_env_reaches_the_local_gateway_simulator() -> None:
    container = {
        "name": "vllm",
        "image": "vllm/vllm-openai:latest",
        "args": ["--model", "meta-llama/Llama-3.1-8B", "--lora-modules", "canary=/c", "--port", "8000"],
        "env": [
            {"name": DEGRADE_ENV, "value": "model=canary,ttft=3,after_s=60"},
            {"name": "X", "value": "1"},
        ],
    }
    deployment = {
        "kind": "Deployment",
        "metadata": {"name": "llama", "namespace": "default"},
        "spec": {
            "replicas": 2,
            "template": {"metadata": {"labels": {"app": "llama"}}, "spec": {"containers": [container]}},
        },
    }
    pods = pods_from_deployments([deployment], AddressAllocator())
    assert [p.sim_degrade for p in pods] == ["model=canary,ttft=3,after_s=60"] * 2
    assert pods[0].degradations() == (Degradation(model="canary", ttft=3.0, after_s=60.0),)
    container["env"] = [{"name": DEGRADE_ENV, "value": "model=canary,ttft=slow"}]
    (bad,) = pods_from_deployments(
        [{**deployment, "spec": {**deployment["spec"], "replicas": 1}}], AddressAllocator()
    )
    with pytest.raises(ValueError, match="default/llama-0: SIM_DEGRADE"):
        bad.degradations()


async def test_local_gateway_starts_the_pods_simulators_degraded(tmp_path: Path) -> None:
    # Only the pods and their fleet: the wiring from a manifest's env to each simulator, no Envoy.
    container = {
        "name": "vllm",
        "image": "vllm/vllm-openai:latest",
        "command": ["sh", "-c", "vllm serve base --lora-modules canary=/c --port 8000"],
        "env": [{"name": DEGRADE_ENV, "value": "model=canary,error_rate=1"}],
    }
    template = {"metadata": {"labels": {"app": "pool"}}, "spec": {"containers": [container]}}
    deployment = {"kind": "Deployment", "metadata": {"name": "pool"}, "spec": {"template": template}}
    options = LocalGatewayOptions(manifests=[], work_dir=tmp_path, ip_prefix="127.0.9.")
    gateway = LocalGateway(options)
    gateway._make_pods([deployment])
    await gateway._start_fleet()
    try:
        assert gateway.fleet is not None
        (sim,) = gateway.fleet.servers
        async with aiohttp.ClientSession() as http:
            assert [await complete(http, sim, m) for m in ("base", "canary")] == [200, 500]
    finally:
        if gateway.fleet is not None:
            await gateway.fleet.stop()
