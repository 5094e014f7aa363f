"""Microbenchmark: one full scheduling decision (filters, scorers, picker) over 10/100/1,000 endpoints.

Realistic, as the director drives the scheduler: one endpoint snapshot reused across decisions (the
datastore rebuilds it only when pods or metrics change), requests in flight changing between
decisions (each decision's primary is acquired, the oldest outstanding request released: about 16
outstanding), a new request object per decision. Snapshot: varied queues and KV use, 20 LoRA
adapters spread over the pods, a 2,000-char prompt whose prefix the index already holds for some pods.

Prints `decision_<n>_us=<float>` per size (median of several rounds, microseconds per decision), the
1,000-endpoint line last. `--static` also times the old shape (in-flight counts frozen in the
snapshot, nothing changing between decisions). Usage: python hack/bench/decision.py [--quick] [--static]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections import deque
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Run as a script, this directory comes first on sys.path and its picker.py would shadow the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parents[1]))

from picker.scheduling import Scheduler, build_scheduler  # noqa: E402
from picker.scheduling.plugins.scorers.prefix_cache import PrefixCacheScorer  # noqa: E402
from picker.scheduling.types import (  # noqa: E402
    Decision,
    Endpoint,
    EndpointSnapshot,
    InferenceRequest,
    PodMetrics,
    ServedModels,
)

ADAPTERS = [f"adapter-{i}" for i in range(20)]
BASE_MODEL = "llama-3-8b"
OUTSTANDING = 16  # requests in flight at once from this picker replica


def make_endpoints(count: int, rng: random.Random) -> tuple[Endpoint, ...]:
    served = ServedModels(base=frozenset({BASE_MODEL}), adapters=frozenset(ADAPTERS))
    endpoints = []
    for i in range(count):
        running = frozenset(rng.sample(ADAPTERS, rng.randint(0, 4)))
        metrics = PodMetrics(
            running=rng.randint(0, 16),
            waiting=rng.choice([0, 0, 0, 1, 2, 5]),
            kv_cache_usage=round(rng.random() * 0.9, 3),
            max_loras=4,
            running_adapters=running,
            waiting_adapters=frozenset(),
            block_size=16,
            num_gpu_blocks=8192,
        )
        address = f"10.{i // 65536}.{(i // 256) % 256}.{i % 256}:8000"
        endpoints.append(
            Endpoint(
                address, f"default/pod-{i}", served, metrics, rng.random() * 0.05, in_flight=rng.randint(0, 3)
            )
        )
    return tuple(endpoints)


def make_prompt(rng: random.Random, length: int = 2000) -> str:
    words = ["the", "model", "serves", "tokens", "quickly", "cache", "prefix", "system", "user", "answer"]
    text = "You are a helpful assistant. "
    while len(text) < length:
        text += rng.choice(words) + " "
    return text[:length]


def _warm(scheduler: Scheduler, endpoints: tuple[Endpoint, ...], prompt: str, rng: random.Random) -> None:
    """The prompt (or a shorter prefix of it) went to some pods before."""
    request = InferenceRequest("bench", "adapter-3", "adapter-3", prompt=prompt)
    warm = scheduler.schedule(request, endpoints)
    assert not hasattr(warm, "status"), warm
    for endpoint in rng.sample(endpoints, max(1, len(endpoints) // 10)):
        cut = rng.randint(200, 2000)
        other = InferenceRequest("warm", "adapter-3", "adapter-3", prompt=prompt[:cut])
        decision = scheduler.schedule(other, endpoints)
        if isinstance(decision, Decision):
            sent = Decision((endpoint.address,), prefix_hashes=decision.prefix_hashes)
            for weighted in scheduler.scorers:  # only the prefix memory: no prefill window
                if isinstance(weighted.scorer, PrefixCacheScorer):
                    weighted.scorer.record(sent, 0.0)


def bench_one(count: int, rounds: int, per_round: int) -> float:
    """Microseconds per decision, realistic shape (see the module docstring); median over rounds."""
    rng = random.Random(count)
    scheduler: Scheduler = build_scheduler(rng=random.Random(7))
    in_flight: dict[str, int] = {}
    endpoints = EndpointSnapshot(make_endpoints(count, rng), in_flight)
    prompt = make_prompt(rng)
    _warm(scheduler, endpoints, prompt, rng)
    outstanding: deque[str] = deque()
    timings = []
    for _ in range(rounds):
        elapsed = 0.0
        for n in range(per_round):
            request = InferenceRequest(f"r{n}", "adapter-3", "adapter-3", prompt=prompt)
            start = time.perf_counter()
            decision = scheduler.schedule(request, endpoints)
            elapsed += time.perf_counter() - start
            # The director's bookkeeping between decisions (not timed): acquire, and an older one ends.
            scheduler.record(decision)  # type: ignore[arg-type]  # per-replica state, as the director does
            primary = decision.primary  # type: ignore[union-attr]
            in_flight[primary] = in_flight.get(primary, 0) + 1
            outstanding.append(primary)
            if len(outstanding) > OUTSTANDING:
                done = outstanding.popleft()
                if in_flight[done] == 1:
                    del in_flight[done]
                else:
                    in_flight[done] -= 1
        timings.append(elapsed / per_round * 1e6)
    return statistics.median(timings)


def bench_static(count: int, rounds: int, per_round: int) -> float:
    """The old shape: the same plain tuple every time, in-flight counts frozen inside it."""
    rng = random.Random(count)
    scheduler: Scheduler = build_scheduler(rng=random.Random(7))
    endpoints = make_endpoints(count, rng)
    prompt = make_prompt(rng)
    _warm(scheduler, endpoints, prompt, rng)
    timings = []
    for _ in range(rounds):
        start = time.perf_counter()
        for n in range(per_round):
            scheduler.schedule(InferenceRequest(f"r{n}", "adapter-3", "adapter-3", prompt=prompt), endpoints)
        timings.append((time.perf_counter() - start) / per_round * 1e6)
    return statistics.median(timings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--static", action="store_true", help="also time the old static-snapshot shape")
    args = parser.parse_args(argv)
    rounds = 5 if args.quick else 15
    for count in (10, 100, 1000):
        per_round = max(20, 20_000 // count) if not args.quick else max(10, 5_000 // count)
        if args.static:
            print(f"decision_{count}_static_us={bench_static(count, rounds, per_round):.1f}", flush=True)
        print(f"decision_{count}_us={bench_one(count, rounds, per_round):.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
