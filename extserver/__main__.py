"""`python -m extserver serve` (EG extension gRPC server) and `translate` (print compiled xDS)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog
import yaml
from google.protobuf import json_format
from google.protobuf.message import Message

from api import contract
from api.yamlio import ManifestError, load_documents
from extserver.compile import CompileOptions
from extserver.eg import facts as eg
from extserver.eg.call_order import run_hooks
from extserver.eg.resources import EgXds
from extserver.eg.standin import build_eg_xds_by_gateway
from extserver.hooks import (
    ConditionReporter,
    HookContext,
    KubernetesConditionReporter,
    LogConditionReporter,
    SnapshotSource,
)
from extserver.revisions import RevisionReporter
from extserver.server import ServeOptions, start_server

log = structlog.get_logger("extserver")

# Envoy Gateway's GatewayClass controllerName: the controller of the Gateways pools report status under.


def _configure_logging(level: str, json_logs: bool) -> None:
    renderer: Any = (
        structlog.processors.JSONRenderer() if json_logs else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m extserver", description=__doc__)
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log-json", action="store_true", help="JSON log lines (default: console)")
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=contract.DEFAULT_MAX_BODY_BYTES,
        help="buffer limit set on patched listeners and routes (EG's default 32 KiB fails long prompts)",
    )
    parser.add_argument(
        "--mirror-port",
        type=int,
        default=contract.MIRROR_LISTENER_PORT,
        help="port of the loopback listener in each Envoy that routes mirrored copies (docs/xds.md)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve EG's extension hooks over gRPC")
    serve.add_argument(
        "--manifests",
        nargs="+",
        action="extend",
        type=Path,
        help="YAML files/dirs to read pools and models from",
    )
    serve.add_argument("--kubeconfig", type=Path, help="kubeconfig for the Kubernetes source")
    serve.add_argument("--in-cluster", action="store_true", help="use the pod's service account")
    serve.add_argument("--namespace", help="watch one namespace only (default: all)")
    serve.add_argument(
        "--controller-name",
        default=eg.CONTROLLER_NAME,
        help="controllerName written into v1 InferencePool status parents (the Gateway's controller)",
    )
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=contract.EXTSERVER_PORT)
    serve.add_argument(
        "--max-message-bytes",
        type=int,
        default=eg.DEFAULT_MAX_MESSAGE_BYTES,
        help="gRPC send/receive limit; keep equal to EG's extensionManager.maxMessageSize",
    )
    serve.add_argument("--tls-cert", type=Path, help="server certificate (PEM)")
    serve.add_argument("--tls-key", type=Path, help="server private key (PEM)")
    serve.add_argument("--client-ca", type=Path, help="CA bundle for client certificates: enables mTLS")

    translate = sub.add_parser("translate", help="print the xDS the hooks produce for manifests")
    translate.add_argument("-f", "--file", dest="files", action="append", type=Path, required=True)
    translate.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _configure_logging(args.log_level, args.log_json)
    if not 1 <= args.mirror_port <= 65535:
        parser.error(f"--mirror-port: {args.mirror_port} is not a port (1..65535)")
    options = CompileOptions(max_body_bytes=args.max_body_bytes, mirror_port=args.mirror_port)
    try:
        if args.command == "translate":
            text = asyncio.run(translate(args.files, options, args.output))
            sys.stdout.write(text)
            return 0
        return asyncio.run(_serve(args, options))
    except (ManifestError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def load_manifests(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """Every document of every file (directories: their *.yaml / *.yml files, sorted)."""
    objects: list[dict[str, Any]] = []
    for path in paths:
        files = sorted([*path.glob("*.yaml"), *path.glob("*.yml")]) if path.is_dir() else [path]
        for file in files:
            objects.extend(load_documents(file))
    return objects


async def translate(files: Sequence[Path], options: CompileOptions, output: str = "yaml") -> str:
    """Build EG's xDS for the manifests, run the hooks per Gateway in EG's order, render the result."""
    from api.sources.files import FileSource

    objects = load_manifests(files)
    # As `serve --manifests` reads them: HTTPRoutes (weights, mirrors) and Pods count when present.
    source = FileSource(list(files))
    snapshot = await source.fresh_snapshot()
    for key, errors in snapshot.invalid.items():
        log.warning("invalid object skipped", object=key, errors=list(errors))
    ctx = HookContext(source=source, options=options, status=LogConditionReporter())
    documents = []
    for gateway, xds in build_eg_xds_by_gateway(objects).items():
        result = await run_hooks(xds, ctx)
        documents.append({"gateway": gateway, **render(result)})
    if output == "json":
        return json.dumps(documents if len(documents) != 1 else documents[0], indent=2) + "\n"
    return yaml.safe_dump_all(documents, sort_keys=False, width=120)


def render(xds: EgXds) -> dict[str, Any]:
    """Listeners, routes and clusters as config_dump-style dicts (camelCase, typed Anys expanded)."""
    return {
        "listeners": [_plain(m) for m in xds.listeners],
        "routes": [_plain(m) for m in xds.routes],
        "clusters": [_plain(m) for m in xds.clusters],
    }


def _plain(message: Message) -> dict[str, Any]:
    # MessageToDict yields OrderedDicts inside expanded Anys, which yaml.safe_dump cannot represent.
    plain: dict[str, Any] = json.loads(json_format.MessageToJson(message))
    return plain


async def _serve(args: argparse.Namespace, options: CompileOptions) -> int:
    source, run, stop, status = _source(args)
    runner = asyncio.create_task(run())
    try:
        await asyncio.wait_for(_wait_synced(source), timeout=120)
    except TimeoutError:
        log.warning("source not synced after 120s; serving anyway (hooks read fresh state)")
    ctx = HookContext(source=source, options=options, status=status)
    serve_options = ServeOptions(
        host=args.host,
        port=args.port,
        max_message_bytes=args.max_message_bytes,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        client_ca=args.client_ca,
    )
    server = await start_server(ctx, serve_options)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, done.set)
    await done.wait()
    log.info("shutting down")
    await server.stop(grace=5.0)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(status.flush(), timeout=5.0)
    await status.close()
    stop()
    runner.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await runner
    return 0


async def _wait_synced(source: Any) -> None:
    await source.wait_synced()


def _source(
    args: argparse.Namespace,
) -> tuple[SnapshotSource, Any, Any, ConditionReporter | RevisionReporter]:
    """The pools/models source, its run and stop, and where status conditions go (log or API server)."""
    if args.manifests:
        from api.sources.files import FileSource

        files = FileSource(args.manifests)
        return files, files.run, files.stop, LogConditionReporter()
    from kubernetes import client, config

    from api.sources.kubernetes import (
        HTTPROUTE_KIND,
        INFERENCE_KINDS,
        POD_KIND,
        SERVICE_KIND,
        KubernetesSource,
    )

    if args.in_cluster:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    else:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(args.kubeconfig) if args.kubeconfig else None
        )
    api = client.ApiClient()
    # Pods: the pools' endpoints for every picker (not only EDS-serving ones); Services: picker refs;
    # HTTPRoutes: the weights of a rule split over several pools (EG's hooks do not carry them).
    kinds = (*INFERENCE_KINDS, POD_KIND, SERVICE_KIND, HTTPROUTE_KIND)
    kube = KubernetesSource(api, kinds=kinds, namespace=args.namespace)
    reporter = RevisionReporter(api, kube.store, KubernetesConditionReporter(api, args.controller_name))

    async def run() -> None:
        await asyncio.gather(kube.run(), reporter.run())

    return kube, run, kube.stop, reporter


if __name__ == "__main__":
    sys.exit(main())
