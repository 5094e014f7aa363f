"""`python -m localgateway --manifests DIR`: run the local gateway until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

import structlog

from localgateway.run import LocalGateway, LocalGatewayOptions


def _port_pair(text: str) -> tuple[int, int]:
    gateway, _, local = text.partition("=")
    return int(gateway), int(local or gateway)


async def run(options: LocalGatewayOptions) -> None:
    async with LocalGateway(options) as gw:
        print(f"gateway listening on {gw.url()}")
        print(f"  Envoy admin:    {gw.admin_url}  (/config_dump, /stats, /clusters)")
        print(f"  picker metrics: {gw.picker_metrics_url}")
        print(f"  logs:           {gw.log_dir}")
        for pod in gw.pods:
            print(f"  pod {pod.name} at {pod.address} serves {pod.served_model_name}")
        print("edit the manifests to re-translate; Ctrl-C stops everything", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localgateway", description=__doc__)
    parser.add_argument("--manifests", type=Path, nargs="+", action="extend", required=True)
    parser.add_argument(
        "--port",
        type=_port_pair,
        action="append",
        default=[],
        metavar="GATEWAY[=LOCAL]",
        help="serve a Gateway listener port on another local port, e.g. 8081=18081",
    )
    parser.add_argument("--ip-prefix", default="127.0.0.", help="loopback prefix for simulated pods")
    parser.add_argument("--time-scale", type=float, default=0.02, help="simulated time per real second")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    options = LocalGatewayOptions(
        manifests=args.manifests,
        listener_ports=dict(args.port),
        ip_prefix=args.ip_prefix,
        time_scale=args.time_scale,
        log_level=args.log_level,
    )
    asyncio.run(run(options))
    return 0


if __name__ == "__main__":
    sys.exit(main())
