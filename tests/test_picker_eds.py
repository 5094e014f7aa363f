"""EDS over real gRPC: state of the world, ACK handling, pushes on change, per-target membership."""

from __future__ import annotations

import asyncio

import grpc
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.endpoint.v3 import eds_pb2_grpc
from google.rpc import status_pb2

from api.contract import EdsResource
from api.sources.store import ObjectStore
from picker.datastore import Datastore
from picker.handlers.eds import CLA_TYPE_URL, EndpointDiscovery
from picker.scheduling.types import ServedModels

POOL = {
    "apiVersion": "inference.networking.x-k8s.io/v1alpha1",
    "kind": "InferencePool",
    "metadata": {"name": "pool", "namespace": "default"},
    "spec": {"targetPortNumber": 8000, "selector": {"app": "m"}, "extensionRef": {"name": "picker"}},
}


def _pod(name: str, ip: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "m"}},
        "status": {"podIP": ip},
    }


def _hosts(response: discovery_pb2.DiscoveryResponse) -> dict[str, set[str]]:
    result = {}
    for packed in response.resources:
        cla = endpoint_pb2.ClusterLoadAssignment()
        packed.Unpack(cla)
        result[cla.cluster_name] = {
            f"{e.endpoint.address.socket_address.address}:{e.endpoint.address.socket_address.port_value}"
            for group in cla.endpoints
            for e in group.lb_endpoints
        }
    return result


async def test_stream_endpoints_protocol() -> None:
    store = ObjectStore()
    store.apply(upserts=[POOL, _pod("a", "10.0.0.1"), _pod("b", "10.0.0.2")])
    datastore = Datastore("picker", "default")
    datastore.sync(store.snapshot())
    datastore.record_models("10.0.0.1:8000", ServedModels(frozenset({"base"}), frozenset({"lora-x"})))
    datastore.record_models("10.0.0.2:8000", ServedModels(frozenset({"base"})))

    server = grpc.aio.server()
    eds_pb2_grpc.add_EndpointDiscoveryServiceServicer_to_server(EndpointDiscovery(datastore), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    target = EdsResource("default", "pool", "lora-x").name
    catch_all = EdsResource("default", "pool").name
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = eds_pb2_grpc.EndpointDiscoveryServiceStub(channel).StreamEndpoints()
            await call.write(
                discovery_pb2.DiscoveryRequest(type_url=CLA_TYPE_URL, resource_names=[target, catch_all])
            )
            first = await asyncio.wait_for(call.read(), 5)
            assert _hosts(first) == {target: {"10.0.0.1:8000"}, catch_all: {"10.0.0.1:8000", "10.0.0.2:8000"}}

            # ACK: nothing new is sent until something changes.
            ack = discovery_pb2.DiscoveryRequest(
                type_url=CLA_TYPE_URL,
                resource_names=[target, catch_all],
                version_info=first.version_info,
                response_nonce=first.nonce,
            )
            await call.write(ack)
            read = asyncio.ensure_future(call.read())
            done, _ = await asyncio.wait({read}, timeout=0.3)
            assert not done

            # Pod b loads the adapter: pushed without being asked.
            datastore.record_models("10.0.0.2:8000", ServedModels(frozenset({"base"}), frozenset({"lora-x"})))
            second = await asyncio.wait_for(read, 5)
            assert _hosts(second)[target] == {"10.0.0.1:8000", "10.0.0.2:8000"}
            assert second.version_info != first.version_info

            # A NACK is logged and not answered with the same content again.
            nack = discovery_pb2.DiscoveryRequest(
                type_url=CLA_TYPE_URL,
                resource_names=[target, catch_all],
                version_info=first.version_info,
                response_nonce=second.nonce,
                error_detail=status_pb2.Status(code=3, message="rejected"),
            )
            await call.write(nack)
            read = asyncio.ensure_future(call.read())
            done, _ = await asyncio.wait({read}, timeout=0.3)
            assert not done

            # Pod a goes away: pushed.
            store.apply(deletes=[k for k in store.raw_objects("v1", "Pod") if k.name == "a"])
            datastore.sync(store.snapshot())
            third = await asyncio.wait_for(read, 5)
            assert _hosts(third) == {target: {"10.0.0.2:8000"}, catch_all: {"10.0.0.2:8000"}}

            # Unknown names get an empty assignment rather than an error.
            await call.write(discovery_pb2.DiscoveryRequest(type_url=CLA_TYPE_URL, resource_names=["bogus"]))
            fourth = await asyncio.wait_for(call.read(), 5)
            assert _hosts(fourth) == {"bogus": set()}
            await call.done_writing()
    finally:
        await server.stop(None)


def test_unknown_served_models_are_optimistic_members() -> None:
    from picker.handlers.eds import endpoint_members

    store = ObjectStore()
    store.apply(upserts=[POOL, _pod("a", "10.0.0.1")])
    datastore = Datastore("picker", "default")
    datastore.sync(store.snapshot())
    assert [s.address for s in endpoint_members(EdsResource("default", "pool", "any"), datastore)] == [
        "10.0.0.1:8000"
    ]
    datastore.record_models("10.0.0.1:8000", ServedModels(frozenset({"base"})))
    assert endpoint_members(EdsResource("default", "pool", "any"), datastore) == []
