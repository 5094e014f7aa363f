"""Every xDS name the compiler writes, built from structured values; names are never parsed back."""

from __future__ import annotations

from api.contract import EdsResource
from extserver.eg import facts as eg

_PREFIX = "inference"

# HTTP filter names (the part after the slash keeps them apart from EG's own filters of the same type).
HEADER_MUTATION_FILTER = "envoy.filters.http.header_mutation/inference"
JSON_TO_METADATA_FILTER = "envoy.filters.http.json_to_metadata/inference"
LUA_FILTER = "envoy.filters.http.lua/inference"
USAGE_FILTER = "envoy.filters.http.lua/inference-usage"
EXT_PROC_FILTER_PREFIX = "envoy.filters.http.ext_proc/inference/"
ROUTER_FILTER = eg.ROUTER_FILTER
HCM_FILTER = eg.HCM_FILTER
# The mirror listener (compile/mirror_listener.py): its listener, route configuration and cluster share
# one name (mirror_name); its first filter puts the client's `model` back into a copy's body.
MIRROR_PREFIX = f"{_PREFIX}/mirror"
MIRROR_RESTORE_FILTER = "envoy.filters.http.lua/inference-mirror"
# Our HCM access logs (one per picker cluster); EG's own access logs never carry this prefix.
ACCESS_LOG_PREFIX = "envoy.access_loggers.http_grpc/inference/"


def pool_cluster(namespace: str, pool: str) -> str:
    """The pool catch-all cluster (models without an InferenceModel)."""
    return f"{_PREFIX}/{namespace}/{pool}"


def target_cluster(namespace: str, pool: str, target_model: str) -> str:
    return f"{_PREFIX}/{namespace}/{pool}/{target_model}"


def picker_eds_cluster(target_cluster_name: str) -> str:
    """A FailOpen target's picker-served half (its target cluster falls over to the pool's Pods)."""
    return f"{target_cluster_name}#picker-eds"


def picker_cluster(namespace: str, pool: str) -> str:
    return f"{_PREFIX}/{namespace}/{pool}/picker"


def ext_proc_filter(namespace: str, pool: str) -> str:
    return f"{EXT_PROC_FILTER_PREFIX}{namespace}/{pool}"


def access_log(picker_cluster: str) -> str:
    """The gRPC access log sending a picker's requests back to it (one per picker cluster)."""
    return f"{ACCESS_LOG_PREFIX}{picker_cluster}"


def model_route(namespace: str, inference_model: str, parent_route: str | None = None) -> str:
    """Route of one InferenceModel; under an EG route when the pool is an HTTPRoute backendRef."""
    base = f"{_PREFIX}/{namespace}/{inference_model}"
    return base if parent_route is None else f"{parent_route}/{base}"


def pin_route(namespace: str, inference_model: str, index: int, parent_route: str | None = None) -> str:
    """A header-pinned route of one InferenceModel (its `index`-th pin), before its weighted route."""
    return f"{model_route(namespace, inference_model, parent_route)}/pin/{index}"


def eg_rule_cluster(namespace: str, route: str, rule: int) -> str:
    """The cluster EG builds for one HTTPRoute rule (its backendRefs together)."""
    return f"httproute/{namespace}/{route}/rule/{rule}"


def mirror_name(gateways: frozenset[str]) -> str:
    """The mirror listener's, route configuration's and cluster's name: after the Gateway when EG's call
    is for one (a local run puts several Gateways into one Envoy), else just the prefix."""
    return f"{MIRROR_PREFIX}/{next(iter(gateways))}" if len(gateways) == 1 else MIRROR_PREFIX


def is_mirror_name(name: str) -> bool:
    return name == MIRROR_PREFIX or name.startswith(MIRROR_PREFIX + "/")


def mirror_route(mirror: str, target_key: str) -> str:
    """A mirror target's route on the mirror listener (`target_key`: "pool/<ns>/<name>", "service/...")."""
    return f"{mirror}/{target_key}"


def rewrite_plan_name(rewrite: str, rule: int, model: str | None) -> str:
    """The name part of a rewrite rule's route (model_route), apart from any InferenceModel's name."""
    return f"{rewrite}/rules/{rule}/{'generic' if model is None else 'model/' + model}"


def objective_route(route: str, objective: str) -> str:
    """A model route's variant for requests naming an InferenceObjective."""
    return f"{route}/objective/{objective}"


def pool_default_route(namespace: str, pool: str) -> str:
    return f"{_PREFIX}/{namespace}/{pool}/default"


def models_list_route(namespace: str, pool: str, parent_route: str | None = None) -> str:
    base = f"{_PREFIX}/{namespace}/{pool}/models"
    return base if parent_route is None else f"{parent_route}/{base}"


def pool_virtual_host(namespace: str, pool: str) -> str:
    return f"{_PREFIX}/{namespace}/{pool}"


def eds_resource(namespace: str, pool: str, target_model: str | None = None) -> str:
    return EdsResource(namespace, pool, target_model).name


def source(kind: str, namespace: str, name: str) -> str:
    """`<Kind> <ns>/<name>`, the source object written into metadata."""
    return f"{kind} {namespace}/{name}"
