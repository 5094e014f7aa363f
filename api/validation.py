"""Field rules shared by the parser (api/parse.py) and the CRD schemas (api/crd_schema.py): one source."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypedDict, TypeGuard, TypeVar, Unpack

GROUP_PATTERN = r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
GROUP_MAX = 253
KIND_PATTERN = r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$"
KIND_MAX = 63
OBJECT_NAME_MAX = 253
NAMESPACE_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
NAMESPACE_MAX = 63
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
PORT_MIN = 1
PORT_MAX = 65535
LABEL_KEY_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]$"
)
LABEL_KEY_MAX = 253
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
LABEL_VALUE_MAX = 63
# Upstream allows an empty v1alpha1 selector; we require one label because an empty selector would
# silently select every pod in the namespace.
SELECTOR_MIN = 1
SELECTOR_MAX = 64
MODEL_NAME_MAX = 256
TARGET_MODELS_MAX = 10
WEIGHT_MAX = 1_000_000
WEIGHT_MIN_V1ALPHA1 = 0
WEIGHT_MIN_V1ALPHA2 = 1
TARGET_PORTS_MAX = 8
APP_PROTOCOLS = ("http", "kubernetes.io/h2c")
FAILURE_MODES = ("FailOpen", "FailClose")
CRITICALITIES = ("Critical", "Standard", "Sheddable")
CONDITIONS_MAX = 8
# InferenceModelRewrite / InferenceObjective (api/rewrite.py). Upstream sets no list limits; ours keep
# the CEL rules within the API server's cost budget and the compiled routes few.
REWRITE_RULES_MAX = 32
REWRITE_MATCHES_MAX = 32
REWRITE_TARGETS_MAX = 16
MATCH_TYPES = ("Exact",)
INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
PARENTS_MAX = 32

# CEL rules (the CRDs carry them; api/parse.py implements the same checks in Python).
CEL_WEIGHTS_ALL_OR_NONE = "self.all(t, has(t.weight)) || self.all(t, !has(t.weight))"
MSG_WEIGHTS_ALL_OR_NONE = "weights must be set on all targetModels or on none"
MSG_TARGET_WEIGHTS_ALL_OR_NONE = "weights must be set on all targets or on none"
CEL_UNIQUE_TARGET_PORTS = "self.all(p1, self.exists_one(p2, p1.number == p2.number))"
MSG_UNIQUE_TARGET_PORTS = "port numbers must be unique"
CEL_SERVICE_NEEDS_PORT = "self.kind != 'Service' || has(self.port)"
MSG_SERVICE_NEEDS_PORT = "port is required when kind is 'Service' or unspecified (defaults to 'Service')"
CEL_IMMUTABLE = "self == oldSelf"
MSG_IMMUTABLE = "field is immutable"

_T = TypeVar("_T")


class StringRules(TypedDict, total=False):
    """What `FieldErrors.string` and `check_string` check: the keyword arguments they take."""

    min_len: int
    max_len: int | None
    pattern: str | None
    enum: tuple[str, ...] | None


def matches(pattern: str, text: str) -> bool:
    """Whole-string match with the CRD's pattern (RE2 `$` means end of text; fullmatch gives the same)."""
    return re.fullmatch(pattern, text) is not None


def rfc3339(value: Any) -> str:
    """Timestamps arrive as strings from the API server and as datetimes from unquoted YAML."""
    if isinstance(value, datetime):
        stamp: datetime = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return stamp.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value)


class FieldErrors:
    """Collects `path: message` errors while walking one object, so every error is reported at once."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}")

    def __bool__(self) -> bool:
        return bool(self.items)

    # Readers: return the value if present and valid, else record an error and return None.

    def mapping(
        self, obj: Mapping[str, Any], key: str, path: str, required: bool
    ) -> Mapping[str, Any] | None:
        return self._read(obj.get(key), path, required, _is_mapping, "an object")

    def string(
        self,
        obj: Mapping[str, Any],
        key: str,
        path: str,
        *,
        required: bool = False,
        **rules: Unpack[StringRules],
    ) -> str | None:
        value = self._read(obj.get(key), path, required, _is_string, "a string")
        return None if value is None else self.check_string(value, path, **rules)

    def check_string(self, value: str, path: str, **rules: Unpack[StringRules]) -> str | None:
        problem = _string_problem(value, **rules)
        if problem is None:
            return value
        self.add(path, problem)
        return None

    def integer(
        self,
        obj: Mapping[str, Any],
        key: str,
        path: str,
        *,
        required: bool = False,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int | None:
        value = self._read(obj.get(key), path, required, _is_integer, "an integer")
        if value is None:
            return None
        if minimum is not None and maximum is not None and not minimum <= value <= maximum:
            self.add(path, f"must be between {minimum} and {maximum}")
            return None
        return value

    def _read(
        self, value: Any, path: str, required: bool, is_type: Callable[[Any], TypeGuard[_T]], what: str
    ) -> _T | None:
        """`value` if present and of `is_type`'s type; else None, and an error where due."""
        if value is None:
            if required:
                self.add(path, "required")
            return None
        if not is_type(value):
            self.add(path, f"must be {what}, got {_type_name(value)}")
            return None
        return value

    def unknown_fields(self, obj: Mapping[str, Any], known: tuple[str, ...], path: str) -> None:
        for key in obj:
            if key not in known:
                self.add(f"{path}.{key}" if path else str(key), "unknown field")

    def labels(self, value: Mapping[str, Any], path: str) -> tuple[tuple[str, str], ...]:
        """A label map (selector): keys and values checked against the Kubernetes label syntax."""
        out: list[tuple[str, str]] = []
        for key, item in value.items():
            item_path = f"{path}[{key}]"
            if not isinstance(key, str):
                self.add(item_path, f"label key must be a string, got {_type_name(key)}")
                continue
            ok_key = self.check_string(
                key, item_path, min_len=1, max_len=LABEL_KEY_MAX, pattern=LABEL_KEY_PATTERN
            )
            if not isinstance(item, str):
                self.add(item_path, f"label value must be a string, got {_type_name(item)}")
                continue
            ok_value = self.check_string(
                item, item_path, max_len=LABEL_VALUE_MAX, pattern=LABEL_VALUE_PATTERN
            )
            if ok_key is not None and ok_value is not None:
                out.append((ok_key, ok_value))
        return tuple(sorted(out))


def _string_problem(
    value: str,
    *,
    min_len: int = 0,
    max_len: int | None = None,
    pattern: str | None = None,
    enum: tuple[str, ...] | None = None,
) -> str | None:
    """What `value` breaks of these rules (the first found), or None."""
    if enum is not None and value not in enum:
        return f"must be one of {', '.join(repr(e) for e in enum)}, got {value!r}"
    if len(value) < min_len:
        return "must not be empty" if min_len == 1 else f"must be at least {min_len} characters"
    if max_len is not None and len(value) > max_len:
        return f"must be at most {max_len} characters"
    if pattern is not None and not matches(pattern, value):
        return f"{value!r} does not match pattern {pattern}"
    return None


def _is_mapping(value: Any) -> TypeGuard[Mapping[str, Any]]:
    return isinstance(value, Mapping)


def _is_string(value: Any) -> TypeGuard[str]:
    return isinstance(value, str)


def _is_integer(value: Any) -> TypeGuard[int]:
    # bool is an int subclass, but `true` is no integer in a manifest.
    return isinstance(value, int) and not isinstance(value, bool)


# What errors call a value's type, tried in order: bool before int, which it subclasses.
_TYPE_NAMES: tuple[tuple[type, str], ...] = (
    (bool, "boolean"),
    (int, "integer"),
    (float, "number"),
    (str, "string"),
    (list, "list"),
    (Mapping, "object"),
)


def _type_name(value: Any) -> str:
    return next((name for kind, name in _TYPE_NAMES if isinstance(value, kind)), type(value).__name__)


# InferenceRollout (api/rollout.py).
# Gateway API's Duration (GEP-2257): up to four parts of up to five digits each, e.g. "1h30m", "500ms".
DURATION_PATTERN = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"
ROLLOUT_STEPS_MAX = 16
ROLLOUT_METRICS_MAX = 6
ROLLOUT_RULE_MAX = 31  # the highest rule index: an InferenceModelRewrite has at most 32 rules
WEBHOOK_URL_MAX = 2048
URL_PATTERN = r"^https?://[^\s]+$"
PROMQL_MAX = 4096
ALPHA_MIN = 0.0001
ALPHA_MAX = 0.5
COUNT_MAX = 1_000_000
LIMIT_MAX = 100  # failureLimit, passesPerStep, inconclusiveLimit
CEL_STABLE_NOT_CANDIDATE = "self.stable != self.candidate"
MSG_STABLE_NOT_CANDIDATE = "stable and candidate must differ"
CEL_RULE_WHERE_NEEDED = "self.kind == 'InferenceModel' ? !has(self.rule) : has(self.rule)"
MSG_RULE_WHERE_NEEDED = (
    "rule is required for InferenceModelRewrite and HTTPRoute targets, and not allowed for InferenceModel"
)
CEL_TARGET_GROUP = (
    "!has(self.group) || (self.kind == 'InferenceModel' ? self.group == 'inference.networking.x-k8s.io'"
    " : self.kind == 'HTTPRoute' ? self.group == 'gateway.networking.k8s.io'"
    " : self.group in ['llm-d.ai', 'inference.networking.x-k8s.io'])"
)
MSG_TARGET_GROUP = "group must be one the target kind is served in"
ROLLOUT_TARGET_KINDS = ("InferenceModel", "InferenceModelRewrite", "HTTPRoute")
CEL_STEP_ONE_ACTION = "!(has(self.pause) && has(self.analysis))"
MSG_STEP_ONE_ACTION = "a step has a pause or an analysis, not both"
CEL_STEP_NEEDS_ACTION = "has(self.pause) || has(self.analysis) || self.weight == 100"
MSG_STEP_NEEDS_ACTION = (
    "a step needs a pause or an analysis (only a final step at weight 100 may have neither)"
)
CEL_ANALYSIS_WEIGHT = "!has(self.analysis) || (self.weight >= 1 && self.weight <= 99)"
MSG_ANALYSIS_WEIGHT = "an analysis step needs a weight between 1 and 99: both targets must serve traffic"
MSG_STEPS_INCREASE = "step weights must increase from step to step"
CEL_UNIQUE_METRICS = "self.all(a, self.exists_one(b, b.name == a.name))"
MSG_UNIQUE_METRICS = "metric names must be unique"
CEL_RATE_ABSOLUTE = (
    "!has(self.absoluteLimit) || !(self.name in ['error_rate', 'shed_rate']) || self.absoluteLimit < 1.0"
)
MSG_RATE_ABSOLUTE = "a rate's absoluteLimit is a fraction below 1"
RATE_METRICS = ("error_rate", "shed_rate")


def cel_steps_increase(max_items: int = ROLLOUT_STEPS_MAX) -> str:
    """CEL has no list indices to iterate, so each neighbouring pair is written out (short-circuit ||)."""
    return " && ".join(
        f"(self.size() <= {i + 1} || self[{i}].weight < self[{i + 1}].weight)" for i in range(max_items - 1)
    )


def duration_seconds(text: str) -> float:
    """A DURATION_PATTERN string in seconds."""
    total = 0.0
    for number, unit in re.findall(r"([0-9]+)(ms|h|m|s)", text):
        total += int(number) * {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}[unit]
    return total


def format_duration(seconds: float) -> str:
    """The shortest DURATION_PATTERN string for `seconds` (whole milliseconds)."""
    ms = round(seconds * 1000)
    parts = []
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, ms = divmod(ms, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


# rollout.judgement.Metric's values (tests/test_rollout_config.py checks they agree).
METRIC_NAMES = ("ttft_p50", "ttft_p90", "tpot_p50", "tpot_p90", "error_rate", "shed_rate")
