"""Test plumbing for the picker behind real Envoy: fake vLLM-shaped upstreams and a minimal Envoy config.

The Envoy config mirrors the compiled shape (docs/xds.md) with only what the picker needs: header
strip, json_to_metadata, ext_proc, destination Lua, usage Lua, router, the gRPC access log back to
the picker;
weighted target clusters with EDS from the picker over google_grpc and override_host with a
least_request fallback, delivered dynamically (CDS/LDS files).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from api.contract import (
    ACCESS_LOG_FLUSH_SECONDS,
    ACCESS_LOG_NAME,
    BODY_METADATA_NAMESPACE,
    BODY_MODEL_KEY,
    CLIENT_STRIPPED_HEADERS,
    EXT_PROC_MESSAGE_TIMEOUT_SECONDS,
    HEADER_DESTINATION_ENDPOINT,
    LB_METADATA_NAMESPACE,
    METADATA_NAMESPACE,
    PICKER_METADATA_NAMESPACE,
    REQUEST_ATTRIBUTES,
    EdsResource,
    ExtProcMode,
    MetadataKey,
    PickerMetadataKey,
    Role,
)
from extserver.compile.filters.lua import destination_code as destination_lua_code
from extserver.compile.filters.usage import usage_lua_code
from localgateway.envoy import EnvoyProcess


@dataclass
class FakeModelServer:
    """A vLLM-shaped upstream: /v1/models, /metrics (settable load), completions that echo what arrived."""

    host: str
    base: str = "tiny"
    adapters: tuple[str, ...] = ()
    waiting: int = 0
    kv: float = 0.0
    received: list[dict[str, Any]] = field(default_factory=list)
    runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_post("/v1/completions", self._complete)
        app.router.add_post("/v1/chat/completions", self._complete)
        return app

    async def start(self, port: int) -> None:
        self.runner = web.AppRunner(self.app(), access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, self.host, port).start()
        self.port = port

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def _models(self, _: web.Request) -> web.Response:
        data = [{"id": self.base, "object": "model", "parent": None}]
        data += [{"id": a, "object": "model", "parent": self.base} for a in self.adapters]
        return web.json_response({"object": "list", "data": data})

    async def _metrics(self, _: web.Request) -> web.Response:
        labels = f'engine="0",model_name="{self.base}"'
        text = (
            f"vllm:num_requests_running{{{labels}}} 0.0\n"
            f"vllm:num_requests_waiting{{{labels}}} {float(self.waiting)}\n"
            f"vllm:kv_cache_usage_perc{{{labels}}} {self.kv}\n"
            f'vllm:lora_requests_info{{max_lora="4",running_lora_adapters="",waiting_lora_adapters=""}} '
            f"{time.time()}\n"
        )
        return web.Response(text=text, content_type="text/plain")

    async def _complete(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = orjson.loads(raw)
        seen = {
            "served_by": self.address,
            "model": body.get("model"),
            "destination": request.headers.get(HEADER_DESTINATION_ENDPOINT, ""),
            "content_length": request.headers.get("content-length"),
            "body_length": len(raw),
        }
        self.received.append(seen)
        if isinstance(body.get("x_test_status"), int):  # a test asks for a model-server error
            error = {"message": "test error", "type": "InternalServerError", "param": None, "code": 500}
            return web.json_response({"error": error}, status=body["x_test_status"])
        usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        if body.get("stream"):
            response = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await response.prepare(request)
            chunk = {"object": "text_completion", "model": body.get("model"), "choices": [{"text": "hi"}]}
            await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
            hold = body.get("x_test_hold_s")
            if isinstance(hold, int | float):  # a test keeps the stream open after the first token
                await asyncio.sleep(hold)
            await response.write(b"data: " + orjson.dumps({**chunk, "choices": [], "usage": usage}) + b"\n\n")
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
            return response
        return web.json_response(
            {"object": "text_completion", "model": body.get("model"), **seen, "usage": usage}
        )


# --- Envoy config -------------------------------------------------------------------------------


def _eds_cluster(resource: EdsResource, picker_port: int, metadata: dict[str, Any]) -> dict[str, Any]:
    return {
        "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        "name": resource.name,
        "type": "EDS",
        "connect_timeout": "1s",
        "eds_cluster_config": {
            "service_name": resource.name,
            "eds_config": {
                "resource_api_version": "V3",
                "initial_fetch_timeout": "3s",
                "api_config_source": {
                    "api_type": "GRPC",
                    "transport_api_version": "V3",
                    "grpc_services": [
                        {
                            "google_grpc": {
                                "target_uri": f"127.0.0.1:{picker_port}",
                                "stat_prefix": "picker_eds",
                            }
                        }
                    ],
                },
            },
        },
        "load_balancing_policy": {
            "policies": [
                {
                    "typed_extension_config": {
                        "name": "envoy.load_balancing_policies.override_host",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.load_balancing_policies."
                            "override_host.v3.OverrideHost",
                            "override_host_sources": [
                                {"header": HEADER_DESTINATION_ENDPOINT},
                                {
                                    "metadata": {
                                        "key": LB_METADATA_NAMESPACE,
                                        "path": [{"key": HEADER_DESTINATION_ENDPOINT}],
                                    }
                                },
                            ],
                            "fallback_policy": {
                                "policies": [
                                    {
                                        "typed_extension_config": {
                                            "name": "envoy.load_balancing_policies.least_request",
                                            "typed_config": {
                                                "@type": "type.googleapis.com/envoy.extensions."
                                                "load_balancing_policies.least_request.v3.LeastRequest"
                                            },
                                        }
                                    }
                                ]
                            },
                        },
                    }
                }
            ]
        },
        "metadata": {"filter_metadata": {METADATA_NAMESPACE: metadata}},
    }


def _pool_md(ns: str, pool: str, role: str, target: str | None = None) -> dict[str, Any]:
    md = {MetadataKey.ROLE: role, MetadataKey.POOL_NAMESPACE: ns, MetadataKey.POOL_NAME: pool}
    if target is not None:
        md[MetadataKey.TARGET_MODEL] = target
    return md


@dataclass(frozen=True)
class ModelRoute:
    """An InferenceModel as a route: body model -> weighted target clusters of one pool."""

    pool: str
    model: str
    targets: tuple[tuple[str, int], ...]
    criticality: str = "Standard"


def write_envoy_config(
    directory: Path,
    *,
    listener_port: int,
    admin_port: int,
    picker_port: int,
    namespace: str,
    pools: list[str],
    model_routes: list[ModelRoute],
    pool_header: str = "x-test-pool",
) -> Path:
    """Bootstrap + cds.json + lds.json; returns the bootstrap path. Unmatched models go to the
    catch-all cluster of the pool named by header `pool_header` (default: the first pool)."""
    clusters: list[dict[str, Any]] = []
    for pool in pools:
        clusters.append(
            _eds_cluster(EdsResource(namespace, pool), picker_port, _pool_md(namespace, pool, Role.CATCH_ALL))
        )
    for mr in model_routes:
        for target, _ in mr.targets:
            res = EdsResource(namespace, mr.pool, target)
            if not any(c["name"] == res.name for c in clusters):
                clusters.append(
                    _eds_cluster(res, picker_port, _pool_md(namespace, mr.pool, Role.TARGET, target))
                )
    clusters.append(
        {
            "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            "name": "picker",
            "type": "STATIC",
            "connect_timeout": "1s",
            # As compiled: gRPC health ("" service) against the ext_proc port itself.
            "health_checks": [
                {
                    "timeout": "1s",
                    "interval": "1s",
                    "unhealthy_threshold": 3,
                    "healthy_threshold": 1,
                    "grpc_health_check": {},
                }
            ],
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}},
                }
            },
            "load_assignment": {
                "cluster_name": "picker",
                "endpoints": [
                    {
                        "lb_endpoints": [
                            {
                                "endpoint": {
                                    "address": {
                                        "socket_address": {"address": "127.0.0.1", "port_value": picker_port}
                                    }
                                }
                            }
                        ]
                    }
                ],
            },
        }
    )
    routes: list[dict[str, Any]] = []
    for mr in model_routes:
        routes.append(
            {
                "name": f"inference/{namespace}/{mr.model}",
                "match": {
                    "prefix": "/",
                    "dynamic_metadata": [
                        {
                            "filter": BODY_METADATA_NAMESPACE,
                            "path": [{"key": BODY_MODEL_KEY}],
                            "value": {"string_match": {"exact": mr.model}},
                        }
                    ],
                },
                "route": {
                    "weighted_clusters": {
                        "clusters": [
                            {"name": EdsResource(namespace, mr.pool, t).name, "weight": w}
                            for t, w in mr.targets
                        ]
                    },
                    "timeout": "30s",
                },
                "metadata": {
                    "filter_metadata": {
                        METADATA_NAMESPACE: {
                            MetadataKey.ROLE: Role.MODEL_ROUTE,
                            MetadataKey.POOL_NAMESPACE: namespace,
                            MetadataKey.POOL_NAME: mr.pool,
                            MetadataKey.MODEL_NAME: mr.model,
                            MetadataKey.CRITICALITY: mr.criticality,
                        }
                    }
                },
            }
        )
    for pool in pools[1:]:
        routes.append(
            {
                "name": f"inference/{namespace}/{pool}/default",
                "match": {"prefix": "/", "headers": [{"name": pool_header, "string_match": {"exact": pool}}]},
                "route": {"cluster": EdsResource(namespace, pool).name, "timeout": "30s"},
                "metadata": {
                    "filter_metadata": {METADATA_NAMESPACE: _pool_md(namespace, pool, Role.CATCH_ALL)}
                },
            }
        )
    routes.append(
        {
            "name": f"inference/{namespace}/{pools[0]}/default",
            "match": {"prefix": "/"},
            "route": {"cluster": EdsResource(namespace, pools[0]).name, "timeout": "30s"},
            "metadata": {
                "filter_metadata": {METADATA_NAMESPACE: _pool_md(namespace, pools[0], Role.CATCH_ALL)}
            },
        }
    )
    http_filters = [
        {
            "name": "envoy.filters.http.header_mutation",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3."
                "HeaderMutation",
                "mutations": {"request_mutations": [{"remove": h} for h in CLIENT_STRIPPED_HEADERS]},
            },
        },
        {
            "name": "envoy.filters.http.json_to_metadata",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.json_to_metadata.v3."
                "JsonToMetadata",
                "request_rules": {
                    "rules": [
                        {
                            "selectors": [{"key": BODY_MODEL_KEY}],
                            "on_present": {
                                "metadata_namespace": BODY_METADATA_NAMESPACE,
                                "key": BODY_MODEL_KEY,
                                "type": "STRING",
                            },
                        }
                    ],
                    "allow_empty_content_type": True,
                },
            },
        },
        {
            "name": "envoy.filters.http.ext_proc",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
                "grpc_service": {"envoy_grpc": {"cluster_name": "picker"}},
                "failure_mode_allow": False,
                "message_timeout": f"{EXT_PROC_MESSAGE_TIMEOUT_SECONDS:g}s",
                "processing_mode": {
                    "request_header_mode": ExtProcMode.REQUEST_HEADER,
                    "request_body_mode": ExtProcMode.REQUEST_BODY,
                    "request_trailer_mode": ExtProcMode.REQUEST_TRAILER,
                    "response_header_mode": ExtProcMode.RESPONSE_HEADER,
                    "response_body_mode": ExtProcMode.RESPONSE_BODY,
                    "response_trailer_mode": ExtProcMode.RESPONSE_TRAILER,
                },
                "request_attributes": list(REQUEST_ATTRIBUTES),
                # Envoy drops ext_proc dynamic metadata in namespaces not listed here.
                "metadata_options": {
                    "receiving_namespaces": {"untyped": [LB_METADATA_NAMESPACE, PICKER_METADATA_NAMESPACE]}
                },
            },
        },
        {
            # As compiled: the picker's destination (envoy.lb metadata) copied into the request header.
            "name": "envoy.filters.http.lua/inference",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                "default_source_code": {"inline_string": destination_lua_code()},
            },
        },
        {
            # As compiled: token usage from the response body into dynamic metadata, for the access log.
            "name": "envoy.filters.http.lua/inference-usage",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                "default_source_code": {"inline_string": usage_lua_code()},
            },
        },
        {
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
        },
    ]
    # As compiled (extserver/compile/access_log.py): routed requests' status and usage go back to the
    # picker over its gRPC access log, filtered on the pool the picker marked them with.
    pool_filters = [
        {
            "metadata_filter": {
                "matcher": {
                    "filter": PICKER_METADATA_NAMESPACE,
                    "path": [{"key": PickerMetadataKey.POOL}],
                    "value": {"string_match": {"exact": f"{namespace}/{pool}"}},
                },
                "match_if_key_not_found": False,
            }
        }
        for pool in pools
    ]
    access_log = {
        "name": "envoy.access_loggers.http_grpc",
        "filter": pool_filters[0] if len(pool_filters) == 1 else {"or_filter": {"filters": pool_filters}},
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig",
            "common_config": {
                "log_name": ACCESS_LOG_NAME,
                "transport_api_version": "V3",
                "grpc_service": {"envoy_grpc": {"cluster_name": "picker"}},
                "buffer_flush_interval": f"{ACCESS_LOG_FLUSH_SECONDS:g}s",
            },
        },
    }
    listener = {
        "@type": "type.googleapis.com/envoy.config.listener.v3.Listener",
        "name": "inference-test",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": listener_port}},
        "per_connection_buffer_limit_bytes": 9 * 1024 * 1024,
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network."
                            "http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": "inference",
                            "route_config": {
                                "name": "inference-test",
                                "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}],
                            },
                            "http_filters": http_filters,
                            "access_log": [access_log],
                        },
                    }
                ]
            }
        ],
    }
    (directory / "cds.json").write_text(json.dumps({"version_info": "1", "resources": clusters}))
    (directory / "lds.json").write_text(json.dumps({"version_info": "1", "resources": [listener]}))
    bootstrap = {
        "node": {"id": "picker-test", "cluster": "picker-test"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "dynamic_resources": {
            "cds_config": {
                "resource_api_version": "V3",
                "path_config_source": {"path": str(directory / "cds.json")},
            },
            "lds_config": {
                "resource_api_version": "V3",
                "path_config_source": {"path": str(directory / "lds.json")},
            },
        },
    }
    path = directory / "bootstrap.json"
    path.write_text(json.dumps(bootstrap))
    return path


def start_envoy(bootstrap: Path, log_path: Path) -> EnvoyProcess:
    """Envoy on the bootstrap write_envoy_config wrote, logging to `log_path`."""
    envoy = EnvoyProcess(json.loads(bootstrap.read_text()), concurrency=1)
    envoy.log_path = log_path
    envoy.start()
    return envoy


def stop_envoy(envoy: EnvoyProcess) -> None:
    envoy.stop()
