"""Routes: per InferenceModel (body model -> weighted targets), the pool catch-all, GET /v1/models."""

from __future__ import annotations

import functools
import json
from collections.abc import MutableMapping, Sequence

from envoy.config.core.v3.base_pb2 import HeaderValueOption
from envoy.config.route.v3.route_components_pb2 import Route, RouteMatch
from envoy.type.matcher.v3.metadata_pb2 import MetadataMatcher
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.internal.containers import RepeatedCompositeFieldContainer

from api import canary, contract
from api.contract import MetadataKey, Role
from extserver.compile import metadata, naming, sticky
from extserver.compile.filters import ext_proc, lua, usage
from extserver.compile.inputs import CompileOptions
from extserver.compile.plan import ModelPlan, PoolPlan, TargetPlan
from extserver.compile.resilience import retry_policy
from extserver.compile.sticky import sticky_entries

# LLM answers take long; Envoy's default route timeout (15 s) would cut them off.
ROUTE_TIMEOUT_SECONDS = 300
MODELS_LIST_PATH = "/v1/models"


def _fill_model_matcher(matcher: MetadataMatcher, model_name: str) -> None:
    """Match the body's `model` (dynamic metadata from the json_to_metadata filter) exactly."""
    matcher.filter = contract.BODY_METADATA_NAMESPACE
    matcher.path.add().key = contract.BODY_MODEL_KEY
    matcher.value.string_match.exact = model_name


def _without_our_matchers(match: RouteMatch) -> RouteMatch:
    result = RouteMatch()
    result.CopyFrom(match)
    del result.dynamic_metadata[:]
    result.dynamic_metadata.extend(
        m for m in match.dynamic_metadata if m.filter != contract.BODY_METADATA_NAMESPACE
    )
    return result


@functools.cache
def _enable_ext_proc() -> bytes:
    return ext_proc.enable_on_route().SerializeToString(deterministic=True)


@functools.cache
def _enable_usage() -> bytes:
    return usage.enable_on_route().SerializeToString(deterministic=True)


@functools.cache
def _lua_destination(served: bool) -> bytes:
    return lua.per_route_destination(served).SerializeToString(deterministic=True)


@functools.lru_cache(maxsize=8192)
def _lua_rewrite(target_model: str, always: bool, served: bool) -> bytes:
    return lua.per_cluster_rewrite(target_model, always, served).SerializeToString(deterministic=True)


def _reports_served(pool: PoolPlan) -> bool:
    """GIE's protocol: the EPP gets the served endpoint back (ours learns outcomes from the access log)."""
    return pool.picker is not None and not pool.picker.serves_eds


def served_upstream_header(
    headers: RepeatedCompositeFieldContainer[HeaderValueOption], pool: PoolPlan
) -> None:
    """For a GIE picker's pool: the upstream address as a response header, for the Lua filter to hand to
    the picker (once, however often the route is patched)."""
    if not _reports_served(pool) or any(h.header.key == contract.HEADER_SERVED_UPSTREAM for h in headers):
        return
    option = headers.add()
    option.header.key = contract.HEADER_SERVED_UPSTREAM
    option.header.value = "%UPSTREAM_REMOTE_ADDRESS%"
    option.append_action = HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def pool_entry_settings(per_filter_config: MutableMapping[str, AnyProto], pool: PoolPlan) -> None:
    """The per-filter configs that make a route (or one weighted-cluster entry) the pool's: its picker and,
    for this project's picker, the usage filter switched on, and the picker's destination into the header."""
    # Packed once and parsed per route: thousands of routes carry the same per-filter config.
    if pool.picker is not None:
        per_filter_config[pool.ext_proc_filter].ParseFromString(_enable_ext_proc())
    if pool.picker is not None and pool.picker.serves_eds:
        # Exactly where our picker runs: only its requests are access-logged, so only they need usage.
        per_filter_config[naming.USAGE_FILTER].ParseFromString(_enable_usage())
    # The picker's destination into the header (weighted-cluster entries override it with their own).
    per_filter_config[naming.LUA_FILTER].ParseFromString(_lua_destination(_reports_served(pool)))


def apply_pool_settings(
    route: Route, pool: PoolPlan, options: CompileOptions, per_route_picker: bool = True
) -> None:
    """What every route of a pool needs: the pool's filters switched on (unless its weighted-cluster
    entries do that, `per_route_picker=False`), bodies up to max_body_bytes, retries."""
    if per_route_picker:
        pool_entry_settings(route.typed_per_filter_config, pool)
        served_upstream_header(route.response_headers_to_add, pool)
    route.request_body_buffer_limit.value = options.max_body_bytes
    if route.HasField("route") and not route.route.HasField("retry_policy"):
        # A retry policy EG set (BackendTrafficPolicy) is the user's choice and stays.
        route.route.retry_policy.CopyFrom(retry_policy())


def model_route_template(
    pool: PoolPlan, match: RouteMatch, options: CompileOptions, parent_route: Route | None = None
) -> Route:
    """What every model route under one match (and EG parent route) shares; built once, copied per model."""
    route = Route()
    if parent_route is not None:
        route.CopyFrom(parent_route)  # EG's match, timeouts, metadata; ours is replaced below
    else:
        route.route.timeout.seconds = ROUTE_TIMEOUT_SECONDS
    route.match.CopyFrom(_without_our_matchers(match))
    apply_pool_settings(route, pool, options)
    metadata.set_ours(
        route.metadata,
        {
            MetadataKey.ROLE: Role.MODEL_ROUTE,
            MetadataKey.POOL_NAMESPACE: pool.namespace,
            MetadataKey.POOL_NAME: pool.name,
        },
    )
    return route


def build_model_route(
    pool: PoolPlan,
    model: ModelPlan,
    match: RouteMatch,
    options: CompileOptions,
    parent_route: Route | None = None,
    template: Route | None = None,
) -> Route:
    """Route for one InferenceModel: `match` plus body model == modelName -> weighted target clusters.

    `template` is model_route_template(pool, match, options, parent_route), for callers building many.
    """
    base = template if template is not None else model_route_template(pool, match, options, parent_route)
    route = Route()
    route.CopyFrom(base)
    route.name = naming.model_route(model.namespace, model.name, parent_route.name if parent_route else None)
    if not model.match_any:  # a generic rewrite rule takes every body model (and none)
        _fill_model_matcher(route.match.dynamic_metadata.add(), model.model_name)
    weighted = route.route.weighted_clusters
    weighted.Clear()
    weighted.SetInParent()  # replaces the parent's single cluster (same oneof)
    if model.sticky is None:
        # Weight 0: listed in metadata, never chosen.
        entries = [(t, t.weight) for t in model.targets if t.weight > 0]
    else:
        entries = sticky_entries(model.targets)
        weighted.use_hash_policy.value = True
        sticky.fill_hash_policy(route.route, model.sticky)
    for target, weight in entries:
        entry = weighted.clusters.add(name=target.cluster)
        entry.weight.value = weight
        rewrite = _target_rewrite(pool, target)
        if rewrite is not None:
            entry.typed_per_filter_config[naming.LUA_FILTER].ParseFromString(rewrite)
    _model_metadata(route, model, model.targets)
    if model.sticky is not None:
        metadata.ours_struct(route.metadata).fields[canary.METADATA_STICKY_KEY].string_value = str(
            model.sticky
        )
    return route


def _target_rewrite(pool: PoolPlan, target: TargetPlan) -> bytes | None:
    """The Lua config of a route (entry) sending to one target: our picker rewrites `model` itself;
    without it (FailOpen), or with another picker, Lua does."""
    always = not pool.eds_targets
    if pool.fail_open or always:
        return _lua_rewrite(target.model, always, _reports_served(pool))
    return None


def _model_metadata(route: Route, model: ModelPlan, targets: Sequence[TargetPlan]) -> None:
    # Written field by field (not through a dict): this runs for every model.
    fields = metadata.ours_struct(route.metadata).fields
    fields[MetadataKey.MODEL_NAME].string_value = model.model_name
    fields[MetadataKey.CRITICALITY].string_value = model.criticality
    fields[MetadataKey.SOURCE].string_value = model.source
    entries = fields[MetadataKey.TARGETS].list_value
    entries.Clear()
    entries.SetInParent()
    for t in targets:
        target_fields = entries.values.add().struct_value.fields
        target_fields[MetadataKey.TARGET_MODEL].string_value = t.model
        target_fields[MetadataKey.WEIGHT].number_value = t.weight
        target_fields[MetadataKey.CLUSTER].string_value = t.cluster


def build_pin_routes(
    pool: PoolPlan,
    model: ModelPlan,
    match: RouteMatch,
    options: CompileOptions,
    parent_route: Route | None = None,
    template: Route | None = None,
) -> list[Route]:
    """One route per pin of `model`, to go before its weighted route: the same match and settings plus
    the pin's header, to the pinned target's cluster alone."""
    base = template if template is not None else model_route_template(pool, match, options, parent_route)
    routes = []
    for index, pin in enumerate(model.pins):
        target = model.target(pin.target)
        if target is None:
            continue  # the plan checked pins against the targets; never reached
        route = Route()
        route.CopyFrom(base)
        parent = parent_route.name if parent_route else None
        route.name = naming.pin_route(model.namespace, model.name, index, parent)
        _fill_model_matcher(route.match.dynamic_metadata.add(), model.model_name)
        header = route.match.headers.add(name=pin.header)
        header.string_match.exact = pin.value
        route.route.cluster = target.cluster  # replaces EG's cluster or weighted clusters (same oneof)
        rewrite = _target_rewrite(pool, target)
        if rewrite is not None:
            route.typed_per_filter_config[naming.LUA_FILTER].ParseFromString(rewrite)
        _model_metadata(route, model, [target])
        metadata.update_struct(
            metadata.ours_struct(route.metadata),
            {canary.METADATA_PIN: {"header": pin.header, "value": pin.value, "target": pin.target}},
        )
        routes.append(route)
    return routes


def build_model_routes(
    pool: PoolPlan,
    model: ModelPlan,
    match: RouteMatch,
    options: CompileOptions,
    parent_route: Route | None = None,
    template: Route | None = None,
) -> list[Route]:
    """Every route of one InferenceModel, in match order: its pins, then its weighted route."""
    if template is None:
        template = model_route_template(pool, match, options, parent_route)
    return [
        *build_pin_routes(pool, model, match, options, parent_route, template),
        build_model_route(pool, model, match, options, parent_route, template),
    ]


def catch_all_metadata(pool: PoolPlan, role: str, eg_route: str | None = None) -> dict[str, object]:
    values: dict[str, object] = {
        MetadataKey.ROLE: role,
        MetadataKey.POOL_NAMESPACE: pool.namespace,
        MetadataKey.POOL_NAME: pool.name,
        MetadataKey.SOURCE: pool.source,
    }
    if eg_route is not None:
        values[MetadataKey.EG_ROUTE] = eg_route
    return values


def build_catch_all_route(pool: PoolPlan, options: CompileOptions) -> Route:
    """Attach-to listeners: every request whose model has no InferenceModel goes to the pool cluster."""
    route = Route(name=naming.pool_default_route(pool.namespace, pool.name))
    route.match.prefix = "/"
    route.route.cluster = pool.catch_all_cluster
    route.route.timeout.seconds = ROUTE_TIMEOUT_SECONDS
    apply_pool_settings(route, pool, options)
    metadata.set_ours(route.metadata, catch_all_metadata(pool, Role.CATCH_ALL))
    return route


def models_list_body(model_names: Sequence[str], owner: str) -> str:
    """OpenAI `GET /v1/models` list of the client-facing model names."""
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": owner} for name in sorted(set(model_names))
    ]
    return json.dumps({"object": "list", "data": data}, separators=(",", ":"))


def build_models_list_route(pools: Sequence[PoolPlan], name: str, match: RouteMatch | None = None) -> Route:
    """Direct response with the InferenceModels' modelNames of `pools`."""
    route = Route(name=name)
    if match is not None:
        route.match.CopyFrom(match)
        route.match.ClearField("path_specifier")
    route.match.path = MODELS_LIST_PATH
    method = route.match.headers.add(name=":method")
    method.string_match.exact = "GET"
    names = [m.model_name for pool in pools for m in pool.models if not m.match_any]
    owner = ",".join(f"{p.namespace}/{p.name}" for p in pools)
    route.direct_response.status = 200
    route.direct_response.body.inline_string = models_list_body(names, owner)
    header = route.response_headers_to_add.add()
    header.header.key = "content-type"
    header.header.value = "application/json"
    values: dict[str, object] = {
        MetadataKey.ROLE: Role.MODELS_LIST,
        MetadataKey.SOURCE: ",".join(p.source for p in pools),
    }
    metadata.set_ours(route.metadata, values)
    return route
