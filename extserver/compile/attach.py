"""The attach-to decision: which Gateway listener each `attach-to` InferencePool serves whole.

Pure: the plan and EG's listeners and route configurations in, a frozen `AttachAssignment` out.
- Matching: a pool's listeners are those of ITS Gateway on the Envoy port of its Gateway port, never
  the port alone (another Gateway may use the same port). A listener is its Gateway's by EG's default
  listener-name prefix `<ns>/<gateway>/`, or, for names without one (XDSNameSchemeV2 `tcp-<port>`), when
  this call is for that Gateway alone: EG translates each Gateway on its own, and the Gateway's
  InferenceGatewayRevision policy rides in the call's context (`call_gateways`).
- Ownership: one pool per route configuration, the oldest (creation time, then namespace/name);
  a younger pool gets `ListenerInUse`.
- No listener: `MergedGatewayUnsupported` when the Gateway shares a merged listener,
  `NoMatchingListener` when the Gateway is in this translation but has no listener on that port,
  nothing when the Gateway is not in this translation (EG translates each Gateway on its own).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.config.route.v3.route_components_pb2 import VirtualHost
from envoy.config.route.v3.route_pb2 import RouteConfiguration

from api.model import AttachTo
from api.parse import KIND_POOL
from extserver.compile.inputs import Condition, Problem, Reason
from extserver.compile.listeners import listener_port, route_config_names
from extserver.compile.plan import Plan, PoolPlan
from extserver.eg import facts as eg
from extserver.eg.resources import gateways_named


@dataclass(frozen=True)
class AttachAssignment:
    """Route configuration -> the attach-to pool that serves all of it; the Gateways ("ns/name") of
    the attach-to pools this translation is about; the problems found."""

    owners: tuple[tuple[str, PoolPlan], ...]  # by route configuration name
    gateways: tuple[tuple[tuple[str, str], str], ...]  # (pool key, Gateway), by pool key
    problems: tuple[Problem, ...]

    @property
    def pools(self) -> dict[tuple[str, str], PoolPlan]:
        """The pools that own at least one route configuration, by key."""
        return {pool.key: pool for _, pool in self.owners}

    def to_dict(self) -> dict[str, Any]:
        """A plain view for golden files and debugging."""
        return {
            "routeConfigs": {rc: f"{pool.namespace}/{pool.name}" for rc, pool in self.owners},
            "gateways": {f"{ns}/{name}": gateway for (ns, name), gateway in self.gateways},
            "problems": [f"{p.kind} {p.namespace}/{p.name}: {p.reason}: {p.message}" for p in self.problems],
        }


def assign_attach_to(
    plan: Plan,
    listeners: Sequence[Listener],
    routes: Sequence[RouteConfiguration],
    call_gateways: frozenset[str] = frozenset(),
) -> AttachAssignment:
    """Each attach-to pool to its Gateway listener's route configurations; one pool each, the oldest."""
    owners: dict[str, PoolPlan] = {}
    gateways: dict[tuple[str, str], str] = {}
    problems: list[Problem] = []
    for pool in sorted(plan.pools, key=lambda p: (p.created or "~", p.namespace, p.name)):
        attach = pool.attach_to
        if attach is None:
            continue
        found = gateway_listeners(listeners, attach, call_gateways)
        if not found:
            missing = _missing_listener_problem(pool, attach, listeners, routes, call_gateways)
            if missing is not None:
                problems.append(missing)
                gateways[pool.key] = gateway_key(attach)
            continue
        gateways[pool.key] = gateway_key(attach)
        for listener in found:
            for rc_name in route_config_names(listener):
                holder = owners.get(rc_name)
                if holder is not None:
                    # HTTP/3: the TCP and the QUIC listener of one Gateway listener share a route config.
                    if holder.key != pool.key:
                        problems.append(_in_use(pool, listener, holder))
                    continue
                owners[rc_name] = pool
    return AttachAssignment(
        owners=tuple(sorted(owners.items())),
        gateways=tuple(sorted(gateways.items())),
        problems=tuple(problems),
    )


def owned_by(listener: Listener, gateway: str, call_gateways: frozenset[str]) -> bool:
    """Whether `listener` is Gateway `gateway`'s ("ns/name"): by name, or as the one Gateway of the call."""
    named = eg.DEFAULT_NAMES.gateway_of_listener(listener.name)
    if named is not None:
        return named == gateway
    return call_gateways == {gateway}


def gateway_listeners(
    listeners: Sequence[Listener], attach: AttachTo, call_gateways: frozenset[str] = frozenset()
) -> list[Listener]:
    """The listeners of THAT Gateway on that port with route configurations."""
    gateway = gateway_key(attach)
    port = eg.container_port(attach.port)
    return [
        listener
        for listener in listeners
        if owned_by(listener, gateway, call_gateways)
        and listener_port(listener) == port
        and route_config_names(listener)
    ]


def gateway_key(attach: AttachTo) -> str:
    return f"{attach.gateway_namespace}/{attach.gateway_name}"


def virtual_host_gateways(vhost: VirtualHost, listeners_of_rc: Sequence[Listener]) -> set[str]:
    """Gateways ("ns/name") a virtual host serves: EG's metadata on it names its Gateway (any naming
    scheme, merged Gateways too); else the Gateways whose listeners use its route configuration."""
    named = gateways_named(vhost.metadata)
    if named:
        return named
    return {g for g in (eg.DEFAULT_NAMES.gateway_of_listener(lis.name) for lis in listeners_of_rc) if g}


def _pool_problem(pool: PoolPlan, reason: str, message: str) -> Problem:
    return Problem(KIND_POOL, pool.namespace, pool.name, Condition.ACCEPTED, reason, message)


def _in_use(pool: PoolPlan, listener: Listener, holder: PoolPlan) -> Problem:
    return _pool_problem(
        pool,
        Reason.LISTENER_IN_USE,
        f"listener {listener.name} already serves the older InferencePool {holder.namespace}/{holder.name}",
    )


def _missing_listener_problem(
    pool: PoolPlan,
    attach: AttachTo,
    listeners: Sequence[Listener],
    routes: Sequence[RouteConfiguration],
    call_gateways: frozenset[str],
) -> Problem | None:
    """Why an attach-to pool found no listener, when this translation is about its Gateway; else None."""
    port = eg.container_port(attach.port)
    gateway = gateway_key(attach)
    # With EG's mergeGateways, one Envoy listener per port carries every Gateway of the class and is
    # named after the first; the other Gateways show up only in its virtual hosts (EG metadata). A catch-all
    # there would take over the other Gateways' traffic on that port, so the pool is refused instead.
    merged_into = sorted(
        {
            lis.name
            for lis in listeners
            if listener_port(lis) == port
            for rc in routes
            if rc.name in route_config_names(lis)
            and any(gateway in virtual_host_gateways(vh, []) for vh in rc.virtual_hosts)
        }
    )
    if merged_into:
        return _pool_problem(
            pool,
            Reason.MERGED_GATEWAY,
            f"Gateway {gateway} shares Envoy listener {merged_into[0]} with other Gateways "
            "(EnvoyProxy mergeGateways): attaching a pool to a whole listener is not supported there; "
            "route to the pool with an HTTPRoute backendRef instead",
        )
    own = [lis for lis in listeners if owned_by(lis, gateway, call_gateways)]
    if own:
        ports = sorted({p for p in (listener_port(lis) for lis in own) if p is not None})
        return _pool_problem(
            pool,
            Reason.NO_MATCHING_LISTENER,
            f"Gateway {gateway} has no HTTP listener on port {attach.port} "
            f"(Envoy port {port}; its listeners use {ports})",
        )
    return None
