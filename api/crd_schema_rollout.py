"""CRD schema of InferenceRollout (extension.inference-gateway.io/v1alpha1), from api/validation.py's rules.

Spec rules the parser checks across fields are CEL rules here, placed on the object the parser names in
its error (spec, spec.target, spec.steps[i], spec.steps), so both report the same path.
"""

from __future__ import annotations

from api import crd_schema as c
from api import validation as v
from api.rollout import GROUP_ROLLOUT, KIND_ROLLOUT, Phase

Schema = c.Schema


def _int(description: str, lo: int, hi: int, default: int | None = None) -> Schema:
    schema: Schema = {"type": "integer", "minimum": lo, "maximum": hi, "description": description}
    if default is not None:
        schema["default"] = default
    return schema


def _number(description: str, lo: float, hi: float, default: float | None = None) -> Schema:
    schema: Schema = {"type": "number", "minimum": lo, "maximum": hi, "description": description}
    if default is not None:
        schema["default"] = default
    return schema


def _bool(description: str, default: bool | None = None) -> Schema:
    schema: Schema = {"type": "boolean", "description": description}
    if default is not None:
        schema["default"] = default
    return schema


def _duration(description: str, default: str | None = None) -> Schema:
    return c._string(description, pattern=v.DURATION_PATTERN, default=default)


def _cel(schema: Schema, *rules: tuple[str, str]) -> Schema:
    schema["x-kubernetes-validations"] = [{"rule": rule, "message": message} for rule, message in rules]
    return schema


def _array(description: str, items: Schema, lo: int, hi: int) -> Schema:
    return {"type": "array", "description": description, "minItems": lo, "maxItems": hi, "items": items}


def _target() -> Schema:
    target = c._object(
        "What the rollout moves, in its namespace: an InferenceModel's targetModels, one rule of an "
        "InferenceModelRewrite, or one rule's InferencePool backendRefs of an HTTPRoute.",
        {
            "group": c._string(
                "Group of the target; unset: inference.networking.x-k8s.io (InferenceModel), llm-d.ai "
                "(InferenceModelRewrite), gateway.networking.k8s.io (HTTPRoute).",
                max_len=v.GROUP_MAX,
                pattern=v.GROUP_PATTERN,
            ),
            "kind": c._string("Kind of the target.", enum=v.ROLLOUT_TARGET_KINDS),
            "name": c._name("Name of the target."),
            "rule": _int(
                "Index of the rule moved (InferenceModelRewrite, HTTPRoute).", 0, v.ROLLOUT_RULE_MAX
            ),
        },
        ("kind", "name"),
    )
    return _cel(
        target,
        (v.CEL_RULE_WHERE_NEEDED, v.MSG_RULE_WHERE_NEEDED),
        (v.CEL_TARGET_GROUP, v.MSG_TARGET_GROUP),
    )


def _steps() -> Schema:
    step = c._object(
        "The candidate's weight for this step, then a pause or an analysis before the next step.",
        {
            "weight": _int("The candidate's share in percent; the stable target gets the rest.", 0, 100),
            "pause": c._object(
                "Hold the weight: for `duration`, or (unset) until promoted by hand.",
                {"duration": _duration("How long; unset: until promoted by hand.")},
            ),
            "analysis": c._object(
                "Analyse the candidate against the stable target in windows of `interval`.",
                {"interval": _duration("Length of one analysis window.")},
                ("interval",),
            ),
        },
        ("weight",),
    )
    _cel(
        step,
        (v.CEL_STEP_ONE_ACTION, v.MSG_STEP_ONE_ACTION),
        (v.CEL_STEP_NEEDS_ACTION, v.MSG_STEP_NEEDS_ACTION),
        (v.CEL_ANALYSIS_WEIGHT, v.MSG_ANALYSIS_WEIGHT),
    )
    steps = _array("The steps, in order; weights increase.", step, 1, v.ROLLOUT_STEPS_MAX)
    return _cel(steps, (v.cel_steps_increase(), v.MSG_STEPS_INCREASE))


def _analysis() -> Schema:
    metric = c._object(
        "One metric, compared between candidate and stable target over the same window.",
        {
            "name": c._string("The metric.", enum=v.METRIC_NAMES),
            "relativeLimit": _number(
                "Largest candidate/stable ratio; unset: 1.2 (latency), 2 (rates).", 1.0, 1000.0
            ),
            "absoluteLimit": _number(
                "Largest candidate value: seconds (latency) or a fraction.", 1e-6, 3600.0
            ),
            "critical": _bool("A clear failure rolls back at once.", False),
            "minIncrease": _number("Rates: the smallest rise that counts; unset: 0.01.", 0.0, 1.0),
        },
        ("name",),
    )
    _cel(metric, (v.CEL_RATE_ABSOLUTE, v.MSG_RATE_ABSOLUTE))
    metrics = _cel(
        _array("Metrics judged; unset: the judgement's defaults.", metric, 1, v.ROLLOUT_METRICS_MAX),
        (v.CEL_UNIQUE_METRICS, v.MSG_UNIQUE_METRICS),
    )
    url = c._string("http(s) URL.", max_len=v.WEBHOOK_URL_MAX, pattern=v.URL_PATTERN)
    webhook = c._object(
        "A quality evaluation, POSTed the window's analysis after each passing window; it may veto.",
        {"url": url, "timeout": _duration("How long to wait for its answer.", "10s")},
        ("url",),
    )
    query = c._string("PromQL (see docs/rollout.md for the placeholders).", min_len=1, max_len=v.PROMQL_MAX)
    prometheus = c._object(
        "Measure with Prometheus instead of the pickers' /measurements.",
        {
            "address": c._string(
                "Prometheus' http(s) URL.", max_len=v.WEBHOOK_URL_MAX, pattern=v.URL_PATTERN
            ),
            "queries": c._object("PromQL per metric name.", {name: query for name in v.METRIC_NAMES}),
        },
        ("address",),
    )
    return c._object(
        "How each analysis window is judged and what the verdicts lead to.",
        {
            "metrics": metrics,
            "alpha": _number(
                "The window's false-failure budget over all tests.", v.ALPHA_MIN, v.ALPHA_MAX, 0.01
            ),
            "minSamples": _int("Latency samples per target and window.", 1, v.COUNT_MAX, 50),
            "minRequests": _int("Requests per target and window (rates).", 1, v.COUNT_MAX, 300),
            "maxLoadImbalance": _number(
                "In-flight ratio beyond which latency is not compared.", 1.0, 100.0, 1.5
            ),
            "failureLimit": _int("Failed windows that roll back.", 1, v.LIMIT_MAX, 2),
            "passesPerStep": _int("Consecutive passing windows before the next step.", 1, v.LIMIT_MAX, 1),
            "inconclusiveLimit": _int("Consecutive inconclusive windows that roll back.", 1, v.LIMIT_MAX, 5),
            "inconclusiveDeadline": _duration("Or this long without a conclusive window."),
            "webhook": webhook,
            "prometheus": prometheus,
        },
    )


def _status() -> Schema:
    time = {"type": "string", "format": "date-time"}
    counts = {
        "failedChecks": _int("Failed windows so far.", 0, v.COUNT_MAX),
        "passes": _int("Consecutive passes in this step.", 0, v.COUNT_MAX),
        "inconclusiveWindows": _int("Consecutive inconclusive windows.", 0, v.COUNT_MAX),
        "inconclusiveSince": {**time, "description": "When the inconclusive run began."},
    }
    number = {"type": "number"}  # absent when not measured
    metric = c._object(
        "One metric's outcome and its numbers (rollout.judgement.MetricResult).",
        {
            "metric": c._string("The metric.", enum=v.METRIC_NAMES),
            "result": c._string("Its result.", enum=("Pass", "Fail", "Inconclusive")),
            "reason": c._string("Why, with the numbers.", max_len=4096),
            "critical": _bool("Critical metric."),
            "clear": _bool("A clear critical failure."),
            **{
                key: {**number, "description": what}
                for key, what in (
                    ("stable", "Stable target's value (seconds or rate)."),
                    ("candidate", "Candidate's value."),
                    ("ratio", "candidate / stable."),
                    ("pValue", "One-sided p-value of the relative test."),
                    ("absoluteLimit", "The absolute limit."),
                    ("absolutePValue", "p-value of the absolute test."),
                    ("cles", "Latency: P(candidate slower than stable)."),
                )
            },
            "limit": {"type": "number", "description": "The relative limit."},
            "nStable": _int("Stable target's samples or requests.", 0, 2**31 - 1),
            "nCandidate": _int("Candidate's samples or requests.", 0, 2**31 - 1),
        },
    )
    analysis = c._object(
        "The last window's verdict (rollout.judgement.Verdict) and the decision on it.",
        {
            "time": {**time, "description": "When the window ended."},
            "step": _int("Step analysed.", 0, v.ROLLOUT_STEPS_MAX - 1),
            "result": c._string("The verdict.", enum=("Pass", "Fail", "Inconclusive")),
            "clearFailure": _bool("A clear critical failure: rolled back at once."),
            "reason": c._string("Why.", max_len=4096),
            "alphaPerTest": {"type": "number", "description": "Significance level of each test."},
            "decision": c._string("What followed.", enum=("PromoteStep", "Hold", "Rollback")),
            "metrics": {"type": "array", "maxItems": 16, "items": metric, "description": "Per metric."},
            "webhook": c._object(
                "The quality webhook's answer.",
                {"result": c._string("Pass or Fail.", enum=("Pass", "Fail")), "reason": c._string("Why.")},
            ),
        },
    )
    weight = c._object(
        "A weight the controller wrote.",
        {
            "name": c._string("Target model or pool.", max_len=v.MODEL_NAME_MAX),
            "weight": _int("Its weight.", 0, v.WEIGHT_MAX),
        },
        ("name", "weight"),
    )
    return c._object(
        "Observed state, written by the rollout controller.",
        {
            "phase": c._string("Where the rollout is.", enum=tuple(p.value for p in Phase)),
            "observedGeneration": {
                "type": "integer",
                "format": "int64",
                "minimum": 0,
                "description": "metadata.generation the status is for.",
            },
            "currentStep": _int("Index of the current step.", 0, v.ROLLOUT_STEPS_MAX - 1),
            "currentWeight": _int("The candidate's current weight, percent.", 0, 100),
            "startedAt": {**time, "description": "When the rollout began."},
            "stepStartedAt": {**time, "description": "When the current step began (a restart resumes it)."},
            "appliedWeights": {
                "type": "array",
                "maxItems": v.REWRITE_TARGETS_MAX,
                "items": weight,
                "description": "The weights last written to the target; any other is a hand edit.",
            },
            "analysisState": c._object("The decision's counters (rollout.decision.RolloutState).", counts),
            "lastAnalysis": analysis,
            "message": c._string("Human-readable summary.", max_len=32768),
            "conditions": c._conditions(),
        },
    )


def rollout_schema() -> Schema:
    spec = c._object(
        "Desired state: move `target` from `stable` to `candidate` through `steps`.",
        {
            "target": _target(),
            "stable": c._string(
                "Current target model (InferencePool for an HTTPRoute).", min_len=1, max_len=v.MODEL_NAME_MAX
            ),
            "candidate": c._string(
                "The model (or pool) being rolled out.", min_len=1, max_len=v.MODEL_NAME_MAX
            ),
            "steps": _steps(),
            "analysis": _analysis(),
            "paused": _bool("Hold the current step; false resumes.", False),
            "abort": _bool("Give all traffic back to stable and stop (phase Aborted).", False),
        },
        ("target", "stable", "candidate", "steps"),
    )
    _cel(spec, (v.CEL_STABLE_NOT_CANDIDATE, v.MSG_STABLE_NOT_CANDIDATE))
    return c._root(KIND_ROLLOUT, spec, _status())


def rollout_crds() -> list[Schema]:
    columns: list[Schema] = [
        {"name": "Target", "type": "string", "jsonPath": ".spec.target.name"},
        {"name": "Kind", "type": "string", "jsonPath": ".spec.target.kind", "priority": 1},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Step", "type": "integer", "jsonPath": ".status.currentStep"},
        {"name": "Weight", "type": "integer", "jsonPath": ".status.currentWeight"},
        c._age(),
    ]
    version = c._version("v1alpha1", True, rollout_schema(), columns)
    return [c._crd(GROUP_ROLLOUT, KIND_ROLLOUT, "inferencerollouts", ["infro"], [version], {})]
