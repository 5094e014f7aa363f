"""InferenceRollout (extension.inference-gateway.io/v1alpha1): a canary that moves one split step by step.

The group is this project's own, the one of InferenceGatewayRevision and of the picker-protocol
annotation (api/contract.py): a rollout is our controller's API, not GIE's or llm-d's.
docs/rollout.md has the field reference; rollout/config.py maps the analysis to the judgement's config.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from api.model import GROUP_X, ObjectMeta
from api.rewrite import GROUP_LLMD, KIND_REWRITE

GROUP_ROLLOUT = "extension.inference-gateway.io"
ROLLOUT_API_VERSION = f"{GROUP_ROLLOUT}/v1alpha1"
KIND_ROLLOUT = "InferenceRollout"
GROUP_GATEWAY = "gateway.networking.k8s.io"
KIND_HTTPROUTE = "HTTPRoute"
KIND_MODEL = "InferenceModel"
# Promote by hand: `kubectl annotate inferencerollout NAME extension.inference-gateway.io/promote=step`.
ANNOTATION_PROMOTE = f"{GROUP_ROLLOUT}/promote"
PROMOTE_VALUES = ("step", "full")

# The groups each target kind may name; the first is the default.
TARGET_GROUPS: dict[str, tuple[str, ...]] = {
    KIND_MODEL: (GROUP_X,),
    KIND_REWRITE: (GROUP_LLMD, GROUP_X),
    KIND_HTTPROUTE: (GROUP_GATEWAY,),
}


class Phase(enum.StrEnum):
    PENDING = "Pending"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    ABORTED = "Aborted"
    FAILED = "Failed"


@dataclass(frozen=True)
class RolloutTarget:
    """What the rollout moves (same namespace): `rule` indexes the rewrite's or route's rules."""

    kind: str
    name: str
    group: str
    rule: int | None = None


@dataclass(frozen=True)
class Step:
    """A candidate weight (percent) held for a pause (None: until promoted by hand) or analysed."""

    weight: int
    pause: bool = False
    pause_s: float | None = None  # with pause: its length; None is indefinite
    analysis_interval_s: float | None = None  # an analysis step: the window length

    @property
    def is_analysis(self) -> bool:
        return self.analysis_interval_s is not None


@dataclass(frozen=True)
class MetricLimit:
    """One metric (a rollout.judgement.Metric value) and its limits; None: the judgement's default."""

    name: str
    relative_limit: float | None = None
    absolute_limit: float | None = None
    critical: bool = False
    min_increase: float | None = None


@dataclass(frozen=True)
class Webhook:
    """A quality evaluation the controller calls after each passing window; it may veto."""

    url: str
    timeout_s: float = 10.0


@dataclass(frozen=True)
class PrometheusSource:
    """Take the measurements from Prometheus instead of the pickers: PromQL per metric name."""

    address: str
    queries: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Analysis:
    """The judgement's and the decision's settings; `metrics` empty means the judgement's defaults."""

    metrics: tuple[MetricLimit, ...] = ()
    alpha: float = 0.01
    min_samples: int = 50
    min_requests: int = 300
    max_load_imbalance: float = 1.5
    failure_limit: int = 2
    passes_per_step: int = 1
    inconclusive_limit: int = 5
    inconclusive_deadline_s: float | None = None
    webhook: Webhook | None = None
    prometheus: PrometheusSource | None = None


@dataclass(frozen=True)
class InferenceRollout:
    api_version: str
    meta: ObjectMeta
    target: RolloutTarget
    stable: str
    candidate: str
    steps: tuple[Step, ...]
    analysis: Analysis = Analysis()
    paused: bool = False
    abort: bool = False

    @property
    def key(self) -> str:
        return self.meta.key

    @property
    def promote(self) -> str | None:
        """The pending hand promotion ("step" or "full") from the annotation, if any."""
        return dict(self.meta.annotations).get(ANNOTATION_PROMOTE)
