"""gRPC health (port 9003): liveness always; readiness and the ext_proc service once pods are synced."""

from __future__ import annotations

from grpc_health.v1 import health_pb2

# grpcio-health-checking exposes the asyncio servicer as `health.aio`; the stubs only know the module.
from grpc_health.v1._async import HealthServicer

LIVENESS = "liveness"
READINESS = "readiness"
EXT_PROC_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"
READY_SERVICES = ("", READINESS, EXT_PROC_SERVICE)


def new_health_servicer() -> HealthServicer:
    """A servicer that knows no service yet; call `set_ready` to publish statuses."""
    return HealthServicer()


async def set_ready(servicer: HealthServicer, ready: bool) -> None:
    """Liveness SERVING; "", readiness and the ext_proc service SERVING only when `ready`."""
    status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
    await servicer.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
    for name in READY_SERVICES:
        await servicer.set(name, status)
