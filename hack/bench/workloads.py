"""Benchmark workloads generated locally from a seed: request mixes, their fleet, and manifests.

Four workloads (issue 6): `sharegpt` (log-normal prompt/output lengths, one base model), `shared_prefix`
(groups of requests sharing long system prompts), `multi_lora` (20 adapters with Zipf popularity,
4 adapter slots per server) and `canary` (the seed's base-model canary: a slow and a fast model in one
pool, requests for `qwq` split 50/50). Arrivals are an open-loop Poisson process. Nothing is downloaded.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Prompt text is random hex: the simulator counts 4 bytes per token and hashes 64-byte blocks.
BYTES_PER_TOKEN = 4
SERVICE_HEADER = "x-bench-service"  # baselines route on it (one Kubernetes Service per Deployment)
POOL_NAME = "bench-pool"
GATEWAY_NAME = "bench-gateway"
GATEWAY_PORT = 8081
POD_PORT = 8000
PICKER_SERVICE = "inference-gateway-ext-proc"


@dataclass(frozen=True)
class Deployment:
    """Replicas of one model server; `slowdown` multiplies its simulated latencies (a bigger model)."""

    name: str
    served_model_name: str
    replicas: int
    lora_adapters: tuple[str, ...] = ()
    slowdown: float = 1.0


@dataclass(frozen=True)
class FleetSettings:
    """Limits shared by every simulated server of a run."""

    max_num_seqs: int = 16
    kv_cache_tokens: int = 48_000
    max_loras: int = 4
    lora_load_ms: float = 25.0
    time_scale: float = 2.0  # > 1: simulated time runs slower than real time


@dataclass(frozen=True)
class BenchRequest:
    """One request: `model` goes to the picker; baseline clients send `direct_model` to `service`."""

    model: str
    direct_model: str
    service: str
    prompt: str
    max_tokens: int

    def body(self, *, direct: bool) -> dict[str, Any]:
        return {
            "model": self.direct_model if direct else self.model,
            "prompt": self.prompt,
            "max_tokens": self.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }


@dataclass(frozen=True)
class Workload:
    """A request mix and the Deployments serving it; `models`: client model -> (target, weight)s."""

    name: str
    description: str
    deployments: tuple[Deployment, ...]
    models: Mapping[str, tuple[tuple[str, int], ...]]
    sample: Callable[[random.Random], BenchRequest] = field(repr=False)

    @property
    def servers(self) -> int:
        return sum(d.replicas for d in self.deployments)


# text ----------------------------------------------------------------------------------------------


def random_text(rng: random.Random, tokens: int) -> str:
    """`tokens` simulated tokens of unique text (hex: JSON-safe, never shares blocks by chance)."""
    return rng.randbytes(tokens * BYTES_PER_TOKEN // 2).hex()


def lognormal_int(rng: random.Random, median: float, sigma: float, low: int, high: int) -> int:
    return max(low, min(high, round(rng.lognormvariate(math.log(median), sigma))))


def zipf_weights(n: int, s: float) -> list[float]:
    raw = [1.0 / (rank**s) for rank in range(1, n + 1)]
    total = sum(raw)
    return [w / total for w in raw]


# workloads -----------------------------------------------------------------------------------------

BASE_MODEL = "llama-3-8b"


def sharegpt(servers: int = 8) -> Workload:
    """ShareGPT-like: log-normal prompt (median 200 tokens) and output (median 64) lengths, one base model."""

    def sample(rng: random.Random) -> BenchRequest:
        prompt = random_text(rng, lognormal_int(rng, 200, 0.9, 8, 2000))
        out = lognormal_int(rng, 64, 0.7, 4, 400)
        return BenchRequest(BASE_MODEL, BASE_MODEL, BASE_MODEL, prompt, out)

    return Workload(
        "sharegpt",
        "ShareGPT-like length mix on one base model "
        "(log-normal prompts, median 200 tokens; outputs, median 64)",
        (Deployment(BASE_MODEL, BASE_MODEL, servers),),
        {BASE_MODEL: ((BASE_MODEL, 100),)},
        sample,
    )


def shared_prefix(servers: int = 8, groups: int = 48, system_tokens: int = 2048) -> Workload:
    """Groups of requests sharing a long system prompt (uniform group popularity) plus a short question."""
    prefix_rng = random.Random(1_000_003)
    prefixes = [random_text(prefix_rng, system_tokens) for _ in range(groups)]

    def sample(rng: random.Random) -> BenchRequest:
        prompt = rng.choice(prefixes) + random_text(rng, lognormal_int(rng, 96, 0.5, 16, 512))
        out = lognormal_int(rng, 48, 0.6, 4, 256)
        return BenchRequest(BASE_MODEL, BASE_MODEL, BASE_MODEL, prompt, out)

    return Workload(
        "shared_prefix",
        f"{groups} groups sharing {system_tokens}-token system prompts (uniform), "
        "questions median 96 tokens, outputs median 48",
        (Deployment(BASE_MODEL, BASE_MODEL, servers),),
        {BASE_MODEL: ((BASE_MODEL, 100),)},
        sample,
    )


def multi_lora(servers: int = 8, adapters: int = 20, zipf_s: float = 1.1) -> Workload:
    """Requests for 20 LoRA adapters with Zipf popularity; every server has every adapter."""
    names = tuple(f"adapter-{i:02d}" for i in range(adapters))
    weights = zipf_weights(adapters, zipf_s)

    def sample(rng: random.Random) -> BenchRequest:
        adapter = rng.choices(names, weights)[0]
        prompt = random_text(rng, lognormal_int(rng, 150, 0.8, 8, 1500))
        out = lognormal_int(rng, 48, 0.7, 4, 300)
        return BenchRequest(adapter, adapter, BASE_MODEL, prompt, out)

    return Workload(
        "multi_lora",
        f"{adapters} LoRA adapters, Zipf popularity (s={zipf_s}), 4 adapter slots per server",
        (Deployment(BASE_MODEL, BASE_MODEL, servers, names),),
        {name: ((name, 100),) for name in names},
        sample,
    )


def canary() -> Workload:
    """The seed's base-model canary: `qwq` 50/50 over qwq-32b (5 slow replicas), deepseek-r1 (2 fast)."""
    slow, fast = "qwq-32b", "deepseek-r1"

    def sample(rng: random.Random) -> BenchRequest:
        target = slow if rng.random() < 0.5 else fast
        prompt = random_text(rng, lognormal_int(rng, 200, 0.9, 8, 2000))
        out = lognormal_int(rng, 64, 0.7, 4, 400)
        return BenchRequest("qwq", target, target, prompt, out)

    return Workload(
        "canary",
        "seed base-model canary: `qwq` split 50/50 over qwq-32b (5 replicas, 2.5x slower) "
        "and deepseek-r1 (2 replicas)",
        (Deployment(slow, slow, 5, slowdown=2.5), Deployment(fast, fast, 2)),
        {"qwq": ((slow, 50), (fast, 50))},
        sample,
    )


WORKLOADS: dict[str, Callable[[], Workload]] = {
    "sharegpt": sharegpt,
    "shared_prefix": shared_prefix,
    "multi_lora": multi_lora,
    "canary": canary,
}


# arrivals ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arrival:
    at: float  # seconds after the start of the run (real time)
    request: BenchRequest


def poisson_times(rate: float, duration: float, rng: random.Random) -> list[float]:
    """Open-loop Poisson arrival times in [0, duration) at `rate` per second."""
    if rate <= 0 or duration <= 0:
        raise ValueError("rate and duration must be > 0")
    times: list[float] = []
    t = rng.expovariate(rate)
    while t < duration:
        times.append(t)
        t += rng.expovariate(rate)
    return times


def arrivals(workload: Workload, rate: float, duration: float, seed: int) -> list[Arrival]:
    """The same seed gives the same times and requests, whichever router they go to."""
    time_rng = random.Random(f"{seed}/times/{workload.name}/{rate:.6f}")
    request_rng = random.Random(f"{seed}/requests/{workload.name}")
    return [Arrival(t, workload.sample(request_rng)) for t in poisson_times(rate, duration, time_rng)]


# manifests -----------------------------------------------------------------------------------------


def vllm_command(deployment: Deployment, fleet: FleetSettings) -> str:
    words = [
        "vllm serve", f"/models/{deployment.served_model_name}", f"--port {POD_PORT}",
        f"--served-model-name {deployment.served_model_name}", f"--max-num-seqs {fleet.max_num_seqs}",
    ]  # fmt: skip
    if deployment.lora_adapters:
        words.append("--enable-lora")
        words.append(f"--max-loras {fleet.max_loras}")
        words.append("--lora-modules " + " ".join(f"{a}=/adapters/{a}" for a in deployment.lora_adapters))
    return " ".join(words)


def manifests(workload: Workload, fleet: FleetSettings, namespace: str = "default") -> list[dict[str, Any]]:
    """Gateway, Deployments, InferencePool (attached to the Gateway) and InferenceModels of a workload."""
    labels = {"app": "bench-serving"}
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GatewayClass",
            "metadata": {"name": "bench"},
            "spec": {"controllerName": "gateway.envoyproxy.io/gatewayclass-controller"},
        },
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": GATEWAY_NAME, "namespace": namespace},
            "spec": {
                "gatewayClassName": "bench",
                "listeners": [{"name": "llm", "protocol": "HTTP", "port": GATEWAY_PORT}],
            },
        },
    ]
    for dep in workload.deployments:
        pod_labels = {**labels, "release": dep.name}
        objects.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": dep.name, "namespace": namespace, "labels": pod_labels},
                "spec": {
                    "replicas": dep.replicas,
                    "selector": {"matchLabels": pod_labels},
                    "template": {
                        "metadata": {"labels": pod_labels},
                        "spec": {
                            "containers": [
                                {
                                    "name": "vllm",
                                    "image": "vllm/vllm-openai",
                                    "command": ["sh", "-c", vllm_command(dep, fleet)],
                                    "ports": [{"containerPort": POD_PORT}],
                                }
                            ]
                        },
                    },
                },
            }
        )
    objects.append(
        {
            "apiVersion": "inference.networking.x-k8s.io/v1alpha1",
            "kind": "InferencePool",
            "metadata": {
                "name": POOL_NAME,
                "namespace": namespace,
                "annotations": {
                    "inference.networking.x-k8s.io/attach-to": f"name: {GATEWAY_NAME}\nport: {GATEWAY_PORT}\n"
                },
            },
            "spec": {
                "selector": labels,
                "targetPortNumber": POD_PORT,
                "extensionRef": {"group": "", "kind": "Service", "name": PICKER_SERVICE},
            },
        }
    )
    for i, (model, targets) in enumerate(sorted(workload.models.items())):
        objects.append(
            {
                "apiVersion": "inference.networking.x-k8s.io/v1alpha1",
                "kind": "InferenceModel",
                "metadata": {"name": f"model-{i:02d}", "namespace": namespace},
                "spec": {
                    "modelName": model,
                    "criticality": "Critical",
                    "poolRef": {
                        "group": "inference.networking.x-k8s.io",
                        "kind": "InferencePool",
                        "name": POOL_NAME,
                    },
                    "targetModels": [{"name": t, "weight": w} for t, w in targets],
                },
            }
        )
    return objects


def services(workload: Workload, addresses: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Baseline Services: one per Deployment (by its served model) -> pod addresses."""
    return {dep.served_model_name: list(addresses[dep.name]) for dep in workload.deployments}
