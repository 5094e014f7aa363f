"""`python -m picker serve ...`: the endpoint picker (ext_proc + EDS :9002, health :9003, metrics :9090)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from api.contract import DEFAULT_MAX_BODY_BYTES, PICKER_GRPC_PORT, PICKER_HEALTH_PORT, PICKER_METRICS_PORT
from picker.scrape import ScrapeConfig
from picker.server import DEFAULT_NAMESPACE, DEFAULT_SERVICE_NAME, PickerConfig, configure_logging, serve


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m picker", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    s = commands.add_parser("serve", help="run the endpoint picker")
    source = s.add_mutually_exclusive_group()
    source.add_argument(
        "--manifests",
        type=Path,
        nargs="+",
        action="extend",
        default=[],
        help="local mode: YAML files/directories with pools, models and Pods (status.podIP)",
    )
    source.add_argument(
        "--kubeconfig", type=Path, help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)"
    )
    source.add_argument("--in-cluster", action="store_true", help="use the pod's service account")
    s.add_argument(
        "--service-name",
        default=DEFAULT_SERVICE_NAME,
        help="serve every InferencePool whose picker reference names this Service",
    )
    s.add_argument("--namespace", default=DEFAULT_NAMESPACE, help="namespace of that Service and its pools")
    s.add_argument("--pool", action="append", default=[], metavar="NS/NAME", help="serve only these pools")
    s.add_argument("--host", default="0.0.0.0")
    s.add_argument("--grpc-port", type=int, default=PICKER_GRPC_PORT)
    s.add_argument("--health-port", type=int, default=PICKER_HEALTH_PORT)
    s.add_argument("--metrics-port", type=int, default=PICKER_METRICS_PORT)
    s.add_argument("--scheduler-config", type=Path, help="scheduling YAML (default: built-in)")
    s.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    s.add_argument("--scrape-interval", type=float, default=0.05, help="seconds between /metrics scrapes")
    s.add_argument("--log-format", choices=("json", "console"), default="json")
    s.add_argument("--log-level", default="info")
    return parser  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for pool in args.pool:
        if pool.count("/") != 1 or not all(pool.split("/")):
            print(f"--pool {pool!r}: expected NS/NAME", file=sys.stderr)
            return 2
    if args.max_body_bytes <= 0:
        print("--max-body-bytes must be positive", file=sys.stderr)
        return 2
    configure_logging(args.log_format, args.log_level)
    config = PickerConfig(
        service_name=args.service_name,
        namespace=args.namespace,
        pools=tuple(args.pool),
        manifests=tuple(args.manifests),
        kubeconfig=args.kubeconfig,
        in_cluster=args.in_cluster,
        host=args.host,
        grpc_port=args.grpc_port,
        health_port=args.health_port,
        metrics_port=args.metrics_port,
        scheduler_config=args.scheduler_config,
        max_body_bytes=args.max_body_bytes,
        scrape=ScrapeConfig(metrics_interval_s=args.scrape_interval),
    )
    try:
        import uvloop

        uvloop.run(serve(config))
    except ImportError:
        asyncio.run(serve(config))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
