"""CRDs -> plan: per pool, its accepted models, their targets and weights, and every name (no xDS yet)."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace

from api import contract
from api.canary import Pin, StickyKey
from api.contract import picker_service_host
from api.mirror import MirrorSpec, mirror_annotation
from api.model import AttachTo, FailureMode, InferenceModel, InferencePool
from api.parse import KIND_MODEL, KIND_POOL
from api.rewrite import KIND_OBJECTIVE, KIND_REWRITE, InferenceModelRewrite
from extserver.compile import naming
from extserver.compile.inputs import CompileInputs, Condition, Problem, Reason
from extserver.compile.plan_canary import (
    REWRITE_CRITICALITY,
    ObjectivePlan,
    Owners,
    RuleClaim,
    claim_rewrite,
    describe_owner,
    pick_forms,
    plan_objectives,
    pool_ref_reason,
)
from extserver.compile.sticky import with_canary

_RESERVED_TARGETS = ("picker",)  # would collide with the picker cluster's name


@dataclass(frozen=True)
class TargetPlan:
    model: str
    weight: int
    cluster: str
    eds_resource: str


@dataclass(frozen=True)
class ModelPlan:
    namespace: str
    name: str
    model_name: str
    criticality: str
    targets: tuple[TargetPlan, ...]
    source: str
    # Canary annotations (extserver/compile/sticky.py): hash the split on this key; pinned requests.
    sticky: StickyKey | None = None
    pins: tuple[Pin, ...] = ()
    mirror: MirrorSpec | None = None  # its mirror annotation (api/mirror.py)
    # An InferenceModelRewrite's generic rule (no matches): every body model no other route matches.
    match_any: bool = False

    def target(self, model: str) -> TargetPlan | None:
        return next((t for t in self.targets if t.model == model), None)


@dataclass(frozen=True)
class PickerPlan:
    service: str
    namespace: str
    port: int
    host: str
    failure_mode_allow: bool
    cluster: str
    # contract.PICKER_PROTOCOL_OURS (body only, per-target EDS) or PICKER_PROTOCOL_GIE (any EPP)
    protocol: str = contract.PICKER_PROTOCOL_OURS

    @property
    def target_uri(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def serves_eds(self) -> bool:
        return self.protocol == contract.PICKER_PROTOCOL_OURS


@dataclass(frozen=True)
class PoolPlan:
    namespace: str
    name: str
    api_version: str
    source: str
    target_ports: tuple[int, ...]
    picker: PickerPlan | None  # None: no endpoint picker; Envoy balances over the pool's endpoints
    catch_all_cluster: str
    eds_resource: str
    ext_proc_filter: str
    attach_to: AttachTo | None
    created: str
    models: tuple[ModelPlan, ...]
    app_protocol: str = "http"
    # "ip:port" of the pool's ready endpoints; None when the source does not read Pods
    endpoints: tuple[str, ...] | None = None
    mirror: MirrorSpec | None = None  # its mirror annotation (api/mirror.py)
    objectives: tuple[ObjectivePlan, ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def fail_open(self) -> bool:
        """Requests still reach a pod without the picker's answer (FailOpen, or no picker at all)."""
        return self.picker is None or self.picker.failure_mode_allow

    @property
    def eds_targets(self) -> bool:
        """Per-target clusters get their endpoints from the picker's EDS (this project's picker)."""
        return self.picker is not None and self.picker.serves_eds

    def __hash__(self) -> int:
        # Computed once: plans key the compile cache, and hashing every model on each lookup adds up.
        return self._hash

    @functools.cached_property
    def _hash(self) -> int:
        return hash(tuple(getattr(self, f.name) for f in fields(self)))

    def targets(self) -> tuple[tuple[TargetPlan, tuple[tuple[ModelPlan, TargetPlan], ...]], ...]:
        """Each distinct target cluster once (sorted by name), with the models that send traffic to it."""
        users: dict[str, list[tuple[ModelPlan, TargetPlan]]] = {}
        first: dict[str, TargetPlan] = {}
        for model in self.models:
            for target in model.targets:
                users.setdefault(target.cluster, []).append((model, target))
                first.setdefault(target.cluster, target)
        return tuple((first[name], tuple(users[name])) for name in sorted(users))


@dataclass(frozen=True)
class Plan:
    pools: tuple[PoolPlan, ...]
    problems: tuple[Problem, ...]

    def pool(self, namespace: str, name: str) -> PoolPlan | None:
        return self._by_key.get((namespace, name))

    @functools.cached_property
    def _by_key(self) -> dict[tuple[str, str], PoolPlan]:
        return {pool.key: pool for pool in self.pools}


def _age_key(obj: InferencePool | InferenceModel | InferenceModelRewrite) -> tuple[str, str, str]:
    # RFC 3339 UTC timestamps sort as strings; objects without one count as newest.
    return (obj.meta.creation_timestamp or "~", obj.meta.namespace, obj.meta.name)


def _problem(
    obj: InferencePool | InferenceModel, kind: str, condition: str, reason: str, msg: str
) -> Problem:
    return Problem(kind, obj.meta.namespace, obj.meta.name, condition, reason, msg)


def _pool_problem(pool: InferencePool, inputs: CompileInputs) -> tuple[Problem | None, bool]:
    """What is wrong with the pool's picker reference, and whether the pool is still served."""
    ref = pool.picker
    if ref is None:
        return None, True
    if ref.kind != "Service" or ref.group not in ("", "core"):
        kind = f"{ref.group or 'core'}/{ref.kind}"
        message = f"endpoint picker reference {kind} {ref.name}: only a Service is supported"
        served = False
    elif inputs.services is not None and f"{pool.meta.namespace}/{ref.name}" not in inputs.services:
        # Still served: its requests fail as the failure mode says (FailClose: 5xx), as GIE requires.
        message = f"spec.endpointPickerRef: Service {pool.meta.namespace}/{ref.name} not found"
        served = True
    else:
        return None, True
    problem = _problem(pool, KIND_POOL, Condition.RESOLVED_REFS, Reason.INVALID_EXTENSION_REF, message)
    return problem, served


def _picker_protocol(pool: InferencePool, inputs: CompileInputs) -> str:
    if pool.picker is None or inputs.services is None:
        return contract.PICKER_PROTOCOL_OURS
    annotations = inputs.services.get(f"{pool.meta.namespace}/{pool.picker.name}") or {}
    if annotations.get(contract.ANNOTATION_PICKER_PROTOCOL) == contract.PICKER_PROTOCOL_OURS:
        return contract.PICKER_PROTOCOL_OURS
    return contract.PICKER_PROTOCOL_GIE


def _plan_picker(pool: InferencePool, inputs: CompileInputs) -> PickerPlan | None:
    ref = pool.picker
    if ref is None:
        return None
    ns = pool.meta.namespace
    return PickerPlan(
        service=ref.name,
        namespace=ns,
        port=ref.port,
        host=picker_service_host(ref.name, ns),
        failure_mode_allow=ref.failure_mode == FailureMode.FAIL_OPEN,
        cluster=naming.picker_cluster(ns, pool.meta.name),
        protocol=_picker_protocol(pool, inputs),
    )


def _plan_pool(pool: InferencePool, inputs: CompileInputs) -> PoolPlan:
    ns, name = pool.meta.namespace, pool.meta.name
    return PoolPlan(
        namespace=ns,
        name=name,
        api_version=pool.api_version,
        source=naming.source(KIND_POOL, ns, name),
        target_ports=pool.target_ports,
        picker=_plan_picker(pool, inputs),
        catch_all_cluster=naming.pool_cluster(ns, name),
        eds_resource=naming.eds_resource(ns, name),
        ext_proc_filter=naming.ext_proc_filter(ns, name),
        attach_to=pool.attach_to,
        created=pool.meta.creation_timestamp,
        models=(),
        app_protocol=pool.app_protocol,
        endpoints=None if inputs.endpoints is None else inputs.endpoints.get(pool.key, ()),
        mirror=mirror_annotation(pool.meta, KIND_POOL),
    )


def _model_problem(model: InferenceModel) -> Problem | None:
    targets = model.weighted_targets()
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        return _problem(
            model,
            KIND_MODEL,
            Condition.ACCEPTED,
            Reason.DUPLICATE_TARGET,
            f"spec.targetModels names {dup} more than once",
        )
    reserved = [n for n in names if n in _RESERVED_TARGETS]
    if reserved:
        return _problem(
            model,
            KIND_MODEL,
            Condition.ACCEPTED,
            Reason.RESERVED_TARGET_NAME,
            f"spec.targetModels: target name {reserved[0]!r} is reserved",
        )
    if sum(t.weight or 0 for t in targets) <= 0:
        return _problem(
            model,
            KIND_MODEL,
            Condition.ACCEPTED,
            Reason.INVALID_WEIGHTS,
            "spec.targetModels: all weights are 0, so no target could get traffic",
        )
    return None


def _target_plans(pool: PoolPlan, weighted: Iterable[tuple[str, int | None]]) -> tuple[TargetPlan, ...]:
    return tuple(
        TargetPlan(
            model=name,
            weight=weight or 0,
            cluster=naming.target_cluster(pool.namespace, pool.name, name),
            eds_resource=naming.eds_resource(pool.namespace, pool.name, name),
        )
        for name, weight in weighted
    )


def _plan_rule(claim: RuleClaim, pool: PoolPlan) -> ModelPlan:
    """One served match (or the generic rule) of a rewrite: the ModelPlan an InferenceModel of that
    model with these targets would give, so routes, clusters and metadata come out the same."""
    rule = claim.rewrite.rules[claim.rule]
    return ModelPlan(
        namespace=claim.rewrite.meta.namespace,
        name=claim.plan_name,
        model_name=claim.model or "",
        criticality=REWRITE_CRITICALITY,
        targets=_target_plans(pool, ((t.model, t.weight) for t in rule.weighted_targets())),
        source=claim.source,
        match_any=claim.model is None,
    )


def _plan_model(model: InferenceModel, pool: PoolPlan) -> ModelPlan:
    targets = _target_plans(pool, ((t.name, t.weight) for t in model.weighted_targets()))
    return ModelPlan(
        namespace=model.meta.namespace,
        name=model.meta.name,
        model_name=model.model_name,
        criticality=model.effective_criticality.value,
        targets=targets,
        source=naming.source(KIND_MODEL, model.meta.namespace, model.meta.name),
        mirror=mirror_annotation(model.meta, KIND_MODEL),
    )


def build_plan(inputs: CompileInputs) -> Plan:
    """Validate references and conflicts; oldest object wins; everything else becomes a Problem."""
    problems: list[Problem] = []
    pools: dict[tuple[str, str], PoolPlan] = {}
    invalid_pools: set[tuple[str, str]] = set()
    for pool in sorted(inputs.pools, key=lambda p: (p.meta.namespace, p.meta.name)):
        issue, served = _pool_problem(pool, inputs)
        if issue is not None:
            problems.append(issue)
        if not served:
            invalid_pools.add((pool.meta.namespace, pool.meta.name))
            continue
        pools[(pool.meta.namespace, pool.meta.name)] = _plan_pool(pool, inputs)

    accepted: dict[tuple[str, str], list[ModelPlan]] = {key: [] for key in pools}
    owners: Owners = {}
    generic_owners: dict[tuple[str, str], InferenceModelRewrite] = {}
    rewrites, superseded = pick_forms(inputs.rewrites, KIND_REWRITE)
    objectives, superseded_objectives = pick_forms(inputs.objectives, KIND_OBJECTIVE)
    problems.extend(superseded + superseded_objectives)
    # InferenceModels and rewrites claim models together, oldest first: oldest wins, as between models.
    claimants: list[InferenceModel | InferenceModelRewrite] = [*inputs.models, *rewrites]
    for obj in sorted(claimants, key=_age_key):
        if isinstance(obj, InferenceModelRewrite):
            refusal, claims = claim_rewrite(obj, pools, invalid_pools, owners, generic_owners)
            if refusal is not None:
                problems.append(refusal)
            for claim in claims:
                pool_key = (obj.meta.namespace, obj.pool_ref.name)
                # The canary annotations of a rewrite apply to each of its rules' routes.
                rule_plan, canary_problems = with_canary(
                    _plan_rule(claim, pools[pool_key]), obj.meta, KIND_REWRITE
                )
                problems.extend(p for p in canary_problems if p not in problems)
                accepted[pool_key].append(rule_plan)
            continue
        refusal = _model_refusal(obj, pools, invalid_pools, owners)
        if refusal is not None:
            problems.append(refusal)
            continue
        pool_key = (obj.meta.namespace, obj.pool_ref.name)
        owners[(*pool_key, obj.model_name)] = obj
        planned_model, canary_problems = with_canary(_plan_model(obj, pools[pool_key]), obj.meta, KIND_MODEL)
        problems.extend(canary_problems)
        accepted[pool_key].append(planned_model)
    by_pool, objective_problems = plan_objectives(objectives, pools, invalid_pools)
    problems.extend(objective_problems)

    problems.extend(_mixed_rule_problems(inputs, pools))
    planned = tuple(
        replace(
            pools[key],
            # Exact models first (by name), the generic rule last: Envoy takes the first route matching.
            models=tuple(sorted(accepted[key], key=lambda m: (m.match_any, m.model_name, m.name))),
            objectives=tuple(by_pool.get(key, ())),
        )
        for key in sorted(pools)
    )
    return Plan(pools=planned, problems=tuple(sorted(problems, key=_problem_key)))


def _model_refusal(
    model: InferenceModel,
    pools: Mapping[tuple[str, str], PoolPlan],
    invalid_pools: set[tuple[str, str]],
    owners: Owners,
) -> Problem | None:
    """Why the model cannot be served (the first reason found), or None: its pool reference, then the
    model itself, then an older model of the same name in that pool (`owners`)."""
    ref = model.pool_ref
    found = pool_ref_reason(model.meta.namespace, ref, pools, invalid_pools)
    if found is not None:
        return _problem(model, KIND_MODEL, Condition.ACCEPTED, *found)
    issue = _model_problem(model)
    if issue is not None:
        return issue
    owner = owners.get((model.meta.namespace, ref.name, model.model_name))
    if owner is None:
        return None
    message = (
        f"spec.modelName {model.model_name!r} is already served in pool {ref.name} by the older "
        f"{describe_owner(owner)}"
    )
    return _problem(model, KIND_MODEL, Condition.ACCEPTED, Reason.MODEL_NAME_IN_USE, message)


def _mixed_rule_problems(inputs: CompileInputs, pools: Mapping[tuple[str, str], PoolPlan]) -> list[Problem]:
    """A rule sending to pools and to other backends (Services): not supported, said on each pool."""
    out = []
    for (namespace, route, index), backends in sorted((inputs.rules or {}).items()):
        if not backends.others:
            continue
        for pool_ns, pool_name, _weight in backends.pools:
            if (pool_ns, pool_name) in pools:
                message = (
                    f"HTTPRoute {namespace}/{route} rule {index} mixes InferencePools with other "
                    "backendRefs, which is not supported (its requests get 500): give the pools a rule "
                    "of their own"
                )
                out.append(
                    Problem(
                        KIND_POOL, pool_ns, pool_name, Condition.RESOLVED_REFS, Reason.MIXED_BACKENDS, message
                    )
                )
    return out


def _problem_key(p: Problem) -> tuple[str, str, str, str, str]:
    return (p.kind, p.namespace, p.name, p.reason, p.api_version)
