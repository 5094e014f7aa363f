"""Kubernetes dicts <-> InferenceRollout: defaults and validation, the CRD's rules (api/validation.py)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from api import validation as v
from api.model import ObjectMeta
from api.rollout import (
    ANNOTATION_PROMOTE,
    KIND_MODEL,
    KIND_ROLLOUT,
    PROMOTE_VALUES,
    ROLLOUT_API_VERSION,
    TARGET_GROUPS,
    Analysis,
    InferenceRollout,
    MetricLimit,
    PrometheusSource,
    RolloutTarget,
    Step,
    Webhook,
)
from api.validation import FieldErrors

SPEC_FIELDS = ("target", "stable", "candidate", "steps", "analysis", "paused", "abort")
ANALYSIS_FIELDS = (
    "metrics", "alpha", "minSamples", "minRequests", "maxLoadImbalance", "failureLimit",
    "passesPerStep", "inconclusiveLimit", "inconclusiveDeadline", "webhook", "prometheus",
)  # fmt: skip
_DEFAULTS = Analysis()


def owns_rollout(obj: Mapping[str, Any]) -> bool:
    return obj.get("kind") == KIND_ROLLOUT and obj.get("apiVersion") == ROLLOUT_API_VERSION


def _boolean(obj: Mapping[str, Any], key: str, path: str, errors: FieldErrors) -> bool | None:
    value = obj.get(key)
    if value is None or isinstance(value, bool):
        return value
    errors.add(path, f"must be a boolean, got {v._type_name(value)}")
    return None


def _number(
    obj: Mapping[str, Any], key: str, path: str, errors: FieldErrors, lo: float, hi: float | None = None
) -> float | None:
    """A JSON number (an integer is one too) within [lo, hi]."""
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        errors.add(path, f"must be a number, got {v._type_name(value)}")
        return None
    if value < lo or (hi is not None and value > hi):
        errors.add(
            path, f"must be between {lo:g} and {hi:g}" if hi is not None else f"must be at least {lo:g}"
        )
        return None
    return float(value)


def _duration(
    obj: Mapping[str, Any], key: str, path: str, errors: FieldErrors, required: bool = False
) -> float | None:
    text = errors.string(obj, key, path, required=required, pattern=v.DURATION_PATTERN)
    return None if text is None else v.duration_seconds(text)


def _count(obj: Mapping[str, Any], key: str, path: str, errors: FieldErrors, hi: int, default: int) -> int:
    value = errors.integer(obj, key, path, minimum=1, maximum=hi)
    return default if value is None else value


def parse_rollout(meta: ObjectMeta, spec: Mapping[str, Any], errors: FieldErrors) -> InferenceRollout | None:
    errors.unknown_fields(spec, SPEC_FIELDS, "spec")
    promote = dict(meta.annotations).get(ANNOTATION_PROMOTE)
    if promote is not None and promote not in PROMOTE_VALUES:
        errors.add(
            f"metadata.annotations[{ANNOTATION_PROMOTE}]",
            f"must be one of {', '.join(repr(p) for p in PROMOTE_VALUES)}, got {promote!r}",
        )
    target = _target(spec, errors)
    stable = errors.string(spec, "stable", "spec.stable", required=True, min_len=1, max_len=v.MODEL_NAME_MAX)
    candidate = errors.string(
        spec, "candidate", "spec.candidate", required=True, min_len=1, max_len=v.MODEL_NAME_MAX
    )
    if stable is not None and stable == candidate:
        errors.add("spec", v.MSG_STABLE_NOT_CANDIDATE)
    steps = _steps(spec, errors)
    raw = errors.mapping(spec, "analysis", "spec.analysis", required=False)
    analysis = _analysis(raw, errors) if raw is not None else _DEFAULTS
    paused = _boolean(spec, "paused", "spec.paused", errors)
    abort = _boolean(spec, "abort", "spec.abort", errors)
    if errors or target is None or stable is None or candidate is None:
        return None
    return InferenceRollout(
        ROLLOUT_API_VERSION, meta, target, stable, candidate, steps, analysis, bool(paused), bool(abort)
    )


def _target(spec: Mapping[str, Any], errors: FieldErrors) -> RolloutTarget | None:
    path = "spec.target"
    ref = errors.mapping(spec, "target", path, required=True)
    if ref is None:
        return None
    errors.unknown_fields(ref, ("group", "kind", "name", "rule"), path)
    kind = errors.string(ref, "kind", f"{path}.kind", required=True, enum=v.ROLLOUT_TARGET_KINDS)
    name = errors.string(ref, "name", f"{path}.name", required=True, min_len=1, max_len=v.OBJECT_NAME_MAX)
    group = errors.string(ref, "group", f"{path}.group", max_len=v.GROUP_MAX, pattern=v.GROUP_PATTERN)
    rule = errors.integer(ref, "rule", f"{path}.rule", minimum=0, maximum=v.ROLLOUT_RULE_MAX)
    if kind is None or name is None:
        return None
    if (ref.get("rule") is None) != (kind == KIND_MODEL):
        errors.add(path, v.MSG_RULE_WHERE_NEEDED)
    groups = TARGET_GROUPS[kind]
    if group is not None and group not in groups:
        errors.add(path, v.MSG_TARGET_GROUP)
    return RolloutTarget(kind, name, group if group is not None else groups[0], rule)


def _steps(spec: Mapping[str, Any], errors: FieldErrors) -> tuple[Step, ...]:
    items = spec.get("steps")
    if items is None:
        errors.add("spec.steps", "required")
        return ()
    if not isinstance(items, list):
        errors.add("spec.steps", "must be a list")
        return ()
    if not 1 <= len(items) <= v.ROLLOUT_STEPS_MAX:
        errors.add("spec.steps", f"must have between 1 and {v.ROLLOUT_STEPS_MAX} items")
        return ()
    steps = [s for i, item in enumerate(items) if (s := _step(item, f"spec.steps[{i}]", errors)) is not None]
    if len(steps) == len(items) and any(a.weight >= b.weight for a, b in itertools.pairwise(steps)):
        errors.add("spec.steps", v.MSG_STEPS_INCREASE)
    return tuple(steps)


def _step(item: Any, path: str, errors: FieldErrors) -> Step | None:
    if not isinstance(item, Mapping):
        errors.add(path, "must be an object")
        return None
    errors.unknown_fields(item, ("weight", "pause", "analysis"), path)
    weight = errors.integer(item, "weight", f"{path}.weight", required=True, minimum=0, maximum=100)
    pause = errors.mapping(item, "pause", f"{path}.pause", required=False)
    pause_s = interval = None
    if pause is not None:
        errors.unknown_fields(pause, ("duration",), f"{path}.pause")
        pause_s = _duration(pause, "duration", f"{path}.pause.duration", errors)
    analysis = errors.mapping(item, "analysis", f"{path}.analysis", required=False)
    if analysis is not None:
        errors.unknown_fields(analysis, ("interval",), f"{path}.analysis")
        interval = _duration(analysis, "interval", f"{path}.analysis.interval", errors, required=True)
    if weight is None:
        return None
    if pause is not None and analysis is not None:
        errors.add(path, v.MSG_STEP_ONE_ACTION)
    elif pause is None and analysis is None and weight != 100:
        errors.add(path, v.MSG_STEP_NEEDS_ACTION)
    elif analysis is not None and not 1 <= weight <= 99:
        errors.add(path, v.MSG_ANALYSIS_WEIGHT)
    return Step(weight, pause is not None, pause_s, interval)


def _analysis(raw: Mapping[str, Any], errors: FieldErrors) -> Analysis:
    path = "spec.analysis"
    errors.unknown_fields(raw, ANALYSIS_FIELDS, path)
    alpha = _number(raw, "alpha", f"{path}.alpha", errors, v.ALPHA_MIN, v.ALPHA_MAX)
    imbalance = _number(raw, "maxLoadImbalance", f"{path}.maxLoadImbalance", errors, 1.0, 100.0)
    webhook = errors.mapping(raw, "webhook", f"{path}.webhook", required=False)
    prometheus = errors.mapping(raw, "prometheus", f"{path}.prometheus", required=False)
    return Analysis(
        metrics=_metrics(raw, errors),
        alpha=_DEFAULTS.alpha if alpha is None else alpha,
        min_samples=_count(
            raw, "minSamples", f"{path}.minSamples", errors, v.COUNT_MAX, _DEFAULTS.min_samples
        ),
        min_requests=_count(
            raw, "minRequests", f"{path}.minRequests", errors, v.COUNT_MAX, _DEFAULTS.min_requests
        ),
        max_load_imbalance=_DEFAULTS.max_load_imbalance if imbalance is None else imbalance,
        failure_limit=_count(
            raw, "failureLimit", f"{path}.failureLimit", errors, v.LIMIT_MAX, _DEFAULTS.failure_limit
        ),
        passes_per_step=_count(
            raw, "passesPerStep", f"{path}.passesPerStep", errors, v.LIMIT_MAX, _DEFAULTS.passes_per_step
        ),
        inconclusive_limit=_count(
            raw,
            "inconclusiveLimit",
            f"{path}.inconclusiveLimit",
            errors,
            v.LIMIT_MAX,
            _DEFAULTS.inconclusive_limit,
        ),
        inconclusive_deadline_s=_duration(
            raw, "inconclusiveDeadline", f"{path}.inconclusiveDeadline", errors
        ),
        webhook=_webhook(webhook, f"{path}.webhook", errors) if webhook is not None else None,
        prometheus=_prometheus(prometheus, f"{path}.prometheus", errors) if prometheus is not None else None,
    )


def _metrics(raw: Mapping[str, Any], errors: FieldErrors) -> tuple[MetricLimit, ...]:
    path = "spec.analysis.metrics"
    items = raw.get("metrics")
    if items is None:
        return ()
    if not isinstance(items, list):
        errors.add(path, "must be a list")
        return ()
    if not 1 <= len(items) <= v.ROLLOUT_METRICS_MAX:
        errors.add(path, f"must have between 1 and {v.ROLLOUT_METRICS_MAX} items")
        return ()
    out: list[MetricLimit] = []
    for i, item in enumerate(items):
        mpath = f"{path}[{i}]"
        if not isinstance(item, Mapping):
            errors.add(mpath, "must be an object")
            continue
        errors.unknown_fields(
            item, ("name", "relativeLimit", "absoluteLimit", "critical", "minIncrease"), mpath
        )
        name = errors.string(item, "name", f"{mpath}.name", required=True, enum=v.METRIC_NAMES)
        relative = _number(item, "relativeLimit", f"{mpath}.relativeLimit", errors, 1.0, 1000.0)
        absolute = _number(item, "absoluteLimit", f"{mpath}.absoluteLimit", errors, 1e-6, 3600.0)
        critical = _boolean(item, "critical", f"{mpath}.critical", errors)
        increase = _number(item, "minIncrease", f"{mpath}.minIncrease", errors, 0.0, 1.0)
        if name in v.RATE_METRICS and absolute is not None and absolute >= 1.0:
            errors.add(mpath, v.MSG_RATE_ABSOLUTE)
        if name is not None:
            out.append(MetricLimit(name, relative, absolute, bool(critical), increase))
    names = [m.name for m in out]
    if len(set(names)) != len(names):
        errors.add(path, v.MSG_UNIQUE_METRICS)
    return tuple(out)


def _webhook(raw: Mapping[str, Any], path: str, errors: FieldErrors) -> Webhook | None:
    errors.unknown_fields(raw, ("url", "timeout"), path)
    url = errors.string(
        raw, "url", f"{path}.url", required=True, max_len=v.WEBHOOK_URL_MAX, pattern=v.URL_PATTERN
    )
    timeout = _duration(raw, "timeout", f"{path}.timeout", errors)
    if url is None:
        return None
    return Webhook(url, 10.0 if timeout is None else timeout)


def _prometheus(raw: Mapping[str, Any], path: str, errors: FieldErrors) -> PrometheusSource | None:
    errors.unknown_fields(raw, ("address", "queries"), path)
    address = errors.string(
        raw, "address", f"{path}.address", required=True, max_len=v.WEBHOOK_URL_MAX, pattern=v.URL_PATTERN
    )
    queries = errors.mapping(raw, "queries", f"{path}.queries", required=False) or {}
    errors.unknown_fields(queries, v.METRIC_NAMES, f"{path}.queries")
    found: list[tuple[str, str]] = []
    for name in v.METRIC_NAMES:
        query = errors.string(queries, name, f"{path}.queries.{name}", min_len=1, max_len=v.PROMQL_MAX)
        if query is not None:
            found.append((name, query))
    return None if address is None else PrometheusSource(address, tuple(found))


def rollout_spec(obj: InferenceRollout) -> dict[str, Any]:
    """The spec in Kubernetes form, defaults written out (parse_rollout reads it back to `obj`)."""
    t = obj.target
    target: dict[str, Any] = {"group": t.group, "kind": t.kind, "name": t.name}
    if t.rule is not None:
        target["rule"] = t.rule
    return {
        "target": target,
        "stable": obj.stable,
        "candidate": obj.candidate,
        "steps": [_step_dict(s) for s in obj.steps],
        "analysis": _analysis_dict(obj.analysis),
        "paused": obj.paused,
        "abort": obj.abort,
    }


def _step_dict(step: Step) -> dict[str, Any]:
    out: dict[str, Any] = {"weight": step.weight}
    if step.pause:
        out["pause"] = {} if step.pause_s is None else {"duration": v.format_duration(step.pause_s)}
    if step.analysis_interval_s is not None:
        out["analysis"] = {"interval": v.format_duration(step.analysis_interval_s)}
    return out


def _analysis_dict(a: Analysis) -> dict[str, Any]:
    out: dict[str, Any] = {
        "alpha": a.alpha,
        "minSamples": a.min_samples,
        "minRequests": a.min_requests,
        "maxLoadImbalance": a.max_load_imbalance,
        "failureLimit": a.failure_limit,
        "passesPerStep": a.passes_per_step,
        "inconclusiveLimit": a.inconclusive_limit,
    }
    if a.metrics:
        out["metrics"] = [_metric_dict(m) for m in a.metrics]
    if a.inconclusive_deadline_s is not None:
        out["inconclusiveDeadline"] = v.format_duration(a.inconclusive_deadline_s)
    if a.webhook is not None:
        out["webhook"] = {"url": a.webhook.url, "timeout": v.format_duration(a.webhook.timeout_s)}
    if a.prometheus is not None:
        out["prometheus"] = {"address": a.prometheus.address, "queries": dict(a.prometheus.queries)}
    return out


def _metric_dict(m: MetricLimit) -> dict[str, Any]:
    out: dict[str, Any] = {"name": m.name, "critical": m.critical}
    limits = (
        ("relativeLimit", m.relative_limit),
        ("absoluteLimit", m.absolute_limit),
        ("minIncrease", m.min_increase),
    )
    for key, value in limits:
        if value is not None:
            out[key] = value
    return out
