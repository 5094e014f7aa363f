"""InferenceModelRewrite and InferenceObjective -> plan: rewrite rules become ModelPlans, objectives
per-pool ObjectivePlans, with the same conflict rules as InferenceModels (docs/xds.md)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from api.model import GROUP_GA, GROUP_X, Criticality, InferenceModel, PoolRef
from api.rewrite import (
    KIND_OBJECTIVE,
    KIND_REWRITE,
    CanaryPoolRef,
    InferenceModelRewrite,
    InferenceObjective,
    RewriteRule,
    api_version_rank,
)
from extserver.compile import naming
from extserver.compile.inputs import Condition, Problem, Reason

_POOL_REF_GROUPS = (GROUP_X, GROUP_GA)
_RESERVED_TARGETS = ("picker",)  # would collide with the picker cluster's name
REWRITE_CRITICALITY = Criticality.STANDARD.value  # a rewrite has none; an objective variant sets one

PoolKey = tuple[str, str]
# (namespace, pool, client model) -> the object that serves it: the oldest exact claim wins.
Owners = MutableMapping[tuple[str, str, str], "InferenceModel | InferenceModelRewrite"]
_Form = TypeVar("_Form", InferenceModelRewrite, InferenceObjective)


@dataclass(frozen=True)
class ObjectivePlan:
    """An InferenceObjective of a pool: requests naming it in the objective header get its priority."""

    name: str
    priority: int
    criticality: str
    source: str


@dataclass(frozen=True)
class RuleClaim:
    """One served part of a rewrite: rule `rule`, for client model `model` (None: the generic rule)."""

    rewrite: InferenceModelRewrite
    rule: int
    model: str | None

    @property
    def source(self) -> str:
        meta = self.rewrite.meta
        return f"{naming.source(KIND_REWRITE, meta.namespace, meta.name)} rules[{self.rule}]"

    @property
    def plan_name(self) -> str:
        return naming.rewrite_plan_name(self.rewrite.meta.name, self.rule, self.model)


def describe_owner(owner: InferenceModel | InferenceModelRewrite) -> str:
    kind = KIND_REWRITE if isinstance(owner, InferenceModelRewrite) else "InferenceModel"
    return f"{kind} {owner.meta.namespace}/{owner.meta.name}"


def pick_forms(objects: Iterable[_Form], kind: str) -> tuple[list[_Form], list[Problem]]:
    """One object per namespace/name: the llm-d.ai form wins; the x-k8s form is reported, not served."""
    by_key: dict[str, list[_Form]] = {}
    for obj in objects:
        by_key.setdefault(obj.key, []).append(obj)
    kept: list[_Form] = []
    problems: list[Problem] = []
    for key in sorted(by_key):
        ranked = sorted(by_key[key], key=lambda o: api_version_rank(o.api_version))
        winner = ranked[0]
        kept.append(winner)
        for loser in ranked[1:]:
            message = (
                f"the {winner.api_version} {kind} of the same name is used instead (llm-d.ai wins when both "
                "forms exist)"
            )
            problems.append(
                Problem(
                    kind,
                    loser.meta.namespace,
                    loser.meta.name,
                    Condition.ACCEPTED,
                    Reason.SUPERSEDED,
                    message,
                    loser.api_version,
                )
            )
    return kept, problems


def pool_ref_reason(
    namespace: str,
    ref: PoolRef | CanaryPoolRef,
    pools: Mapping[PoolKey, object],
    invalid_pools: set[PoolKey],
) -> tuple[str, str] | None:
    """Why `spec.poolRef` (of an InferenceModel, rewrite or objective in `namespace`) names no served
    pool, as (reason, message); None when it does."""
    pool_key = (namespace, ref.name)
    if ref.kind != "InferencePool" or ref.group not in _POOL_REF_GROUPS:
        return Reason.UNSUPPORTED_POOL_REF, f"spec.poolRef: {ref.group}/{ref.kind} is not an InferencePool"
    if pool_key in invalid_pools:
        return Reason.POOL_INVALID, f"spec.poolRef: InferencePool {namespace}/{ref.name} is not valid"
    if pool_key not in pools:
        return Reason.POOL_NOT_FOUND, f"spec.poolRef: InferencePool {namespace}/{ref.name} not found"
    return None


def pool_ref_refusal(
    kind: str,
    obj: InferenceModelRewrite | InferenceObjective,
    pools: Mapping[PoolKey, object],
    invalid_pools: set[PoolKey],
) -> Problem | None:
    found = pool_ref_reason(obj.meta.namespace, obj.pool_ref, pools, invalid_pools)
    return None if found is None else _problem(obj, kind, *found)


def _problem(
    obj: InferenceModelRewrite | InferenceObjective, kind: str, reason: str, message: str
) -> Problem:
    meta = obj.meta
    return Problem(kind, meta.namespace, meta.name, Condition.ACCEPTED, reason, message, obj.api_version)


def _rule_problem(rewrite: InferenceModelRewrite, index: int, rule: RewriteRule) -> Problem | None:
    names = [t.model for t in rule.targets]
    path = f"spec.rules[{index}].targets"
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        return _problem(rewrite, KIND_REWRITE, Reason.DUPLICATE_TARGET, f"{path} names {dup} more than once")
    reserved = [n for n in names if n in _RESERVED_TARGETS]
    if reserved:
        message = f"{path}: target name {reserved[0]!r} is reserved"
        return _problem(rewrite, KIND_REWRITE, Reason.RESERVED_TARGET_NAME, message)
    return None


def claim_rewrite(
    rewrite: InferenceModelRewrite,
    pools: Mapping[PoolKey, object],
    invalid_pools: set[PoolKey],
    owners: Owners,
    generic_owners: MutableMapping[PoolKey, InferenceModelRewrite],
) -> tuple[Problem | None, list[RuleClaim]]:
    """What of `rewrite` is served (its refusal instead, if any), claiming its models in `owners`.

    Called oldest object first: an exact match of an older object shadows this one's (first rule wins
    within one object); an older InferenceModel of the same model refuses the whole rewrite, as it
    would refuse a newer InferenceModel. Only the first generic rule of the oldest rewrite is served.
    """
    refusal = pool_ref_refusal(KIND_REWRITE, rewrite, pools, invalid_pools)
    if refusal is not None:
        return refusal, []
    for index, rule in enumerate(rewrite.rules):
        issue = _rule_problem(rewrite, index, rule)
        if issue is not None:
            return issue, []
    pool_key = (rewrite.meta.namespace, rewrite.pool_ref.name)
    claims: list[RuleClaim] = []
    claimed: set[str] = set()
    for index, rule in enumerate(rewrite.rules):
        if rule.generic:
            if pool_key not in generic_owners and not any(c.model is None for c in claims):
                claims.append(RuleClaim(rewrite, index, None))
            continue
        for match, model in enumerate(rule.models):
            owner = owners.get((*pool_key, model))
            if isinstance(owner, InferenceModel):
                message = (
                    f"spec.rules[{index}].matches[{match}].model.value {model!r} is already served in pool "
                    f"{pool_key[1]} by the older {describe_owner(owner)}"
                )
                return _problem(rewrite, KIND_REWRITE, Reason.MODEL_NAME_IN_USE, message), []
            if owner is None and model not in claimed:
                claimed.add(model)
                claims.append(RuleClaim(rewrite, index, model))
    for claim in claims:
        if claim.model is None:
            generic_owners[pool_key] = rewrite
        else:
            owners[(*pool_key, claim.model)] = rewrite
    return None, claims


def plan_objectives(
    objectives: Sequence[InferenceObjective], pools: Mapping[PoolKey, object], invalid_pools: set[PoolKey]
) -> tuple[dict[PoolKey, list[ObjectivePlan]], list[Problem]]:
    """Accepted objectives per pool (sorted by name), and the refusals."""
    out: dict[PoolKey, list[ObjectivePlan]] = {}
    problems: list[Problem] = []
    for objective in sorted(objectives, key=lambda o: o.key):
        refusal = pool_ref_refusal(KIND_OBJECTIVE, objective, pools, invalid_pools)
        if refusal is not None:
            problems.append(refusal)
            continue
        meta = objective.meta
        out.setdefault((meta.namespace, objective.pool_ref.name), []).append(
            ObjectivePlan(
                name=meta.name,
                priority=objective.effective_priority,
                criticality=objective.criticality.value,
                source=naming.source(KIND_OBJECTIVE, meta.namespace, meta.name),
            )
        )
    return out, problems
