"""Metric and model-list parsing against real vLLM 0.32 captures (tests/fixtures/vllm/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from picker.modelserver import (
    SGLANG,
    TRITON_TRTLLM,
    TRTLLM,
    VLLM,
    MetricNames,
    MetricsError,
    ModelsError,
    parse_metrics,
    parse_models,
)
from picker.modelserver.names import MetricNamesError, MetricSpec
from picker.scheduling.types import PodMetrics, ServedModels

FIXTURES = Path(__file__).parent / "fixtures" / "vllm"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "metrics-idle.txt",
            PodMetrics(running=0, waiting=0, kv_cache_usage=0.0, block_size=128, num_gpu_blocks=8192),
        ),
        (
            "metrics-busy.txt",
            PodMetrics(
                running=4,
                waiting=8,
                kv_cache_usage=0.0014650225857648635,
                max_loras=2,
                running_adapters=frozenset({"sql-lora", "tweet-summary"}),
                waiting_adapters=frozenset({"sql-lora", "tweet-summary"}),
                block_size=128,
                num_gpu_blocks=8192,
            ),
        ),
        (
            # The newest series is the empty one; the newest naming adapters wins (tweet-summary).
            "metrics-after.txt",
            PodMetrics(
                running=0,
                waiting=0,
                kv_cache_usage=0.0,
                max_loras=2,
                running_adapters=frozenset({"tweet-summary"}),
                waiting_adapters=frozenset({"tweet-summary"}),
                block_size=128,
                num_gpu_blocks=8192,
            ),
        ),
    ],
)
def test_parse_real_vllm_metrics(name: str, expected: PodMetrics) -> None:
    assert parse_metrics(fixture(name)) == expected


def test_old_kv_metric_name_is_accepted() -> None:
    text = fixture("metrics-busy.txt").replace("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
    assert parse_metrics(text).kv_cache_usage == pytest.approx(0.0014650225857648635)


def test_counts_sum_over_engines_and_kv_is_their_mean() -> None:
    text = (
        'vllm:num_requests_running{engine="0"} 2\n'
        'vllm:num_requests_running{engine="1"} 3\n'
        'vllm:num_requests_waiting{engine="0"} 1\n'
        'vllm:num_requests_waiting{engine="1"} 4\n'
        'vllm:kv_cache_usage_perc{engine="0"} 0.2\n'
        'vllm:kv_cache_usage_perc{engine="1"} 0.6\n'
    )
    metrics = parse_metrics(text)
    assert (metrics.running, metrics.waiting) == (5, 5)
    assert metrics.kv_cache_usage == pytest.approx(0.4)


def test_lora_without_non_empty_series_uses_newest() -> None:
    text = (
        "vllm:num_requests_running 0\nvllm:num_requests_waiting 0\nvllm:kv_cache_usage_perc 0\n"
        'vllm:lora_requests_info{max_lora="4",running_lora_adapters="",waiting_lora_adapters=""} 2.0\n'
        'vllm:lora_requests_info{max_lora="3",running_lora_adapters="",waiting_lora_adapters=""} 1.0\n'
    )
    metrics = parse_metrics(text)
    assert metrics.max_loras == 4
    assert metrics.running_adapters == frozenset()


def test_lora_prefers_newest_non_empty_series() -> None:
    text = (
        "vllm:num_requests_running 1\nvllm:num_requests_waiting 0\nvllm:kv_cache_usage_perc 0\n"
        'vllm:lora_requests_info{max_lora="2",running_lora_adapters="a",waiting_lora_adapters=""} 5\n'
        'vllm:lora_requests_info{max_lora="2",running_lora_adapters="a, b",waiting_lora_adapters="c"} 7\n'
        'vllm:lora_requests_info{max_lora="2",running_lora_adapters="",waiting_lora_adapters=""} 9\n'
    )
    metrics = parse_metrics(text)
    assert metrics.running_adapters == frozenset({"a", "b"})
    assert metrics.waiting_adapters == frozenset({"c"})


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        ("vllm:num_requests_waiting", "waiting"),
        ("vllm:num_requests_running", "running"),
        ("vllm:kv_cache_usage_perc", "kv_usage"),
    ],
)
def test_missing_required_metric_is_named(drop: str, message: str) -> None:
    text = "\n".join(
        line for line in fixture("metrics-busy.txt").splitlines() if not line.startswith(drop + "{")
    )
    with pytest.raises(MetricsError, match=message):
        parse_metrics(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "<html>502 Bad Gateway</html>",
        'vllm:num_requests_running{engine="0" 1\n',
        "vllm:num_requests_running not-a-number\n",
        "vllm:num_requests_running 1\nvllm:num_requests_waiting NaN\nvllm:kv_cache_usage_perc 0\n",
        "vllm:num_requests_running -1\nvllm:num_requests_waiting 0\nvllm:kv_cache_usage_perc 0\n",
        "\x00\xff garbage \n{}{}\n",
        "vllm:num_requests_running{engine=0} 1\nvllm:num_requests_waiting 0\nvllm:kv_cache_usage_perc 0\n",
    ],
)
def test_malformed_metrics_raise_metrics_error(text: str) -> None:
    with pytest.raises(MetricsError):
        parse_metrics(text)


def test_label_escapes_timestamps_and_exponents_are_read() -> None:
    text = (
        'vllm:num_requests_running{model_name="a \\"quoted\\" \\\\ name",engine="0"} 3.0 1712345678000\n'
        'vllm:num_requests_waiting{engine="0",} 2e0\n'
        "vllm:kv_cache_usage_perc 2.5E-1\n"
        'vllm:lora_requests_info{max_lora="4",running_lora_adapters="a,b",waiting_lora_adapters=""} 1.7e9\n'
    )
    metrics = parse_metrics(text)
    assert (metrics.running, metrics.waiting, metrics.kv_cache_usage) == (3, 2, 0.25)
    assert metrics.max_loras == 4 and metrics.running_adapters == {"a", "b"}


def test_bad_max_lora_label_is_an_error() -> None:
    text = (
        "vllm:num_requests_running 0\nvllm:num_requests_waiting 0\nvllm:kv_cache_usage_perc 0\n"
        'vllm:lora_requests_info{max_lora="x",running_lora_adapters="a",waiting_lora_adapters=""} 1\n'
    )
    with pytest.raises(MetricsError, match="max_lora"):
        parse_metrics(text)


def test_metric_name_prefix_is_not_confused_with_longer_name() -> None:
    # vllm:num_requests_waiting_by_reason must not be read as vllm:num_requests_waiting.
    text = (
        "vllm:num_requests_running 0\nvllm:kv_cache_usage_perc 0\n"
        'vllm:num_requests_waiting_by_reason{reason="capacity"} 8\n'
    )
    with pytest.raises(MetricsError, match="waiting"):
        parse_metrics(text)


@pytest.mark.parametrize(
    ("names", "text", "expected"),
    [
        (
            SGLANG,
            "sglang:num_queue_reqs 3\nsglang:num_running_reqs 2\nsglang:token_usage 0.5\n"
            'sglang:cache_config_info{page_size="16",num_pages="100"} 1\n',
            PodMetrics(running=2, waiting=3, kv_cache_usage=0.5, block_size=16, num_gpu_blocks=100),
        ),
        (
            TRTLLM,
            "trtllm_num_requests_waiting 1\ntrtllm_num_requests_running 4\ntrtllm_kv_cache_utilization 0.25\n"
            "trtllm_kv_cache_tokens_per_block 32\ntrtllm_kv_cache_max_blocks 512\n",
            PodMetrics(running=4, waiting=1, kv_cache_usage=0.25, block_size=32, num_gpu_blocks=512),
        ),
        (
            TRITON_TRTLLM,
            'nv_trt_llm_request_metrics{request_type="waiting"} 6\n'
            'nv_trt_llm_request_metrics{request_type="scheduled"} 2\n'
            'nv_trt_llm_request_metrics{request_type="context"} 99\n'
            'nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="fraction"} 0.75\n',
            PodMetrics(running=2, waiting=6, kv_cache_usage=0.75),
        ),
    ],
)
def test_other_server_presets(names: MetricNames, text: str, expected: PodMetrics) -> None:
    assert parse_metrics(text, names) == expected


def test_metric_names_from_config_mapping() -> None:
    names = MetricNames.from_mapping(
        {"base": "vllm", "waiting": ["my:queue", 'my:q{kind="wait"}'], "loraMaxLabel": "max"}
    )
    assert names.waiting == (MetricSpec("my:queue"), MetricSpec("my:q", (("kind", "wait"),)))
    assert names.lora_max_label == "max"
    assert names.running == VLLM.running
    text = 'my:q{kind="wait"} 7\nvllm:num_requests_running 1\nvllm:kv_cache_usage_perc 0.1\n'
    assert parse_metrics(text, names).waiting == 7


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"waiting": "a"}, r"metricNames\.running: required"),
        ({"base": "nope"}, r"metricNames\.base: unknown preset"),
        ({"base": "vllm", "bogus": "x"}, r"metricNames\.bogus: unknown field"),
        ({"base": "vllm", "waiting": 3}, r"metricNames\.waiting: expected a string"),
        ({"base": "vllm", "waiting": ["ok", "bad{"]}, r"metricNames\.waiting\[1\]"),
    ],
)
def test_metric_names_config_errors_name_the_field(data: dict[str, object], message: str) -> None:
    with pytest.raises(MetricNamesError, match=message):
        MetricNames.from_mapping(data)


def test_parse_real_models_list() -> None:
    served = parse_models((FIXTURES / "v1-models.json").read_bytes())
    assert served == ServedModels(base=frozenset({"tiny"}), adapters=frozenset({"sql-lora", "tweet-summary"}))
    assert served.serves("sql-lora") and served.serves("tiny") and not served.serves("other")


def test_models_without_parent_field_are_base() -> None:
    assert parse_models('{"object":"list","data":[{"id":"m"}]}') == ServedModels(base=frozenset({"m"}))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not JSON"),
        (b"[]", "data"),
        (b'{"data": {}}', "data"),
        (b'{"data": [1]}', r"data\[0\]"),
        (b'{"data": [{"id": ""}]}', r"data\[0\]\.id"),
        (b'{"data": [{"id": "a", "parent": 3}]}', r"data\[0\]\.parent"),
    ],
)
def test_bad_models_body(body: bytes, message: str) -> None:
    with pytest.raises(ModelsError, match=message):
        parse_models(body)
