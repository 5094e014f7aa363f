"""End to end on the real stack: kube-apiserver + etcd + kube-controller-manager + Envoy Gateway v1.9,
our extension server and picker deployed from config/ with their own ServiceAccounts, the seed files
applied unchanged with kubectl, traffic through the Envoy that EG deployed for the Gateway.

Model servers are the simulator: the real vLLM checks are tests/test_vllm_real.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e_support import BASE_SAMPLE, LORA_BODY, LORA_SAMPLE, QWQ_BODY, config_dump_weights, send_many
from tests.stack_support import GatewayUrl, RealStack, eventually, status_conditions

pytestmark = pytest.mark.stack

GATEWAY = "default/inference-gateway:8081"


@pytest.fixture
def stack(real_stack: RealStack) -> RealStack:
    return real_stack


def _serving(stack: RealStack, body: dict[str, Any], path: str = "/v1/completions") -> str:
    """The Gateway's URL once every Deployment is Available and the gateway answers `body`."""
    url = stack.gateway_url(GATEWAY)
    every = ("--for=condition=Available", "deployment", "--all", "-n", "default", "--timeout=120s")
    stack.kubectl("wait", *every)

    def answers() -> bool:
        results = asyncio.run(send_many(GatewayUrl(url), body, 1, path=path))  # type: ignore[arg-type]
        return results.ok == 1

    eventually(answers, 120, f"{GATEWAY} answering {body['model']}", interval=0.5)
    return url


def _pod_served_models(stack: RealStack) -> dict[str, set[str]]:
    """Pod IP -> the models its simulator was asked for (read from the simulator's own stats)."""
    out = {}
    for pod in stack.get("pods", "-n", "default")["items"]:
        ip = pod.get("status", {}).get("podIP")
        if ip and "vllm" in pod["metadata"]["name"]:
            stats = json.loads(stack.in_node(f"http://{ip}:8000/sim/stats"))
            out[ip] = {m for m, n in stats["requests_by_model"].items() if n}
    return out


def test_the_lora_seed_applied_unchanged_splits_and_each_target_reaches_pods_that_serve_it(
    stack: RealStack,
) -> None:
    stack.kubectl("apply", "-f", str(LORA_SAMPLE))
    url = _serving(stack, LORA_BODY)
    results = asyncio.run(send_many(GatewayUrl(url), LORA_BODY, 2000, concurrency=32))  # type: ignore[arg-type]
    assert results.ok == 2000, results.errors[:5]
    assert set(results.models) == {"tweet-summary", "sql-lora"}
    assert abs(results.share("tweet-summary") - 0.5) <= 0.05
    assert len(results.servers) == 3, results.servers  # every replica the Deployment made served
    models = json.loads(stack.in_node(f"http://{next(iter(_pod_served_models(stack)))}:8000/v1/models"))
    served = {m["id"] for m in models["data"]}
    for asked in _pod_served_models(stack).values():
        assert asked <= served


def test_the_articles_curl_and_the_openai_client_work(stack: RealStack) -> None:
    url = _serving(stack, LORA_BODY)
    curl = subprocess.run(
        [
            "curl", "-sS", "-X", "POST", f"{url}/v1/completions", "-H", "Content-Type: application/json",
            "-d", json.dumps({**LORA_BODY, "max_tokens": 100, "temperature": 0}),
        ],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert json.loads(curl.stdout)["model"] in {"tweet-summary", "sql-lora"}
    from openai import OpenAI

    client = OpenAI(base_url=f"{url}/v1", api_key="unused")
    answer = client.completions.create(
        model="lora-request", prompt="Write as if you were a critic", max_tokens=5
    )
    assert answer.model in {"tweet-summary", "sql-lora"}


def test_kubectl_shows_the_conditions_our_extension_server_wrote(stack: RealStack) -> None:
    stack.kubectl("apply", "-f", str(LORA_SAMPLE))
    _serving(stack, LORA_BODY)

    def accepted() -> bool:
        got = yaml.safe_load(stack.kubectl("get", "inferencepool,inferencemodel", "-o", "yaml").stdout)
        conditions = [c for item in got["items"] for c in status_conditions(item)]
        return any(c["type"] == "Accepted" and c["status"] == "True" for c in conditions)

    eventually(accepted, 30, "Accepted=True on the seed's objects")


def test_a_weight_change_by_kubectl_reaches_envoy_within_two_seconds(
    stack: RealStack, tmp_path: Path
) -> None:
    stack.kubectl("apply", "-f", str(LORA_SAMPLE))
    _serving(stack, LORA_BODY)
    docs = list(yaml.safe_load_all(LORA_SAMPLE.read_text()))
    (model,) = [d for d in docs if d and d["kind"] == "InferenceModel"]
    model["spec"]["targetModels"][0]["weight"] = 90
    model["spec"]["targetModels"][1]["weight"] = 10
    edited = tmp_path / "model.yaml"
    edited.write_text(yaml.safe_dump(model))
    stack.kubectl("apply", "-f", str(edited))  # the 2 s count from here: the API server has the change

    def weights() -> bool:
        dump = json.loads(stack.envoy_admin("inference-gateway", "/config_dump"))
        got = config_dump_weights(dump, "inference/default/inferencemodel-sample")
        return sorted(got.values()) == [10, 90]

    try:
        eventually(weights, 2.0, "the new weights in Envoy's config_dump", interval=0.05)
    finally:
        stack.kubectl("apply", "-f", str(LORA_SAMPLE))


def test_the_servers_run_with_only_their_service_accounts(stack: RealStack) -> None:
    extserver = "system:serviceaccount:envoy-gateway-system:inference-extserver"
    picker = "system:serviceaccount:default:inference-gateway-ext-proc"

    def can(who: str, *what: str) -> bool:
        done = stack.kubectl("auth", "can-i", f"--as={who}", *what, check=False)
        return done.stdout.strip() == "yes"

    for who in (extserver, picker):
        assert not can(who, "get", "secrets", "-A")
        assert not can(who, "create", "pods", "-n", "default")
        assert not can(who, "update", "inferencepools.inference.networking.x-k8s.io", "-n", "default")
    for kind in ("inferencepools", "inferencemodels"):
        kind = f"{kind}.inference.networking.x-k8s.io"
        assert can(extserver, "patch", kind, "--subresource=status", "-n", "default")
        assert not can(picker, "patch", kind, "--subresource=status", "-n", "default")
    # The one object the extension server writes: its Gateways' revisions (extserver/revisions.py).
    revisions = "inferencegatewayrevisions.extension.inference-gateway.io"
    assert can(extserver, "patch", revisions, "-n", "default")
    assert not can(extserver, "patch", "gateways.gateway.networking.k8s.io", "-n", "default")
    assert can(extserver, "list", "inferencemodels.inference.networking.x-k8s.io", "-A")
    assert can(picker, "list", "pods", "-n", "default")
    # ...and they really run as those accounts: both Deployments are ready, the gateway serves.
    for namespace, name in (
        ("envoy-gateway-system", "inference-extserver"),
        ("default", "inference-gateway-ext-proc"),
    ):
        deployment = stack.get("deployment", "-n", namespace, name)
        assert deployment["status"].get("readyReplicas") == deployment["spec"]["replicas"]


def test_the_base_model_seed_sends_each_target_only_to_its_deployment(stack: RealStack) -> None:
    stack.kubectl("delete", "-f", str(LORA_SAMPLE), "--wait=true")
    try:
        stack.kubectl("apply", "-f", str(BASE_SAMPLE))
        url = _serving(stack, QWQ_BODY, "/v1/chat/completions")
        results = asyncio.run(
            send_many(GatewayUrl(url), QWQ_BODY, 2000, path="/v1/chat/completions", concurrency=32)  # type: ignore[arg-type]
        )
        assert results.ok == 2000, results.errors[:5]
        assert set(results.models) == {"qwq-32b", "deepseek-r1"}, results.models
        assert abs(results.share("qwq-32b") - 0.5) <= 0.05
        for pod in stack.get("pods", "-n", "default")["items"]:
            ip = pod.get("status", {}).get("podIP")
            if not ip or "ext-proc" in pod["metadata"]["name"]:
                continue
            models = {m["id"] for m in json.loads(stack.in_node(f"http://{ip}:8000/v1/models"))["data"]}
            stats = json.loads(stack.in_node(f"http://{ip}:8000/sim/stats"))
            asked = {m for m, n in stats["requests_by_model"].items() if n}
            assert asked <= models, (pod["metadata"]["name"], asked, models)
    finally:
        stack.kubectl("delete", "-f", str(BASE_SAMPLE), "--wait=true", check=False)
        stack.kubectl("apply", "-f", str(LORA_SAMPLE))


def _target_hosts(stack: RealStack) -> set[str]:
    """The pod addresses Envoy holds for the LoRA seed's target clusters (the picker's EDS)."""
    clusters = json.loads(stack.envoy_admin("inference-gateway", "/clusters?format=json"))
    return {
        f"{host['address']['socket_address']['address']}:{host['address']['socket_address']['port_value']}"
        for cluster in clusters["cluster_statuses"]
        if cluster["name"].startswith("inference/default/vllm-llama2-7b-pool/")
        and not cluster["name"].endswith("/picker")
        for host in cluster.get("host_statuses", [])
    }


def _seed_pod_ips(stack: RealStack) -> list[str]:
    pods = stack.get("pods", "-n", "default", "-l", "app=vllm-llama2-7b-pool")["items"]
    return sorted(p["status"]["podIP"] for p in pods if p.get("status", {}).get("podIP"))


def test_a_deleted_pod_leaves_the_pickers_endpoints_within_a_second(stack: RealStack) -> None:
    stack.kubectl("apply", "-f", str(LORA_SAMPLE))
    _serving(stack, LORA_BODY)
    eventually(lambda: len(_target_hosts(stack)) == 3, 30, "Envoy holding the seed's three pods")
    pods = stack.get("pods", "-n", "default", "-l", "app=vllm-llama2-7b-pool")["items"]
    victim = pods[0]
    address = f"{victim['status']['podIP']}:8000"
    stack.kubectl("delete", "pod", "-n", "default", victim["metadata"]["name"], "--wait=false")
    eventually(lambda: address not in _target_hosts(stack), 1.0, f"{address} gone from Envoy", interval=0.02)
    # ...and the Deployment's replacement joins: scaling goes through the same path.
    eventually(lambda: len(_target_hosts(stack)) == 3, 30, "the replacement pod in Envoy")
    stack.kubectl("scale", "deployment/vllm-llama2-7b-pool", "-n", "default", "--replicas=4")
    try:
        eventually(lambda: len(_target_hosts(stack)) == 4, 30, "a fourth pod after scaling up")
        url = stack.gateway_url(GATEWAY)
        results = asyncio.run(send_many(GatewayUrl(url), LORA_BODY, 200, concurrency=16))  # type: ignore[arg-type]
        assert results.ok == 200 and len(results.servers) == 4, results.servers
    finally:
        stack.kubectl("scale", "deployment/vllm-llama2-7b-pool", "-n", "default", "--replicas=3")
    eventually(lambda: len(_target_hosts(stack)) == 3, 30, "back to three pods after scaling down")


ROUTE_POOLS = Path(__file__).parent / "data" / "stack" / "httproute-pools.yaml"


def test_httproutes_reach_an_inference_pool_of_every_served_version(stack: RealStack) -> None:
    stack.kubectl("apply", "-f", str(LORA_SAMPLE))  # its GatewayClass and Gateway, which must stay untouched
    stack.kubectl("apply", "-f", str(ROUTE_POOLS))
    url = stack.gateway_url("default/route-gateway:8090")
    for key in ("a1", "a2", "v1"):
        body = {"model": f"chat-{key}", "prompt": "hello", "max_tokens": 2}

        def answered(key: str = key, body: dict[str, Any] = body) -> bool:
            import urllib.request

            request = urllib.request.Request(
                f"{url}/v1/completions",
                data=json.dumps(body).encode(),
                headers={"Host": f"{key}.example.com", "Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=5) as answer:
                return json.loads(answer.read())["model"] in {"llama-3-8b", "llama-3-8b-ft"}

        eventually(answered, 90, f"route-{key} answering through pool-{key}", interval=0.5)
    for plural in (
        "inferencepools.inference.networking.x-k8s.io",
        "inferencepools.inference.networking.k8s.io",
    ):
        for pool in stack.get(plural, "-n", "default")["items"]:
            if pool["metadata"]["name"].startswith("pool-"):
                assert any(
                    c["type"] == "Accepted" and c["status"] == "True" for c in status_conditions(pool)
                ), pool
    results = asyncio.run(send_many(GatewayUrl(stack.gateway_url(GATEWAY)), LORA_BODY, 50))  # type: ignore[arg-type]
    assert results.ok == 50 and set(results.models) == {"tweet-summary", "sql-lora"}


def _restart_deployment(stack: RealStack, namespace: str, name: str) -> None:
    stack.kubectl("rollout", "restart", f"deployment/{name}", "-n", namespace)
    stack.kubectl("rollout", "status", f"deployment/{name}", "-n", namespace, "--timeout=120s")


def test_the_extension_server_and_the_picker_restarted_recover_on_their_own(
    stack: RealStack, tmp_path: Path
) -> None:
    stack.kubectl("apply", "-f", str(LORA_SAMPLE))
    url = _serving(stack, LORA_BODY)
    _restart_deployment(stack, "default", "inference-gateway-ext-proc")
    _serving(stack, LORA_BODY)
    _restart_deployment(stack, "envoy-gateway-system", "inference-extserver")
    # The restarted extension server still compiles: a weight change reaches Envoy.
    test_a_weight_change_by_kubectl_reaches_envoy_within_two_seconds(stack, tmp_path)
    results = asyncio.run(send_many(GatewayUrl(url), LORA_BODY, 200, concurrency=16))  # type: ignore[arg-type]
    assert results.ok == 200, results.errors[:5]


def test_envoy_keeps_its_config_while_envoy_gateway_is_away_and_takes_new_config_on_return(
    stack: RealStack, tmp_path: Path
) -> None:
    stack.kubectl("apply", "-f", str(LORA_SAMPLE))
    url = _serving(stack, LORA_BODY)
    pid = int((stack.state / "envoy-gateway.pid").read_text())
    os.kill(pid, signal.SIGSTOP)  # away: its xDS connections stay open but nothing answers
    try:
        results = asyncio.run(send_many(GatewayUrl(url), LORA_BODY, 100))  # type: ignore[arg-type]
        assert results.ok == 100, results.errors[:5]
    finally:
        os.kill(pid, signal.SIGCONT)
    stack.restart_envoy_gateway()
    results = asyncio.run(send_many(GatewayUrl(url), LORA_BODY, 100))  # type: ignore[arg-type]
    assert results.ok == 100, results.errors[:5]
    # Envoy reconnects to the new EG with its xDS backoff; from then on changes flow as before.
    stats = "/stats?filter=^control_plane.connected_state$"
    eventually(lambda: "connected_state: 1" in stack.envoy_admin("inference-gateway", stats), 60, "xDS back")
    test_a_weight_change_by_kubectl_reaches_envoy_within_two_seconds(stack, tmp_path)


def test_a_pod_that_turns_not_ready_leaves_the_pickers_endpoints_within_a_second(stack: RealStack) -> None:
    stack.kubectl("apply", "-f", str(LORA_SAMPLE))
    url = _serving(stack, LORA_BODY)
    eventually(lambda: len(_target_hosts(stack)) == 3, 30, "Envoy holding the seed's three pods")
    ip = _seed_pod_ips(stack)[0]
    control = f"http://{ip}:8000/sim/control"
    stack.post_in_node(control, {"fail": True})  # /health answers 500: the readiness probe fails
    try:
        # The node probes every 0.5 s (a kubelet's periodSeconds here is 5): 1 s from the probe's verdict.
        eventually(
            lambda: f"{ip}:8000" not in _target_hosts(stack), 1.5, f"NotReady {ip} gone", interval=0.02
        )
        results = asyncio.run(send_many(GatewayUrl(url), LORA_BODY, 50, concurrency=8))  # type: ignore[arg-type]
        assert results.ok == 50 and f"{ip}:8000" not in results.servers
    finally:
        stack.post_in_node(control, {"fail": False})
    eventually(lambda: f"{ip}:8000" in _target_hosts(stack), 10, f"{ip} back once Ready")
