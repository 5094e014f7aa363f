"""Kubernetes dicts <-> InferenceModelRewrite / InferenceObjective (both groups): defaults, validation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from api import validation as v
from api.model import GROUP_GA, ObjectMeta
from api.rewrite import (
    CANARY_API_VERSIONS,
    KIND_OBJECTIVE,
    KIND_REWRITE,
    MATCH_EXACT,
    CanaryPoolRef,
    InferenceModelRewrite,
    InferenceObjective,
    RewriteRule,
    RewriteTarget,
)
from api.validation import FieldErrors

CANARY_KINDS = (KIND_REWRITE, KIND_OBJECTIVE)


def owns_canary(obj: Mapping[str, Any]) -> bool:
    return obj.get("kind") in CANARY_KINDS and obj.get("apiVersion") in CANARY_API_VERSIONS


def parse_canary(
    api_version: str, kind: str, meta: ObjectMeta, spec: Mapping[str, Any], errors: FieldErrors
) -> InferenceModelRewrite | InferenceObjective | None:
    if kind == KIND_REWRITE:
        return _parse_rewrite(api_version, meta, spec, errors)
    return _parse_objective(api_version, meta, spec, errors)


def _pool_ref(spec: Mapping[str, Any], errors: FieldErrors) -> CanaryPoolRef | None:
    ref = errors.mapping(spec, "poolRef", "spec.poolRef", required=True)
    if ref is None:
        return None
    path = "spec.poolRef"
    errors.unknown_fields(ref, ("group", "kind", "name"), path)
    name = errors.string(ref, "name", f"{path}.name", required=True, min_len=1, max_len=v.OBJECT_NAME_MAX)
    group = errors.string(ref, "group", f"{path}.group", max_len=v.GROUP_MAX, pattern=v.GROUP_PATTERN)
    kind = errors.string(ref, "kind", f"{path}.kind", min_len=1, max_len=v.KIND_MAX, pattern=v.KIND_PATTERN)
    if name is None:
        return None
    return CanaryPoolRef(name, GROUP_GA if group is None else group, kind or "InferencePool")


def _parse_objective(
    api_version: str, meta: ObjectMeta, spec: Mapping[str, Any], errors: FieldErrors
) -> InferenceObjective | None:
    errors.unknown_fields(spec, ("priority", "poolRef"), "spec")
    priority = errors.integer(spec, "priority", "spec.priority", minimum=v.INT32_MIN, maximum=v.INT32_MAX)
    pool_ref = _pool_ref(spec, errors)
    if errors or pool_ref is None:
        return None
    return InferenceObjective(api_version, meta, pool_ref, priority)


def _items(obj: Mapping[str, Any], key: str, path: str, errors: FieldErrors, lo: int, hi: int) -> list[Any]:
    """A list field with its length rule; [] (and an error where due) when absent or invalid."""
    items = obj.get(key)
    if items is None:
        if lo > 0:
            errors.add(path, "required")
        return []
    if not isinstance(items, list):
        errors.add(path, "must be a list")
        return []
    if not lo <= len(items) <= hi:
        errors.add(path, f"must have between {lo} and {hi} items")
        return []
    return items


def _parse_rewrite(
    api_version: str, meta: ObjectMeta, spec: Mapping[str, Any], errors: FieldErrors
) -> InferenceModelRewrite | None:
    errors.unknown_fields(spec, ("poolRef", "rules"), "spec")
    pool_ref = _pool_ref(spec, errors)
    rules: list[RewriteRule] = []
    for i, item in enumerate(_items(spec, "rules", "spec.rules", errors, 1, v.REWRITE_RULES_MAX)):
        rule = _rule(item, f"spec.rules[{i}]", errors)
        if rule is not None:
            rules.append(rule)
    if errors or pool_ref is None:
        return None
    return InferenceModelRewrite(api_version, meta, pool_ref, tuple(rules))


def _rule(item: Any, path: str, errors: FieldErrors) -> RewriteRule | None:
    if not isinstance(item, Mapping):
        errors.add(path, "must be an object")
        return None
    errors.unknown_fields(item, ("matches", "targets"), path)
    models: list[str] = []
    for j, match in enumerate(_items(item, "matches", f"{path}.matches", errors, 0, v.REWRITE_MATCHES_MAX)):
        model = _match(match, f"{path}.matches[{j}]", errors)
        if model is not None:
            models.append(model)
    targets: list[RewriteTarget] = []
    weighted = 0
    raw_targets = _items(item, "targets", f"{path}.targets", errors, 1, v.REWRITE_TARGETS_MAX)
    for j, target in enumerate(raw_targets):
        tpath = f"{path}.targets[{j}]"
        if not isinstance(target, Mapping):
            errors.add(tpath, "must be an object")
            continue
        errors.unknown_fields(target, ("modelRewrite", "weight"), tpath)
        name = errors.string(
            target,
            "modelRewrite",
            f"{tpath}.modelRewrite",
            required=True,
            min_len=1,
            max_len=v.MODEL_NAME_MAX,
        )
        weight = errors.integer(
            target, "weight", f"{tpath}.weight", minimum=v.WEIGHT_MIN_V1ALPHA2, maximum=v.WEIGHT_MAX
        )
        weighted += target.get("weight") is not None
        if name is not None:
            targets.append(RewriteTarget(name, weight))
    if 0 < weighted < len(raw_targets):
        errors.add(f"{path}.targets", v.MSG_TARGET_WEIGHTS_ALL_OR_NONE)
    return RewriteRule(tuple(models), tuple(targets))


def _match(match: Any, path: str, errors: FieldErrors) -> str | None:
    if not isinstance(match, Mapping):
        errors.add(path, "must be an object")
        return None
    errors.unknown_fields(match, ("model",), path)
    model = errors.mapping(match, "model", f"{path}.model", required=True)
    if model is None:
        return None
    errors.unknown_fields(model, ("type", "value"), f"{path}.model")
    errors.string(model, "type", f"{path}.model.type", enum=v.MATCH_TYPES)
    return errors.string(
        model, "value", f"{path}.model.value", required=True, min_len=1, max_len=v.MODEL_NAME_MAX
    )


def canary_spec(obj: InferenceModelRewrite | InferenceObjective) -> dict[str, Any]:
    """The spec in Kubernetes form (defaults written out)."""
    ref = obj.pool_ref
    pool_ref = {"group": ref.group, "kind": ref.kind, "name": ref.name}
    if isinstance(obj, InferenceObjective):
        spec: dict[str, Any] = {"poolRef": pool_ref}
        if obj.priority is not None:
            spec["priority"] = obj.priority
        return spec
    rules = []
    for rule in obj.rules:
        targets = [
            {"modelRewrite": t.model} if t.weight is None else {"modelRewrite": t.model, "weight": t.weight}
            for t in rule.targets
        ]
        matches = [{"model": {"type": MATCH_EXACT, "value": m}} for m in rule.models]
        rules.append({"matches": matches, "targets": targets} if matches else {"targets": targets})
    return {"poolRef": pool_ref, "rules": rules}
