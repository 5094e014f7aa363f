"""Status conditions from the hooks: compile problems -> conditions (pure), and written to a (fake)
Kubernetes API server by the serve path (Kubernetes source + hooks + KubernetesConditionReporter)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import structlog
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from api.egextension import service_pb2_grpc
from api.model import V1ALPHA2
from api.parse import owns
from api.sources.kubernetes import INFERENCE_KINDS, KubernetesSource
from api.sources.store import ObjectStore
from extserver.compile import CompileOptions, build_plan
from extserver.eg.call_order import run_hooks, run_hooks_via
from extserver.eg.standin import build_eg_xds
from extserver.hooks import (
    HookContext,
    KubernetesConditionReporter,
    LogConditionReporter,
    StaticSnapshotSource,
    StatusReport,
    condition_updates,
)
from tests.compile_cases import compile_inputs, load_objects
from tests.k8s_fake_server import FakeKubeApi, model_v1alpha2, pool_v1alpha2
from tests.ports import free_port

GATEWAY: dict[str, Any] = {
    "apiVersion": "gateway.networking.k8s.io/v1",
    "kind": "Gateway",
    "metadata": {"name": "gw", "namespace": "default"},
    "spec": {"gatewayClassName": "eg", "listeners": [{"name": "http", "protocol": "HTTP", "port": 8080}]},
}
ROUTE: dict[str, Any] = {
    "apiVersion": "gateway.networking.k8s.io/v1",
    "kind": "HTTPRoute",
    "metadata": {"name": "llm", "namespace": "default"},
    "spec": {
        "parentRefs": [{"name": "gw"}],
        "rules": [
            {
                "backendRefs": [
                    {"group": "inference.networking.x-k8s.io", "kind": "InferencePool", "name": "pool"}
                ]
            }
        ],
    },
}
# Every model's canary annotations condition (the cases here carry none, so it is True).
VALID = {"AnnotationsValid": ("True", "AnnotationsValid")}
GW_PARENT = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw", "namespace": "default"}


def _conditions(obj: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in obj.get("status", {}).get("conditions", [])}


def _parent_conditions(obj: dict[str, Any]) -> dict[str, tuple[str, str]]:
    (entry,) = [p for p in obj["status"]["parent"] if p["parentRef"] == GW_PARENT]
    return {c["type"]: (c["status"], c["reason"]) for c in entry["conditions"]}


def test_conflicts_map_to_conditions() -> None:
    objects = load_objects("conflicts")
    inputs, _ = compile_inputs(objects)
    plan = build_plan(inputs)
    report = StatusReport(inputs.pools, inputs.models, plan.problems, {})
    updates = condition_updates(report)
    by_model = {
        (u.namespace, u.name): u for u in updates if u.kind == "InferenceModel" and u.type == "Accepted"
    }
    # Every model gets Accepted, False exactly for those with a problem, with its reason.
    assert set(by_model) == {(m.meta.namespace, m.meta.name) for m in inputs.models}
    failed = {(p.namespace, p.name): p.reason for p in plan.problems if p.kind == "InferenceModel"}
    assert failed, "the conflicts case has model problems"
    for key, update in by_model.items():
        assert update.type == "Accepted"
        if key in failed:
            assert (update.status, update.reason) == ("False", failed[key])
            assert update.message
        else:
            assert (update.status, update.reason, update.message) == ("True", "Accepted", "")
    # No pool is served by a Gateway in this report: only pools with problems get conditions.
    pool_updates = {(u.namespace, u.name) for u in updates if u.kind == "InferencePool"}
    assert pool_updates == {(p.namespace, p.name) for p in plan.problems if p.kind == "InferencePool"}


def test_served_pool_gets_conditions_per_parent_gateway() -> None:
    objects = [pool_v1alpha2("pool", {"app": "vllm"}), model_v1alpha2("m", "llama", "pool")]
    inputs, _ = compile_inputs(objects)
    report = StatusReport(
        inputs.pools, inputs.models, (), {("default", "pool"): ("default/gw-a", "other/gw-b")}
    )
    pool_updates = [u for u in condition_updates(report) if u.kind == "InferencePool"]
    assert [(u.parent.namespace if u.parent else None, u.type, u.status) for u in pool_updates] == [
        ("default", "Accepted", "True"),
        ("default", "ResolvedRefs", "True"),
        ("other", "Accepted", "True"),
        ("other", "ResolvedRefs", "True"),
    ]
    assert {u.parent.name for u in pool_updates if u.parent} == {"gw-a", "gw-b"}


async def test_log_writer_logs_conditions_once_per_change() -> None:
    objects = [pool_v1alpha2("pool", {"app": "vllm"}), model_v1alpha2("m", "llama", "missing")]
    inputs, _ = compile_inputs(objects)
    report = StatusReport(inputs.pools, inputs.models, build_plan(inputs).problems, {})
    writer = LogConditionReporter()
    with structlog.testing.capture_logs() as logs:
        await writer.report(report)
        await writer.report(report)
    conditions = [entry for entry in logs if entry["event"] == "condition"]
    assert [(c["object"], c["type"], c["status"], c["reason"]) for c in conditions] == [
        ("InferenceModel default/m", "Accepted", "False", "PoolNotFound"),
        ("InferenceModel default/m", "AnnotationsValid", "True", "AnnotationsValid"),
    ]


@pytest.fixture
def fake() -> Iterator[FakeKubeApi]:
    server = FakeKubeApi()
    server.serve(V1ALPHA2, "inferencepools")
    server.serve(V1ALPHA2, "inferencemodels")
    server.start()
    server.put(pool_v1alpha2("pool", {"app": "vllm"}))
    server.put(model_v1alpha2("m-old", "llama", "pool", created="2026-01-01T00:00:00Z"))
    server.put(model_v1alpha2("m-new", "llama", "pool", created="2026-02-01T00:00:00Z"))
    server.put(model_v1alpha2("m-lost", "qwen", "no-such-pool"))
    yield server
    server.stop()


@pytest.fixture
async def source(fake: FakeKubeApi) -> AsyncIterator[KubernetesSource]:
    api = fake.api_client()
    src = KubernetesSource(
        api, kinds=INFERENCE_KINDS, namespace=None, backoff_initial=0.05, missing_retry=0.5
    )
    task = asyncio.create_task(src.run())
    try:
        await asyncio.wait_for(src.wait_synced(), 30)
        yield src
    finally:
        src.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        api.close()


async def _translate(ctx: HookContext, fake: FakeKubeApi) -> None:
    manifests = [GATEWAY, ROUTE, fake.get(V1ALPHA2, "inferencepools", "default", "pool")]
    await run_hooks(build_eg_xds(manifests), ctx)


async def test_serve_path_writes_problems_as_status_conditions(
    fake: FakeKubeApi, source: KubernetesSource
) -> None:
    api = fake.api_client()
    reporter = KubernetesConditionReporter(
        api, controller_name="gateway.envoyproxy.io/gatewayclass-controller"
    )
    ctx = HookContext(source=source, options=CompileOptions(), status=reporter)
    try:
        await _translate(ctx, fake)
        await reporter.flush()

        def model(name: str) -> dict[str, Any]:
            return fake.get(V1ALPHA2, "inferencemodels", "default", name)

        assert _conditions(model("m-old")) == {"Accepted": ("True", "Accepted"), **VALID}
        assert _conditions(model("m-new")) == {"Accepted": ("False", "ModelNameInUse"), **VALID}
        assert _conditions(model("m-lost")) == {"Accepted": ("False", "PoolNotFound"), **VALID}
        assert "m-old" in model("m-new")["status"]["conditions"][0]["message"]
        pool = fake.get(V1ALPHA2, "inferencepools", "default", "pool")
        assert _parent_conditions(pool) == {
            "Accepted": ("True", "Accepted"),
            "ResolvedRefs": ("True", "ResolvedRefs"),
        }

        # Nothing changed: the next translation writes nothing.
        paths = [
            f"/apis/{V1ALPHA2}/namespaces/default/inferencemodels/{n}/status"
            for n in ("m-old", "m-new", "m-lost")
        ]
        paths.append(f"/apis/{V1ALPHA2}/namespaces/default/inferencepools/pool/status")
        before = [fake.count("PATCH", p) for p in paths]
        assert all(before)
        await _translate(ctx, fake)
        await reporter.flush()
        assert [fake.count("PATCH", p) for p in paths] == before

        # The older model goes away: the newer one takes the name over and becomes Accepted.
        fake.remove(V1ALPHA2, "inferencemodels", "default", "m-old")
        await _translate(ctx, fake)
        await reporter.flush()
        assert _conditions(model("m-new")) == {"Accepted": ("True", "Accepted"), **VALID}
    finally:
        await reporter.close()
        api.close()


async def test_translate_cli_path_still_logs_without_an_api_server() -> None:
    objects = load_objects("conflicts")
    inputs, _ = compile_inputs(objects)
    store = ObjectStore()
    store.apply(upserts=[o for o in objects if owns(o)])
    ctx = HookContext(source=StaticSnapshotSource(store.snapshot()), status=LogConditionReporter())
    with structlog.testing.capture_logs() as logs:
        await run_hooks(build_eg_xds(objects), ctx)
    assert any(entry["event"] == "condition" and entry["status"] == "False" for entry in logs)
    assert inputs.models


def _kubeconfig(path: Path, server: str) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": server}}],
        "users": [{"name": "test", "user": {}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "test"}}],
        "current-context": "fake",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _start_extserver(tmp_path: Path, server_url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    kubeconfig = _kubeconfig(tmp_path / "kubeconfig", server_url)
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "extserver", "--log-level", "warning", "serve",
             "--kubeconfig", str(kubeconfig), "--host", "127.0.0.1", "--port", str(port)],
            cwd=Path(__file__).resolve().parent.parent, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def _wait_serving(address: str, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            assert process.poll() is None, "extserver exited"
            try:
                answer = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            assert time.monotonic() < deadline, "extserver did not become healthy"
            await asyncio.sleep(0.2)


async def _eventually(check: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            check()
            return
        except (AssertionError, KeyError):
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.2)


async def test_python_m_extserver_serve_writes_conditions_to_the_api_server(
    fake: FakeKubeApi, tmp_path: Path
) -> None:
    """The real CLI against the (fake) API server: EG's hooks over gRPC, then conditions on the objects."""
    api = fake.api_client()
    server_url = str(api.configuration.host)
    api.close()
    port = free_port()
    log = tmp_path / "extserver.log"
    process = _start_extserver(tmp_path, server_url, port, log)
    try:
        address = f"127.0.0.1:{port}"
        await _wait_serving(address, process)
        manifests = [GATEWAY, ROUTE, fake.get(V1ALPHA2, "inferencepools", "default", "pool")]
        async with grpc.aio.insecure_channel(address) as channel:
            stub = service_pb2_grpc.EnvoyGatewayExtensionStub(channel)
            result = await run_hooks_via(
                build_eg_xds(manifests),
                stub.PostRouteModify,
                stub.PostClusterModify,
                stub.PostTranslateModify,
            )
        assert any(c.name.startswith("inference/default/pool/") for c in result.clusters)

        def written() -> None:
            models = {
                name: _conditions(fake.get(V1ALPHA2, "inferencemodels", "default", name))
                for name in ("m-old", "m-new", "m-lost")
            }
            assert models == {
                "m-old": {"Accepted": ("True", "Accepted"), **VALID},
                "m-new": {"Accepted": ("False", "ModelNameInUse"), **VALID},
                "m-lost": {"Accepted": ("False", "PoolNotFound"), **VALID},
            }
            pool = fake.get(V1ALPHA2, "inferencepools", "default", "pool")
            assert _parent_conditions(pool)["Accepted"] == ("True", "Accepted")

        await _eventually(written)
    finally:
        _stop(process)
    assert process.returncode == 0, log.read_text()[-3000:]


def test_parent_removals_are_this_translations_gateways_that_no_longer_route_to_the_pool() -> None:
    from api.model import V1, ObjectMeta, PickerRef
    from api.model import InferencePool as Pool
    from extserver.hooks.status import StatusReport, parent_removals

    def pool(name: str, api_version: str = V1) -> Pool:
        return Pool(api_version, ObjectMeta("ns", name), (("app", "x"),), (8000,), PickerRef("picker"))

    report = StatusReport(
        pools=(pool("a"), pool("b"), pool("old", "inference.networking.x-k8s.io/v1alpha1")),
        models=(),
        problems=(),
        pool_gateways={("ns", "a"): ("ns/gw1",)},
        gateways=frozenset({"ns/gw1", "ns/gw2"}),
    )
    removed = [(ref.name, parent.name) for ref, parent in parent_removals(report)]
    # a: still routed by gw1, not by gw2; b: neither; v1alpha1 pools keep no per-Gateway entries.
    assert removed == [("a", "gw2"), ("b", "gw1"), ("b", "gw2")]
