"""Model-server clusters close idle connections before vLLM does (uvicorn's keep-alive: 5 s)."""

from __future__ import annotations

from envoy.extensions.upstreams.http.v3.http_protocol_options_pb2 import HttpProtocolOptions

from extserver.compile.clusters import HTTP_PROTOCOL_OPTIONS_KEY
from tests.compile_cases import run_case

VLLM_KEEP_ALIVE_SECONDS = 5


def test_every_model_server_cluster_idles_out_before_vllm_closes() -> None:
    result = run_case("seed-lora-canary")
    clusters = [
        c for c in result.gateways["default/inference-gateway"].clusters
        if c.name.startswith("inference/") and not c.name.endswith("/picker")
    ]  # fmt: skip
    assert len(clusters) == 3  # the catch-all and both targets
    for cluster in clusters:
        options = HttpProtocolOptions()
        packed = cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS_KEY]
        assert packed.Unpack(options), cluster.name
        idle = options.common_http_protocol_options.idle_timeout.ToTimedelta().total_seconds()
        assert 0 < idle < VLLM_KEEP_ALIVE_SECONDS, cluster.name
