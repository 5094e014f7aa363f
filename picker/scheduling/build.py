"""Build a `Scheduler` from a `SchedulerConfig` (defaults when none is given)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from picker.scheduling import registry
from picker.scheduling.config import DEFAULT_CONFIG, PluginSpec, SchedulerConfig
from picker.scheduling.framework import Filter, Picker, Scheduler, Scorer, WeightedScorer
from picker.scheduling.params import ConfigError, Params


def build_scheduler(
    config: SchedulerConfig | None = None,
    rng: random.Random | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Scheduler:
    """Instantiate every plugin the profile names; one instance per name, shared if named twice."""
    config = config if config is not None else DEFAULT_CONFIG
    specs = {spec.name: spec for spec in config.plugins}
    instances: dict[str, Any] = {}

    def instance(name: str) -> Any:
        if name not in instances:
            spec = specs.get(name) or PluginSpec(type=name, name=name, path=f"plugins[{name}].parameters")
            make = registry.factory(spec.type)
            if make is None:
                raise ConfigError(f"{spec.path or name}: unknown plugin type {spec.type!r}")
            instances[name] = make(Params(spec.parameters, spec.path or f"plugins[{name}].parameters"))
        return instances[name]

    filters: list[Filter] = [instance(name) for name in config.filters]
    scorers = [WeightedScorer(instance(name), weight, name) for name, weight in config.scorers]
    picker: Picker = instance(config.picker)
    return Scheduler(filters, scorers, picker, rng=rng, clock=clock, admission=config.admission)


__all__ = ["Filter", "Picker", "Scorer", "build_scheduler"]
