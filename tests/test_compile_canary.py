"""InferenceModelRewrite and InferenceObjective in the compiler: same split as an InferenceModel,
precedence, objective variants, conflicts and status conditions."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from envoy.config.route.v3.route_components_pb2 import Route
from envoy.config.route.v3.route_pb2 import RouteConfiguration

from api.contract import HEADER_INFERENCE_OBJECTIVE, METADATA_NAMESPACE, MetadataKey
from api.model import V1ALPHA2
from api.parse import parse_object
from api.rewrite import LLMD_V1ALPHA2, InferenceModelRewrite, InferenceObjective
from extserver.compile import build_plan, compile_translation
from extserver.compile.inputs import CompileInputs, Condition, Reason
from extserver.eg.standin import build_eg_xds_by_gateway
from extserver.hooks.status import StatusReport, condition_updates
from tests.compile_cases import OPTIONS, apply_hooks, compile_inputs, run_case

SAMPLES = Path(__file__).resolve().parent.parent / "config" / "samples"
POOL = {"group": "inference.networking.x-k8s.io", "kind": "InferencePool", "name": "vllm-llama2-7b-pool"}


def _docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((SAMPLES / name).read_text()) if isinstance(d, dict)]


def _seed_with_rewrite() -> list[dict[str, Any]]:
    """The seed's LoRA canary with its InferenceModel replaced by the rewrite sample."""
    seed = [d for d in _docs("seed-lora-canary.yaml") if d["kind"] != "InferenceModel"]
    rewrite = [d for d in _docs("rewrite-lora-canary.yaml") if d["kind"] == "InferenceModelRewrite"]
    return seed + rewrite


def _compile(objects: Sequence[dict[str, Any]]) -> tuple[list[Any], list[RouteConfiguration]]:
    inputs, invalid = compile_inputs(objects)
    assert invalid == []
    eg = build_eg_xds_by_gateway(objects)["default/inference-gateway"]
    apply_hooks(eg, inputs)
    out = compile_translation(eg.clusters, eg.listeners, eg.routes, inputs, OPTIONS)
    return list(out.clusters), list(out.routes)


def _routes(configs: Sequence[RouteConfiguration]) -> list[Route]:
    return [r for rc in configs for vh in rc.virtual_hosts for r in vh.routes]


def _without_source(route: Route) -> bytes:
    """A route with its name and our source field cleared: what must match between the two kinds."""
    copy = Route()
    copy.CopyFrom(route)
    copy.name = ""
    fields = copy.metadata.filter_metadata[METADATA_NAMESPACE].fields
    del fields[MetadataKey.SOURCE]
    return copy.SerializeToString(deterministic=True)


def test_the_seed_lora_canary_as_a_rewrite_compiles_to_the_same_split() -> None:
    im_clusters, im_routes = _compile(_docs("seed-lora-canary.yaml"))
    rw_clusters, rw_routes = _compile(_seed_with_rewrite())
    (im_route,) = [r for r in _routes(im_routes) if r.name == "inference/default/inferencemodel-sample"]
    (rw_route,) = [r for r in _routes(rw_routes) if "lora-request-canary" in r.name]
    weighted = [(c.name, c.weight.value) for c in rw_route.route.weighted_clusters.clusters]
    assert weighted == [
        ("inference/default/vllm-llama2-7b-pool/tweet-summary", 50),
        ("inference/default/vllm-llama2-7b-pool/sql-lora", 50),
    ]
    # Same match, weighted clusters (with their FailOpen Lua rewrites), filters and metadata.
    assert _without_source(rw_route) == _without_source(im_route)
    assert sorted(c.name for c in rw_clusters) == sorted(c.name for c in im_clusters)
    source = rw_route.metadata.filter_metadata[METADATA_NAMESPACE].fields[MetadataKey.SOURCE].string_value
    assert source == "InferenceModelRewrite default/lora-request-canary rules[0]"


def _rewrite(name: str, created: str, rules: list[dict[str, Any]], version: str = LLMD_V1ALPHA2) -> Any:
    meta = {"name": name, "namespace": "default", "creationTimestamp": created}
    spec = {"poolRef": POOL, "rules": rules}
    return parse_object(
        {"apiVersion": version, "kind": "InferenceModelRewrite", "metadata": meta, "spec": spec}
    )


def _inputs(*objects: Any) -> CompileInputs:
    pools, _ = compile_inputs([d for d in _docs("seed-lora-canary.yaml") if d["kind"] == "InferencePool"])
    return CompileInputs(
        pools.pools,
        tuple(o for o in objects if not isinstance(o, InferenceModelRewrite | InferenceObjective)),
        rewrites=tuple(o for o in objects if isinstance(o, InferenceModelRewrite)),
        objectives=tuple(o for o in objects if isinstance(o, InferenceObjective)),
    )


def _served(inputs: CompileInputs) -> list[tuple[str, str, list[str]]]:
    (pool,) = build_plan(inputs).pools
    return [(m.model_name or "*", m.source, [t.model for t in m.targets]) for m in pool.models]


def _exact(model: str, *targets: str) -> dict[str, Any]:
    return {"matches": [{"model": {"value": model}}], "targets": [{"modelRewrite": t} for t in targets]}


def _generic(*targets: str) -> dict[str, Any]:
    return {"targets": [{"modelRewrite": t} for t in targets]}


def test_precedence_exact_then_oldest_then_first_rule() -> None:
    old = _rewrite(
        "old", "2025-01-01T00:00:00Z", [_generic("g-old"), _exact("m", "old-1"), _exact("m", "old-2")]
    )
    new = _rewrite("new", "2025-02-01T00:00:00Z", [_exact("m", "new"), _exact("n", "new"), _generic("g-new")])
    assert _served(_inputs(new, old)) == [
        # m: the oldest object, and its first rule naming m; n: only the newer object names it.
        ("m", "InferenceModelRewrite default/old rules[1]", ["old-1"]),
        ("n", "InferenceModelRewrite default/new rules[1]", ["new"]),
        # The generic rule comes last (exact beats generic), the oldest object's.
        ("*", "InferenceModelRewrite default/old rules[0]", ["g-old"]),
    ]
    problems = build_plan(_inputs(new, old)).problems
    assert problems == ()  # shadowed rules are precedence, not conflicts


def test_the_llm_d_form_wins_over_the_older_x_k8s_form_of_one_name() -> None:
    x_k8s = _rewrite("r", "2024-01-01T00:00:00Z", [_exact("m", "x")], version=V1ALPHA2)
    llm_d = _rewrite("r", "2025-01-01T00:00:00Z", [_exact("m", "llm-d")])
    inputs = _inputs(x_k8s, llm_d)
    assert _served(inputs) == [("m", "InferenceModelRewrite default/r rules[0]", ["llm-d"])]
    (problem,) = build_plan(inputs).problems
    assert (problem.reason, problem.api_version) == (Reason.SUPERSEDED, V1ALPHA2)
    report = StatusReport((), (), build_plan(inputs).problems, {}, canary=(x_k8s, llm_d))
    conditions = {
        (u.api_version, u.status, u.reason) for u in condition_updates(report) if u.type == Condition.ACCEPTED
    }
    assert conditions == {(V1ALPHA2, "False", Reason.SUPERSEDED), (LLMD_V1ALPHA2, "True", Condition.ACCEPTED)}


def test_objective_variants_precede_the_plain_route_and_a_stranger_header_falls_through() -> None:
    objective = parse_object(
        {
            "apiVersion": LLMD_V1ALPHA2,
            "kind": "InferenceObjective",
            "metadata": {"name": "batch", "namespace": "default"},
            "spec": {"priority": -1, "poolRef": POOL},
        }
    )
    objects = [*_seed_with_rewrite(), {**_docs("rewrite-lora-canary.yaml")[1]}]
    _, configs = _compile(objects)
    names = [r.name for r in _routes(configs) if "lora-request-canary" in r.name]
    assert names == [
        "inference/default/lora-request-canary/rules/0/model/lora-request/objective/batch",
        "inference/default/lora-request-canary/rules/0/model/lora-request",
    ]
    variant, plain = [r for r in _routes(configs) if "lora-request-canary" in r.name]
    (header,) = variant.match.headers
    assert (header.name, header.string_match.exact) == (HEADER_INFERENCE_OBJECTIVE, objective.meta.name)
    assert not plain.match.headers  # any other objective header value reaches the plain route
    fields = variant.metadata.filter_metadata[METADATA_NAMESPACE].fields
    assert fields[MetadataKey.PRIORITY].number_value == -1
    assert fields[MetadataKey.CRITICALITY].string_value == "Sheddable"
    assert variant.route.weighted_clusters == plain.route.weighted_clusters


def test_every_invalid_case_of_the_golden_case_gets_its_condition() -> None:
    result = run_case("rewrite-objectives")
    inputs = result.inputs
    (gateway,) = result.gateways.values()
    report = StatusReport(
        inputs.pools, inputs.models, tuple(gateway.problems), {}, canary=inputs.rewrites + inputs.objectives
    )
    got = {
        (u.kind, u.name, u.api_version): (u.status, u.reason)
        for u in condition_updates(report)
        if u.kind != "InferencePool" and u.type == Condition.ACCEPTED
    }
    false = "False"
    assert got == {
        ("InferenceModel", "chat", V1ALPHA2): ("True", Condition.ACCEPTED),
        ("InferenceModel", "lora-im", V1ALPHA2): (false, Reason.MODEL_NAME_IN_USE),
        ("InferenceModelRewrite", "canary", LLMD_V1ALPHA2): ("True", Condition.ACCEPTED),
        ("InferenceModelRewrite", "canary", V1ALPHA2): (false, Reason.SUPERSEDED),
        ("InferenceModelRewrite", "later", LLMD_V1ALPHA2): ("True", Condition.ACCEPTED),
        ("InferenceModelRewrite", "chat-rewrite", LLMD_V1ALPHA2): (false, Reason.MODEL_NAME_IN_USE),
        ("InferenceModelRewrite", "no-pool", LLMD_V1ALPHA2): (false, Reason.POOL_NOT_FOUND),
        ("InferenceModelRewrite", "not-a-pool", LLMD_V1ALPHA2): (false, Reason.UNSUPPORTED_POOL_REF),
        ("InferenceModelRewrite", "dup-targets", LLMD_V1ALPHA2): (false, Reason.DUPLICATE_TARGET),
        ("InferenceModelRewrite", "reserved-target", LLMD_V1ALPHA2): (false, Reason.RESERVED_TARGET_NAME),
        ("InferenceObjective", "batch", LLMD_V1ALPHA2): ("True", Condition.ACCEPTED),
        ("InferenceObjective", "batch", V1ALPHA2): (false, Reason.SUPERSEDED),
        ("InferenceObjective", "interactive", LLMD_V1ALPHA2): ("True", Condition.ACCEPTED),
        ("InferenceObjective", "lost", LLMD_V1ALPHA2): (false, Reason.POOL_NOT_FOUND),
    }


def test_a_rewrite_takes_the_canary_annotations_too() -> None:
    """sticky-key and canary-pins on an InferenceModelRewrite shape each of its rules' routes."""
    objects = _seed_with_rewrite()
    rewrite = next(d for d in objects if d["kind"] == "InferenceModelRewrite")
    target = rewrite["spec"]["rules"][0]["targets"][0]["modelRewrite"]
    rewrite["metadata"]["annotations"] = {
        "extension.inference-gateway.io/sticky-key": "header:x-session-id",
        "extension.inference-gateway.io/canary-pins": (
            f"- {{header: x-canary, value: always, target: {target}}}\n"
        ),
    }
    _, routes = _compile(objects)
    weighted = [r for r in _routes(routes) if r.route.weighted_clusters.clusters]
    assert weighted and all(r.route.weighted_clusters.use_hash_policy.value for r in weighted)
    assert all(r.route.hash_policy[0].header.header_name == "x-session-id" for r in weighted)
    pins = [r for r in _routes(routes) if "/pin/" in r.name]
    assert len(pins) == len(weighted) and all(r.route.cluster.endswith(f"/{target}") for r in pins)
