"""CLI: `python -m simulator [vLLM-like flags]` (one server); `... fleet --config F` (many)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Sequence

from simulator.config import SimServerConfig, load_fleet_config, parse_lora_modules
from simulator.degradation import DEGRADE_ENV, parse_degradations
from simulator.fleet import SimFleet, run_forever
from simulator.latency import H100_KV_CACHE_TOKENS, LORA_LOAD_MS


def _server_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m simulator", description="A simulated vLLM server.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--model", default=None, help="model path shown as `root` in /v1/models")
    p.add_argument(
        "--served-model-name", default=None, help="base model name (default: --model or sim-model)"
    )
    p.add_argument("--lora-modules", nargs="*", default=[], metavar="NAME=PATH")
    p.add_argument("--enable-lora", action="store_true", help="accepted for vLLM compatibility")
    p.add_argument("--max-loras", type=int, default=1)
    p.add_argument("--max-lora-rank", type=int, default=None, help="accepted for vLLM compatibility")
    p.add_argument("--max-num-seqs", type=int, default=256)
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument("--kv-cache-tokens", type=int, default=H100_KV_CACHE_TOKENS)
    p.add_argument("--block-size", type=int, default=16)
    p.add_argument("--time-scale", type=float, default=1.0, help="0.1 runs 10x faster than real time")
    p.add_argument("--lora-load-ms", type=float, default=LORA_LOAD_MS)
    p.add_argument("--default-max-tokens", type=int, default=16)
    p.add_argument("--name", default=None, help="x-sim-server header value (default host:port)")
    p.add_argument(
        "--degrade",
        action="append",
        default=[],
        metavar="model=NAME,ttft=N,tpot=N,error_rate=P,after_s=S,after_requests=K,ramp_s=S,seed=I",
        help=f"degrade one model's requests (repeatable; ';' separates entries); ${DEGRADE_ENV} adds more",
    )
    return p


def _fleet_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m simulator fleet", description="Many simulated servers.")
    p.add_argument("--config", required=True, help="fleet YAML (defaults:, servers:, admin:)")
    p.add_argument("--admin", default=None, metavar="HOST:PORT", help="fleet admin endpoint (overrides YAML)")
    return p


def build_fleet(argv: Sequence[str]) -> SimFleet:
    if argv and argv[0] == "fleet":
        args = _fleet_parser().parse_args(argv[1:])
        fleet_config = load_fleet_config(args.config)
        host, port = fleet_config.admin_host, fleet_config.admin_port
        if args.admin:
            host, _, port_text = args.admin.rpartition(":")
            port = int(port_text)
        return SimFleet(fleet_config.servers, admin_host=host or None, admin_port=port)
    args = _server_parser().parse_args(argv)
    served = args.served_model_name or args.model or "sim-model"
    # The environment first: a --degrade for the same model replaces it.
    degrade = parse_degradations([os.environ.get(DEGRADE_ENV, ""), *args.degrade])
    config = SimServerConfig(
        host=args.host,
        port=args.port,
        served_model_name=served,
        model=args.model,
        lora_modules=parse_lora_modules(args.lora_modules),
        max_loras=args.max_loras,
        max_num_seqs=args.max_num_seqs,
        kv_cache_tokens=args.kv_cache_tokens,
        block_size=args.block_size,
        max_model_len=args.max_model_len,
        time_scale=args.time_scale,
        lora_load_ms=args.lora_load_ms,
        default_max_tokens=args.default_max_tokens,
        name=args.name,
        degrade=tuple({d.model: d for d in degrade}.values()),
    )
    return SimFleet([config])


async def _main(fleet: SimFleet) -> None:
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        if task is not None:
            loop.add_signal_handler(sig, task.cancel)
    await fleet.start()
    try:
        for server in fleet.servers:
            print(f"sim: {server.name} serving {','.join(server.models())} at {server.url}", flush=True)
        if fleet.admin_url:
            print(f"sim: fleet admin at {fleet.admin_url}", flush=True)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
    finally:
        await fleet.stop()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        fleet = build_fleet(list(sys.argv[1:] if argv is None else argv))
    except (ValueError, OSError) as exc:
        print(f"sim: {exc}", file=sys.stderr)
        return 2
    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(_main(fleet))
    except OSError as exc:
        print(f"sim: {exc}", file=sys.stderr)
        return 1
    return 0


__all__ = ["build_fleet", "main", "run_forever"]

if __name__ == "__main__":
    sys.exit(main())
