"""Sticky and header-pinned canaries, compiled: weights on a fixed total, hash policy, pin routes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from envoy.config.route.v3.route_components_pb2 import Route
from envoy.extensions.filters.http.lua.v3.lua_pb2 import LuaPerRoute
from hypothesis import given
from hypothesis import strategies as st

from api.canary import ANNOTATION_CANARY_PINS, ANNOTATION_STICKY_KEY, METADATA_PIN, METADATA_STICKY_KEY
from api.contract import MetadataKey, Role
from api.model import InferenceModel
from api.sources.store import Snapshot
from extserver.compile import build_plan, metadata, naming
from extserver.compile.inputs import Condition, Reason
from extserver.compile.plan import TargetPlan
from extserver.compile.sticky import STICKY_TOTAL_WEIGHT, normalised_weights, sticky_entries
from extserver.revisions import gateway_digests
from tests.compile_cases import compile_inputs, load_objects, run_case

POOL = "inference/default/pool"


def _slots(weights: Sequence[int]) -> list[int]:
    """Which entry each slot `hash % total` falls into, as Envoy walks the cumulative weights."""
    out: list[int] = []
    for index, weight in enumerate(weights):
        out.extend([index] * weight)
    return out


def _targets(**weights: int) -> list[TargetPlan]:
    return [TargetPlan(name, w, f"{POOL}/{name}", f"{POOL}/{name}") for name, w in weights.items()]


def _routes(case: str, gateway: str) -> list[Route]:
    result = run_case(case).gateways[gateway]
    return [r for rc in result.routes for vh in rc.virtual_hosts for r in vh.routes]


def test_weights_scale_to_the_fixed_total_exactly() -> None:
    assert normalised_weights([90, 10]) == [9000, 1000]
    assert normalised_weights([1, 1, 1]) == [3334, 3333, 3333]
    assert normalised_weights([1, 2]) == [3333, 6667]
    # A tiny positive weight still gets a slot (the largest pays for it), and the sum stays exact.
    tiny = normalised_weights([1, 1_000_000])
    assert tiny == [1, STICKY_TOTAL_WEIGHT - 1]


@given(st.lists(st.integers(min_value=1, max_value=1_000_000), min_size=1, max_size=10))
def test_weights_always_sum_to_the_total(weights: list[int]) -> None:
    shares = normalised_weights(weights)
    assert sum(shares) == STICKY_TOTAL_WEIGHT
    assert all(s >= 1 for s in shares)
    for weight, share in zip(weights, shares, strict=True):
        assert abs(share - weight * STICKY_TOTAL_WEIGHT / sum(weights)) <= 1 + len(weights)


def test_entries_are_by_target_name_whatever_the_spec_order() -> None:
    forward = sticky_entries(_targets(stable=90, canary=10, unused=0))
    backward = sticky_entries(_targets(unused=0, canary=10, stable=90))
    assert [(t.model, w) for t, w in forward] == [("canary", 1000), ("stable", 9000)]
    assert [(t.model, w) for t, w in backward] == [("canary", 1000), ("stable", 9000)]


@given(
    st.integers(min_value=1, max_value=99),
    st.integers(min_value=1, max_value=99),
    st.sampled_from(["canary", "zz-canary"]),  # the canary sorts before or after the stable target
)
def test_a_weight_change_moves_keys_one_way_only(before: int, after: int, canary: str) -> None:
    """Every slot that changes owner moves toward the target whose weight grew, and no more move than
    the weight difference."""
    low, high = sorted((before, after))
    old = sticky_entries(_targets(**{"stable": 100 - low, canary: low}))
    new = sticky_entries(_targets(**{"stable": 100 - high, canary: high}))
    names_old, names_new = [t.model for t, _ in old], [t.model for t, _ in new]
    moved = [
        (names_old[a], names_new[b])
        for a, b in zip(_slots([w for _, w in old]), _slots([w for _, w in new]), strict=True)
        if names_old[a] != names_new[b]
    ]
    assert all(move == ("stable", canary) for move in moved)
    assert len(moved) == (high - low) * STICKY_TOTAL_WEIGHT // 100


def test_sticky_route_hashes_on_the_key_with_weights_on_the_fixed_total() -> None:
    routes = {r.name: r for r in _routes("sticky-canary", "default/inference-gateway")}
    chat = routes["inference/default/chat"]
    weighted = chat.route.weighted_clusters
    assert weighted.use_hash_policy.value is True
    assert [(c.name, c.weight.value) for c in weighted.clusters] == [
        (f"{POOL}/llama-3-8b", 9000),
        (f"{POOL}/llama-3-8b-ft", 1000),
    ]
    (policy,) = chat.route.hash_policy
    assert policy.header.header_name == "x-session-id"
    ours = metadata.ours(chat.metadata) or {}
    assert ours[METADATA_STICKY_KEY] == "header:x-session-id"
    # The metadata keeps the user's weights.
    assert [(t["target_model"], t["weight"]) for t in ours[MetadataKey.TARGETS]] == [
        ("llama-3-8b", 90),
        ("llama-3-8b-ft", 10),
        ("llama-3-8b-next", 0),
    ]
    (cookie,) = routes["inference/default/summary"].route.hash_policy
    assert cookie.cookie.name == "session" and not cookie.cookie.HasField("ttl")


def test_pins_come_before_the_weighted_route_with_its_settings() -> None:
    routes = _routes("sticky-canary", "default/inference-gateway")
    names = [r.name for r in routes]
    weighted_at = names.index("inference/default/chat")
    assert names[weighted_at - 2 : weighted_at] == [
        "inference/default/chat/pin/0",
        "inference/default/chat/pin/1",
    ]
    weighted = routes[weighted_at]
    for index, (header, value, target) in enumerate(
        [("x-canary", "always", "llama-3-8b-ft"), ("x-user-group", "staff", "llama-3-8b-next")]
    ):
        pin = routes[weighted_at - 2 + index]
        assert pin.route.cluster == f"{POOL}/{target}"
        assert list(pin.match.dynamic_metadata) == list(weighted.match.dynamic_metadata)
        (match,) = pin.match.headers
        assert (match.name, match.string_match.exact) == (header, value)
        assert set(pin.typed_per_filter_config) == set(weighted.typed_per_filter_config)
        # FailOpen: the route's Lua rewrites `model` to the pinned target, as a weighted entry does.
        lua = LuaPerRoute()
        assert pin.typed_per_filter_config[naming.LUA_FILTER].Unpack(lua)
        assert f'local target = "\\"{target}\\""' in lua.source_code.inline_string
        entries = {c.name: c for c in weighted.route.weighted_clusters.clusters}
        if f"{POOL}/{target}" in entries:  # weight 0 has no entry
            entry = entries[f"{POOL}/{target}"].typed_per_filter_config[naming.LUA_FILTER]
            assert entry == pin.typed_per_filter_config[naming.LUA_FILTER]
        ours = metadata.ours(pin.metadata) or {}
        assert ours[MetadataKey.ROLE] == Role.MODEL_ROUTE
        assert ours[MetadataKey.MODEL_NAME] == "chat"
        assert ours[MetadataKey.CRITICALITY] == "Critical"
        assert [t["target_model"] for t in ours[MetadataKey.TARGETS]] == [target]
        assert ours[METADATA_PIN] == {"header": header, "value": value, "target": target}


def test_pins_under_an_httproute_keep_its_match() -> None:
    routes = _routes("backendref-sticky-canary", "ai/gw")
    eg_name = "httproute/ai/llm/rule/0/match/0/api_example_com"
    names = [r.name for r in routes]
    assert names[names.index(eg_name) - 2 : names.index(eg_name) + 1] == [
        f"{eg_name}/inference/ai/chat/pin/0",
        f"{eg_name}/inference/ai/chat",
        eg_name,
    ]
    pin = routes[names.index(f"{eg_name}/inference/ai/chat/pin/0")]
    assert pin.match.path_separated_prefix == "/v1"
    assert pin.route.cluster == "inference/ai/pool/llama-3-8b-ft"
    weighted = routes[names.index(f"{eg_name}/inference/ai/chat")]
    assert [c.weight.value for c in weighted.route.weighted_clusters.clusters] == [8000, 2000]


def test_invalid_annotations_leave_the_plain_split_and_a_condition() -> None:
    inputs, _ = compile_inputs(load_objects("sticky-canary"))
    plan = build_plan(inputs)
    broken = [p for p in plan.problems if p.name == "broken"]
    assert {(p.condition_type, p.reason) for p in broken} == {
        (Condition.ANNOTATIONS_VALID, Reason.INVALID_ANNOTATION)
    }
    messages = " ".join(p.message for p in broken)
    assert ANNOTATION_STICKY_KEY in messages and ANNOTATION_CANARY_PINS in messages
    assert all(p.condition_type != Condition.ACCEPTED for p in plan.problems)
    routes = {r.name: r for r in _routes("sticky-canary", "default/inference-gateway")}
    route = routes["inference/default/broken"]
    assert not route.route.hash_policy
    assert not route.route.weighted_clusters.HasField("use_hash_policy")
    assert [c.weight.value for c in route.route.weighted_clusters.clusters] == [50, 50]
    assert not any(name.startswith("inference/default/broken/pin/") for name in routes)


def test_a_canary_annotation_edit_changes_the_revision_digest() -> None:
    """Annotations bump no generation, yet they are compiled: EG must re-translate when they change."""
    inputs, _ = compile_inputs(load_objects("sticky-canary"))
    (pool,) = inputs.pools

    def digest(models: Sequence[InferenceModel]) -> str:
        snapshot = Snapshot(pools={pool.key: pool}, models={m.key: m for m in models})
        return gateway_digests(snapshot, {})[("default", "inference-gateway")]

    def annotated(model: InferenceModel, extra: tuple[tuple[str, str], ...]) -> InferenceModel:
        return replace(model, meta=replace(model.meta, annotations=model.meta.annotations + extra))

    original = digest(inputs.models)
    unrelated = [annotated(m, (("example.com/note", "x"),)) for m in inputs.models]
    assert digest(unrelated) == original
    edited = [
        replace(m, meta=replace(m.meta, annotations=((ANNOTATION_STICKY_KEY, "cookie:other"),)))
        if m.meta.name == "chat"
        else m
        for m in inputs.models
    ]
    assert digest(edited) != original
