"""The model-server simulator (simulator) over real HTTP: vLLM shapes, batching, LoRA slots, controls."""

from __future__ import annotations

import asyncio
import json
import shlex
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from simulator import (
    SERVER_HEADER,
    SimFleet,
    SimServer,
    SimServerConfig,
    load_fleet_config,
)
from simulator.__main__ import build_fleet
from tests.ports import common_free_port

FIXTURES = Path(__file__).parent / "fixtures" / "sim"
WAIT_S = 15.0  # upper bound for polling a state to appear; never asserted as a timing

MakeServer = Callable[..., Awaitable[SimServer]]


def fixture_json(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def key_shape(value: Any) -> Any:
    """The nested key structure of a JSON value (lists reduced to their first element)."""
    if isinstance(value, dict):
        return {k: key_shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [key_shape(value[0])] if value else []
    return None


def sse_payloads(text: str) -> list[str]:
    return [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]


@pytest.fixture
async def make_server() -> AsyncIterator[MakeServer]:
    servers: list[SimServer] = []

    async def make(**kwargs: Any) -> SimServer:
        kwargs.setdefault("host", "127.0.0.1")
        kwargs.setdefault("time_scale", 0.05)
        server = SimServer(SimServerConfig(**kwargs))
        await server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def lora_server(make_server: MakeServer, **kwargs: Any) -> SimServer:
    return await make_server(
        served_model_name="tiny",
        lora_modules={"sql-lora": "/adapters/sql-lora", "tweet-summary": "/adapters/tweet-summary"},
        **kwargs,
    )


async def post(http: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any, str | None]:
    async with http.post(url, json=body) as resp:
        return resp.status, await resp.json(), resp.headers.get(SERVER_HEADER)


async def metrics(http: aiohttp.ClientSession, server: SimServer) -> dict[str, list[Any]]:
    async with http.get(server.url + "/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


async def wait_for_metrics(
    http: aiohttp.ClientSession, server: SimServer, check: Callable[[dict[str, list[Any]]], bool]
) -> dict[str, list[Any]]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while True:
        families = await metrics(http, server)
        if check(families):
            return families
        assert loop.time() < deadline, f"state never reached; last metrics: {families}"
        await asyncio.sleep(0.01)


def gauge(families: dict[str, list[Any]], name: str) -> float:
    return float(families[name][0].value)


def newest_lora_info(families: dict[str, list[Any]]) -> dict[str, str]:
    samples = families["vllm:lora_requests_info"]
    return dict(max(samples, key=lambda s: s.value).labels)


# --- shapes -------------------------------------------------------------------------------------


async def test_models_list_has_vllm_shape_with_adapters(
    make_server: MakeServer, http: aiohttp.ClientSession
) -> None:
    server = await lora_server(make_server)
    async with http.get(server.url + "/v1/models") as resp:
        body = await resp.json()
        assert resp.headers[SERVER_HEADER] == server.address
    expected = fixture_json("v1-models.json")
    assert key_shape(body) == key_shape(expected)
    assert [m["id"] for m in body["data"]] == ["tiny", "sql-lora", "tweet-summary"]
    assert [m["parent"] for m in body["data"]] == [None, "tiny", "tiny"]
    assert body["data"][1]["root"] == "/adapters/sql-lora"
    assert isinstance(body["data"][0]["max_model_len"], int)


async def test_completion_for_adapter_has_vllm_shape(
    make_server: MakeServer, http: aiohttp.ClientSession
) -> None:
    server = await lora_server(make_server)
    status, body, who = await post(
        http, server.url + "/v1/completions", {"model": "tweet-summary", "prompt": "hi", "max_tokens": 7}
    )
    assert status == 200
    assert who == server.address
    assert key_shape(body) == key_shape(fixture_json("completion-lora.json"))
    assert body["model"] == "tweet-summary"
    assert body["id"].startswith("cmpl-")
    assert body["usage"]["completion_tokens"] == 7
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + 7
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["choices"][0]["text"]


async def test_chat_completion_has_vllm_shape_and_default_length(
    make_server: MakeServer, http: aiohttp.ClientSession
) -> None:
    server = await lora_server(make_server)
    messages = [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]
    status, body, _ = await post(
        http, server.url + "/v1/chat/completions", {"model": "tiny", "messages": messages}
    )
    assert status == 200
    assert key_shape(body) == key_shape(fixture_json("chat-completion.json"))
    assert body["model"] == "tiny"
    assert body["object"] == "chat.completion"
    assert body["usage"]["completion_tokens"] == 16  # vLLM-like default max_tokens


async def test_chat_stream_matches_vllm_chunks_and_first_token_precedes_the_end(
    make_server: MakeServer, http: aiohttp.ClientSession
) -> None:
    server = await lora_server(make_server, time_scale=1.0)
    request = {
        "model": "sql-lora",
        "messages": [{"role": "user", "content": "stream please"}],
        "max_tokens": 40,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with http.post(server.url + "/v1/chat/completions", json=request) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert resp.headers[SERVER_HEADER] == server.address
        lines: list[str] = []
        running_when_first_token_arrived: int | None = None
        async for raw in resp.content:
            line = raw.decode().strip()
            if not line:
                continue
            lines.append(line)
            if running_when_first_token_arrived is None and '"content":" ' in line:
                running_when_first_token_arrived = server.engine.snapshot().running
    # The first token reached the client while the request was still generating.
    assert running_when_first_token_arrived == 1
    payloads = sse_payloads("\n".join(lines))
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    expected = [json.loads(p) for p in sse_payloads((FIXTURES / "chat-stream-sse.txt").read_text())[:-1]]
    assert key_shape(chunks[0]) == key_shape(expected[0])  # role chunk
    assert key_shape(chunks[1]) == key_shape(expected[1])  # token chunk
    assert key_shape(chunks[-2]) == key_shape(expected[-2])  # last token, with finish_reason
    assert key_shape(chunks[-1]) == key_shape(expected[-1])  # usage chunk
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert all(c["model"] == "sql-lora" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert len(chunks) == 1 + 40 + 1
    assert chunks[-1]["usage"]["completion_tokens"] == 40


async def test_completion_stream_without_usage_ends_with_done(
    make_server: MakeServer, http: aiohttp.ClientSession
) -> None:
    server = await lora_server(make_server)
    request = {"model": "tiny", "prompt": "x", "max_tokens": 5, "stream": True}
    async with http.post(server.url + "/v1/completions", json=request) as resp:
        payloads = sse_payloads(await resp.text())
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert len(chunks) == 5
    assert all(c["object"] == "text_completion" and "usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


async def test_unknown_model_is_vllm_not_found(make_server: MakeServer, http: aiohttp.ClientSession) -> None:
    server = await lora_server(make_server)
    status, body, who = await post(http, server.url + "/v1/completions", {"model": "no-such", "prompt": "x"})
    assert status == 404
    assert who == server.address
    expected = fixture_json("error-unknown-model.json")
    assert key_shape(body) == key_shape(expected)
    assert body["error"]["type"] == "NotFoundError"
    assert body["error"]["code"] == 404
    assert body["error"]["param"] == "model"
    assert "`no-such`" in body["error"]["message"]


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/completions", {"model": "tiny", "prompt": "x", "temperature": "hot"}, "body.temperature"),
        ("/v1/completions", {"model": "tiny", "prompt": "x", "max_tokens": 0}, "body.max_tokens"),
        ("/v1/completions", {"model": "tiny", "prompt": "x", "max_tokens": "7"}, "body.max_tokens"),
        ("/v1/completions", {"model": 7, "prompt": "x"}, "body.model"),
        ("/v1/completions", {"model": "tiny"}, "body.prompt"),
        ("/v1/chat/completions", {"model": "tiny", "messages": "hi"}, "body.messages"),
        ("/v1/chat/completions", {"model": "tiny", "messages": [{"content": "x"}]}, "body.messages.0"),
        ("/v1/chat/completions", {"model": "tiny", "messages": [], "stream": "yes"}, "body.stream"),
    ],
)
async def test_bad_params_are_vllm_bad_request(
    make_server: MakeServer, http: aiohttp.ClientSession, path: str, body: Any, param: str
) -> None:
    server = await lora_server(make_server)
    status, answer, _ = await post(http, server.url + path, body)
    assert status == 400
    assert key_shape(answer) == key_shape(fixture_json("error-bad-param.json"))
    assert answer["error"] == {**answer["error"], "type": "Bad Request", "param": param, "code": 400}


async def test_malformed_json_and_too_long_prompt_are_400(
    make_server: MakeServer, http: aiohttp.ClientSession
) -> None:
    server = await make_server(served_model_name="tiny", max_model_len=64)
    async with http.post(server.url + "/v1/completions", data=b"{not json") as resp:
        assert resp.status == 400
        assert set((await resp.json())["error"]) == {"message", "type", "param", "code"}
    status, body, _ = await post(
        http, server.url + "/v1/completions", {"model": "tiny", "prompt": "x" * 1000}
    )
    assert status == 400
    assert "maximum context length is 64" in body["error"]["message"]


async def test_one_mib_prompt_is_served(make_server: MakeServer, http: aiohttp.ClientSession) -> None:
    server = await make_server(served_model_name="tiny", time_scale=0.01)
    prompt = "word " * (1024 * 1024 // 5)
    status, body, _ = await post(http, server.url + "/v1/completions", {"model": "tiny", "prompt": prompt})
    assert status == 200
    assert body["usage"]["prompt_tokens"] > 200_000


# --- metrics ------------------------------------------------------------------------------------


async def test_metrics_parse_and_use_vllm_names_and_labels(
    make_server: MakeServer, http: aiohttp.ClientSession
) -> None:
    server = await lora_server(make_server, max_loras=2)
    await post(http, server.url + "/v1/completions", {"model": "sql-lora", "prompt": "x", "max_tokens": 3})
    ours = await metrics(http, server)
    real = {f.name: f for f in text_string_to_metric_families((FIXTURES / "metrics-busy.txt").read_text())}
    required = {
        "vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
        "vllm:lora_requests_info", "vllm:cache_config_info", "vllm:prompt_tokens", "vllm:generation_tokens",
        "vllm:time_to_first_token_seconds", "vllm:prefix_cache_queries", "vllm:prefix_cache_hits",
        "vllm:request_success", "vllm:num_requests_waiting_by_reason",
    }  # fmt: skip
    assert required <= set(ours)
    for name, samples in ours.items():
        if not name.startswith("vllm:"):
            continue
        assert name in real, f"{name} is not a vLLM 0.32 metric"
        real_samples = {(s.name, frozenset(s.labels)) for s in real[name].samples}
        for sample in samples:
            if name == "vllm:cache_config_info":
                assert {"block_size", "num_gpu_blocks"} <= set(sample.labels)
                continue
            assert (sample.name, frozenset(sample.labels)) in real_samples, sample
    assert ours["vllm:generation_tokens"][0].name == "vllm:generation_tokens_total"
    assert gauge(ours, "vllm:generation_tokens") == 3
    info = newest_lora_info(ours)
    assert info["max_lora"] == "2"
    assert ours["vllm:lora_requests_info"][0].value > 1e9  # a timestamp
    ttft_count = [s for s in ours["vllm:time_to_first_token_seconds"] if s.name.endswith("_count")]
    assert ttft_count[0].value == 1


async def test_base_only_server_has_no_lora_series(
    make_server: MakeServer, http: aiohttp.ClientSession
) -> None:
    server = await make_server(served_model_name="qwq-32b")
    families = await metrics(http, server)
    assert "vllm:lora_requests_info" not in families
    assert families["vllm:num_requests_running"][0].labels == {"engine": "0", "model_name": "qwq-32b"}


# --- engine behaviour ---------------------------------------------------------------------------


async def test_requests_queue_beyond_max_num_seqs(
    make_server: MakeServer, http: aiohttp.ClientSession
) -> None:
    server = await make_server(served_model_name="tiny", max_num_seqs=1, time_scale=0.5)
    body = {"model": "tiny", "prompt": "queue me", "max_tokens": 150}
    requests = [asyncio.ensure_future(post(http, server.url + "/v1/completions", body)) for _ in range(3)]
    families = await wait_for_metrics(http, server, lambda f: gauge(f, "vllm:num_requests_waiting") > 0)
    assert gauge(families, "vllm:num_requests_running") == 1
    assert gauge(families, "vllm:kv_cache_usage_perc") > 0
    results = await asyncio.gather(*requests)
    assert [r[0] for r in results] == [200] * 3
    idle = await metrics(http, server)
    assert gauge(idle, "vllm:num_requests_waiting") == 0
    assert gauge(idle, "vllm:num_requests_running") == 0
    assert gauge(idle, "vllm:kv_cache_usage_perc") == 0


async def test_admission_waits_for_kv_cache_room(
    make_server: MakeServer, http: aiohttp.ClientSession
) -> None:
    # Each request reserves prompt + max_tokens; two of them do not fit together.
    server = await make_server(served_model_name="tiny", kv_cache_tokens=300, time_scale=0.5)
    body = {"model": "tiny", "prompt": "kv", "max_tokens": 200}
    requests = [asyncio.ensure_future(post(http, server.url + "/v1/completions", body)) for _ in range(2)]
    families = await wait_for_metrics(http, server, lambda f: gauge(f, "vllm:num_requests_waiting") == 1)
    assert gauge(families, "vllm:num_requests_running") == 1
    waiting_reasons = {s.labels["reason"]: s.value for s in families["vllm:num_requests_waiting_by_reason"]}
    assert waiting_reasons == {"capacity": 1.0, "deferred": 0.0}
    assert [r[0] for r in await asyncio.gather(*requests)] == [200, 200]


async def test_more_adapters_than_max_loras_wait_for_a_slot(
    make_server: MakeServer, http: aiohttp.ClientSession
) -> None:
    server = await lora_server(make_server, max_loras=1, time_scale=0.5)
    sql = asyncio.ensure_future(
        post(http, server.url + "/v1/completions", {"model": "sql-lora", "prompt": "a", "max_tokens": 200})
    )
    await wait_for_metrics(http, server, lambda f: gauge(f, "vllm:num_requests_running") == 1)
    tweet = asyncio.ensure_future(
        post(http, server.url + "/v1/completions", {"model": "tweet-summary", "prompt": "b", "max_tokens": 5})
    )

    def tweet_waits(families: dict[str, list[Any]]) -> bool:
        return newest_lora_info(families)["waiting_lora_adapters"] == "tweet-summary"

    families = await wait_for_metrics(http, server, tweet_waits)
    info = newest_lora_info(families)
    assert info == {
        "max_lora": "1",
        "running_lora_adapters": "sql-lora",
        "waiting_lora_adapters": "tweet-summary",
    }
    reasons = {s.labels["reason"]: s.value for s in families["vllm:num_requests_waiting_by_reason"]}
    assert reasons["deferred"] == 1.0
    # The adapter runs only after the slot frees: the sql-lora request finishes first.
    done, _ = await asyncio.wait([sql, tweet], return_when=asyncio.FIRST_COMPLETED)
    assert sql in done
    status, body, _ = await tweet
    assert (status, body["model"]) == (200, "tweet-summary")
    stats = server.stats_json()
    assert stats["engine"]["lora_loads"] == 2
    assert stats["engine"]["loaded_lora_adapters"] == ["tweet-summary"]


async def test_shared_prefix_hits_the_prefix_cache(
    make_server: MakeServer, http: aiohttp.ClientSession
) -> None:
    server = await make_server(served_model_name="tiny")
    shared = "system prompt shared by every request. " * 40
    for suffix in ("first question", "second question"):
        status, _, _ = await post(
            http,
            server.url + "/v1/completions",
            {"model": "tiny", "prompt": shared + suffix, "max_tokens": 2},
        )
        assert status == 200
    families = await metrics(http, server)
    hits = gauge(families, "vllm:prefix_cache_hits")
    assert hits >= 16 * (len(shared) // 64)  # every full shared block of the second prompt was cached
    assert server.stats_json()["engine"]["prompt_tokens_cached"] == hits


async def test_client_disconnect_frees_the_sequence(
    make_server: MakeServer, http: aiohttp.ClientSession
) -> None:
    server = await make_server(served_model_name="tiny", time_scale=1.0)
    request = {"model": "tiny", "prompt": "bye", "max_tokens": 5000, "stream": True}
    async with http.post(server.url + "/v1/completions", json=request) as resp:
        await resp.content.readline()
        await wait_for_metrics(http, server, lambda f: gauge(f, "vllm:num_requests_running") == 1)
        resp.close()
    await wait_for_metrics(http, server, lambda f: gauge(f, "vllm:num_requests_running") == 0)
    assert server.engine.counters.success_by_reason["abort"] == 1


# --- controls and stats -------------------------------------------------------------------------


async def test_control_overrides_metrics_then_clear(
    make_server: MakeServer, http: aiohttp.ClientSession
) -> None:
    server = await lora_server(make_server)
    control = {"waiting": 10, "running": 4, "kv_cache_usage": 0.9, "running_lora_adapters": ["sql-lora"]}
    status, state, _ = await post(http, server.url + "/sim/control", control)
    assert status == 200
    assert state["overrides"]["waiting"] == 10
    families = await metrics(http, server)
    assert gauge(families, "vllm:num_requests_waiting") == 10
    assert gauge(families, "vllm:num_requests_running") == 4
    assert gauge(families, "vllm:kv_cache_usage_perc") == 0.9
    assert newest_lora_info(families)["running_lora_adapters"] == "sql-lora"
    await post(http, server.url + "/sim/control", {"clear": True})
    families = await metrics(http, server)
    assert gauge(families, "vllm:num_requests_waiting") == 0
    assert newest_lora_info(families)["running_lora_adapters"] == ""


async def test_control_rejects_bad_values(make_server: MakeServer, http: aiohttp.ClientSession) -> None:
    server = await make_server()
    for bad in ({"kv_cache_usage": 2}, {"slowdown": 0}, {"bogus": 1}, {"waiting": -1}, [1]):
        async with http.post(server.url + "/sim/control", json=bad) as resp:
            assert resp.status == 400, bad
            assert "error" in await resp.json()


async def test_fail_answers_500_and_slowdown_is_recorded(
    make_server: MakeServer, http: aiohttp.ClientSession
) -> None:
    server = await make_server(served_model_name="tiny")
    await post(http, server.url + "/sim/control", {"fail": True, "slowdown": 5.0})
    status, body, who = await post(http, server.url + "/v1/completions", {"model": "tiny", "prompt": "x"})
    assert (status, who) == (500, server.address)
    assert set(body["error"]) == {"message", "type", "param", "code"}
    async with http.get(server.url + "/health") as resp:
        assert resp.status == 500
    async with http.get(server.url + "/v1/models") as resp:
        assert resp.status == 200  # the API server still answers; only the engine fails
    assert server.control_state()["slowdown"] == 5.0
    server.set_fail(False)
    server.set_slowdown(1.0)
    status, _, _ = await post(http, server.url + "/v1/completions", {"model": "tiny", "prompt": "x"})
    assert status == 200


async def test_down_stops_listening_and_comes_back(
    make_server: MakeServer, http: aiohttp.ClientSession
) -> None:
    server = await make_server(served_model_name="tiny", time_scale=1.0)
    long_request = {"model": "tiny", "prompt": "x", "max_tokens": 5000}
    in_flight = asyncio.ensure_future(post(http, server.url + "/v1/completions", long_request))
    streaming = await http.post(server.url + "/v1/completions", json={**long_request, "stream": True})
    await streaming.content.readline()
    await wait_for_metrics(http, server, lambda f: gauge(f, "vllm:num_requests_running") == 2)
    status, state, _ = await post(http, server.url + "/sim/control", {"down": True})
    assert (status, state["down"]) == (200, True)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while not server.down or server._site is not None:
        assert loop.time() < deadline
        await asyncio.sleep(0.01)
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as fresh, fresh.get(server.url + "/health") as resp:
            await resp.read()
    # Requests in flight on a killed server fail; none hangs.
    with pytest.raises(aiohttp.ClientError):
        await in_flight
    with pytest.raises(aiohttp.ClientError):
        await streaming.read()
    streaming.release()
    await server.set_down(False)
    async with http.get(server.url + "/health") as resp:
        assert resp.status == 200
    assert gauge(await metrics(http, server), "vllm:num_requests_running") == 0


async def test_stats_count_requests_per_model_and_keep_last_body(
    make_server: MakeServer, http: aiohttp.ClientSession
) -> None:
    server = await lora_server(make_server)
    for model in ("sql-lora", "sql-lora", "tiny"):
        await post(http, server.url + "/v1/completions", {"model": model, "prompt": "x", "max_tokens": 1})
    last = {"model": "tweet-summary", "messages": [{"role": "user", "content": "last"}], "max_tokens": 1}
    await post(http, server.url + "/v1/chat/completions", last)
    async with http.get(server.url + "/sim/stats") as resp:
        stats = await resp.json()
    assert stats["requests_by_model"] == {"sql-lora": 2, "tiny": 1, "tweet-summary": 1}
    assert stats["requests_total"] == 4
    assert stats["last_request"] == last
    assert stats["server"] == server.address
    async with http.post(server.url + "/sim/stats/reset") as resp:
        assert (await resp.json())["requests_total"] == 0


# --- fleets and CLI -----------------------------------------------------------------------------


async def test_fleet_on_loopback_addresses_shares_one_port(http: aiohttp.ClientSession) -> None:
    hosts = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    port = common_free_port(hosts)
    configs = [
        SimServerConfig(host=h, port=port, served_model_name="qwq-32b", time_scale=0.05, name=f"pod-{i}")
        for i, h in enumerate(hosts)
    ]
    async with SimFleet(configs, admin_host="127.0.0.1", admin_port=0) as fleet:
        for i, host in enumerate(hosts):
            for _ in range(i + 1):
                status, body, who = await post(
                    http,
                    f"http://{host}:{port}/v1/completions",
                    {"model": "qwq-32b", "prompt": "x", "max_tokens": 2},
                )
                assert (status, who, body["model"]) == (200, f"pod-{i}", "qwq-32b")
        assert fleet.requests_by_server("qwq-32b") == {"pod-0": 1, "pod-1": 2, "pod-2": 3}
        assert fleet.server(f"127.0.0.3:{port}") is fleet.servers[1]
        assert fleet.admin_url is not None
        status, answer, _ = await post(
            http, fleet.admin_url + "/sim/fleet/control", {"server": "pod-2", "down": True}
        )
        assert status == 200 and answer["servers"][0]["down"] is True
        with pytest.raises(aiohttp.ClientConnectionError):
            async with aiohttp.ClientSession() as fresh, fresh.get(f"http://127.0.0.4:{port}/health") as resp:
                await resp.read()
        await post(http, fleet.admin_url + "/sim/fleet/control", {"server": "*", "down": False, "waiting": 3})
        families = await metrics(http, fleet.servers[2])
        assert gauge(families, "vllm:num_requests_waiting") == 3
        async with http.get(fleet.admin_url + "/sim/fleet/stats") as resp:
            stats = await resp.json()
        assert [s["requests_total"] for s in stats["servers"]] == [1, 2, 3]


def test_fleet_yaml_expands_counts_and_defaults(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(
        "defaults: {time-scale: 0.1, port: 8000}\n"
        "admin: {host: 127.0.0.1, port: 9999}\n"
        "servers:\n"
        "  - {host: 127.0.0.2, count: 3, served-model-name: llama2-7b,\n"
        "     lora-modules: [sql-lora=/x], max-loras: 4}\n"
        "  - {host: 127.0.0.9, served_model_name: qwq-32b}\n"
    )
    config = load_fleet_config(path)
    assert [s.host for s in config.servers] == ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.9"]
    assert config.servers[0].lora_modules == {"sql-lora": "/x"}
    assert {s.time_scale for s in config.servers} == {0.1}
    assert (config.admin_host, config.admin_port) == ("127.0.0.1", 9999)
    path.write_text("servers:\n  - {host: 127.0.0.2, max_num_seqs: 0}\n")
    with pytest.raises(ValueError, match="max_num_seqs"):
        load_fleet_config(path)
    path.write_text("servers:\n  - {host: 127.0.0.2, colour: red}\n")
    with pytest.raises(ValueError, match=r"servers\[0\]\.colour"):
        load_fleet_config(path)


def test_cli_flags_follow_vllm() -> None:
    fleet = build_fleet(
        shlex.split(
            "--host 127.0.0.2 --port 8000 --served-model-name llama2-7b"
            " --lora-modules sql-lora=/x tweet-summary=/y --max-loras 4"
            " --max-num-seqs 64 --kv-cache-tokens 420000 --time-scale 0.1"
        )
    )
    (config,) = [s.config for s in fleet.servers]
    assert (config.host, config.port, config.served_model_name) == ("127.0.0.2", 8000, "llama2-7b")
    assert config.lora_modules == {"sql-lora": "/x", "tweet-summary": "/y"}
    assert (config.max_loras, config.max_num_seqs, config.kv_cache_tokens, config.time_scale) == (
        4,
        64,
        420000,
        0.1,
    )


async def test_cli_process_serves_until_terminated(http: aiohttp.ClientSession) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simulator", "--port", str(port), "--served-model-name", "tiny",
        stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).parent.parent,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), WAIT_S)
        assert f"127.0.0.1:{port}" in line.decode()
        status, body, _ = await post(http, f"http://127.0.0.1:{port}/v1/completions", {"prompt": "x"})
        assert (status, body["model"]) == (200, "tiny")  # no `model`: the base model, as vLLM does
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), WAIT_S) == 0
