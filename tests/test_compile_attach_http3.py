"""HTTP/3 on a Gateway listener: real EG v1.9 adds a QUIC listener `<listener>-quic` (UDP, same port) that
uses the same route configuration as the TCP one. One attach-to pool serves both, with no conflict."""

from __future__ import annotations

from envoy.config.core.v3.address_pb2 import SocketAddress

from extserver.compile import build_plan, compile_translation
from extserver.compile.attach import assign_attach_to
from tests.compile_cases import OPTIONS, run_case

GATEWAY = "default/inference-gateway"


def test_the_tcp_and_quic_listeners_of_one_gateway_listener_are_one_pools() -> None:
    result = run_case("seed-lora-canary")
    eg = result.gateways[GATEWAY].eg
    (tcp,) = [lis for lis in eg.listeners if lis.name.startswith(f"{GATEWAY}/")]
    quic = type(tcp)()
    quic.CopyFrom(tcp)
    quic.name = f"{tcp.name}-quic"
    quic.address.socket_address.protocol = SocketAddress.UDP
    listeners = [*eg.listeners, quic]
    attached = assign_attach_to(build_plan(result.inputs), listeners, eg.routes)
    assert not attached.problems, attached.problems
    assert attached.to_dict()["routeConfigs"] == {tcp.name: "default/vllm-llama2-7b-pool"}
    out = compile_translation(eg.clusters, listeners, eg.routes, result.inputs, OPTIONS)
    assert not out.problems
