"""Strip client-sent x-gateway-* destination headers before the picker runs (the picker sets its own)."""

from __future__ import annotations

from envoy.extensions.filters.http.header_mutation.v3.header_mutation_pb2 import HeaderMutation
from envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2 import HttpFilter

from api import contract
from extserver.compile import naming


def build_header_mutation_filter() -> HttpFilter:
    # A filter, not the route's request_headers_to_remove: that runs at the router, after the picker,
    # and would drop the header the picker just set.
    config = HeaderMutation()
    for header in contract.CLIENT_STRIPPED_HEADERS:
        config.mutations.request_mutations.add().remove = header
    http_filter = HttpFilter(name=naming.HEADER_MUTATION_FILTER)
    http_filter.typed_config.Pack(config, deterministic=True)
    return http_filter
