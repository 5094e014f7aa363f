"""One module per EG hook: decode, read a fresh snapshot, call extserver.compile, encode."""

from extserver.hooks.cluster import post_cluster_modify
from extserver.hooks.context import (
    HookContext,
    KubernetesConditionReporter,
    LogConditionReporter,
    SnapshotSource,
    StaticSnapshotSource,
    StatusReporter,
)
from extserver.hooks.route import post_route_modify
from extserver.hooks.status import ConditionReporter, StatusReport, condition_updates
from extserver.hooks.translation import post_translate_modify
from extserver.hooks.unchanged import (
    post_endpoints_modify,
    post_http_listener_modify,
    post_virtual_host_modify,
)

__all__ = [
    "ConditionReporter",
    "HookContext",
    "KubernetesConditionReporter",
    "LogConditionReporter",
    "SnapshotSource",
    "StaticSnapshotSource",
    "StatusReport",
    "StatusReporter",
    "condition_updates",
    "post_cluster_modify",
    "post_endpoints_modify",
    "post_http_listener_modify",
    "post_route_modify",
    "post_translate_modify",
    "post_virtual_host_modify",
]
