"""The ext_proc stream state machine: one gRPC stream per HTTP request.

request_headers -> remember attributes, continue; request_body (BUFFERED) -> director.route, answer
with destination + body mutation, or an ImmediateResponse error; response_body (STREAMED) -> status
(the `response.code` attribute on its first message; response headers are SKIPped) and usage;
end of response or stream -> director.finish. response_headers are still understood (SEND mode).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc
import structlog
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc

from api.contract import HEADER_REQUEST_ID
from picker.director import Director, RequestContext
from picker.errors import PickerError, error_body
from picker.extproc import mutations
from picker.extproc.attributes import header_map, read_attributes, read_response_code, read_subset_hint
from picker.extproc.usage import UsageReader

log = structlog.get_logger(__name__)


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
                    break  # grpc.aio.EOF: Envoy closed its side
                response = stream.handle(request)
                if response is not None:
                    await context.write(response)
                if stream.done:
                    # Nothing more will come that needs an answer: end the RPC now rather than wait
                    # for Envoy to close it (saves a read and the cancellation path per request).
                    break
        except Exception:
            log.exception("ext_proc stream failed", request_id=stream.ctx.request_id if stream.ctx else "")
        finally:
            stream.close()


class _Stream:
    def __init__(self, director: Director) -> None:
        self.director = director
        self.ctx: RequestContext | None = None
        self.status: int | None = None
        self.usage = UsageReader()
        self.immediate = False
        self.done = False  # the response ended or the picker answered itself: nothing more to process

    def handle(self, request: ep.ProcessingRequest) -> ep.ProcessingResponse | None:
        kind = request.WhichOneof("request")
        if kind == "response_body":  # the most frequent message: one or more per response
            return self._response_body(request)
        if kind == "request_headers":
            return self._request_headers(request)
        if kind == "request_body":
            return self._request_body(request.request_body)
        if kind == "response_headers":  # only when a config still SENDs response headers
            headers = header_map(request.response_headers)
            status = headers.get(":status", "")
            self.status = int(status) if status.isdigit() else None
            self.usage = UsageReader(headers.get("content-type", ""))
            if request.response_headers.end_of_stream:
                self._finish()
            return mutations.CONTINUE_RESPONSE_HEADERS
        if kind == "request_trailers":
            return ep.ProcessingResponse(request_trailers=ep.TrailersResponse())
        if kind == "response_trailers":
            self._finish()
            return ep.ProcessingResponse(response_trailers=ep.TrailersResponse())
        return None

    def _response_body(self, request: ep.ProcessingRequest) -> ep.ProcessingResponse:
        if self.status is None and request.attributes:
            self.status = read_response_code(request)
        body = request.response_body
        if self.ctx is not None and self.ctx.endpoint is not None:  # only routed requests are counted
            try:
                self.usage.feed(body.body, body.end_of_stream)
            except Exception:  # usage is for metrics only: never disturb the response
                log.warning("usage parsing failed", exc_info=True)
        if body.end_of_stream:
            self._finish()
        return mutations.CONTINUE_RESPONSE_BODY

    def _request_headers(self, request: ep.ProcessingRequest) -> ep.ProcessingResponse:
        headers = header_map(request.request_headers)
        self.ctx = RequestContext(
            request_id=headers.get(HEADER_REQUEST_ID) or str(uuid.uuid4()),
            path=headers.get(":path", "/"),
            attributes=read_attributes(request),
            subset_hint=read_subset_hint(request),
            headers=headers,
        )
        # A request without a body (GET /v1/models, ...) is left to Envoy's own load balancing.
        return mutations.CONTINUE_REQUEST_HEADERS

    def _request_body(self, body: ep.HttpBody) -> ep.ProcessingResponse:
        if self.ctx is None:  # request_headers must come first; answer rather than guess
            self.ctx = RequestContext(request_id=str(uuid.uuid4()))
        ctx = self.ctx
        try:
            routed = self.director.route(ctx, body.body)
        except PickerError as error:
            return self._reject(error)
        except Exception:
            log.exception("routing failed", request_id=ctx.request_id)
            return self._reject(PickerError(500, "internal error in the endpoint picker"))
        destination = mutations.destination_value(routed.endpoints)
        return mutations.routed_body_response(destination, routed.body, routed.content_length)

    def _reject(self, error: PickerError) -> ep.ProcessingResponse:
        assert self.ctx is not None
        self.immediate = True
        self.done = True
        self.director.reject(self.ctx, error)
        log.info(
            "request rejected",
            request_id=self.ctx.request_id,
            status=error.status,
            code=error.code.value,
            model=self.ctx.model,
            message=error.message,
        )
        return mutations.immediate_response(
            error.status, error_body(error.status, error.message, error.param), details=error.code.value
        )

    def _finish(self, broken: bool = False) -> None:
        self.done = True
        if self.ctx is not None and not self.ctx.finished:
            self.director.finish(self.ctx, self.status, self.usage.usage, broken=broken)

    def close(self) -> None:
        """The stream is over (Envoy ends it with the HTTP stream): release what is still in flight.

        A response that began (status known) but whose body never reached end_of_stream, or that
        had no body at all, still ends here; only one with no response at all counts as broken.
        """
        try:
            self._finish(broken=self.status is None)
        except Exception:
            log.exception("finishing a request failed")
