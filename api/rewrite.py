"""Version-independent forms of today's canary APIs: InferenceModelRewrite and InferenceObjective.

Both kinds are served in two groups with the same fields: `llm-d.ai/v1alpha2` (llm-d's) and
`inference.networking.x-k8s.io/v1alpha2` (GIE's form before the move). Where one namespace/name exists in
both, the llm-d.ai object is used (llm-d's EPP reconciles llm-d.ai when both are installed).
"""

from __future__ import annotations

from dataclasses import dataclass

from api.model import GROUP_GA, V1ALPHA2, Criticality, ObjectMeta

GROUP_LLMD = "llm-d.ai"
LLMD_V1ALPHA2 = f"{GROUP_LLMD}/v1alpha2"
# Preferred first: the llm-d.ai form wins over the x-k8s form of the same namespace/name.
CANARY_API_VERSIONS = (LLMD_V1ALPHA2, V1ALPHA2)
KIND_REWRITE = "InferenceModelRewrite"
KIND_OBJECTIVE = "InferenceObjective"
MATCH_EXACT = "Exact"


@dataclass(frozen=True)
class CanaryPoolRef:
    """`spec.poolRef` of both kinds (same namespace); the group defaults to the GA pool's."""

    name: str
    group: str = GROUP_GA
    kind: str = "InferencePool"


@dataclass(frozen=True)
class RewriteTarget:
    model: str
    weight: int | None = None


@dataclass(frozen=True)
class RewriteRule:
    """Exact `models` (OR); none means the rule matches every request (a generic rule)."""

    models: tuple[str, ...]
    targets: tuple[RewriteTarget, ...]

    @property
    def generic(self) -> bool:
        return not self.models

    def weighted_targets(self) -> tuple[RewriteTarget, ...]:
        """Targets with weights filled in: none given means equal shares."""
        if all(t.weight is None for t in self.targets):
            return tuple(RewriteTarget(t.model, 1) for t in self.targets)
        return self.targets


@dataclass(frozen=True)
class InferenceModelRewrite:
    api_version: str
    meta: ObjectMeta
    pool_ref: CanaryPoolRef
    rules: tuple[RewriteRule, ...]

    @property
    def key(self) -> str:
        return self.meta.key


@dataclass(frozen=True)
class InferenceObjective:
    api_version: str
    meta: ObjectMeta
    pool_ref: CanaryPoolRef
    priority: int | None = None

    @property
    def key(self) -> str:
        return self.meta.key

    @property
    def effective_priority(self) -> int:
        return self.priority or 0

    @property
    def criticality(self) -> Criticality:
        return criticality_of(self.effective_priority)


def criticality_of(priority: int) -> Criticality:
    """Priority -> the criticality the picker sheds by: negative is sheddable, positive critical."""
    if priority < 0:
        return Criticality.SHEDDABLE
    return Criticality.CRITICAL if priority > 0 else Criticality.STANDARD


def api_version_rank(api_version: str) -> int:
    """Lower wins when both forms of one namespace/name exist."""
    return CANARY_API_VERSIONS.index(api_version) if api_version in CANARY_API_VERSIONS else 99
