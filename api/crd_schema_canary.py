"""CRD schemas of InferenceModelRewrite and InferenceObjective, in both groups (llm-d.ai, x-k8s).

Each group gets its own CRD with one served version, v1alpha2, and the same schema: the two forms are
distinct objects (api/rewrite.py says which wins when both exist), not versions of one.
"""

from __future__ import annotations

from api import crd_schema as c
from api import validation as v
from api.model import GROUP_GA, GROUP_X
from api.rewrite import GROUP_LLMD

Schema = c.Schema


def _pool_ref() -> Schema:
    return c._object(
        "The InferencePool (same namespace) this object applies to.",
        {
            "group": c._group("Group of the pool.", GROUP_GA),
            "kind": c._kind("Kind of the pool.", "InferencePool"),
            "name": c._name("Name of the pool."),
        },
        ("name",),
    )


def _status(kind: str) -> Schema:
    return c._object(f"Observed state of the {kind} (condition Accepted).", {"conditions": c._conditions()})


def _array(description: str, items: Schema, lo: int, hi: int) -> Schema:
    schema: Schema = {"type": "array", "description": description, "maxItems": hi, "items": items}
    if lo:
        schema["minItems"] = lo
    return schema


def rewrite_schema() -> Schema:
    match = c._object(
        "One request match (matches of a rule are ORed).",
        {
            "model": c._object(
                "Matches the body's `model`.",
                {
                    "type": c._string("How to match; only Exact.", enum=v.MATCH_TYPES, default="Exact"),
                    "value": c._string("The model name.", min_len=1, max_len=v.MODEL_NAME_MAX),
                },
                ("value",),
            )
        },
        ("model",),
    )
    target = c._object(
        "A model (or LoRA adapter) the request's `model` is rewritten to, for its share of the traffic.",
        {
            "modelRewrite": c._string("The model name sent on.", min_len=1, max_len=v.MODEL_NAME_MAX),
            "weight": {
                "type": "integer",
                "format": "int32",
                "minimum": v.WEIGHT_MIN_V1ALPHA2,
                "maximum": v.WEIGHT_MAX,
                "description": "Share of the traffic is weight / sum of weights; unset on all: equal.",
            },
        },
        ("modelRewrite",),
    )
    targets = _array("Where matching requests go.", target, 1, v.REWRITE_TARGETS_MAX)
    targets["x-kubernetes-validations"] = [
        {"rule": v.CEL_WEIGHTS_ALL_OR_NONE, "message": v.MSG_TARGET_WEIGHTS_ALL_OR_NONE}
    ]
    rule = c._object(
        "Requests matching any of `matches` (every request when empty) go to `targets`.",
        {
            "matches": _array("Matches, ORed; empty: every request.", match, 0, v.REWRITE_MATCHES_MAX),
            "targets": targets,
        },
        ("targets",),
    )
    spec = c._object(
        "Desired state: ordered rules; an exact match beats a generic rule, then the oldest object wins.",
        {
            "poolRef": _pool_ref(),
            "rules": _array("Ordered rules.", rule, 1, v.REWRITE_RULES_MAX),
        },
        ("poolRef", "rules"),
    )
    return c._root("InferenceModelRewrite", spec, _status("InferenceModelRewrite"))


def objective_schema() -> Schema:
    spec = c._object(
        "Desired state of the objective; requests name it in `x-gateway-inference-objective`.",
        {
            # An int32, said by its bounds: with `format: int32` as well the API server reports an
            # out-of-range value twice, once without a field path.
            "priority": {
                "type": "integer",
                "minimum": v.INT32_MIN,
                "maximum": v.INT32_MAX,
                "description": "Higher is more important; unset is 0; negative is sheddable.",
            },
            "poolRef": _pool_ref(),
        },
        ("poolRef",),
    )
    return c._root("InferenceObjective", spec, _status("InferenceObjective"))


def canary_crds() -> list[Schema]:
    """The four CRDs: each kind in llm-d.ai and in inference.networking.x-k8s.io."""
    rewrite_columns = [
        {"name": "Inference Pool", "type": "string", "jsonPath": ".spec.poolRef.name"},
        c._age(),
    ]
    objective_columns = [
        {"name": "Priority", "type": "integer", "jsonPath": ".spec.priority"},
        {"name": "Inference Pool", "type": "string", "jsonPath": ".spec.poolRef.name"},
        c._age(),
    ]
    out = []
    for group in (GROUP_LLMD, GROUP_X):
        out.append(
            c._crd(
                group,
                "InferenceModelRewrite",
                "inferencemodelrewrites",
                ["infmrw"] if group == GROUP_LLMD else ["xinfmrw"],
                [c._version("v1alpha2", True, rewrite_schema(), rewrite_columns)],
                {},
            )
        )
        out.append(
            c._crd(
                group,
                "InferenceObjective",
                "inferenceobjectives",
                ["infobj"] if group == GROUP_LLMD else ["xinfobj"],
                [c._version("v1alpha2", True, objective_schema(), objective_columns)],
                {},
            )
        )
    return out
