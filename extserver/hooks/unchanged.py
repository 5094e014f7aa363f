"""Hooks the extension does not use (VirtualHost, HTTPListener, Endpoints): answer "unchanged".

EG only calls hooks listed in its config; these answer an empty response (EG keeps its own object) so a
config that enables them by mistake does not break translation.
"""

from __future__ import annotations

from api.egextension.service_pb2 import (
    PostEndpointsModifyRequest,
    PostEndpointsModifyResponse,
    PostHTTPListenerModifyRequest,
    PostHTTPListenerModifyResponse,
    PostVirtualHostModifyRequest,
    PostVirtualHostModifyResponse,
)


async def post_virtual_host_modify(request: PostVirtualHostModifyRequest) -> PostVirtualHostModifyResponse:
    return PostVirtualHostModifyResponse()


async def post_http_listener_modify(request: PostHTTPListenerModifyRequest) -> PostHTTPListenerModifyResponse:
    return PostHTTPListenerModifyResponse()


async def post_endpoints_modify(request: PostEndpointsModifyRequest) -> PostEndpointsModifyResponse:
    return PostEndpointsModifyResponse()
