"""Pure parsers for what a model server tells the picker: `/metrics` text and `/v1/models` JSON."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from picker.modelserver.names import VLLM, MetricNames, MetricSpec
from picker.scheduling.types import PodMetrics, ServedModels


class ModelServerResponseError(ValueError):
    """A model server answer the picker cannot use; the message says what is wrong."""


class MetricsError(ModelServerResponseError):
    """`/metrics` text that is malformed or lacks a required metric."""


class ModelsError(ModelServerResponseError):
    """A `/v1/models` body that is not an OpenAI model list."""


Sample = tuple[str, Mapping[str, str], float]


def parse_metrics(text: str, names: MetricNames = VLLM) -> PodMetrics:
    """Parse Prometheus exposition text into PodMetrics; raises MetricsError, never anything else."""
    try:
        samples = _samples(text, names.metric_names())
    except MetricsError:
        raise
    except Exception as exc:  # the parser raises assorted errors on malformed input
        raise MetricsError(f"malformed metrics text: {exc}") from exc
    by_name: dict[str, list[tuple[Mapping[str, str], float]]] = {}
    for name, labels, value in samples:
        by_name.setdefault(name, []).append((labels, value))

    waiting = _required(by_name, names.waiting, "waiting")
    running = _required(by_name, names.running, "running")
    kv = _required(by_name, names.kv_usage, "kv_usage")
    max_loras, running_adapters, waiting_adapters = _lora(by_name, names)
    block_size, num_blocks = _cache(by_name, names)
    return PodMetrics(
        running=_count(sum(running), "running"),
        waiting=_count(sum(waiting), "waiting"),
        # One gauge per engine (data parallel): usage of the pod is their mean, not their sum.
        kv_cache_usage=min(1.0, max(0.0, sum(kv) / len(kv))),
        max_loras=max_loras,
        running_adapters=running_adapters,
        waiting_adapters=waiting_adapters,
        block_size=block_size,
        num_gpu_blocks=num_blocks,
    )


# One sample line of the Prometheus text format: name, optional {labels}, value, optional timestamp.
_SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?[ \t]+(\S+)(?:[ \t]+-?\d+)?[ \t]*")
_LABEL = re.compile(r'[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"((?:[^"\\]|\\.)*)"[ \t]*(?:,|$)')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def _samples(text: str, wanted: frozenset[str]) -> list[Sample]:
    # Keep only the lines of metrics we read (a vLLM page is ~50 KB, of which we need ~1 KB) and parse
    # just those: the scrape loop runs every 50 ms per pod, so prometheus_client's general parser,
    # at ~0.75 ms a page, was its main cost.
    return [_sample(line) for line in _wanted_lines(text, wanted)]


def _sample(line: str) -> Sample:
    match = _SAMPLE.fullmatch(line)
    if match is None:
        raise MetricsError(f"malformed metrics line: {line[:200]!r}")
    name, label_text, value_text = match.groups()
    try:
        value = float(value_text)
    except ValueError:
        raise MetricsError(f"metric {name} has a non-numeric value {value_text!r}") from None
    if math.isnan(value):
        raise MetricsError(f"metric {name} is NaN")
    return name, _labels(name, label_text or ""), value


def _labels(name: str, text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        match = _LABEL.match(text, pos)
        if match is None or match.end() == pos:
            raise MetricsError(f"metric {name} has malformed labels: {text[:200]!r}")
        key, raw = match.groups()
        labels[key] = re.sub(r"\\[\\\"n]", lambda m: _UNESCAPE[m.group(0)], raw) if "\\" in raw else raw
        pos = match.end()
    return labels


def _wanted_lines(text: str, wanted: frozenset[str]) -> list[str]:
    """Sample lines of the wanted metrics (name then `{` or a blank), found with C-speed str.find."""
    text = "\n" + text
    lines: list[str] = []
    for name in wanted:
        needle = "\n" + name
        pos = text.find(needle)
        while pos >= 0:
            start = pos + 1
            end = text.find("\n", start)
            if end < 0:
                end = len(text)
            after = start + len(name)
            if after < end and text[after] in "{ \t":
                lines.append(text[start:end])
            pos = text.find(needle, end)
    return lines


def _matching(
    by_name: Mapping[str, list[tuple[Mapping[str, str], float]]], specs: Iterable[MetricSpec]
) -> list[tuple[Mapping[str, str], float]]:
    """Series of the first spec that has any; empty when none does."""
    for spec in specs:
        series = [(labels, value) for labels, value in by_name.get(spec.name, ()) if spec.matches(labels)]
        if series:
            return series
    return []


def _required(
    by_name: Mapping[str, list[tuple[Mapping[str, str], float]]], specs: tuple[MetricSpec, ...], what: str
) -> list[float]:
    series = _matching(by_name, specs)
    if not series:
        wanted = " or ".join(str(spec) for spec in specs)
        raise MetricsError(f"required metric {what} missing: no series {wanted}")
    return [value for _, value in series]


def _count(value: float, what: str) -> int:
    if math.isinf(value) or value < 0:
        raise MetricsError(f"metric {what} has invalid value {value}")
    return round(value)


def _adapters(value: str | None) -> frozenset[str]:
    if not value:
        return frozenset()
    return frozenset(name.strip() for name in value.split(",") if name.strip())


def _lora(
    by_name: Mapping[str, list[tuple[Mapping[str, str], float]]], names: MetricNames
) -> tuple[int, frozenset[str], frozenset[str]]:
    series = _matching(by_name, names.lora_info)
    if not series:
        return 0, frozenset(), frozenset()
    # Each label set is its own series whose value is when it was last current. Prefer the newest
    # one naming adapters: an adapter that just finished is still loaded, so affinity to it pays.
    non_empty = [
        (labels, value)
        for labels, value in series
        if labels.get(names.lora_running_label) or labels.get(names.lora_waiting_label)
    ]
    labels, _ = max(non_empty or series, key=lambda item: item[1])
    max_lora_text = labels.get(names.lora_max_label, "0")
    try:
        max_loras = int(float(max_lora_text))
    except ValueError as exc:
        raise MetricsError(f"label {names.lora_max_label}={max_lora_text!r} is not an integer") from exc
    return (
        max(0, max_loras),
        _adapters(labels.get(names.lora_running_label)),
        _adapters(labels.get(names.lora_waiting_label)),
    )


def _int_label(labels: Mapping[str, str], key: str) -> int | None:
    try:
        value = int(labels[key])
    except (KeyError, ValueError):  # absent or "None"
        return None
    return value if value > 0 else None


def _cache(
    by_name: Mapping[str, list[tuple[Mapping[str, str], float]]], names: MetricNames
) -> tuple[int | None, int | None]:
    info = _matching(by_name, names.cache_info)
    if info:
        labels = info[0][0]
        block_size = _int_label(labels, names.cache_block_size_label)
        # Several engines each own their blocks: the pod holds their sum.
        counts = [_int_label(labels, names.cache_num_blocks_label) for labels, _ in info]
        num_blocks = sum(c for c in counts if c is not None) if any(c is not None for c in counts) else None
        return block_size, num_blocks
    sizes = _matching(by_name, names.cache_block_size)
    blocks = _matching(by_name, names.cache_num_blocks)
    block_size = _positive_int(sizes[0][1]) if sizes else None
    num_blocks = _positive_int(sum(value for _, value in blocks)) if blocks else None
    return block_size, num_blocks


def _positive_int(value: float) -> int | None:
    if math.isinf(value) or value <= 0:
        return None
    return round(value)


def parse_models(body: bytes | str) -> ServedModels:
    """Parse an OpenAI `/v1/models` answer: entries without `parent` are base models, others adapters."""
    try:
        document: Any = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ModelsError(f"/v1/models body is not JSON: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise ModelsError("/v1/models body: expected an object with a `data` list")
    base: set[str] = set()
    adapters: set[str] = set()
    for index, entry in enumerate(document["data"]):
        if not isinstance(entry, dict):
            raise ModelsError(f"/v1/models data[{index}]: expected an object")
        model_id = entry.get("id")
        if not isinstance(model_id, str) or not model_id:
            raise ModelsError(f"/v1/models data[{index}].id: expected a non-empty string")
        parent = entry.get("parent")
        if parent is None:
            base.add(model_id)
        elif isinstance(parent, str):
            adapters.add(model_id)
        else:
            raise ModelsError(f"/v1/models data[{index}].parent: expected a string or null")
    return ServedModels(base=frozenset(base), adapters=frozenset(adapters))
