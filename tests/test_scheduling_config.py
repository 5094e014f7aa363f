"""Scheduler YAML config: defaults, plugin instances, and errors that name the field path."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from picker.scheduling import ConfigError, build_scheduler, load_config, parse_config
from picker.scheduling.config import DEFAULT_CONFIG, parse_config_text
from picker.scheduling.plugins.filters.readiness import ReadinessFilter
from picker.scheduling.plugins.scorers.prefix_cache import PrefixCacheScorer


def test_empty_config_is_the_default() -> None:
    assert parse_config_text("") == DEFAULT_CONFIG
    scheduler = build_scheduler()
    assert [w.name for w in scheduler.scorers] == [
        "in-flight-load-scorer",
        "prefix-cache-scorer",
        "lora-affinity-scorer",
        "kv-cache-utilization-scorer",
    ]
    assert scheduler.prefix_index is not None


def test_full_config_from_file(tmp_path: Path) -> None:
    path = tmp_path / "scheduler.yaml"
    path.write_text(
        """
plugins:
  - type: prefix-cache-scorer
    name: prefix
    parameters: {blockSize: 32, maxPrefixBlocksToMatch: 8, lruCapacityPerServer: 100}
  - type: readiness-filter
    parameters: {maxMetricsAgeSeconds: 0.5}
  - type: kv-cache-scorer
    name: kv
profile:
  filters: [model-filter, readiness-filter]
  scorers:
    - {name: prefix, weight: 5}
    - {name: kv, weight: 1.5}
    - queue-scorer
  picker: max-score-picker
admission: {shedStandard: true}
metricNames: {base: sglang}
""",
        encoding="utf-8",
    )
    config = load_config(path)
    assert config.admission.shed_standard is True
    assert config.metric_names.waiting[0].name == "sglang:num_queue_reqs"
    scheduler = build_scheduler(config, rng=random.Random(0))
    assert [(w.name, w.weight) for w in scheduler.scorers] == [
        ("prefix", 5.0),
        ("kv", 1.5),
        ("queue-scorer", 1.0),
    ]
    prefix = scheduler.scorers[0].scorer
    assert isinstance(prefix, PrefixCacheScorer) and prefix.block_size == 32 and prefix.max_blocks == 8
    assert scheduler.prefix_index is prefix.index
    readiness = scheduler.filters[1]
    assert isinstance(readiness, ReadinessFilter) and readiness.max_metrics_age_s == 0.5


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], r"config: expected a mapping"),
        ({"plugin": []}, r"^plugin: unknown field"),
        ({"plugins": {}}, r"^plugins: expected a list"),
        ({"plugins": [{"name": "x"}]}, r"^plugins\[0\]\.type: required"),
        ({"plugins": [{"type": "nope"}]}, r"^plugins\[0\]\.type: unknown plugin type 'nope'"),
        (
            {"plugins": [{"type": "queue-scorer"}, {"type": "queue-scorer"}]},
            r"^plugins\[1\]\.name: duplicate",
        ),
        ({"plugins": [{"type": "queue-scorer", "parameters": []}]}, r"^plugins\[0\]\.parameters: expected"),
        (
            {"profile": {"scorers": [{"name": "queue-scorer", "weight": -1}]}},
            r"^profile\.scorers\[0\]\.weight",
        ),
        (
            {"profile": {"scorers": [{"name": "model-filter"}]}},
            r"^profile\.scorers\[0\]\.name: 'model-filter' is a",
        ),
        ({"profile": {"filters": ["ghost"]}}, r"^profile\.filters\[0\]: 'ghost' is neither"),
        ({"profile": {"picker": "queue-scorer"}}, r"^profile\.picker: 'queue-scorer' is a scorer"),
        ({"profile": {"scorer": []}}, r"^profile\.scorer: unknown field"),
        ({"admission": {"queueThreshold": "five"}}, r"^admission\.queueThreshold: expected a number"),
        ({"metricNames": {"base": "x"}}, r"^metricNames\.base: unknown preset"),
    ],
)
def test_config_errors_name_the_field(data: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(data)


@pytest.mark.parametrize(
    ("plugin", "message"),
    [
        (
            {"type": "prefix-cache-scorer", "parameters": {"blockSize": 0}},
            r"plugins\[0\]\.parameters\.blockSize",
        ),
        ({"type": "readiness-filter", "parameters": {"maxAge": 1}}, r"parameters\.maxAge: unknown parameter"),
        (
            {"type": "max-score-picker", "parameters": {"maxNumOfEndpoints": 1.5}},
            r"maxNumOfEndpoints: expected",
        ),
        (
            {"type": "lora-affinity-scorer", "parameters": {"running": 2}},
            r"parameters\.running: must be <= 1",
        ),
    ],
)
def test_plugin_parameter_errors_name_the_field(plugin: dict[str, object], message: str) -> None:
    config = parse_config({"plugins": [plugin]})
    name = str(plugin["type"])
    kind = "picker" if "picker" in name else "filters" if "filter" in name else "scorers"
    profile = {"picker": name} if kind == "picker" else {kind: [name]}
    config = parse_config({"plugins": [plugin], "profile": profile})
    with pytest.raises(ConfigError, match=message):
        build_scheduler(config)


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid YAML"):
        parse_config_text("plugins: [", "x.yaml")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")
