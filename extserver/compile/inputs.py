"""What the compiler takes and gives back, apart from Envoy messages: inputs, options, problems."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.config.route.v3.route_pb2 import RouteConfiguration

from api import contract
from api.httproute import RuleBackends, RuleKey
from api.model import InferenceModel, InferencePool
from api.rewrite import InferenceModelRewrite, InferenceObjective


@dataclass(frozen=True)
class CompileInputs:
    pools: tuple[InferencePool, ...]
    models: tuple[InferenceModel, ...]
    # Pool "ns/name" -> its ready endpoints "ip:port" (pod IPs x targetPorts), sorted. None: the source
    # does not read Pods, so pool clusters get their endpoints from an EDS-serving picker only.
    endpoints: Mapping[str, tuple[str, ...]] | None = None
    # Service "ns/name" -> its annotations. None: the source does not read Services, and every picker
    # Service counts as present and as this project's picker.
    services: Mapping[str, Mapping[str, str]] | None = None
    # HTTPRoute rules naming pools (api/httproute.py): the weights of a rule with several pools.
    rules: Mapping[RuleKey, RuleBackends] | None = None
    # The canary kinds, both forms (llm-d.ai and x-k8s) as stored; the plan picks one per name.
    rewrites: tuple[InferenceModelRewrite, ...] = ()
    objectives: tuple[InferenceObjective, ...] = ()


@dataclass(frozen=True)
class CompileOptions:
    max_body_bytes: int = contract.DEFAULT_MAX_BODY_BYTES
    mirror_port: int = contract.MIRROR_LISTENER_PORT  # the loopback mirror listener's, in every Envoy


@dataclass(frozen=True)
class Problem:
    """Something wrong with one object, phrased as the status condition it should get."""

    kind: str
    namespace: str
    name: str
    condition_type: str
    reason: str
    message: str
    # Set where two forms of one kind/namespace/name exist (llm-d.ai, x-k8s): the form it is about.
    api_version: str = ""


@dataclass
class TranslationOutput:
    clusters: list[Cluster]
    listeners: list[Listener]
    routes: list[RouteConfiguration]
    problems: list[Problem] = field(default_factory=list)
    # Pools this translation routes to (or tried to), with the Gateways ("ns/name") they serve there:
    # the parents their status conditions belong to.
    pool_gateways: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)


class Condition:
    ACCEPTED = "Accepted"
    RESOLVED_REFS = "ResolvedRefs"
    # Models: our annotations (api/canary.py) are valid; False leaves the invalid ones out, still Accepted.
    ANNOTATIONS_VALID = "AnnotationsValid"


class Reason:
    MODEL_NAME_IN_USE = "ModelNameInUse"
    POOL_NOT_FOUND = "PoolNotFound"
    POOL_INVALID = "PoolInvalid"
    UNSUPPORTED_POOL_REF = "UnsupportedPoolRef"
    INVALID_WEIGHTS = "InvalidWeights"
    DUPLICATE_TARGET = "DuplicateTargetModel"
    RESERVED_TARGET_NAME = "ReservedTargetName"
    INVALID_EXTENSION_REF = "InvalidExtensionRef"
    MIXED_BACKENDS = "MixedBackendRefs"
    LISTENER_IN_USE = "ListenerInUse"
    NO_MATCHING_LISTENER = "NoMatchingListener"
    MERGED_GATEWAY = "MergedGatewayUnsupported"
    INVALID_ANNOTATION = "InvalidAnnotation"
    SUPERSEDED = "SupersededByLlmD"
