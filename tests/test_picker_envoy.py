"""The picker behind real Envoy over real gRPC: EDS + ext_proc, rewrite, errors, no client steering."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import grpc
import orjson
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from api.contract import ACCESS_LOG_FLUSH_SECONDS, HEADER_DESTINATION_ENDPOINT
from api.sources.files import FileSource
from extserver.compile import CompileOptions, naming
from picker.server import PickerConfig, PickerServer
from tests.picker_envoy_support import CompiledEnvoy, FakeModelServer, gateway_objects, start_compiled_envoy
from tests.ports import common_free_port, free_port

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
]

NS = "default"
SERVICE = "inference-gateway-ext-proc"
POOLS = ["pool", "empty", "busy"]  # unmatched requests go to the first; header x-test-pool picks another


def _manifests(port: int, busy_port: int) -> list[dict[str, object]]:
    docs: list[dict[str, object]] = [*gateway_objects(NS, POOLS)]
    for pool, target_port in (("pool", port), ("empty", port), ("busy", busy_port)):
        docs.append(
            {
                "apiVersion": "inference.networking.x-k8s.io/v1alpha1",
                "kind": "InferencePool",
                "metadata": {"name": pool, "namespace": NS},
                "spec": {
                    "targetPortNumber": target_port,
                    "selector": {"app": pool},
                    "extensionRef": {"name": SERVICE},
                },
            }
        )
    for name, ip, app in (("a", "127.0.0.2", "pool"), ("b", "127.0.0.3", "pool"), ("c", "127.0.0.4", "pool"),
                          ("busy", "127.0.0.5", "busy")):  # fmt: skip
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"pod-{name}", "namespace": NS, "labels": {"app": app}},
                "status": {"podIP": ip},
            }
        )
    docs.append(
        {
            "apiVersion": "inference.networking.x-k8s.io/v1alpha1",
            "kind": "InferenceModel",
            "metadata": {"name": "lora", "namespace": NS},
            "spec": {
                "modelName": "lora-request",
                "poolRef": {"name": "pool"},
                "targetModels": [{"name": "tweet-summary", "weight": 50}, {"name": "sql-lora", "weight": 50}],
            },
        }
    )
    docs.append(
        {
            "apiVersion": "inference.networking.x-k8s.io/v1alpha1",
            "kind": "InferenceModel",
            "metadata": {"name": "shed", "namespace": NS},
            "spec": {
                "modelName": "shed-me",
                "criticality": "Sheddable",
                "poolRef": {"name": "busy"},
                "targetModels": [{"name": "tiny", "weight": 1}],
            },
        }
    )
    return docs


@dataclass
class Rig:
    url: str
    servers: dict[str, FakeModelServer]
    picker: PickerServer
    session: aiohttp.ClientSession
    admin_port: int

    async def post(
        self,
        body: bytes | dict[str, object],
        path: str = "/v1/completions",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, object], str]:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        hdrs = {"content-type": "application/json", **(headers or {})}
        async with self.session.post(self.url + path, data=data, headers=hdrs) as response:
            text = await response.text()
            parsed: dict[str, object] = {}
            with contextlib.suppress(ValueError):
                parsed = orjson.loads(text) if "json" in response.content_type else {}
            return response.status, parsed, text

    def owner(self, address: str) -> str:
        return next(name for name, s in self.servers.items() if s.address == address)


async def _wait_for(predicate: object, what: str, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            result = predicate() if callable(predicate) else predicate
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            await asyncio.sleep(0.05)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def rig(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Rig]:
    tmp = tmp_path_factory.mktemp("picker-envoy")
    hosts = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    port = common_free_port(hosts)
    busy_port = free_port("127.0.0.5")
    servers = {
        "a": FakeModelServer("127.0.0.2", adapters=("tweet-summary",)),
        "b": FakeModelServer("127.0.0.3", adapters=("sql-lora",)),
        "c": FakeModelServer("127.0.0.4", adapters=("tweet-summary", "sql-lora")),
        "busy": FakeModelServer("127.0.0.5", waiting=50, kv=0.99),
    }
    for name, server in servers.items():
        await server.start(busy_port if name == "busy" else port)
    manifests = tmp / "manifests.yaml"
    objects = _manifests(port, busy_port)
    manifests.write_text("\n---\n".join(json.dumps(d) for d in objects))
    config = PickerConfig(
        service_name=SERVICE, namespace=NS, manifests=(manifests,), host="127.0.0.1",
        grpc_port=0, health_port=0, metrics_port=0,
    )  # fmt: skip
    picker = PickerServer(config, source=FileSource([manifests]))
    await picker.start()
    envoy: CompiledEnvoy | None = None
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
    try:
        await _wait_for(picker.scraped_once, "picker scraped every endpoint")
        listener_port, admin_port = free_port(), free_port()
        envoy = await start_compiled_envoy(
            objects,
            listener_port=listener_port,
            admin_port=admin_port,
            picker_port=picker.grpc_port,
            log_path=tmp / "envoy.log",
            # Envoy buffers more than the picker accepts, so an oversized body reaches the picker's check.
            options=CompileOptions(max_body_bytes=9 * 1024 * 1024),
        )

        async def hosts_loaded() -> bool:
            try:
                async with session.get(f"http://127.0.0.1:{admin_port}/clusters") as r:
                    text = await r.text()
            except aiohttp.ClientError:
                return False
            wanted = [
                "inference/default/pool/tweet-summary::127.0.0.4",
                "inference/default/pool/sql-lora::127.0.0.3",
                f"{envoy.xds.catch_all_cluster('pool')}::127.0.0.2",
                "inference/default/busy/tiny::127.0.0.5",
            ]
            return all(w in text for w in wanted)

        try:
            await _wait_for(hosts_loaded, "Envoy got EDS from the picker", timeout=30)
        except TimeoutError:
            raise AssertionError((tmp / "envoy.log").read_text()[-3000:]) from None
        yield Rig(f"http://127.0.0.1:{listener_port}", servers, picker, session, admin_port)
    finally:
        await session.close()
        if envoy is not None:
            await envoy.stop()
        await picker.stop()
        for server in servers.values():
            await server.stop()


async def test_eds_holds_only_pods_serving_each_target(rig: Rig) -> None:
    from api.contract import EdsResource
    from picker.handlers.eds import endpoint_members

    def members(target: str | None, pool: str = "pool") -> set[str]:
        return {
            rig.owner(s.address)
            for s in endpoint_members(EdsResource(NS, pool, target), rig.picker.datastore)
        }

    assert members("tweet-summary") == {"a", "c"}
    assert members("sql-lora") == {"b", "c"}
    assert members(None) == {"a", "b", "c"}
    assert members(None, "empty") == set()


async def test_picker_destination_answers_and_rewrite_reaches_upstream(rig: Rig) -> None:
    seen_targets = set()
    for i in range(30):
        status, answer, text = await rig.post(
            {"model": "lora-request", "prompt": f"hello {i}", "max_tokens": 3}
        )
        assert status == 200, text
        target = answer["model"]
        assert target in ("tweet-summary", "sql-lora")
        seen_targets.add(target)
        destination = str(answer["destination"]).split(",")
        assert 1 <= len(destination) <= 3
        # The picker's primary is the server that answered, and it serves the rewritten model.
        assert answer["served_by"] == destination[0]
        assert target in rig.servers[rig.owner(destination[0])].adapters
        assert answer["content_length"] == str(answer["body_length"])
    assert seen_targets == {"tweet-summary", "sql-lora"}  # the Envoy-native weighted split reached both


async def test_catch_all_model_goes_only_to_pods_serving_it(rig: Rig) -> None:
    for _ in range(10):
        status, answer, text = await rig.post(
            {"model": "sql-lora", "messages": [{"role": "user", "content": "hi"}]}, "/v1/chat/completions"
        )
        assert status == 200, text
        assert answer["model"] == "sql-lora"
        assert rig.owner(str(answer["served_by"])) in ("b", "c")


async def test_streaming_response_passes_through(rig: Rig) -> None:
    body = {"model": "tiny", "prompt": "x", "stream": True, "stream_options": {"include_usage": True}}
    status, _, text = await rig.post(body)
    assert status == 200
    assert text.rstrip().endswith("data: [DONE]")
    assert '"usage"' in text


def _sample(rig: Rig, name: str, **labels: str) -> float:
    return rig.picker.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_status_usage_and_in_flight_recorded_per_model_and_target(rig: Rig) -> None:
    """Nothing of the response goes through ext_proc: status and usage arrive over the access log."""
    labels = {"model_name": "lora-request", "target_model_name": "tweet-summary", "pool": f"{NS}/pool"}
    other = {"model_name": "lora-request", "target_model_name": "sql-lora", "pool": f"{NS}/pool"}

    def totals() -> tuple[float, ...]:
        return tuple(
            _sample(rig, name, **lab)
            for lab in (labels, other)
            for name in (
                "inference_model_input_tokens_sum",
                "inference_model_output_tokens_sum",
                "inference_model_input_tokens_count",
                "inference_model_request_duration_seconds_count",
            )
        )

    # Earlier tests' requests reach the picker's access log up to a flush interval later: let them land.
    async def settled() -> bool:
        now = totals()
        await asyncio.sleep(3 * ACCESS_LOG_FLUSH_SECONDS)
        return totals() == now

    await _wait_for(settled, "earlier requests' access log entries counted", timeout=10)
    before = totals()
    json_body = {"model": "lora-request", "prompt": "count me"}
    sse_body = {**json_body, "stream": True, "stream_options": {"include_usage": True}}
    for body in (json_body, sse_body, json_body, sse_body):
        status, _, text = await rig.post(body)
        assert status == 200, text
    # 4 answers, each with usage prompt 3 / completion 2, split over the two targets Envoy chose.
    expected = (3 * 4, 2 * 4, 4, 4)

    async def counted() -> bool:
        after = totals()
        deltas = [a - b for a, b in zip(after, before, strict=True)]
        return tuple(deltas[i] + deltas[i + 4] for i in range(4)) == expected

    try:
        await _wait_for(counted, "usage of JSON and SSE answers counted", timeout=5)
    except TimeoutError:
        async with rig.session.get(f"http://127.0.0.1:{rig.admin_port}/stats?filter=access_log") as r:
            stats = await r.text()
        raise AssertionError(f"usage not counted: {totals()} vs {before}\n{stats}") from None

    def server_errors() -> float:
        name = "inference_model_request_error_total"
        return sum(_sample(rig, name, **lab, error_code="ModelServerError") for lab in (labels, other))

    errors_before = server_errors()
    status, _, _ = await rig.post({**json_body, "x_test_status": 500})
    assert status == 500

    async def error_counted() -> bool:
        return server_errors() == errors_before + 1

    await _wait_for(error_counted, "the model server's 500 counted from the access log", timeout=5)
    await _wait_for(
        lambda: not any(rig.picker.datastore.in_flight_counts().values()), "in-flight back to 0", timeout=5
    )
    assert _sample(rig, "inference_model_running_requests", model_name="lora-request") == 0.0


async def test_a_streaming_answer_stays_in_flight_until_it_ends(rig: Rig) -> None:
    """The picker sees nothing of the response: Envoy ending the ext_proc stream is the only end signal."""
    await _wait_for(lambda: not any(rig.picker.datastore.in_flight_counts().values()), "idle", timeout=5)
    body = {"model": "tiny", "prompt": "hold", "stream": True, "x_test_hold_s": 1.0}
    answer = asyncio.create_task(rig.post(body))
    await _wait_for(lambda: sum(rig.picker.datastore.in_flight_counts().values()) == 1, "counted", timeout=5)
    await asyncio.sleep(0.5)  # well after the picker answered, the first token already sent
    assert sum(rig.picker.datastore.in_flight_counts().values()) == 1
    status, _, text = await answer
    assert status == 200 and "[DONE]" in text
    await _wait_for(lambda: not any(rig.picker.datastore.in_flight_counts().values()), "released", timeout=5)


async def test_client_destination_header_cannot_redirect(rig: Rig) -> None:
    b_address = rig.servers["b"].address
    for forged in (b_address, "127.0.0.9:1", f"{b_address},{b_address}"):
        for _ in range(5):
            status, answer, text = await rig.post(
                {"model": "tweet-summary", "prompt": "x"}, headers={HEADER_DESTINATION_ENDPOINT: forged}
            )
            assert status == 200, text
            # pod b is in the catch-all cluster but does not serve tweet-summary: the forged header lost
            assert rig.owner(str(answer["served_by"])) in ("a", "c")


async def _assert_error(rig: Rig, status: int, error_type: str, **kwargs: object) -> dict[str, object]:
    got, answer, text = await rig.post(**kwargs)  # type: ignore[arg-type]
    assert got == status, text
    error = answer["error"]
    assert isinstance(error, dict)
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == error_type
    assert error["code"] == status
    assert error["message"]
    return error


async def test_malformed_json_is_400(rig: Rig) -> None:
    await _assert_error(rig, 400, "BadRequestError", body=b"{not json")


async def test_missing_and_non_string_model_are_400(rig: Rig) -> None:
    error = await _assert_error(rig, 400, "BadRequestError", body={"prompt": "x"})
    assert error["param"] == "model"
    await _assert_error(rig, 400, "BadRequestError", body={"model": ["x"], "prompt": "x"})


async def test_oversized_body_is_400(rig: Rig) -> None:
    body = b'{"model": "tiny", "prompt": "' + b"x" * (8 * 1024 * 1024 + 100) + b'"}'
    error = await _assert_error(rig, 400, "BadRequestError", body=body)
    assert "exceeds the limit" in str(error["message"])


async def test_unserved_model_is_404(rig: Rig) -> None:
    error = await _assert_error(
        rig, 404, "NotFoundError", body={"model": "meta-llama/Llama-3.1-8B", "prompt": "x"}
    )
    assert "meta-llama/Llama-3.1-8B" in str(error["message"])


async def test_pool_without_ready_pods_is_503(rig: Rig) -> None:
    await _assert_error(
        rig,
        503,
        "ServiceUnavailableError",
        body={"model": "tiny", "prompt": "x"},
        headers={"x-test-pool": "empty"},
    )


async def test_sheddable_on_saturated_pool_is_429(rig: Rig) -> None:
    await _assert_error(
        rig, 429, "RateLimitError", body={"model": "shed-me", "prompt": "x"}, headers={"x-test-pool": "busy"}
    )


async def test_load_steers_away_from_busy_pod(rig: Rig) -> None:
    rig.servers["a"].waiting = 40
    rig.servers["a"].kv = 0.95
    try:
        await asyncio.sleep(0.3)  # a few scrapes
        owners = []
        for i in range(10):
            status, answer, text = await rig.post({"model": "tiny", "prompt": f"p{i}"})
            assert status == 200, text
            owners.append(rig.owner(str(answer["served_by"])))
        assert "a" not in owners
    finally:
        rig.servers["a"].waiting = 0
        rig.servers["a"].kv = 0.0


async def test_health_ready_and_metrics(rig: Rig) -> None:
    for port in (rig.picker.health_port, rig.picker.grpc_port):  # Envoy checks the ext_proc port
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for service in ("", "liveness", "readiness", "envoy.service.ext_proc.v3.ExternalProcessor"):
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=service))
                assert reply.status == health_pb2.HealthCheckResponse.SERVING, (port, service)
    async with rig.session.get(f"http://127.0.0.1:{rig.picker.metrics_port}/metrics") as response:
        text = await response.text()
    assert (
        'inference_model_request_total{model_name="lora-request",pool="default/pool",'
        'target_model_name="tweet-summary"}' in text
    )
    assert (
        'inference_model_request_error_total{error_code="NotFound",model_name="meta-llama/Llama-3.1-8B"'
        in text
    )
    assert 'inference_pool_ready_pods{name="pool"} 3.0' in text
    assert "inference_model_output_tokens_bucket" in text
    assert 'inference_model_running_requests{model_name="lora-request"} 0.0' in text


async def test_envoy_health_check_of_the_picker_passes(rig: Rig) -> None:
    """Envoy's gRPC health check (service "") against the ext_proc port marks the picker healthy."""
    host = f"{naming.picker_cluster(NS, 'pool')}::127.0.0.1:{rig.picker.grpc_port}::health_flags::"

    async def healthy() -> bool:
        async with rig.session.get(f"http://127.0.0.1:{rig.admin_port}/clusters") as response:
            text = await response.text()
        return any(line == host + "healthy" for line in text.splitlines())

    await _wait_for(healthy, "the picker's gRPC health check passes in Envoy", timeout=10)
