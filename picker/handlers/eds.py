"""EDS (state of the world) for the pools' clusters: Envoy's endpoints come from the picker.

Resource names are `api.contract.EdsResource` names: `inference/<ns>/<pool>` (every endpoint of the
pool) and `inference/<ns>/<pool>/<target>` (only endpoints that serve `target`, so Envoy's own
least_request fallback stays model-correct when the picker is down and FailOpen applies).

Startup choice: a stream's first answer waits until the pods are listed and every endpoint has had
its first /v1/models answer, bounded by `startup_hold_s` (2 s, below the 3 s initial_fetch_timeout
the compiler sets). An endpoint whose served models are still unknown after that (its /v1/models
fails) is put in every target cluster of its pool: an optimistic member keeps FailOpen serving
rather than leaving a target with no hosts; the picker itself never routes by EDS membership.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import grpc
import structlog
from envoy.config.core.v3 import address_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.endpoint.v3 import eds_pb2_grpc
from google.protobuf import any_pb2

from api.contract import EdsResource
from picker.datastore import Datastore, EndpointState
from picker.handlers.xds import StreamRequests

log = structlog.get_logger(__name__)

CLA_TYPE_URL = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
STARTUP_HOLD_SECONDS = 2.0


def endpoint_members(resource: EdsResource, datastore: Datastore) -> list[EndpointState]:
    """Endpoints that belong in `resource`'s assignment (see the module docstring for unknowns)."""
    states = datastore.endpoint_states_for(f"{resource.namespace}/{resource.pool}")
    if resource.target_model is None:
        return states
    target = resource.target_model
    return [s for s in states if s.served is None or s.served.serves(target)]


def build_assignment(name: str, members: Sequence[EndpointState]) -> endpoint_pb2.ClusterLoadAssignment:
    """A ClusterLoadAssignment with one locality holding `members` in address order."""
    lb_endpoints = []
    for state in sorted(members, key=lambda s: s.address):
        host, _, port = state.address.rpartition(":")
        lb_endpoints.append(
            endpoint_components_pb2.LbEndpoint(
                endpoint=endpoint_components_pb2.Endpoint(
                    address=address_pb2.Address(
                        socket_address=address_pb2.SocketAddress(address=host, port_value=int(port))
                    ),
                    hostname=state.pod,
                )
            )
        )
    assignment = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    if lb_endpoints:
        assignment.endpoints.append(endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=lb_endpoints))
    return assignment


def build_response(
    names: Sequence[str], datastore: Datastore, version: str, nonce: str
) -> discovery_pb2.DiscoveryResponse:
    """Every requested resource; a name that is not ours or names no served pool gets no endpoints."""
    resources = []
    for name in sorted(set(names)):
        resource = EdsResource.parse(name)
        members = endpoint_members(resource, datastore) if resource is not None else []
        packed = any_pb2.Any()
        packed.Pack(build_assignment(name, members))
        resources.append(packed)
    return discovery_pb2.DiscoveryResponse(
        version_info=version, resources=resources, type_url=CLA_TYPE_URL, nonce=nonce
    )


def _content_key(response: discovery_pb2.DiscoveryResponse) -> bytes:
    return b"".join(r.value for r in response.resources)


class EndpointDiscovery(eds_pb2_grpc.EndpointDiscoveryServiceServicer):
    """StreamEndpoints: answers each request for its names, pushes on change, treats echoes as ACKs."""

    def __init__(self, datastore: Datastore, startup_hold_s: float = STARTUP_HOLD_SECONDS) -> None:
        self.datastore = datastore
        self.startup_hold_s = startup_hold_s
        self._started = time.monotonic()
        self._versions = itertools.count(1)

    async def StreamEndpoints(
        self,
        request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest],
        context: grpc.aio.ServicerContext[discovery_pb2.DiscoveryRequest, discovery_pb2.DiscoveryResponse],
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        names: tuple[str, ...] = ()
        node = ""
        last_nonce = ""
        last_content: bytes | None = None
        nonces = itertools.count(1)
        seen_version = -1
        async with StreamRequests(request_iterator) as requests:
            while True:
                request = await requests.next(
                    self._change_after(seen_version if last_content is not None else None)
                )
                if request is None:  # Envoy closed the stream
                    return
                send = False
                if isinstance(request, discovery_pb2.DiscoveryRequest):
                    node = node or request.node.id
                    if request.error_detail.code:
                        log.warning(
                            "EDS NACK",
                            node=node,
                            nonce=request.response_nonce,
                            error=request.error_detail.message,
                        )
                    requested = tuple(sorted(set(request.resource_names)))
                    if requested != names or request.response_nonce != last_nonce or last_content is None:
                        # A new subscription, or a request that is not the echo of our last response.
                        names = requested
                        send = bool(names)
                        last_content = None if send else last_content
                    elif request.response_nonce == last_nonce:
                        log.debug("EDS ACK", node=node, version=request.version_info, nonce=last_nonce)
                if not names:
                    continue
                if last_content is None and not await self._ready_to_answer():
                    continue
                seen_version = self.datastore.version
                nonce = str(next(nonces))
                response = build_response(names, self.datastore, "", nonce)
                content = _content_key(response)
                if not send and content == last_content:
                    continue
                response.version_info = str(next(self._versions))
                last_nonce, last_content = nonce, content
                log.debug("EDS push", node=node, resources=len(names), version=response.version_info)
                yield response

    async def FetchEndpoints(
        self,
        request: discovery_pb2.DiscoveryRequest,
        context: grpc.aio.ServicerContext[discovery_pb2.DiscoveryRequest, discovery_pb2.DiscoveryResponse],
    ) -> discovery_pb2.DiscoveryResponse:
        """One-shot REST-style fetch: the current assignments of the requested names."""
        return build_response(request.resource_names, self.datastore, str(self.datastore.version), "")

    async def DeltaEndpoints(
        self,
        request_iterator: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest],
        context: grpc.aio.ServicerContext[
            discovery_pb2.DeltaDiscoveryRequest, discovery_pb2.DeltaDiscoveryResponse
        ],
    ) -> AsyncIterator[discovery_pb2.DeltaDiscoveryResponse]:
        """Not served: the compiled clusters ask for state-of-the-world EDS."""
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "delta EDS is not served; use state of the world")
        yield discovery_pb2.DeltaDiscoveryResponse()  # pragma: no cover (abort raises)

    def _change_after(self, seen_version: int | None) -> Callable[[], Awaitable[object]]:
        """What to wait for beside the next request: the datastore moving past `seen_version`, or
        (before the first answer) a short sleep to re-check the startup hold."""
        if seen_version is None:
            return lambda: asyncio.sleep(0.1)
        return lambda: self.datastore.wait_for_change(seen_version)

    async def _ready_to_answer(self) -> bool:
        if time.monotonic() - self._started >= self.startup_hold_s:
            return True
        return self.datastore.synced and self.datastore.models_settled()
