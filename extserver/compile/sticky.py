"""Sticky and header-pinned canaries: the plan side (annotations -> ModelPlan) and the weighted split.

Envoy picks a weighted cluster as `value % total_weight` against the cumulative weights in list order;
with `use_hash_policy` the value is the route's hash of the sticky key (random when the request has no
key). A key therefore keeps its target, and a weight change moves only the keys it must, as long as the
total and the order stay the same: sticky models get weights scaled to STICKY_TOTAL_WEIGHT and entries
sorted by target name (the user's weights stay in the route metadata).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

from envoy.config.route.v3.route_components_pb2 import RouteAction

from api.canary import StickyKey, StickySource, check_pin_targets, parse_canary
from api.model import ObjectMeta
from extserver.compile.inputs import Condition, Problem, Reason

if TYPE_CHECKING:
    from extserver.compile.plan import ModelPlan, TargetPlan

# The same for every sticky route, whatever the user's weights add up to: a key's hash modulo this picks
# its slot, so only slots whose owner changes move. 10,000 gives 0.01% steps.
STICKY_TOTAL_WEIGHT = 10_000


def with_canary(model: ModelPlan, meta: ObjectMeta, kind: str) -> tuple[ModelPlan, list[Problem]]:
    """`model` with the sticky key and pins `meta` declares; invalid annotations become problems of the
    object (`kind`, meta) and are left out, so the model keeps its plain weighted split."""
    canary = parse_canary(meta)
    errors = list(canary.errors)
    pins = canary.pins
    target_errors = check_pin_targets(pins, [t.model for t in model.targets])
    if target_errors:
        errors.extend(target_errors)
        pins = ()
    problems = [
        Problem(
            kind,
            meta.namespace,
            meta.name,
            Condition.ANNOTATIONS_VALID,
            Reason.INVALID_ANNOTATION,
            f"{error} (ignored: the model keeps its weighted split)",
        )
        for error in errors
    ]
    if canary.sticky is None and not pins:
        return model, problems
    return dataclasses.replace(model, sticky=canary.sticky, pins=pins), problems


def sticky_entries(targets: Sequence[TargetPlan]) -> list[tuple[TargetPlan, int]]:
    """The weighted entries of a sticky route: positive-weight targets by name, weights summing to
    STICKY_TOTAL_WEIGHT (largest remainder, so the sum is exact)."""
    chosen = sorted((t for t in targets if t.weight > 0), key=lambda t: t.model)
    return list(zip(chosen, normalised_weights([t.weight for t in chosen]), strict=True))


def normalised_weights(weights: Sequence[int], total: int = STICKY_TOTAL_WEIGHT) -> list[int]:
    """`weights` (all > 0) scaled to sum to `total` exactly; each keeps at least 1 (the largest pays)."""
    whole = sum(weights)
    shares = [w * total // whole for w in weights]
    # Ties in the remainder go to the earlier entry: deterministic for the same input.
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(weights[i] * total % whole), i))
    for i in by_remainder[: total - sum(shares)]:
        shares[i] += 1
    for i, share in enumerate(shares):
        if share == 0:
            shares[i] = 1
            shares[max(range(len(shares)), key=lambda j: (shares[j], -j))] -= 1
    return shares


def fill_hash_policy(action: RouteAction, key: StickyKey) -> None:
    """Replace the route's hash policies with the sticky key's (no cookie is set when it is absent)."""
    del action.hash_policy[:]
    policy = action.hash_policy.add()
    if key.source is StickySource.HEADER:
        policy.header.header_name = key.name
    else:
        policy.cookie.name = key.name  # without ttl: Envoy never generates the cookie, absent means random
