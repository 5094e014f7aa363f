"""What model servers report: metric-name mapping tables and pure parsers for /metrics and /v1/models."""

from picker.modelserver.names import PRESETS, SGLANG, TRITON_TRTLLM, TRTLLM, VLLM, MetricNames, MetricSpec
from picker.modelserver.parse import (
    MetricsError,
    ModelsError,
    ModelServerResponseError,
    parse_metrics,
    parse_models,
)

__all__ = [
    "PRESETS",
    "SGLANG",
    "TRITON_TRTLLM",
    "TRTLLM",
    "VLLM",
    "MetricNames",
    "MetricSpec",
    "MetricsError",
    "ModelServerResponseError",
    "ModelsError",
    "parse_metrics",
    "parse_models",
]
