"""The ext_proc stream state machine: one gRPC stream per HTTP request.

request_headers -> remember attributes, continue; request_body (BUFFERED) -> director.route, answer
with destination + body mutation + the picker's metadata mark, or an ImmediateResponse error. Nothing
of the response comes here (status and usage arrive through the access log, picker/handlers/accesslog.py):
Envoy keeps the stream open until the HTTP stream ends, so its end is the end of the request.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc
import structlog
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc

from api.contract import HEADER_REQUEST_ID
from picker.director import Director, Lease, RouteRequest
from picker.errors import PickerError, error_body
from picker.handlers.extproc import mutations
from picker.handlers.extproc.attributes import header_map, read_attributes, read_subset_hint

log = structlog.get_logger(__name__)

# A config that still sends response-direction messages gets them continued untouched.
_CONTINUE = {
    "request_trailers": mutations.CONTINUE_REQUEST_TRAILERS,
    "response_headers": mutations.CONTINUE_RESPONSE_HEADERS,
    "response_body": mutations.CONTINUE_RESPONSE_BODY,
    "response_trailers": mutations.CONTINUE_RESPONSE_TRAILERS,
}


class ExternalProcessor(ep_grpc.ExternalProcessorServicer):
    """ext_proc servicer; every failure inside one stream is contained to that stream."""

    def __init__(self, director: Director) -> None:
        self.director = director

    async def Process(  # type: ignore[override]  # read/write style: no async-generator layers
        self,
        request_iterator: AsyncIterator[ep.ProcessingRequest],
        context: grpc.aio.ServicerContext[ep.ProcessingRequest, ep.ProcessingResponse],
    ) -> None:
        # context.read()/write() instead of iterating and yielding: each message then skips two
        # async-generator hops in grpc.aio, a measurable share of the per-request cost.
        stream = _Stream(self.director)
        try:
            while True:
                request = await context.read()
                if not isinstance(request, ep.ProcessingRequest):
                    break  # grpc.aio.EOF: the HTTP stream is over
                response = stream.handle(request)
                if response is not None:
                    await context.write(response)
                if stream.done:
                    break  # the picker answered itself: nothing more will come
        except Exception:
            log.exception("ext_proc stream failed", request_id=stream.request_id)
        finally:
            # EOF, cancellation (client gone, Envoy reset) or failure: the request holds no slot any more.
            stream.close()


class _Stream:
    def __init__(self, director: Director) -> None:
        self.director = director
        self.request: RouteRequest | None = None
        self.lease: Lease | None = None  # set once routed, released when the stream ends
        self.done = False  # the picker answered with an ImmediateResponse

    @property
    def request_id(self) -> str:
        return self.request.request_id if self.request is not None else ""

    def handle(self, request: ep.ProcessingRequest) -> ep.ProcessingResponse | None:
        kind = request.WhichOneof("request")
        if kind == "request_headers":
            return self._request_headers(request)
        if kind == "request_body":
            if self.request is None:  # request headers SKIPped: the attributes came with the body
                self.request = _route_request(request, {})
            return self._request_body(self.request, request.request_body)
        return _CONTINUE.get(kind or "")

    def _request_headers(self, request: ep.ProcessingRequest) -> ep.ProcessingResponse:
        self.request = _route_request(request, header_map(request.request_headers))
        # A request without a body (GET /v1/models, ...) is left to Envoy's own load balancing.
        return mutations.CONTINUE_REQUEST_HEADERS

    def _request_body(self, request: RouteRequest, body: ep.HttpBody) -> ep.ProcessingResponse:
        try:
            routed = self.director.route(request, body.body)
        except PickerError as error:
            return self._reject(error)
        except Exception:
            log.exception("routing failed", request_id=request.request_id)
            return self._reject(PickerError(500, "internal error in the endpoint picker"))
        self.lease = routed.lease
        destination = mutations.destination_value(routed.endpoints)
        mark = mutations.RoutedMark(
            routed.pool, routed.model, routed.target, routed.endpoints[0], routed.stream
        )
        return mutations.routed_body_response(destination, routed.body, mark)

    def _reject(self, error: PickerError) -> ep.ProcessingResponse:
        self.done = True
        self.director.reject(error)
        log.info(
            "request rejected",
            request_id=self.request_id,
            status=error.status,
            code=error.code.value,
            model=error.model,
            message=error.message,
        )
        return mutations.immediate_response(
            error.status, error_body(error.status, error.message, error.param), details=error.code.value
        )

    def close(self) -> None:
        """The stream is over: release what is still in flight."""
        if self.lease is None:
            return
        try:
            self.lease.release()
        except Exception:
            log.exception("finishing a request failed", request_id=self.request_id)


def _route_request(first: ep.ProcessingRequest, headers: dict[str, str]) -> RouteRequest:
    """The request as the director needs it, from the stream's first message (attributes come only
    on that one) and its headers, if any."""
    attributes = read_attributes(first)
    return RouteRequest(
        request_id=attributes.request_id or headers.get(HEADER_REQUEST_ID) or str(uuid.uuid4()),
        path=attributes.path or headers.get(":path", "/"),
        attributes=attributes,
        subset_hint=read_subset_hint(first),
    )
