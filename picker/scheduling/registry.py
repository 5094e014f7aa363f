"""Plugin type name -> config factory, for every built-in filter, scorer and picker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from picker.scheduling.params import Params
from picker.scheduling.plugins.filters import model, readiness, subset_hint
from picker.scheduling.plugins.pickers import max_score
from picker.scheduling.plugins.scorers import in_flight, kv_cache, lora_affinity, prefix_cache, queue

Factory = Callable[[Params], Any]

FILTERS: dict[str, Factory] = {
    model.TYPE: model.from_parameters,
    readiness.TYPE: readiness.from_parameters,
    subset_hint.TYPE: subset_hint.from_parameters,
}

SCORERS: dict[str, Factory] = {
    queue.TYPE: queue.from_parameters,
    kv_cache.TYPE: kv_cache.from_parameters,
    lora_affinity.TYPE: lora_affinity.from_parameters,
    prefix_cache.TYPE: prefix_cache.from_parameters,
    in_flight.TYPE: in_flight.from_parameters,
}

PICKERS: dict[str, Factory] = {
    max_score.TYPE: max_score.from_parameters,
}

# Names the reference implementation used before a rename; kept so older configs still load.
ALIASES: dict[str, str] = {
    "kv-cache-scorer": kv_cache.TYPE,
}

KINDS: dict[str, dict[str, Factory]] = {"filter": FILTERS, "scorer": SCORERS, "picker": PICKERS}


def canonical(plugin_type: str) -> str:
    """The type name an alias stands for (the name itself otherwise)."""
    return ALIASES.get(plugin_type, plugin_type)


def kind_of(plugin_type: str) -> str | None:
    """ "filter", "scorer" or "picker" for a known type (aliases resolved), else None."""
    plugin_type = canonical(plugin_type)
    for kind, factories in KINDS.items():
        if plugin_type in factories:
            return kind
    return None


def factory(plugin_type: str) -> Factory | None:
    plugin_type = canonical(plugin_type)
    for factories in KINDS.values():
        if plugin_type in factories:
            return factories[plugin_type]
    return None


def known_types() -> list[str]:
    return sorted(t for factories in KINDS.values() for t in factories)
