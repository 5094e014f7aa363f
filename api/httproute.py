"""HTTPRoute rules that name InferencePools: which pools, with which weights (the hooks get no weights)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from api.model import GROUP_GA, GROUP_X
from api.parse import KIND_POOL


@dataclass(frozen=True)
class RuleBackends:
    """The backendRefs of one HTTPRoute rule, as far as a weighted pool split needs them."""

    pools: tuple[tuple[str, str, int], ...]  # (namespace, name, weight) of each InferencePool ref
    others: int  # backendRefs of any other kind (Services...)


RuleKey = tuple[str, str, int]  # HTTPRoute namespace, name, rule index


def rule_backends(httproutes: Iterable[Mapping[str, Any]]) -> dict[RuleKey, RuleBackends]:
    """Every HTTPRoute rule that names at least one InferencePool (pure)."""
    out: dict[RuleKey, RuleBackends] = {}
    for route in httproutes:
        meta = route.get("metadata") or {}
        namespace = str(meta.get("namespace") or "default")
        for index, rule in enumerate((route.get("spec") or {}).get("rules") or []):
            pools, others = [], 0
            for ref in rule.get("backendRefs") or []:
                if ref.get("kind") == KIND_POOL and ref.get("group") in (GROUP_GA, GROUP_X):
                    weight = ref.get("weight")
                    pools.append(
                        (
                            str(ref.get("namespace") or namespace),
                            str(ref["name"]),
                            1 if weight is None else int(weight),
                        )
                    )
                else:
                    others += 1
            if pools:
                out[(namespace, str(meta.get("name")), index)] = RuleBackends(tuple(pools), others)
    return out
