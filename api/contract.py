"""The wire contract between extserver (writes it into xDS) and picker (reads it): defined once."""

from __future__ import annotations

from dataclasses import dataclass

# Metadata namespace on every generated cluster and route (filter_metadata key).
METADATA_NAMESPACE = "inference.networking.x-k8s.io"


class MetadataKey:
    """Keys inside METADATA_NAMESPACE on generated routes and clusters."""

    POOL_NAMESPACE = "pool_namespace"
    POOL_NAME = "pool_name"
    MODEL_NAME = "model_name"  # client-facing name (InferenceModel.spec.modelName); absent on catch-alls
    TARGET_MODEL = "target_model"  # on target clusters and weighted-cluster entries
    WEIGHT = "weight"
    CRITICALITY = "criticality"
    SOURCE = "source"  # "<Kind> <ns>/<name>" of the object that produced the resource
    # On a model route's InferenceObjective variant (x-gateway-inference-objective matched):
    PRIORITY = "priority"  # the objective's spec.priority (the route's criticality is mapped from it)
    OBJECTIVE = "objective"  # the objective's name
    ROLE = "role"  # one of Role.*
    # For debugging (the compiler writes them, nothing reads them back at request time):
    TARGETS = "targets"  # on model routes: list of {target_model, weight, cluster}
    MODELS = "models"  # on target clusters: list of {model_name, weight, criticality, source}
    CLUSTER = "cluster"  # inside TARGETS entries
    EG_ROUTE = "eg_route"  # on backend-ref routes: the name EG gave the route we expanded
    POOL_API_VERSION = "pool_api_version"
    POOLS = "pools"  # on weighted-pools routes: list of {pool_namespace, pool_name, weight, cluster}
    MIRRORS = "mirrors"  # on mirrored routes: list of {target, percent, declared_by}
    MIRROR_OF = "mirror_of"  # on mirror-listener routes: the mirror target they serve


class Role:
    TARGET = "target"  # per target model cluster
    CATCH_ALL = "catch-all"  # pool-level cluster / route for models without an InferenceModel
    PICKER = "picker"  # the endpoint picker's own cluster
    MODEL_ROUTE = "model-route"
    MODELS_LIST = "models-list"
    BACKEND_REF = "backend-ref"  # EG's route/cluster for an HTTPRoute backendRef to a pool
    WEIGHTED_POOLS = "weighted-pools"  # EG's route for one HTTPRoute rule with several pools
    MIXED_BACKENDS = "mixed-backends"  # a rule with pools and other backends: answered 500 (not supported)
    VIRTUAL_HOST = "virtual-host"  # our catch-all virtual host on an attach-to listener
    MIRROR = "mirror"  # the mirror listener, its route configuration, virtual host, routes and cluster


# Dynamic metadata written by the json_to_metadata filter from the request body.
BODY_METADATA_NAMESPACE = "inference.networking.x-k8s.io.body"
BODY_MODEL_KEY = "model"

# Request headers (GIE protocol). Client-sent x-gateway-* headers are stripped before the picker.
HEADER_DESTINATION_ENDPOINT = "x-gateway-destination-endpoint"
HEADER_DESTINATION_SUBSET = "x-gateway-destination-endpoint-subset"
HEADER_MODEL_NAME_REWRITE = "x-gateway-model-name-rewrite"
# llm-d's names for the same gateway-set headers (the x-gateway-* names are their legacy aliases).
HEADER_MODEL_NAME_REWRITE_LLM_D = "x-llm-d-model-name-rewrite"
HEADER_INFERENCE_OBJECTIVE = "x-gateway-inference-objective"
HEADER_FAIRNESS_ID = "x-gateway-inference-fairness-id"
HEADER_REQUEST_ID = "x-request-id"
CLIENT_HEADER_PREFIX = "x-gateway-"

# Dynamic metadata the picker sets for Envoy's load balancer (and reads a subset hint from).
LB_METADATA_NAMESPACE = "envoy.lb"
LB_SUBSET_HINT_NAMESPACE = "envoy.lb.subset_hint"

# ext_proc request attributes the picker needs; they arrive on the first request-direction message.
ATTR_CLUSTER_NAME = "xds.cluster_name"
ATTR_CLUSTER_METADATA = "xds.cluster_metadata"
ATTR_ROUTE_METADATA = "xds.route_metadata"
ATTR_REQUEST_PATH = "request.path"
ATTR_REQUEST_ID = "request.id"
REQUEST_ATTRIBUTES = (
    ATTR_CLUSTER_NAME,
    ATTR_CLUSTER_METADATA,
    ATTR_ROUTE_METADATA,
    ATTR_REQUEST_PATH,
    ATTR_REQUEST_ID,
)
# What happened to each routed request reaches the picker through Envoy's gRPC access log service
# (ALS), not through ext_proc response messages: a response-direction ext_proc message is a blocking
# round trip per SSE chunk. The picker marks every request it routes with PICKER_METADATA_NAMESPACE
# (ext_proc dynamic metadata); a response-side Lua filter writes the body's token usage into
# USAGE_METADATA_NAMESPACE; the access log sends both, with the status, to the picker in batches.
PICKER_METADATA_NAMESPACE = "inference.networking.x-k8s.io.picker"
USAGE_METADATA_NAMESPACE = "inference.networking.x-k8s.io.usage"


class PickerMetadataKey:
    """Keys inside PICKER_METADATA_NAMESPACE (strings, except STREAM)."""

    POOL = "pool"  # "<namespace>/<name>" of the InferencePool
    MODEL = "model"  # the model the client asked for
    TARGET = "target"  # the target model the request was sent as
    ENDPOINT = "endpoint"  # the primary destination "<ip>:<port>"
    STREAM = "stream"  # bool: the body asked for an SSE stream (TTFT and TPOT are kept apart by it)


class UsageMetadataKey:
    """Keys inside USAGE_METADATA_NAMESPACE (numbers), from the OpenAI `usage` object."""

    PROMPT_TOKENS = "prompt_tokens"
    COMPLETION_TOKENS = "completion_tokens"
    # Not from `usage`: Envoy's wall clock (microseconds since the epoch) when the first response body
    # chunk passed the filter. Envoy's own upstream timings see the response headers, which a
    # streaming server sends before the first token.
    FIRST_CHUNK_US = "first_chunk_us"


ACCESS_LOG_NAME = "inference-gateway"  # HttpGrpcAccessLogConfig.common_config.log_name
ACCESS_LOG_FLUSH_SECONDS = 0.1  # Envoy's default (1 s) would delay token metrics for no gain

# ext_proc processing: headers with attributes, buffered request body, nothing of the response
# (Envoy keeps the stream open until the HTTP stream ends, so its end still releases the in-flight
# count), no trailers.
EXT_PROC_MESSAGE_TIMEOUT_SECONDS = 10.0

# Body size: EG's 32 KiB listener buffer makes long prompts fail with 413; raise it to this.
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
# gRPC message limits for the picker must hold a whole body plus framing.
GRPC_MESSAGE_OVERHEAD_BYTES = 64 * 1024

# Ports.
EXTSERVER_PORT = 5005
PICKER_GRPC_PORT = 9002
PICKER_HEALTH_PORT = 9003
PICKER_METRICS_PORT = 9090
# The loopback listener in every Envoy that routes mirrored copies through their own pool's picker.
MIRROR_LISTENER_PORT = 19180
MIRROR_LISTENER_ADDRESS = "127.0.0.1"
# On a mirrored copy only (set by the mirror policy, read and removed on the mirror listener): which
# mirror it is, and the `model` the client sent (the picker rewrote the body the router forwards).
HEADER_MIRROR_TARGET = "x-inference-gateway-mirror"
HEADER_CLIENT_MODEL = "x-inference-gateway-client-model"

ANNOTATION_ATTACH_TO = "inference.networking.x-k8s.io/attach-to"
# On a picker Service: which protocol its endpoint picker speaks (docs/xds.md, "Endpoint pickers").
ANNOTATION_PICKER_PROTOCOL = "extension.inference-gateway.io/picker-protocol"
# A RequestMirror (backendRef, percent or fraction) as YAML, on an InferencePool or InferenceModel.
ANNOTATION_MIRROR = "extension.inference-gateway.io/mirror"
PICKER_PROTOCOL_OURS = "inference-gateway"  # one ext_proc message (the body), per-target EDS
PICKER_PROTOCOL_GIE = "gateway-api-inference-extension"  # headers + streamed body, pool endpoints from Pods
APP_PROTOCOL_H2C = "kubernetes.io/h2c"
HEADER_DESTINATION_SERVED = "x-gateway-destination-endpoint-served"
# Response header the route adds with the upstream address and the Lua filter removes again (GIE pools).
HEADER_SERVED_UPSTREAM = "x-inference-gateway-served-upstream"


@dataclass(frozen=True)
class EdsResource:
    """Identity of an EDS resource the picker serves: a pool, optionally narrowed to one target model."""

    namespace: str
    pool: str
    target_model: str | None = None

    @property
    def name(self) -> str:
        base = f"inference/{self.namespace}/{self.pool}"
        return base if self.target_model is None else f"{base}/{self.target_model}"

    @classmethod
    def parse(cls, name: str) -> EdsResource | None:
        """Inverse of `name`; safe because namespaces and pool names cannot contain '/'."""
        parts = name.split("/", 3)
        if len(parts) < 3 or parts[0] != "inference" or not parts[1] or not parts[2]:
            return None
        target = parts[3] if len(parts) == 4 else None
        if target == "":
            return None
        return cls(parts[1], parts[2], target)


def picker_service_host(service: str, namespace: str) -> str:
    """Cluster DNS name of the picker Service, as EG-managed Envoy resolves it."""
    return f"{service}.{namespace}.svc.cluster.local"


class ExtProcMode:
    """ext_proc ProcessingMode enum value names (envoy.extensions.filters.http.ext_proc.v3.ProcessingMode)."""

    # SKIP: one gRPC round trip fewer per request. Envoy 1.40 then sends the attributes (path and
    # request id included) on the body message and drops the body answer's header mutations, so the
    # destination travels as envoy.lb metadata (override_host reads it; the Lua filter copies it into
    # the header) and a rewritten body goes upstream chunked instead of with a Content-Length.
    REQUEST_HEADER = "SKIP"
    REQUEST_BODY = "BUFFERED"
    REQUEST_TRAILER = "SKIP"
    # Nothing of the response: status and usage come through the access log (see
    # PICKER_METADATA_NAMESPACE), so the response, SSE tokens included, never waits on the picker.
    RESPONSE_HEADER = "SKIP"
    RESPONSE_BODY = "NONE"
    RESPONSE_TRAILER = "SKIP"


class GieExtProcMode:
    """ProcessingMode for any other endpoint picker, as GIE's protocol has it (docs/xds.md)."""

    # An EPP reads request headers (e.g. GIE's test header) and may answer them only once the body
    # ended. STREAMED with send_body_without_waiting_for_header_response gives it the body meanwhile;
    # FULL_DUPLEX_STREAMED would also, but then an EPP that answers body chunks without sending them
    # back (GIE's own test EPP does) empties the body Envoy forwards.
    REQUEST_HEADER = "SEND"
    REQUEST_BODY = "STREAMED"
    REQUEST_TRAILER = "SKIP"
    # Response headers carry envoy.lb's x-gateway-destination-endpoint-served back to the EPP.
    RESPONSE_HEADER = "SEND"
    RESPONSE_BODY = "NONE"
    RESPONSE_TRAILER = "SKIP"


# Client-sent request headers removed before the picker runs: the picker sets these itself.
# x-gateway-inference-objective / -fairness-id stay: GIE lets clients send them as hints.
CLIENT_STRIPPED_HEADERS = (
    HEADER_DESTINATION_ENDPOINT,
    HEADER_DESTINATION_SUBSET,
    HEADER_MODEL_NAME_REWRITE,
    HEADER_MODEL_NAME_REWRITE_LLM_D,
)

# EDS from the picker: a target cluster waits this long for its first assignment before it serves (503s).
EDS_INITIAL_FETCH_TIMEOUT_SECONDS = 3.0
