"""Scheduler configuration from YAML: plugin instances, the profile that orders them, admission.

```yaml
plugins:                          # optional: instances with parameters (name defaults to type)
  - type: in-flight-load-scorer
    name: load
    parameters: {loadRange: 32, prefillWindowMs: 50, prefillLoad: 0.5, prefillLoadPerKTokens: 2}
profile:                          # optional; these are the defaults (SchedulerConfig)
  filters: [model-filter, subset-hint-filter, readiness-filter]
  scorers:
    - {name: load, weight: 8}                        # in-flight-load-scorer
    - {name: prefix-cache-scorer, weight: 6}
    - {name: lora-affinity-scorer, weight: 2}
    - {name: kv-cache-utilization-scorer, weight: 1}
  picker: max-score-picker
admission: {queueThreshold: 5, kvCacheThreshold: 0.8, shedStandard: false}
metricNames: {base: vllm}         # which series to scrape (picker.modelserver.names)
```
Profile entries name a plugin instance, or a plugin type (instantiated with default parameters).
Metrics staleness is one limit, the profile's readiness filter's `maxMetricsAgeSeconds` (2 s by
default): routing drops endpoints with older metrics, admission counts them full, and the ready-pods
gauge does not count them (`SchedulerConfig.staleness_s`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from picker.modelserver.names import VLLM, MetricNames, MetricNamesError
from picker.scheduling import registry
from picker.scheduling.admission import DEFAULT_ADMISSION, AdmissionConfig
from picker.scheduling.params import ConfigError, Params
from picker.scheduling.plugins.filters import readiness


@dataclass(frozen=True)
class PluginSpec:
    """One configured plugin instance."""

    type: str
    name: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    path: str = ""  # where it was configured, for error messages


@dataclass(frozen=True)
class SchedulerConfig:
    plugins: tuple[PluginSpec, ...] = ()
    filters: tuple[str, ...] = ("model-filter", "subset-hint-filter", "readiness-filter")
    # Load (live in-flight counts, smooth) decides unless a cached prompt prefix or a loaded LoRA
    # adapter is worth more. Each request above the least-loaded candidate costs 8 / loadRange 32 =
    # 0.25, so a full prefix match outweighs up to 24 extra requests and a running adapter (instead
    # of an eviction) 8; the load weight (8) exceeds the prefix weight (6), so a big enough imbalance
    # always wins. A miss costs a full prefill that also stalls every running sequence of the pod, an
    # extra running request little (docs/benchmarks.md). A pod sent a request in the last 50 ms
    # (probably still in prefill) counts half a request more, plus two per thousand prompt tokens it
    # must prefill: equal counts no longer tie, and a long prefill steers new requests elsewhere.
    # `queue-scorer` is not in the default profile: the load scorer already counts `waiting`, and
    # live rather than 50 ms stale.
    scorers: tuple[tuple[str, float], ...] = (
        ("in-flight-load-scorer", 8.0),
        ("prefix-cache-scorer", 6.0),
        ("lora-affinity-scorer", 2.0),
        ("kv-cache-utilization-scorer", 1.0),
    )
    picker: str = "max-score-picker"
    admission: AdmissionConfig = DEFAULT_ADMISSION  # carries the staleness limit
    metric_names: MetricNames = VLLM

    @property
    def staleness_s(self) -> float:
        """The one metrics staleness limit (the readiness filter's), for every part of the picker."""
        return self.admission.staleness_s


DEFAULT_CONFIG = SchedulerConfig()

_TOP_LEVEL = ("plugins", "profile", "admission", "metricNames")


def load_config(path: str | Path) -> SchedulerConfig:
    """Read and validate a YAML config file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read scheduler config: {exc.strerror or exc}") from exc
    return parse_config_text(text, str(path))


def parse_config_text(text: str, source: str = "config") -> SchedulerConfig:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {exc}") from exc
    return parse_config(data if data is not None else {}, source)


def parse_config(data: Any, source: str = "config") -> SchedulerConfig:
    """Validate a decoded config; errors start with the field path (`profile.scorers[1].weight`)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    for key in data:
        if key not in _TOP_LEVEL:
            raise ConfigError(f"{key}: unknown field; known: {list(_TOP_LEVEL)}")
    plugins = _plugins(data.get("plugins"))
    by_name = {p.name: p for p in plugins}
    filters, scorers, picker = DEFAULT_CONFIG.filters, DEFAULT_CONFIG.scorers, DEFAULT_CONFIG.picker
    profile = data.get("profile")
    if profile is not None:
        if not isinstance(profile, Mapping):
            raise ConfigError("profile: expected a mapping")
        for key in profile:
            if key not in ("filters", "scorers", "picker"):
                raise ConfigError(f"profile.{key}: unknown field; known: ['filters', 'scorers', 'picker']")
        if "filters" in profile:
            filters = _filters(profile["filters"], by_name)
        if "scorers" in profile:
            scorers = _scorers(profile["scorers"], by_name)
        if "picker" in profile:
            picker = _reference(profile["picker"], "profile.picker", "picker", by_name)
    staleness = _staleness(filters, by_name)
    admission = AdmissionConfig.from_mapping(data.get("admission"), "admission", staleness)
    metric_names = VLLM
    if data.get("metricNames") is not None:
        try:
            metric_names = MetricNames.from_mapping(data["metricNames"], "metricNames")
        except MetricNamesError as exc:
            raise ConfigError(str(exc)) from exc
    return SchedulerConfig(plugins, filters, scorers, picker, admission, metric_names)


def _plugins(raw: Any) -> tuple[PluginSpec, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError("plugins: expected a list")
    specs: list[PluginSpec] = []
    names: set[str] = set()
    for index, item in enumerate(raw):
        path = f"plugins[{index}]"
        if not isinstance(item, Mapping):
            raise ConfigError(f"{path}: expected a mapping with `type`")
        for key in item:
            if key not in ("type", "name", "parameters"):
                raise ConfigError(f"{path}.{key}: unknown field; known: ['type', 'name', 'parameters']")
        plugin_type = item.get("type")
        if not isinstance(plugin_type, str) or not plugin_type:
            raise ConfigError(f"{path}.type: required string")
        if registry.kind_of(plugin_type) is None:
            raise ConfigError(
                f"{path}.type: unknown plugin type {plugin_type!r}; known: {registry.known_types()}"
            )
        name = item.get("name", plugin_type)
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{path}.name: expected a non-empty string")
        if name in names:
            raise ConfigError(f"{path}.name: duplicate plugin name {name!r}")
        names.add(name)
        parameters = item.get("parameters")
        parameters = {} if parameters is None else parameters
        if not isinstance(parameters, Mapping):
            raise ConfigError(f"{path}.parameters: expected a mapping")
        specs.append(PluginSpec(plugin_type, name, dict(parameters), f"{path}.parameters"))
    return tuple(specs)


def _staleness(filters: tuple[str, ...], by_name: Mapping[str, PluginSpec]) -> float:
    """The readiness filter's `maxMetricsAgeSeconds` (its default without one in the profile)."""
    ages: dict[float, str] = {}
    for name in filters:
        spec = by_name.get(name)
        plugin_type = spec.type if spec is not None else name
        if registry.canonical(plugin_type) != readiness.TYPE:
            continue
        path = spec.path if spec is not None and spec.path else f"plugins[{name}].parameters"
        ages.setdefault(readiness.max_metrics_age(Params(spec.parameters if spec else None, path)), path)
    if len(ages) > 1:
        paths = " and ".join(f"{p}.{readiness.PARAMETER}" for p in ages.values())
        raise ConfigError(f"{paths}: readiness filters disagree; metrics staleness is one limit")
    return next(iter(ages), readiness.DEFAULT_MAX_METRICS_AGE_S)


def _reference(raw: Any, path: str, kind: str, by_name: Mapping[str, PluginSpec]) -> str:
    """A profile entry: the name of a configured plugin or a built-in type of the right kind."""
    if not isinstance(raw, str) or not raw:
        raise ConfigError(f"{path}: expected a plugin name")
    spec = by_name.get(raw)
    actual = registry.kind_of(spec.type if spec is not None else raw)
    if actual is None:
        raise ConfigError(f"{path}: {raw!r} is neither a configured plugin nor a known {kind} type")
    if actual != kind:
        raise ConfigError(f"{path}: {raw!r} is a {actual}, not a {kind}")
    return raw


def _filters(raw: Any, by_name: Mapping[str, PluginSpec]) -> tuple[str, ...]:
    if not isinstance(raw, list):
        raise ConfigError("profile.filters: expected a list of plugin names")
    return tuple(_reference(item, f"profile.filters[{i}]", "filter", by_name) for i, item in enumerate(raw))


def _scorers(raw: Any, by_name: Mapping[str, PluginSpec]) -> tuple[tuple[str, float], ...]:
    if not isinstance(raw, list):
        raise ConfigError("profile.scorers: expected a list of {name, weight}")
    out: list[tuple[str, float]] = []
    for index, item in enumerate(raw):
        path = f"profile.scorers[{index}]"
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, Mapping):
            raise ConfigError(f"{path}: expected a plugin name or {{name, weight}}")
        for key in item:
            if key not in ("name", "weight"):
                raise ConfigError(f"{path}.{key}: unknown field; known: ['name', 'weight']")
        name = _reference(item.get("name"), f"{path}.name", "scorer", by_name)
        weight = item.get("weight", 1)
        if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
            raise ConfigError(f"{path}.weight: expected a number >= 0, got {weight!r}")
        out.append((name, float(weight)))
    return tuple(out)
