"""Mirrors on pool routes: which copies each route sends, checked against the plan (pure).

A copy goes to the mirror listener (mirror_listener.py), never straight to its target: the body the
router forwards carries the `model` the picker rewrote, and a copy must carry the client's, then be
routed by its own pool's picker.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from envoy.config.core.v3.base_pb2 import HeaderValueOption
from envoy.config.route.v3.route_components_pb2 import Route, RouteAction
from envoy.type.v3.percent_pb2 import FractionalPercent

from api import contract
from api.contract import MetadataKey, Role
from api.mirror import MirrorSpec
from api.parse import KIND_POOL
from extserver.compile import metadata, naming
from extserver.compile.inputs import CompileInputs, Condition, Problem
from extserver.compile.plan import Plan, PoolPlan
from extserver.compile.weighted_pools import rule_of, weighted_pools

_MILLION = 1_000_000


class MirrorReason:
    NOT_FOUND = "MirrorPoolNotFound"
    INVALID_POOL = "MirrorPoolInvalid"
    OTHER_GATEWAY = "MirrorPoolOnOtherGateway"
    SERVICE_NOT_FOUND = "MirrorServiceNotFound"
    INVALID = "InvalidMirror"
    INVALID_PERCENT = "InvalidMirrorPercent"


@dataclass(frozen=True)
class MirrorTarget:
    """A valid mirror: the header value that selects its routes on the mirror listener."""

    spec: MirrorSpec
    key: str  # "pool/<ns>/<name>" or "service/<EG's mirror cluster>"
    pool: PoolPlan | None = None
    cluster: str = ""  # Services: EG's cluster for the mirror backendRef


@dataclass
class MirrorUse:
    """What applying mirrors found: the targets the mirror listener must serve, and the problems."""

    name: str  # naming.mirror_name: the mirror listener's, route configuration's and cluster's
    targets: dict[str, MirrorTarget] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    # shadow pool -> the Gateways ("ns/name") whose routes mirror into it: its status parents
    gateways: dict[tuple[str, str], set[str]] = field(default_factory=dict)

    @property
    def pools(self) -> dict[tuple[str, str], PoolPlan]:
        return {t.pool.key: t.pool for t in self.targets.values() if t.pool is not None}


def _problem(owner: PoolPlan, reason: str, message: str) -> Problem:
    return Problem(KIND_POOL, owner.namespace, owner.name, Condition.RESOLVED_REFS, reason, message)


def check_mirror(
    spec: MirrorSpec,
    owner: PoolPlan,
    plan: Plan,
    inputs: CompileInputs,
    gateways: Iterable[str],
    eg_rule_cluster: str | None,
) -> MirrorTarget | Problem:
    """A mirror declared for `owner`'s traffic: its target, or why it is refused (said on `owner`)."""
    where = f"mirror declared by {spec.declared_by}"
    if spec.problem is not None:
        reason = MirrorReason.INVALID_PERCENT if spec.invalid_percent else MirrorReason.INVALID
        return _problem(owner, reason, f"{where}: {spec.problem}; nothing is mirrored")
    if not spec.is_pool:
        services = inputs.services
        if services is not None and f"{spec.namespace}/{spec.name}" not in services:
            return _problem(
                owner,
                MirrorReason.SERVICE_NOT_FOUND,
                f"{where}: Service {spec.namespace}/{spec.name} not found; nothing is mirrored",
            )
        if eg_rule_cluster is None:
            return _problem(
                owner,
                MirrorReason.INVALID,
                f"{where}: a Service can be mirrored to from an HTTPRoute rule only (the annotation "
                "takes an InferencePool)",
            )
        cluster = f"{eg_rule_cluster}-mirror-{spec.filter_index}"
        return MirrorTarget(spec, f"service/{cluster}", cluster=cluster)
    shadow = plan.pool(spec.namespace, spec.name)
    if shadow is None:
        known = any(p.meta.namespace == spec.namespace and p.meta.name == spec.name for p in inputs.pools)
        reason = MirrorReason.INVALID_POOL if known else MirrorReason.NOT_FOUND
        state = "is not valid" if known else "not found"
        return _problem(owner, reason, f"{where}: InferencePool {spec.namespace}/{spec.name} {state}")
    attach = shadow.attach_to
    if attach is not None and f"{attach.gateway_namespace}/{attach.gateway_name}" not in set(gateways):
        return _problem(
            owner,
            MirrorReason.OTHER_GATEWAY,
            f"{where}: InferencePool {spec.namespace}/{spec.name} serves Gateway "
            f"{attach.gateway_namespace}/{attach.gateway_name} (attach-to), not this route's Gateway",
        )
    return MirrorTarget(spec, f"pool/{shadow.namespace}/{shadow.name}", pool=shadow)


def mirror_policy(target: MirrorTarget, mirror: str) -> RouteAction.RequestMirrorPolicy:
    """Copies of `target.spec.percent`% of the route's requests to the mirror listener, marked for it."""
    policy = RouteAction.RequestMirrorPolicy(cluster=mirror)
    fraction = policy.runtime_fraction.default_value
    fraction.numerator = round(target.spec.percent * _MILLION / 100)
    fraction.denominator = FractionalPercent.MILLION
    # The copy keeps the client's Host (Envoy would append "-shadow").
    policy.disable_shadow_host_suffix_append = True
    for name, value in (
        (contract.HEADER_MIRROR_TARGET, target.key),
        (
            contract.HEADER_CLIENT_MODEL,
            f"%DYNAMIC_METADATA({contract.BODY_METADATA_NAMESPACE}:{contract.BODY_MODEL_KEY})%",
        ),
    ):
        append = policy.request_headers_mutations.add().append
        append.header.key = name
        append.header.value = value
        append.append_action = HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    return policy


def _route_pools(route: Route) -> list[tuple[str, str]]:
    role = metadata.role(route.metadata)
    if role == Role.WEIGHTED_POOLS:
        return list(weighted_pools(route))
    if role in (Role.MODEL_ROUTE, Role.CATCH_ALL, Role.BACKEND_REF):
        ns = metadata.string_field(route.metadata, MetadataKey.POOL_NAMESPACE)
        name = metadata.string_field(route.metadata, MetadataKey.POOL_NAME)
        if ns is not None and name is not None:
            return [(str(ns), str(name))]
    return []


def _declared(route: Route, owner: PoolPlan, inputs: CompileInputs) -> list[tuple[MirrorSpec, str | None]]:
    """Mirrors that apply to `route` of `owner`: its HTTPRoute rule's, the pool's and the model's
    annotations; each with EG's rule cluster (Service mirrors use EG's cluster for them)."""
    found: list[tuple[MirrorSpec, str | None]] = []
    rule = rule_of(route.name)
    if rule is not None and inputs.rules is not None and rule in inputs.rules:
        eg_cluster = naming.eg_rule_cluster(*rule)
        found.extend((m, eg_cluster) for m in inputs.rules[rule].mirrors)
    if owner.mirror is not None:
        found.append((owner.mirror, None))
    source = metadata.string_field(route.metadata, MetadataKey.SOURCE)
    for model in owner.models:
        if model.mirror is not None and model.source == source:
            found.append((model.mirror, None))
    return found


def apply_mirrors(
    route: Route,
    plan: Plan,
    inputs: CompileInputs,
    gateways: Sequence[str],
    use: MirrorUse,
) -> None:
    """Set `route`'s mirror policies (ours replace any earlier ones of ours); in place."""
    kept = [p for p in route.route.request_mirror_policies if not naming.is_mirror_name(p.cluster)]
    policies: list[RouteAction.RequestMirrorPolicy] = []
    described: dict[str, dict[str, object]] = {}  # target key -> its metadata entry, one policy each
    for pool_key in _route_pools(route):
        owner = plan.pool(*pool_key)
        if owner is None:
            continue
        for spec, eg_cluster in _declared(route, owner, inputs):
            checked = check_mirror(spec, owner, plan, inputs, gateways, eg_cluster)
            if isinstance(checked, Problem):
                use.problems.append(checked)
                continue
            if checked.cluster:
                # EG's own copy would carry the picker's rewritten model: ours replaces it.
                kept = [p for p in kept if p.cluster != checked.cluster]
            use.targets[checked.key] = checked
            if checked.pool is not None:
                for gateway in gateways:
                    use.gateways.setdefault(checked.pool.key, set()).add(gateway)
            if checked.key not in described:
                policies.append(mirror_policy(checked, use.name))
                described[checked.key] = {
                    "target": checked.key,
                    "percent": checked.spec.percent,
                    "declared_by": spec.declared_by,
                }
    if not policies and len(kept) == len(route.route.request_mirror_policies):
        return
    del route.route.request_mirror_policies[:]
    route.route.request_mirror_policies.extend([*kept, *policies])
    if described:
        values = metadata.ours(route.metadata) or {}
        values[MetadataKey.MIRRORS] = list(described.values())
        metadata.set_ours(route.metadata, values)
