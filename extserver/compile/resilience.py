"""Surviving a model-server pod that dies: retries to another pod, passive outlier detection.

Only failures before any response byte are retried (connect failure, refused stream, reset before the
request was sent upstream): safe for non-idempotent POSTs, and never repeats a generation. The
previous_hosts predicate makes a retry choose another pod; the override_host policy moves to the next
address of the picker's x-gateway-destination-endpoint list (primary + fallbacks) on each attempt.
Outlier detection ejects a pod after consecutive local-origin failures, so the least_request fallback
stops choosing it within a few requests, long before the picker notices the pod is gone.
"""

from __future__ import annotations

from envoy.config.cluster.v3.outlier_detection_pb2 import OutlierDetection
from envoy.config.route.v3.route_components_pb2 import RetryPolicy
from envoy.extensions.retry.host.previous_hosts.v3.previous_hosts_pb2 import PreviousHostsPredicate

RETRY_ON = "connect-failure,refused-stream,reset-before-request"
NUM_RETRIES = 2
PREVIOUS_HOSTS_PREDICATE = "envoy.retry_host_predicates.previous_hosts"
# Host picks per attempt before Envoy accepts a previously tried host (e.g. a pool of one).
HOST_SELECTION_ATTEMPTS = 5

CONSECUTIVE_LOCAL_ORIGIN_FAILURES = 2
EJECTION_SECONDS = 30
OUTLIER_INTERVAL_SECONDS = 5
MAX_EJECTION_PERCENT = 50


def retry_policy() -> RetryPolicy:
    """Retry only what never reached a model server, each time on another pod."""
    policy = RetryPolicy(retry_on=RETRY_ON)
    policy.num_retries.value = NUM_RETRIES
    predicate = policy.retry_host_predicate.add(name=PREVIOUS_HOSTS_PREDICATE)
    predicate.typed_config.Pack(PreviousHostsPredicate())
    policy.host_selection_retry_max_attempts = HOST_SELECTION_ATTEMPTS
    return policy


def outlier_detection() -> OutlierDetection:
    """Eject pods on local-origin failures only (connect failures, resets, timeouts).

    HTTP 5xx answers are not counted: a model server answering 500 to one bad prompt is alive, and
    ejecting on it could empty a small pool.
    """
    detection = OutlierDetection(split_external_local_origin_errors=True)
    detection.consecutive_local_origin_failure.value = CONSECUTIVE_LOCAL_ORIGIN_FAILURES
    detection.enforcing_consecutive_local_origin_failure.value = 100
    detection.enforcing_consecutive_5xx.value = 0
    detection.enforcing_consecutive_gateway_failure.value = 0
    detection.enforcing_success_rate.value = 0
    detection.enforcing_local_origin_success_rate.value = 0
    detection.interval.seconds = OUTLIER_INTERVAL_SECONDS
    detection.base_ejection_time.seconds = EJECTION_SECONDS
    detection.max_ejection_percent.value = MAX_EJECTION_PERCENT
    return detection
