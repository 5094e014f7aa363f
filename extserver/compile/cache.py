"""Generated resources of unchanged pools, reused across compilations.

EG calls PostTranslateModify on every translation (any Gateway API change, every resync) with no deadline,
while pools and models change rarely: the per-pool clusters and per-model routes are built once per
distinct input and copied out afterwards. Keys hold every input of the build (the frozen PoolPlan with its
models, the options, and the bytes of any EG route they derive from), so a hit is byte-identical to a
rebuild.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable
from typing import TypeVar, cast

from cachetools import LRUCache
from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.route.v3.route_components_pb2 import Route

from extserver.compile.inputs import CompileInputs
from extserver.compile.plan import Plan, build_plan

_Message = TypeVar("_Message", Cluster, Route)

# Bound on the number of cached messages (clusters, routes; ~0.5-1.5 KiB serialized each). The working
# set is one response's worth of generated resources (3,000 at 1,000 models); the rest is older variants
# of pools that changed, dropped least recently used first.
DEFAULT_MAX_MESSAGES = 50_000


class CompileCache:
    """An LRU of built message lists. The messages handed out are shared with the cache: read-only.

    compile_translation only reads them or copies them into other messages; its callers copy them into
    the hook's response (a protobuf copy), so sharing saves one copy of every resource per call.
    """

    def __init__(self, max_messages: int = DEFAULT_MAX_MESSAGES) -> None:
        self._entries: LRUCache[Hashable, tuple[Cluster | Route, ...]] = LRUCache(
            maxsize=max_messages, getsizeof=_message_count
        )
        self.hits = 0
        self.misses = 0
        self._plan: tuple[CompileInputs, Plan] | None = None

    def plan(self, inputs: CompileInputs) -> Plan:
        """build_plan(inputs), reused while the same inputs object comes back (one snapshot, many hooks)."""
        if self._plan is None or self._plan[0] is not inputs:
            self._plan = (inputs, build_plan(inputs))
        return self._plan[1]

    def get_or_build(self, key: Hashable, build: Callable[[], list[_Message]]) -> list[_Message]:
        stored = cast("tuple[_Message, ...] | None", self._entries.get(key))
        if stored is None:
            self.misses += 1
            built = build()
            with contextlib.suppress(ValueError):  # larger than the whole cache: not kept
                self._entries[key] = tuple(built)
            return built
        self.hits += 1
        return list(stored)

    def __len__(self) -> int:
        return len(self._entries)


def _message_count(messages: tuple[Cluster | Route, ...]) -> int:
    return len(messages) or 1


def cached(cache: CompileCache | None, key: Hashable, build: Callable[[], list[_Message]]) -> list[_Message]:
    """`build()` without a cache, else the cached (shared, read-only) messages."""
    if cache is None:
        return build()
    return cache.get_or_build(key, build)


def plan_of(inputs: CompileInputs, cache: CompileCache | None) -> Plan:
    return build_plan(inputs) if cache is None else cache.plan(inputs)
