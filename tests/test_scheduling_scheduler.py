"""The full cycle: filters -> weighted scorers -> picker, decisions, rejections and invariants."""

from __future__ import annotations

import random
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from picker.scheduling import build_scheduler, parse_config
from picker.scheduling.framework import CycleState, Scheduler, WeightedScorer
from picker.scheduling.plugins.filters.readiness import ReadinessFilter
from picker.scheduling.plugins.pickers.max_score import MaxScorePicker
from picker.scheduling.plugins.scorers.in_flight import InFlightLoadScorer
from picker.scheduling.plugins.scorers.kv_cache import KvCacheScorer
from picker.scheduling.plugins.scorers.lora_affinity import LoraAffinityScorer
from picker.scheduling.plugins.scorers.prefix_cache import PrefixCacheScorer
from picker.scheduling.plugins.scorers.queue import QueueScorer
from picker.scheduling.prefix_index import PrefixIndex, prompt_hashes
from picker.scheduling.types import Decision, Endpoint, InferenceRequest, PodMetrics, Rejection, ServedModels

SERVED = ServedModels(base=frozenset({"base"}), adapters=frozenset({"lora-a"}))


def ep(
    n: int,
    waiting: int = 0,
    kv: float = 0.0,
    age: float = 0.01,
    served: ServedModels | None = SERVED,
    in_flight: int = 0,
) -> Endpoint:
    return Endpoint(
        f"10.0.0.{n}:8000", f"ns/p{n}", served, PodMetrics(waiting=waiting, kv_cache_usage=kv), age, in_flight
    )


def request(model: str = "base", prompt: str = "", hint: frozenset[str] | None = None) -> InferenceRequest:
    return InferenceRequest("r", model, model, prompt=prompt, subset_hint=hint)


def test_default_scheduler_prefers_least_loaded_and_returns_fallbacks() -> None:
    scheduler = build_scheduler(rng=random.Random(1))
    endpoints = [
        ep(1, waiting=9, kv=0.9),
        ep(2, waiting=0, kv=0.1),
        ep(3, waiting=4, kv=0.5),
        ep(4, waiting=6),
    ]
    decision = scheduler.schedule(request(), endpoints)
    assert isinstance(decision, Decision)
    assert decision.primary == "10.0.0.2:8000"
    assert len(decision.endpoints) == 3 and len(set(decision.endpoints)) == 3
    assert "10.0.0.1:8000" not in decision.endpoints
    assert decision.scores["10.0.0.2:8000"] > decision.scores[decision.endpoints[1]]


def test_in_flight_spreads_a_burst_between_scrapes() -> None:
    scheduler = build_scheduler(rng=random.Random(3))
    in_flight = {1: 0, 2: 0}
    for _ in range(6):
        endpoints = [ep(n, in_flight=in_flight[n]) for n in (1, 2)]
        decision = scheduler.schedule(request(), endpoints)
        assert isinstance(decision, Decision)
        in_flight[int(decision.primary.split(".")[3].split(":")[0])] += 1
    assert in_flight == {1: 3, 2: 3}


def test_prefix_affinity_after_record() -> None:
    scheduler = build_scheduler(rng=random.Random(5))
    endpoints = [ep(n) for n in range(1, 6)]
    prompt = "system prompt " * 40
    first = scheduler.schedule(request(prompt=prompt), endpoints)
    assert isinstance(first, Decision) and first.prefix_hashes
    scheduler.record(first)
    for _ in range(5):
        again = scheduler.schedule(request(prompt=prompt + " and more"), endpoints)
        assert isinstance(again, Decision) and again.primary == first.primary


def test_prefix_affinity_holds_against_a_small_imbalance_and_yields_to_a_large_one() -> None:
    """A cached prefix is worth a few extra requests on its pod, not an unbounded queue."""
    scheduler = build_scheduler(rng=random.Random(7))
    prompt = "shared system prompt " * 40
    first = scheduler.schedule(request(prompt=prompt), [ep(n) for n in range(1, 5)])
    assert isinstance(first, Decision)
    scheduler.record(first)
    holder = int(first.primary.split(".")[3].split(":")[0])
    for extra, stays in ((2, True), (8, True), (40, False)):
        endpoints = [ep(n, in_flight=extra if n == holder else 0) for n in range(1, 5)]
        decision = scheduler.schedule(request(prompt=prompt + f" question {extra}"), endpoints)
        assert isinstance(decision, Decision)
        assert (decision.primary == first.primary) is stays, extra


def test_load_breaks_ties_between_endpoints_holding_the_prefix() -> None:
    scheduler = build_scheduler(rng=random.Random(9))
    prompt = "shared system prompt " * 40
    for n in (1, 2):  # the prompt went to two endpoints (a spill replicated it)
        scheduler.record(Decision((f"10.0.0.{n}:8000",), prefix_hashes=scheduler_hashes(scheduler, prompt)))
    # the idle endpoint 3 lacks the prefix: it loses to the lighter-loaded of the two holders
    loaded = [ep(1, in_flight=3), ep(2, in_flight=1), ep(3)]
    decision = scheduler.schedule(request(prompt=prompt), loaded)
    assert isinstance(decision, Decision) and decision.primary == "10.0.0.2:8000"


def scheduler_hashes(scheduler: Scheduler, prompt: str) -> tuple[int, ...]:
    decision = scheduler.schedule(request(prompt=prompt), [ep(9)])
    assert isinstance(decision, Decision)
    return decision.prefix_hashes


def test_rejections_from_filters() -> None:
    scheduler = build_scheduler(rng=random.Random(0))
    not_found = scheduler.schedule(request("missing"), [ep(1)])
    assert isinstance(not_found, Rejection) and (not_found.status, not_found.code) == (404, "model_not_found")
    stale = scheduler.schedule(request(), [ep(1, age=5.0)])
    assert isinstance(stale, Rejection) and stale.status == 503
    outside = scheduler.schedule(request(hint=frozenset({"1.2.3.4:80"})), [ep(1)])
    assert isinstance(outside, Rejection) and (outside.status, outside.code) == (503, "no_endpoint_in_subset")


def test_subset_hint_restricts_choice() -> None:
    scheduler = build_scheduler(rng=random.Random(0))
    decision = scheduler.schedule(
        request(hint=frozenset({"10.0.0.3:8000"})), [ep(1), ep(2), ep(3, waiting=9)]
    )
    assert isinstance(decision, Decision) and decision.endpoints == ("10.0.0.3:8000",)


class _OutOfRange:
    def score(self, cycle: CycleState, candidates: Sequence[Endpoint]) -> list[float]:
        return [5.0 if i == 0 else -3.0 for i in range(len(candidates))]


def test_out_of_range_scores_are_clamped() -> None:
    scheduler = Scheduler(
        [], [WeightedScorer(_OutOfRange(), 2.0, "bad")], MaxScorePicker(2), rng=random.Random(0)
    )
    decision = scheduler.schedule(request(), [ep(1), ep(2)])
    assert isinstance(decision, Decision)
    assert decision.scores == {"10.0.0.1:8000": 2.0, "10.0.0.2:8000": 0.0}


def test_clock_is_injected() -> None:
    seen: list[float] = []

    class Spy:
        def score(self, cycle: CycleState, candidates: Sequence[Endpoint]) -> float:
            seen.append(cycle.now)
            return 1.0

    scheduler = Scheduler([], [WeightedScorer(Spy(), 1.0)], MaxScorePicker(), clock=lambda: 42.0)
    scheduler.schedule(request(), [ep(1)])
    assert seen == [42.0]


# ---- properties -------------------------------------------------------------------------------

endpoint_strategy = st.builds(
    lambda n, waiting, running, kv, age, in_flight, has_metrics, adapters, max_loras, serves: Endpoint(
        f"10.0.{n // 256}.{n % 256}:8000",
        f"ns/p{n}",
        ServedModels(
            frozenset({"base"}) if serves else frozenset({"other"}),
            frozenset({"lora-a"}) if serves else frozenset(),
        ),
        PodMetrics(
            running=running,
            waiting=waiting,
            kv_cache_usage=kv,
            max_loras=max_loras,
            running_adapters=frozenset(adapters),
        )
        if has_metrics
        else None,
        age,
        in_flight,
    ),
    st.integers(0, 2000),
    st.integers(0, 500),
    st.integers(0, 500),
    st.floats(0.0, 1.0),
    st.floats(0.0, 5.0),
    st.integers(0, 50),
    st.booleans(),
    st.lists(st.sampled_from(["lora-a", "lora-b", "lora-c"]), max_size=3),
    st.integers(0, 4),
    st.booleans(),
)


def unique(endpoints: list[Endpoint]) -> list[Endpoint]:
    return list({e.address: e for e in endpoints}.values())


@settings(max_examples=150, deadline=None)
@given(st.lists(endpoint_strategy, max_size=12), st.sampled_from(["base", "lora-a"]), st.text(max_size=300))
def test_scorers_stay_in_unit_interval(endpoints: list[Endpoint], model: str, prompt: str) -> None:
    endpoints = unique(endpoints)
    index = PrefixIndex(50)
    cycle = CycleState(request(model, prompt), 0.0, random.Random(0))
    prefix = PrefixCacheScorer(index, block_size=8)
    for endpoint in endpoints[::2]:
        index.record(endpoint.address, prefix.hashes(cycle)[: len(endpoint.address) % 5])
    for scorer in (QueueScorer(), KvCacheScorer(), LoraAffinityScorer(), prefix, InFlightLoadScorer()):
        scores = scorer.score(cycle, endpoints)
        if isinstance(scores, dict):
            assert set(scores) <= set(range(len(endpoints)))
            values = list(scores.values())
        else:
            values = [scores] if isinstance(scores, float | int) else list(scores)
        if isinstance(scores, list):
            assert len(values) == len(endpoints)
        assert all(0.0 <= v <= 1.0 for v in values), (scorer, values)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(endpoint_strategy, max_size=12),
    st.sampled_from(["base", "lora-a", "nope"]),
    st.one_of(st.none(), st.frozensets(st.sampled_from([f"10.0.0.{n}:8000" for n in range(8)]))),
    st.integers(0, 1000),
)
def test_scheduler_never_returns_an_excluded_endpoint(
    endpoints: list[Endpoint], model: str, hint: frozenset[str] | None, seed: int
) -> None:
    endpoints = unique(endpoints)
    scheduler = build_scheduler(rng=random.Random(seed))
    result = scheduler.schedule(request(model, "p" * 200, hint), endpoints)
    allowed = {
        e.address
        for e in endpoints
        if e.served is not None
        and e.served.serves(model)
        and e.metrics is not None
        and e.metrics_age_s <= ReadinessFilter().max_metrics_age_s
        and (hint is None or e.address in hint)
    }
    if isinstance(result, Rejection):
        assert not allowed
        assert result.status in (404, 503)
    else:
        assert result.endpoints and set(result.endpoints) <= allowed
        assert len(set(result.endpoints)) == len(result.endpoints) <= 3
        assert result.primary == max(result.endpoints, key=lambda a: result.scores[a]) or (
            result.scores[result.primary] == max(result.scores.values())
        )


def test_new_snapshot_is_not_served_from_the_previous_ones_memo() -> None:
    scheduler = build_scheduler(rng=random.Random(2))
    first = (ep(1, waiting=0), ep(2, waiting=9, kv=0.9))
    second = (ep(1, waiting=9, kv=0.9), ep(2, waiting=0))
    for snapshot, best in ((first, "10.0.0.1:8000"), (first, "10.0.0.1:8000"), (second, "10.0.0.2:8000")):
        decision = scheduler.schedule(request(), snapshot)
        assert isinstance(decision, Decision) and decision.primary == best
    gone = scheduler.schedule(request("lora-a"), (ep(3, served=ServedModels(frozenset({"base"}))),))
    assert isinstance(gone, Rejection) and gone.status == 404


def test_two_prefix_scorers_each_learn_in_their_own_block_size() -> None:
    """Each prefix scorer records the prompts sent in its own scheme (the second used to learn nothing)."""
    config = parse_config(
        {
            "plugins": [
                {"type": "prefix-cache-scorer", "name": "small", "parameters": {"blockSize": 16}},
                {"type": "prefix-cache-scorer", "name": "large", "parameters": {"blockSize": 128}},
            ],
            "profile": {"scorers": [{"name": "small", "weight": 1}, {"name": "large", "weight": 1}]},
        }
    )
    scheduler = build_scheduler(config, rng=random.Random(1))
    small, large = (w.scorer for w in scheduler.scorers)
    assert isinstance(small, PrefixCacheScorer) and isinstance(large, PrefixCacheScorer)
    prompt = "a system prompt long enough for several blocks of either size. " * 8
    decision = scheduler.schedule(request(prompt=prompt), [ep(n) for n in range(1, 4)])
    assert isinstance(decision, Decision)
    scheduler.record(decision)
    for scorer in (small, large):
        own = prompt_hashes(prompt, "base", scorer.block_size, scorer.max_blocks)
        assert scorer.index.match(own) == {decision.primary: len(own)}, scorer.block_size
