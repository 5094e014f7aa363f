"""HTTPRoute rules that name InferencePools: which pools, with which weights (the hooks get no weights),
and which mirrors."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from api.mirror import MirrorSpec, rule_mirrors
from api.model import GROUP_GA, GROUP_X
from api.parse import KIND_POOL

# Filters EG applies without failing the rule (its 500 then comes from a pool mirror alone).
_HARMLESS_FILTERS = frozenset({"RequestMirror", "RequestHeaderModifier", "ResponseHeaderModifier"})


@dataclass(frozen=True)
class RuleBackends:
    """The backendRefs of one HTTPRoute rule, as far as a weighted pool split needs them."""

    pools: tuple[tuple[str, str, int], ...]  # (namespace, name, weight) of each InferencePool ref
    others: int  # backendRefs of any other kind (Services...)
    mirrors: tuple[MirrorSpec, ...] = ()  # the rule's RequestMirror filters, in filter order
    # Only mirrors and header modifiers among the filters: EG's 500 for the rule is its refusal of
    # InferencePool mirrors (EG v1.9 accepts only Services there), which the Route hook undoes.
    only_harmless_filters: bool = True

    @property
    def pool_mirrors(self) -> tuple[MirrorSpec, ...]:
        return tuple(m for m in self.mirrors if m.is_pool)


RuleKey = tuple[str, str, int]  # HTTPRoute namespace, name, rule index


def rule_backends(httproutes: Iterable[Mapping[str, Any]]) -> dict[RuleKey, RuleBackends]:
    """Every HTTPRoute rule that names at least one InferencePool (pure)."""
    out: dict[RuleKey, RuleBackends] = {}
    for route in httproutes:
        meta = route.get("metadata") or {}
        namespace = str(meta.get("namespace") or "default")
        name = str(meta.get("name"))
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
                filters = [f.get("type") for f in rule.get("filters") or [] if isinstance(f, Mapping)]
                out[(namespace, name, index)] = RuleBackends(
                    tuple(pools),
                    others,
                    rule_mirrors(namespace, name, index, rule),
                    all(t in _HARMLESS_FILTERS for t in filters),
                )
    return out
