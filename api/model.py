"""Version-independent, validated forms of the inference CRDs, as the rest of the project sees them."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

GROUP_X = "inference.networking.x-k8s.io"
GROUP_GA = "inference.networking.k8s.io"
V1ALPHA1 = f"{GROUP_X}/v1alpha1"
V1ALPHA2 = f"{GROUP_X}/v1alpha2"
V1 = f"{GROUP_GA}/v1"
POOL_API_VERSIONS = (V1ALPHA1, V1ALPHA2, V1)
MODEL_API_VERSIONS = (V1ALPHA1, V1ALPHA2)

DEFAULT_PICKER_PORT = 9002


class FailureMode(enum.StrEnum):
    FAIL_OPEN = "FailOpen"
    FAIL_CLOSE = "FailClose"


class Criticality(enum.StrEnum):
    CRITICAL = "Critical"
    STANDARD = "Standard"
    SHEDDABLE = "Sheddable"


@dataclass(frozen=True)
class ObjectMeta:
    """The metadata fields the project reads; timestamps stay RFC 3339 strings."""

    namespace: str
    name: str
    uid: str = ""
    resource_version: str = ""
    generation: int = 0
    creation_timestamp: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class AttachTo:
    """The `inference.networking.x-k8s.io/attach-to` annotation: serve a whole Gateway listener."""

    gateway_namespace: str
    gateway_name: str
    port: int


@dataclass(frozen=True)
class PickerRef:
    """Where the endpoint picker of a pool runs (a Service, normally)."""

    name: str
    port: int = DEFAULT_PICKER_PORT
    group: str = ""
    kind: str = "Service"
    failure_mode: FailureMode = FailureMode.FAIL_CLOSE


@dataclass(frozen=True)
class InferencePool:
    api_version: str
    meta: ObjectMeta
    selector: tuple[tuple[str, str], ...]
    target_ports: tuple[int, ...]
    picker: PickerRef | None  # None: v1's endpointPickerRef is optional; the gateway balances alone
    app_protocol: str = "http"
    attach_to: AttachTo | None = None

    @property
    def key(self) -> str:
        return self.meta.key

    def selects(self, labels: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.selector)


@dataclass(frozen=True)
class TargetModel:
    name: str
    weight: int | None = None


@dataclass(frozen=True)
class PoolRef:
    name: str
    group: str = GROUP_X
    kind: str = "InferencePool"


@dataclass(frozen=True)
class InferenceModel:
    api_version: str
    meta: ObjectMeta
    model_name: str
    pool_ref: PoolRef
    criticality: Criticality | None = None
    target_models: tuple[TargetModel, ...] = ()

    @property
    def key(self) -> str:
        return self.meta.key

    @property
    def effective_criticality(self) -> Criticality:
        return self.criticality or Criticality.STANDARD

    def weighted_targets(self) -> tuple[TargetModel, ...]:
        """Targets with weights filled in: none given means equal shares; no targets means modelName."""
        if not self.target_models:
            return (TargetModel(self.model_name, 1),)
        if all(t.weight is None for t in self.target_models):
            return tuple(TargetModel(t.name, 1) for t in self.target_models)
        return self.target_models


@dataclass(frozen=True)
class Pod:
    """A model-server pod as the picker and the local gateway need it."""

    meta: ObjectMeta
    ip: str
    ready: bool = True
    terminating: bool = False
    container_ports: tuple[int, ...] = field(default=())

    @property
    def key(self) -> str:
        return self.meta.key

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.meta.labels)
