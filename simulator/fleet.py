"""Many simulated servers in one process and one event loop, plus an optional admin endpoint for all."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from aiohttp import web

from simulator.config import FleetConfig, SimServerConfig
from simulator.degradation import Degradation, parse_degradations
from simulator.server import SimServer


class SimFleet:
    """Start and stop many SimServers together: `async with SimFleet(configs) as fleet: ...`."""

    def __init__(
        self, configs: Iterable[SimServerConfig], admin_host: str | None = None, admin_port: int | None = None
    ) -> None:
        self.servers = [SimServer(c) for c in configs]
        self._admin_host = admin_host
        self._admin_port = admin_port
        self._admin_runner: web.AppRunner | None = None
        self.admin_url: str | None = None

    @classmethod
    def from_config(cls, config: FleetConfig) -> SimFleet:
        return cls(config.servers, config.admin_host, config.admin_port)

    async def start(self) -> None:
        results = await asyncio.gather(*(s.start() for s in self.servers), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self.stop()
            raise errors[0]
        if self._admin_host is not None or self._admin_port is not None:
            await self._start_admin(self._admin_host or "127.0.0.1", self._admin_port or 0)

    async def stop(self) -> None:
        if self._admin_runner is not None:
            await self._admin_runner.cleanup()
            self._admin_runner = None
        await asyncio.gather(*(s.stop() for s in self.servers), return_exceptions=True)

    async def __aenter__(self) -> SimFleet:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def server(self, key: str | int) -> SimServer:
        """A server by index, name or "host:port"."""
        if isinstance(key, int):
            return self.servers[key]
        for server in self.servers:
            if key in (server.name, server.address):
                return server
        raise KeyError(f"no simulated server {key!r}")

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per-server /sim/stats, keyed by server name."""
        return {s.name: s.stats_json() for s in self.servers}

    def requests_by_server(self, model: str | None = None) -> dict[str, int]:
        """Inference requests each server received (for one requested model, or all)."""
        return {
            s.name: (
                sum(s.stats.requests_by_model.values()) if model is None else s.stats.requests_by_model[model]
            )
            for s in self.servers
        }

    def reset_stats(self) -> None:
        for server in self.servers:
            server.reset_stats()

    # admin endpoint ----------------------------------------------------------------------------

    async def _start_admin(self, host: str, port: int) -> None:
        app = web.Application()
        app.router.add_get("/sim/fleet/stats", self._admin_stats)
        app.router.add_post("/sim/fleet/stats/reset", self._admin_reset)
        app.router.add_post("/sim/fleet/control", self._admin_control)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
        await runner.setup()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        site = web.SockSite(runner, sock)
        await site.start()
        self._admin_runner = runner
        self.admin_url = f"http://{host}:{sock.getsockname()[1]}"

    async def _admin_stats(self, request: web.Request) -> web.Response:
        return web.json_response({"servers": [s.stats_json() for s in self.servers]})

    async def _admin_reset(self, request: web.Request) -> web.Response:
        self.reset_stats()
        return web.json_response({"servers": [s.stats_json() for s in self.servers]})

    async def _admin_control(self, request: web.Request) -> web.Response:
        """Body: {"server": "<name|host:port|index|*>", ...the keys of /sim/control}.

        With "*", each `degrade` entry goes to the servers that serve its model.
        """
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("body must be a JSON object")
            key = body.pop("server", None)
            if key is None:
                raise ValueError("missing `server` (a name, host:port, index, or *)")
            targets = self.servers if key == "*" else [self.server(key)]
            down = body.pop("down", None)
            degrade = parse_degradations(body.pop("degrade", None))
            if key == "*":
                strangers = {d.model for d in degrade} - {m for s in targets for m in s.models()}
                if strangers:
                    raise ValueError(f"degrade: no server serves {', '.join(sorted(strangers))}")
            states = []
            for server in targets:
                server.apply_control({**body, "degrade": _served_by(server, degrade, key == "*")})
                if down is not None:
                    await server.set_down(bool(down))
                states.append({"server": server.name, **server.control_state()})
        except (ValueError, KeyError, IndexError) as exc:
            return web.json_response(
                {"error": {"message": str(exc), "type": "Bad Request", "param": None, "code": 400}},
                status=400,
            )
        return web.json_response({"servers": states})


def _served_by(server: SimServer, specs: tuple[Degradation, ...], only_served: bool) -> list[Degradation]:
    return [d for d in specs if not only_served or d.model in server.models()]


async def run_forever(fleet: SimFleet) -> None:
    """Serve until cancelled (Ctrl-C / SIGTERM in the CLI)."""
    async with fleet:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
