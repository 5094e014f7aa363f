"""Access log outcomes -> status classes, TTFT and TPOT per (pool, model, target), on /metrics and as JSON."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from picker.errors import PickerError
from picker.handlers.accesslog import Outcome, Timings
from picker.measurements import (
    STATUS_CLASSES,
    TPOT_BUCKETS,
    TTFT_BUCKETS,
    Measurements,
    normalized_tpot_seconds,
    status_class,
    tpot_seconds,
    ttft_seconds,
)
from picker.metrics import MEASUREMENTS_PATH, PickerMetrics, start_metrics_server

LABELS = {"model_name": "alias", "target_model_name": "base", "pool": "default/pool"}
# Headers at 30 ms, first SSE event at 250 ms, last byte from the model server at 1.25 s.
STREAMED = Timings(first_chunk=0.25, last_upstream_tx=0.02, last_upstream_rx=1.25, last_downstream_tx=1.26)


def _outcome(
    status: int | None = 200,
    *,
    stream: bool | None = True,
    tokens: int | None = 11,
    flags: frozenset[str] = frozenset(),
    timings: Timings = STREAMED,
    target: str = "base",
) -> Outcome:
    return Outcome(
        "r", "default/pool", "alias", target, "10.0.0.1:8000", status, 5, tokens, stream, flags, timings
    )


@pytest.mark.parametrize(
    ("status", "flags", "expected"),
    [
        (200, frozenset(), "2xx"),
        (204, frozenset(), "2xx"),
        (404, frozenset(), "4xx"),
        (429, frozenset(), "4xx"),
        (503, frozenset({"UF"}), "5xx"),  # connection failure: Envoy's own 503
        (504, frozenset({"UT"}), "timeout"),  # a route timeout is a timeout, not one more 5xx
        (200, frozenset({"SI"}), "timeout"),  # stream idle timeout after the answer began
        (200, frozenset({"UC"}), "reset"),  # the model server's connection broke mid-stream
        (None, frozenset({"UR"}), "reset"),
        (200, frozenset({"DC"}), "client_gone"),  # the client hung up mid-stream
        (None, frozenset(), "client_gone"),  # no response code: the client left before one
        (0, frozenset(), "client_gone"),
        (302, frozenset(), "other"),
    ],
)
def test_status_classes_are_disjoint_with_timeouts_and_resets_apart(
    status: int | None, flags: frozenset[str], expected: str
) -> None:
    assert status_class(_outcome(status, flags=flags)) == expected
    assert expected in STATUS_CLASSES


def test_streaming_ttft_is_the_first_chunk_and_tpot_the_rest_over_tokens_minus_one() -> None:
    outcome = _outcome()
    assert ttft_seconds(outcome) == 0.25
    assert tpot_seconds(outcome) == pytest.approx((1.25 - 0.25) / 10)
    assert normalized_tpot_seconds(outcome) == pytest.approx(1.26 / 11)


def test_non_streaming_tpot_is_the_model_servers_whole_time_over_tokens() -> None:
    # The JSON answer arrives in one piece: its first chunk is the whole generation.
    timings = Timings(first_chunk=1.2, last_upstream_tx=0.02, last_upstream_rx=1.22, last_downstream_tx=1.23)
    outcome = _outcome(stream=False, timings=timings)
    assert ttft_seconds(outcome) == 1.2
    assert tpot_seconds(outcome) == pytest.approx(1.2 / 11)


@pytest.mark.parametrize(
    "outcome",
    [
        _outcome(tokens=None),  # no usage in the stream (no stream_options.include_usage)
        _outcome(tokens=1),  # a single token has no time between tokens
        _outcome(timings=dataclasses.replace(STREAMED, first_chunk=None)),
        _outcome(timings=dataclasses.replace(STREAMED, last_upstream_rx=0.1)),  # before the first chunk
        _outcome(stream=False, tokens=0),
        _outcome(stream=False, timings=dataclasses.replace(STREAMED, last_upstream_tx=None)),
    ],
)
def test_tpot_needs_tokens_and_both_ends(outcome: Outcome) -> None:
    assert tpot_seconds(outcome) is None


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, {**LABELS, **labels})


def test_only_successful_answers_of_a_known_kind_are_timed() -> None:
    registry = CollectorRegistry()
    measurements = Measurements(registry, replica="picker-0")
    measurements.record(_outcome())
    measurements.record(_outcome(stream=False))
    measurements.record(_outcome(504, flags=frozenset({"UT"})))
    measurements.record(_outcome(stream=None))  # counted, not timed: it could be either kind
    assert _value(registry, "inference_model_response_total", status_class="2xx") == 3
    assert _value(registry, "inference_model_response_total", status_class="timeout") == 1
    ttft = "inference_model_request_ttft_seconds"
    assert _value(registry, f"{ttft}_count", streaming="true") == 1
    assert _value(registry, f"{ttft}_count", streaming="false") == 1
    assert _value(registry, f"{ttft}_bucket", streaming="true", le="0.2") == 0
    assert _value(registry, f"{ttft}_bucket", streaming="true", le="0.3") == 1
    assert _value(registry, "inference_model_request_tpot_seconds_sum", streaming="true") == pytest.approx(
        0.1
    )
    assert _value(registry, "inference_model_normalized_time_per_output_token_seconds_count") == 2


def test_buckets_step_at_most_one_and_a_half_times_over_the_llm_range() -> None:
    for bounds, low, high in ((TTFT_BUCKETS, 0.001, 60), (TPOT_BUCKETS, 0.0001, 2)):
        assert (bounds[0], bounds[-1]) == (low, high)
        assert all(1 < b / a <= 1.5 for a, b in itertools.pairwise(bounds))


def _metrics_with(outcomes: list[Outcome], replica: str) -> PickerMetrics:
    metrics = PickerMetrics()
    metrics.measurements.replica = replica
    for outcome in outcomes:
        metrics.measurements.record(outcome)
    return metrics


def _snapshot(metrics: PickerMetrics) -> dict[str, Any]:
    return metrics.measurements.snapshot(metrics.requests, metrics.errors, ("ModelServerError",))


def test_json_gives_per_target_counts_and_bucket_counts_that_merge_by_summing() -> None:
    slow = Timings(first_chunk=2.0, last_upstream_tx=0.02, last_upstream_rx=4.0, last_downstream_tx=4.0)
    outcomes = [
        _outcome(),
        _outcome(500),
        _outcome(stream=False, timings=slow, target="canary"),
        _outcome(timings=slow, target="canary"),
    ]
    one = _metrics_with(outcomes, "picker-0")
    one.for_request("alias", "base", "default/pool").requests.inc(2)  # routed by this replica
    shed = PickerError(429, "shed")
    shed.model, shed.target, shed.pool = "alias", "canary", "default/pool"
    one.errors.labels("alias", "canary", "default/pool", shed.code.value).inc()
    doc = _snapshot(one)
    assert doc["replica"] == "picker-0" and doc["bounds"]["ttft_seconds"] == list(TTFT_BUCKETS)
    base, canary = doc["targets"]
    assert (base["target"], canary["target"]) == ("base", "canary")
    assert base["routed"] == 2 and base["requests"] == 2
    assert base["responses"]["2xx"] == 1 and base["responses"]["5xx"] == 1
    assert canary["rejected"] == {"InferencePoolResourceExhausted": 1}
    streaming = base["ttft_seconds"]["streaming"]
    assert streaming["count"] == 1 and streaming["sum"] == 0.25
    assert len(streaming["counts"]) == len(TTFT_BUCKETS) + 1  # the last is above the top bound
    assert streaming["counts"][TTFT_BUCKETS.index(0.3)] == 1 and sum(streaming["counts"]) == 1
    assert canary["ttft_seconds"]["non_streaming"]["counts"][TTFT_BUCKETS.index(2.0)] == 1
    assert base["tpot_seconds"]["non_streaming"]["count"] == 0

    # Two replicas that saw half each sum to the replica that saw all.
    halves = [_snapshot(_metrics_with(outcomes[i::2], f"picker-{i}")) for i in (0, 1)]
    merged = [
        [a + b for a, b in zip(*(h["targets"][t]["ttft_seconds"][k]["counts"] for h in halves), strict=True)]
        for t in (0, 1)
        for k in ("streaming", "non_streaming")
    ]
    whole = [
        doc["targets"][t]["ttft_seconds"][k]["counts"] for t in (0, 1) for k in ("streaming", "non_streaming")
    ]
    assert merged == whole


async def test_metrics_port_serves_the_json_and_the_exposition() -> None:
    metrics = _metrics_with([_outcome()], "picker-0")
    runner = await start_metrics_server(metrics, "127.0.0.1", 0)
    try:
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}{MEASUREMENTS_PATH}") as answer:
                assert answer.status == 200 and answer.content_type == "application/json"
                doc = await answer.json()
            async with session.get(f"http://127.0.0.1:{port}/metrics") as answer:
                text = await answer.text()
        assert doc["targets"][0]["ttft_seconds"]["streaming"]["count"] == 1
        assert 'inference_model_request_ttft_seconds_count{model_name="alias"' in text
    finally:
        await runner.cleanup()
