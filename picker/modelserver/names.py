"""Which Prometheus series carry each load signal, per model-server kind (vLLM, SGLang, TensorRT-LLM).

A field holds one or more *specs*, tried in order: `name` or `name{label="value",...}`. The first spec
with at least one matching series wins (so vLLM's renamed KV metric can list the new and old name).
Other servers are added by configuration: `MetricNames.from_mapping(yaml.safe_load(...))`, the format
of the built-in presets too (presets.yaml).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from importlib import resources
from typing import Any

import yaml

_SPEC_RE = re.compile(r"^\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{(.*)\})?\s*$")
_LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"?([^",]*)"?\s*')


class MetricNamesError(ValueError):
    """A metric-name mapping that cannot be used; the message names the field path."""


@dataclass(frozen=True)
class MetricSpec:
    """One series selector: a metric name plus labels that must match exactly."""

    name: str
    labels: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str, path: str = "spec") -> MetricSpec:
        match = _SPEC_RE.match(text)
        if match is None:
            raise MetricNamesError(f'{path}: {text!r} is not `name` or `name{{label="value"}}`')
        labels: list[tuple[str, str]] = []
        if match.group(2):
            for part in match.group(2).split(","):
                if not part.strip():
                    continue
                label = _LABEL_RE.fullmatch(part)
                if label is None:
                    raise MetricNamesError(f"{path}: bad label matcher {part.strip()!r} in {text!r}")
                labels.append((label.group(1), label.group(2)))
        return cls(match.group(1), tuple(labels))

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(key) == value for key, value in self.labels)

    def __str__(self) -> str:
        if not self.labels:
            return self.name
        return self.name + "{" + ",".join(f'{k}="{v}"' for k, v in self.labels) + "}"


@dataclass(frozen=True)
class MetricNames:
    """Series for each signal. `waiting`, `running`, `kv_usage` are required; the rest optional."""

    waiting: tuple[MetricSpec, ...]
    running: tuple[MetricSpec, ...]
    kv_usage: tuple[MetricSpec, ...]  # fraction 0..1
    lora_info: tuple[MetricSpec, ...] = ()  # vLLM-style info gauge whose value is a timestamp
    lora_running_label: str = "running_lora_adapters"
    lora_waiting_label: str = "waiting_lora_adapters"
    lora_max_label: str = "max_lora"
    cache_info: tuple[MetricSpec, ...] = ()  # info gauge carrying block size / block count labels
    cache_block_size_label: str = "block_size"
    cache_num_blocks_label: str = "num_gpu_blocks"
    cache_block_size: tuple[MetricSpec, ...] = ()  # gauges, for servers without an info metric
    cache_num_blocks: tuple[MetricSpec, ...] = ()

    def metric_names(self) -> frozenset[str]:
        """Every metric name this mapping reads (lets the parser skip all other lines)."""
        return self._metric_names

    @functools.cached_property
    def _metric_names(self) -> frozenset[str]:
        # Asked on every scrape (thousands a second at scale); computed once per mapping. A cached
        # property writes the instance __dict__ directly, so the dataclass stays frozen.
        found: set[str] = set()
        for spec_field in _SPEC_FIELDS:
            found.update(spec.name for spec in getattr(self, spec_field))
        return frozenset(found)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], path: str = "metricNames") -> MetricNames:
        """Build from config (YAML): spec fields take a string or a list of strings.

        `base` names a preset (`vllm`, `sglang`, `trtllm`, `triton-trtllm`) whose values fill the gaps.
        """
        if not isinstance(data, Mapping):
            raise MetricNamesError(f"{path}: expected a mapping, got {type(data).__name__}")
        base_name = data.get("base")
        base: MetricNames | None = None
        if base_name is not None:
            if not isinstance(base_name, str) or base_name.lower() not in PRESETS:
                raise MetricNamesError(f"{path}.base: unknown preset {base_name!r}; known: {sorted(PRESETS)}")
            base = PRESETS[base_name.lower()]
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key == "base":
                continue
            attr = _snake(key)
            if attr not in known:
                raise MetricNamesError(f"{path}.{key}: unknown field; known: {sorted(known)}")
            if attr in _SPEC_FIELDS:
                items = [value] if isinstance(value, str) else value
                if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                    raise MetricNamesError(f"{path}.{key}: expected a string or a list of strings")
                values[attr] = tuple(MetricSpec.parse(i, f"{path}.{key}[{n}]") for n, i in enumerate(items))
            else:
                if not isinstance(value, str) or not value:
                    raise MetricNamesError(f"{path}.{key}: expected a non-empty string")
                values[attr] = value
        for required in ("waiting", "running", "kv_usage"):
            if required not in values and base is None:
                raise MetricNamesError(f"{path}.{_camel(required)}: required (or give `base`)")
        if base is not None:
            return _replace(base, values)
        return cls(**values)


_SPEC_FIELDS = (
    "waiting",
    "running",
    "kv_usage",
    "lora_info",
    "cache_info",
    "cache_block_size",
    "cache_num_blocks",
)


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def _camel(attr: str) -> str:
    head, *rest = attr.split("_")
    return head + "".join(word.title() for word in rest)


def _replace(base: MetricNames, values: Mapping[str, Any]) -> MetricNames:
    merged = {f.name: getattr(base, f.name) for f in fields(base)}
    merged.update(values)
    return MetricNames(**merged)


def _load_presets() -> dict[str, MetricNames]:
    """The built-in presets, from presets.yaml beside this module."""
    data = yaml.safe_load(resources.files("picker.modelserver").joinpath("presets.yaml").read_text("utf-8"))
    return {name: MetricNames.from_mapping(mapping, f"presets.yaml {name}") for name, mapping in data.items()}


PRESETS: dict[str, MetricNames] = _load_presets()
VLLM = PRESETS["vllm"]
SGLANG = PRESETS["sglang"]
TRTLLM = PRESETS["trtllm"]
TRITON_TRTLLM = PRESETS["triton-trtllm"]
