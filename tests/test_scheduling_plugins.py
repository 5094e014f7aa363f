"""Each built-in filter, scorer and picker on small tables of endpoints."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from picker.scheduling.framework import CycleState, Scheduler, WeightedScorer
from picker.scheduling.params import ConfigError, Params
from picker.scheduling.plugins.filters.model import ModelFilter
from picker.scheduling.plugins.filters.readiness import ReadinessFilter
from picker.scheduling.plugins.filters.subset_hint import SubsetHintFilter
from picker.scheduling.plugins.pickers.max_score import MaxScorePicker
from picker.scheduling.plugins.scorers.in_flight import InFlightLoadScorer
from picker.scheduling.plugins.scorers.in_flight import from_parameters as in_flight_from_parameters
from picker.scheduling.plugins.scorers.kv_cache import KvCacheScorer
from picker.scheduling.plugins.scorers.lora_affinity import LoraAffinityScorer
from picker.scheduling.plugins.scorers.prefix_cache import PrefixCacheScorer
from picker.scheduling.plugins.scorers.queue import QueueScorer
from picker.scheduling.prefix_index import PrefixIndex, prompt_hashes
from picker.scheduling.types import (
    Decision,
    Endpoint,
    InferenceRequest,
    PodMetrics,
    Rejection,
    ServedModels,
)

SERVED = ServedModels(base=frozenset({"base"}), adapters=frozenset({"lora-a", "lora-b"}))


def ep(
    n: int,
    *,
    waiting: int = 0,
    running: int = 0,
    kv: float = 0.0,
    in_flight: int = 0,
    served: ServedModels | None = SERVED,
    metrics: bool = True,
    age: float = 0.01,
    max_loras: int = 0,
    lora_running: Sequence[str] = (),
    lora_waiting: Sequence[str] = (),
) -> Endpoint:
    pod_metrics = (
        PodMetrics(
            running=running,
            waiting=waiting,
            kv_cache_usage=kv,
            max_loras=max_loras,
            running_adapters=frozenset(lora_running),
            waiting_adapters=frozenset(lora_waiting),
        )
        if metrics
        else None
    )
    return Endpoint(f"10.0.0.{n}:8000", f"ns/pod-{n}", served, pod_metrics, age, in_flight)


def cycle(
    target: str = "base",
    prompt: str = "",
    hint: frozenset[str] | None = None,
    seed: int = 0,
    now: float = 0.0,
) -> CycleState:
    request = InferenceRequest("req-1", target, target, prompt=prompt, subset_hint=hint)
    return CycleState(request=request, now=now, rng=random.Random(seed))


def addresses(result: Sequence[Endpoint] | Rejection) -> list[str] | Rejection:
    return result if isinstance(result, Rejection) else [e.address for e in result]


def expand(scores: Sequence[float] | float | dict[int, float], n: int) -> list[float]:
    if isinstance(scores, dict):
        return [scores.get(i, 0.0) for i in range(n)]
    return [float(scores)] * n if isinstance(scores, float | int) else list(scores)


# ---- filters ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "endpoints", "expected"),
    [
        ("base", [ep(1), ep(2)], ["10.0.0.1:8000", "10.0.0.2:8000"]),
        ("lora-a", [ep(1), ep(2, served=ServedModels(frozenset({"base"})))], ["10.0.0.1:8000"]),
        ("base", [ep(1, served=None), ep(2)], ["10.0.0.2:8000"]),
        ("other", [ep(1), ep(2)], Rejection(404, "model_not_found", "The model `other` does not exist.")),
    ],
)
def test_model_filter(target: str, endpoints: list[Endpoint], expected: object) -> None:
    assert addresses(ModelFilter().filter(cycle(target), endpoints)) == expected


@pytest.mark.parametrize(
    ("endpoints", "status", "code"),
    [([], 503, "no_ready_endpoint"), ([ep(1, served=None)], 503, "no_ready_endpoint")],
)
def test_model_filter_unknown_is_not_found_yet(endpoints: list[Endpoint], status: int, code: str) -> None:
    result = ModelFilter().filter(cycle("base"), endpoints)
    assert isinstance(result, Rejection)
    assert (result.status, result.code) == (status, code)


@pytest.mark.parametrize(
    ("endpoints", "expected"),
    [
        ([ep(1, age=0.1), ep(2, age=1.9)], ["10.0.0.1:8000", "10.0.0.2:8000"]),
        ([ep(1, age=2.5), ep(2, age=0.0)], ["10.0.0.2:8000"]),
        ([ep(1, metrics=False, age=0.0), ep(2)], ["10.0.0.2:8000"]),
        ([ep(1, age=float("inf"))], 503),
        ([ep(1, metrics=False)], 503),
    ],
)
def test_readiness_filter(endpoints: list[Endpoint], expected: object) -> None:
    result = ReadinessFilter(2.0).filter(cycle(), endpoints)
    if isinstance(expected, int):
        assert isinstance(result, Rejection) and result.status == expected
    else:
        assert addresses(result) == expected


@pytest.mark.parametrize(
    ("hint", "expected"),
    [
        (None, ["10.0.0.1:8000", "10.0.0.2:8000"]),
        (frozenset({"10.0.0.2:8000", "10.9.9.9:1"}), ["10.0.0.2:8000"]),
        (frozenset(), 503),
        (frozenset({"10.9.9.9:1"}), 503),
    ],
)
def test_subset_hint_filter(hint: frozenset[str] | None, expected: object) -> None:
    result = SubsetHintFilter().filter(cycle(hint=hint), [ep(1), ep(2)])
    if isinstance(expected, int):
        assert isinstance(result, Rejection)
        assert (result.status, result.code) == (503, "no_endpoint_in_subset")
    else:
        assert addresses(result) == expected


# ---- scorers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoints", "expected"),
    [
        ([ep(1, waiting=0), ep(2, waiting=5), ep(3, waiting=10)], [1.0, 0.5, 0.0]),
        ([ep(1, waiting=3), ep(2, waiting=3)], [1.0, 1.0]),
        ([ep(1, waiting=0, in_flight=4), ep(2, waiting=2, in_flight=0)], [0.0, 1.0]),
        ([ep(1, metrics=False), ep(2, waiting=4)], [1.0, 0.0]),
        ([ep(1)], [1.0]),
    ],
)
def test_queue_scorer(endpoints: list[Endpoint], expected: list[float]) -> None:
    assert expand(QueueScorer().score(cycle(), endpoints), len(endpoints)) == pytest.approx(expected)


def test_queue_scorer_can_ignore_in_flight() -> None:
    endpoints = [ep(1, waiting=0, in_flight=4), ep(2, waiting=2)]
    assert expand(QueueScorer(count_in_flight=False).score(cycle(), endpoints), 2) == [1.0, 0.0]


@pytest.mark.parametrize(
    ("kvs", "expected"),
    [([0.0, 0.25, 1.0], [1.0, 0.75, 0.0]), ([0.5], [0.5])],
)
def test_kv_cache_scorer(kvs: list[float], expected: list[float]) -> None:
    endpoints = [ep(i, kv=kv) for i, kv in enumerate(kvs)]
    assert expand(KvCacheScorer().score(cycle(), endpoints), len(kvs)) == pytest.approx(expected)


def test_kv_cache_scorer_without_metrics_is_zero() -> None:
    assert expand(KvCacheScorer().score(cycle(), [ep(1, metrics=False)]), 1) == [0.0]


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        (ep(1, max_loras=2, lora_running=["lora-a"]), 1.0),
        (ep(1, max_loras=2, lora_running=["lora-a", "lora-b"], lora_waiting=["lora-a"]), 1.0),
        (ep(1, max_loras=2, lora_running=["lora-b"]), 0.8),
        (ep(1), 0.8),  # idle vLLM: no lora_requests_info series yet
        (ep(1, max_loras=2, lora_running=["lora-b", "x"], lora_waiting=["lora-a"]), 0.6),
        (ep(1, max_loras=1, lora_running=["lora-b"]), 0.0),
        (ep(1, metrics=False), 0.0),
    ],
)
def test_lora_affinity_scorer(endpoint: Endpoint, expected: float) -> None:
    # A second endpoint serving the adapter keeps the scorer from taking its uniform shortcut.
    scores = expand(LoraAffinityScorer().score(cycle("lora-a"), [endpoint, ep(9)]), 2)
    assert scores[0] == pytest.approx(expected)


def test_lora_affinity_is_neutral_for_base_model() -> None:
    endpoints = [ep(1, max_loras=1, lora_running=["lora-b"]), ep(2)]
    assert expand(LoraAffinityScorer().score(cycle("base"), endpoints), 2) == [1.0, 1.0]


def test_prefix_scorer_longest_prefix_fraction() -> None:
    index = PrefixIndex(100)
    scorer = PrefixCacheScorer(index, block_size=4, max_blocks=256, full_credit_blocks=4)
    prompt = "abcdefghijklmnop"  # 4 blocks of 4
    hashes = prompt_hashes(prompt, "base", 4)
    index.record("10.0.0.1:8000", hashes[:2])
    index.record("10.0.0.2:8000", hashes)
    index.record("10.0.0.3:8000", hashes[1:])  # no first block: no prefix at all
    scores = scorer.score(cycle(prompt=prompt), [ep(1), ep(2), ep(3), ep(4)])
    assert expand(scores, 4) == [0.5, 1.0, 0.0, 0.0]


def test_prefix_scorer_gives_short_prompts_partial_credit() -> None:
    """A full match of a short prompt saves little prefill: it earns matched / fullCreditBlocks."""
    index = PrefixIndex(100)
    scorer = PrefixCacheScorer(index, block_size=4, full_credit_blocks=8)
    short, long = "abcdefgh", "abcdefgh" * 8  # 2 and 16 blocks
    index.record("10.0.0.1:8000", prompt_hashes(short, "base", 4))
    index.record("10.0.0.2:8000", prompt_hashes(long, "base", 4))
    assert expand(scorer.score(cycle(prompt=short), [ep(1)]), 1) == [0.25]
    assert expand(scorer.score(cycle(prompt=long), [ep(1), ep(2)]), 2) == [2 / 16, 1.0]


@pytest.mark.parametrize("prompt", ["", "abc"])
def test_prefix_scorer_short_prompt_scores_zero(prompt: str) -> None:
    scorer = PrefixCacheScorer(PrefixIndex(10), block_size=4)
    assert expand(scorer.score(cycle(prompt=prompt), [ep(1)]), 1) == [0.0]


def test_prefix_scorer_is_per_model() -> None:
    index = PrefixIndex(100)
    scorer = PrefixCacheScorer(index, block_size=4, full_credit_blocks=2)
    index.record("10.0.0.1:8000", prompt_hashes("abcdefgh", "lora-a", 4))
    assert expand(scorer.score(cycle("base", prompt="abcdefgh"), [ep(1)]), 1) == [0.0]
    assert expand(scorer.score(cycle("lora-a", prompt="abcdefgh"), [ep(1)]), 1) == [1.0]


@pytest.mark.parametrize(
    ("endpoints", "expected"),
    [
        # load = max(in flight, running + waiting): 4, 2, 2 -> 2 above the least costs 2/16
        (
            [ep(1, running=4), ep(2, running=0, in_flight=2), ep(3, waiting=1, running=1, in_flight=2)],
            [0.875, 1.0, 1.0],
        ),
        # requests in flight that the scrape already counts as running are not counted twice
        ([ep(1, running=2), ep(2, in_flight=2), ep(3, running=2, in_flight=2)], [1.0, 1.0, 1.0]),
        # a burst sent since the last scrape counts at once
        ([ep(1, running=1, in_flight=5), ep(2, running=1)], [0.75, 1.0]),
    ],
)
def test_in_flight_load_scorer(endpoints: list[Endpoint], expected: list[float]) -> None:
    scores = InFlightLoadScorer(load_range=16).score(cycle(), endpoints)
    assert expand(scores, len(endpoints)) == pytest.approx(expected)


def test_in_flight_load_scorer_costs_the_same_per_request_at_any_load() -> None:
    """Smooth, not min-max: one extra request is a small difference, and it saturates at loadRange."""
    scorer = InFlightLoadScorer(load_range=4)
    idle = expand(scorer.score(cycle(), [ep(1), ep(2, in_flight=1)]), 2)
    busy = expand(scorer.score(cycle(), [ep(1, running=10), ep(2, running=11)]), 2)
    assert idle == pytest.approx([1.0, 0.75])
    assert busy == pytest.approx(idle)
    far = expand(scorer.score(cycle(), [ep(1), ep(2, in_flight=9)]), 2)
    assert far == pytest.approx([1.0, 0.0])


def test_in_flight_load_scorer_load_range_parameter() -> None:
    assert in_flight_from_parameters(Params({"loadRange": 2}, "p")).load_range == 2
    with pytest.raises(ConfigError, match="loadRange"):
        in_flight_from_parameters(Params({"loadRange": 0}, "p"))
    scorer = in_flight_from_parameters(Params({"prefillWindowMs": 20, "prefillLoad": 0.25}, "p"))
    assert (scorer.prefill_window_s, scorer.prefill_load) == (0.02, 0.25)
    with pytest.raises(ConfigError, match="prefillWindowMs"):
        in_flight_from_parameters(Params({"prefillWindowMs": -1}, "p"))
    assert in_flight_from_parameters(Params({"prefillLoadPerKTokens": 3}, "p")).prefill_load_per_ktokens == 3
    with pytest.raises(ConfigError, match="prefillLoadPerKTokens"):
        in_flight_from_parameters(Params({"prefillLoadPerKTokens": -0.5}, "p"))


def test_a_request_in_its_prefill_window_breaks_ties_but_not_real_load() -> None:
    """Equal counts: the pod sent a request in the last window loses; one request more still weighs more."""
    scorer = InFlightLoadScorer(load_range=4, prefill_window_s=0.05, prefill_load=0.5)
    first, second = ep(1), ep(2)
    scorer.record(Decision(endpoints=(first.address,)), now=10.0)
    tie = expand(scorer.score(cycle(now=10.01), [first, second]), 2)
    assert tie[0] < tie[1]
    loaded = expand(scorer.score(cycle(now=10.01), [first, ep(2, in_flight=1)]), 2)
    assert loaded[0] > loaded[1]  # 0.5 for the prefill window is less than one request
    later = scorer.score(cycle(now=10.2), [first, second])
    assert later == 1.0  # the window passed: a tie again
    off = InFlightLoadScorer(prefill_window_s=0)
    off.record(Decision(endpoints=(first.address,)), now=10.0)
    assert off.score(cycle(now=10.01), [first, second]) == 1.0


def test_a_long_prompt_in_prefill_weighs_more_than_a_short_one() -> None:
    """Both pods were just sent a request: the one prefilling 2,000 tokens loses to the one prefilling 100."""
    scorer = InFlightLoadScorer(
        load_range=8, prefill_window_s=0.05, prefill_load=0.5, prefill_load_per_ktokens=2
    )
    long, short = ep(1), ep(2)
    scorer.record(Decision(endpoints=(long.address,), prefill_chars=8000), now=10.0)
    scorer.record(Decision(endpoints=(short.address,), prefill_chars=400), now=10.0)
    scores = expand(scorer.score(cycle(now=10.01), [long, short]), 2)
    # load 0.5 + 2 x 2.0 = 4.5 against 0.5 + 2 x 0.1 = 0.7
    assert scores == pytest.approx([1.0 - 3.8 / 8, 1.0])
    # ... and more than one more running request elsewhere: its prefill stalls every new first token
    busier = expand(scorer.score(cycle(now=10.01), [long, ep(3, in_flight=1)]), 2)
    assert busier[0] < busier[1]
    # each dispatch leaves the window on its own
    scorer.record(Decision(endpoints=(short.address,), prefill_chars=400), now=10.04)
    after_first = expand(scorer.score(cycle(now=10.06), [long, short]), 2)
    assert after_first == pytest.approx([1.0, 1.0 - 0.7 / 8])
    assert scorer.score(cycle(now=10.2), [long, short]) == 1.0


def test_the_decision_carries_the_prompt_part_the_primary_must_prefill() -> None:
    """All of the prompt without a prefix scorer; what the prefix index says the primary lacks with one."""
    prompt = "system prompt shared by a group of requests. " * 40 + "and one question"
    request = InferenceRequest("r", "m", "m", prompt=prompt)
    plain = Scheduler(
        [], [WeightedScorer(InFlightLoadScorer(), 1.0)], MaxScorePicker(1), rng=random.Random(0)
    )
    decision = plain.schedule(request, [ep(1), ep(2)])
    assert isinstance(decision, Decision) and decision.prefill_chars == len(prompt)
    index = PrefixIndex()
    prefix = PrefixCacheScorer(index)
    scheduler = Scheduler([], [WeightedScorer(prefix, 1.0)], MaxScorePicker(1), rng=random.Random(0))
    first = scheduler.schedule(request, [ep(1), ep(2)])
    assert isinstance(first, Decision) and first.prefill_chars == len(prompt)  # nothing cached anywhere yet
    scheduler.record(first)
    again = scheduler.schedule(InferenceRequest("r2", "m", "m", prompt=prompt), [ep(1), ep(2)])
    assert isinstance(again, Decision) and again.primary == first.primary
    held = len(prompt.encode()) // 64 * 64  # whole 64-byte blocks
    assert again.prefill_chars == len(prompt) - held


def test_the_scheduler_tells_recording_scorers_of_each_decision() -> None:
    scorer = InFlightLoadScorer(load_range=4)
    # Seed 0 picks the same endpoint twice when nothing is recorded in between.
    scheduler = Scheduler(
        [], [WeightedScorer(scorer, 1.0)], MaxScorePicker(1), rng=random.Random(0), clock=lambda: 5.0
    )
    endpoints = [ep(1), ep(2)]
    decision = scheduler.schedule(InferenceRequest("r", "m", "m"), endpoints)
    assert isinstance(decision, Decision)
    scheduler.record(decision)
    again = scheduler.schedule(InferenceRequest("r2", "m", "m"), endpoints)
    assert isinstance(again, Decision) and again.primary != decision.primary


# ---- picker -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("totals", "count", "expected"),
    [
        ([0.1, 0.9, 0.5, 0.7], 3, [1, 3, 2]),
        ([0.1, 0.9, 0.5, 0.7], 1, [1]),
        ([0.3], 3, [0]),
        ([], 3, []),
    ],
)
def test_max_score_picker_order(totals: list[float], count: int, expected: list[int]) -> None:
    endpoints = [ep(i) for i in range(len(totals))]
    assert MaxScorePicker(count).pick(cycle(), endpoints, totals) == expected


def test_max_score_picker_breaks_ties_at_random_and_distinct() -> None:
    totals = [1.0, 1.0, 1.0, 1.0, 0.5]
    endpoints = [ep(i) for i in range(5)]
    seen = set()
    for seed in range(40):
        picked = MaxScorePicker(3).pick(cycle(seed=seed), endpoints, totals)
        assert len(set(picked)) == 3 and 4 not in picked
        seen.add(picked[0])
    assert seen == {0, 1, 2, 3}


def test_max_score_picker_top_then_random_ties() -> None:
    totals = [0.2, 2.0, 1.0, 1.0, 1.0]
    for seed in range(20):
        picked = MaxScorePicker(3).pick(cycle(seed=seed), [ep(i) for i in range(5)], totals)
        assert picked[0] == 1 and set(picked[1:]) <= {2, 3, 4}
