"""One simulated vLLM server: aiohttp routes in front of an Engine, plus test controls and stats."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from typing import Any

import structlog
from aiohttp import web

from simulator.config import SimServerConfig
from simulator.controls import CONTROL_KEYS, MetricOverrides, ServerStats, validated_override
from simulator.degradation import Degradation, Degradations, parse_degradations
from simulator.engine import Engine, Sequence
from simulator.latency import count_tokens
from simulator.metrics import LoraInfoSeries, MetricsRenderer, view_of
from simulator.openai_api import (
    ApiError,
    InferenceRequest,
    Kind,
    StreamChunks,
    completion_body,
    context_length_error,
    filler_text,
    internal_error,
    model_card,
    new_request_id,
    not_found_model,
    parse_request,
)
from simulator.prefix_cache import prompt_block_hashes
from simulator.streaming import write_stream

log = structlog.get_logger("simulator")

SERVER_HEADER = "x-sim-server"
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_BODY_BYTES = 64 * 1024 * 1024


class SimServer:
    """A vLLM-shaped HTTP server on host:port. `await start()`, `await stop()`; or use SimFleet."""

    def __init__(self, config: SimServerConfig) -> None:
        self.config = config
        self.engine = Engine(config.engine_config())
        self.stats = ServerStats()
        self.overrides = MetricOverrides()
        self.failing = False
        self.down = False
        self.degradations = Degradations()
        self.degradations.set(config.degrade)  # a config's after_s counts from here
        self._port = config.port
        self._created = time.time()
        self._lora_series = LoraInfoSeries()
        self._metrics = MetricsRenderer(
            config.served_model_name,
            config.block_size,
            config.kv_cache_tokens,
            config.max_loras,
            lora_enabled=bool(config.lora_modules),
            created=self._created,
        )
        self._runner: web.AppRunner | None = None
        self._site: web.SockSite | None = None
        self._inflight: set[asyncio.Task[Any]] = set()
        self._background: set[asyncio.Task[Any]] = set()
        self._perm_ids = {m: "modelperm-" + os.urandom(8).hex() for m in self.models()}

    # identity ----------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def address(self) -> str:
        return f"{self.config.host}:{self._port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def name(self) -> str:
        return self.config.name or self.address

    def models(self) -> list[str]:
        return [self.config.served_model_name, *self.config.lora_modules]

    # lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[self._middleware])
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics_handler)
        app.router.add_get("/sim/stats", self._stats_handler)
        app.router.add_post("/sim/stats/reset", self._stats_reset)
        app.router.add_post("/sim/control", self._control)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        await self._listen()
        self.engine.start()

    async def stop(self) -> None:
        await self.engine.stop()
        self._cancel_inflight()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self._site = None

    async def _listen(self) -> None:
        assert self._runner is not None
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.config.host, self._port))
        except OSError:
            sock.close()
            raise
        self._port = sock.getsockname()[1]
        self._site = web.SockSite(self._runner, sock)
        await self._site.start()

    def _go_down(self) -> None:
        task = asyncio.get_running_loop().create_task(self.set_down(True))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _cancel_inflight(self) -> None:
        for task in list(self._inflight):
            task.cancel()

    # controls (Python API; POST /sim/control maps onto these) ---------------------------------

    def set_overrides(self, **values: Any) -> None:
        """Force /metrics values: running, waiting, kv_cache_usage, running/waiting_lora_adapters.

        A value of None removes that override.
        """
        checked = {key: validated_override(key, value) for key, value in values.items()}
        for key, value in checked.items():
            setattr(self.overrides, key, value)

    def clear_overrides(self) -> None:
        """Back to the engine's own metrics, normal speed, no failures, no degraded model."""
        self.overrides = MetricOverrides()
        self.engine.set_slowdown(1.0)
        self.failing = False
        self.degradations.clear()

    def set_slowdown(self, factor: float) -> None:
        """Multiply every latency by factor (1.0 = normal)."""
        self.engine.set_slowdown(factor)

    def set_fail(self, failing: bool) -> None:
        """Answer completions, chat and /health with 500 (models and metrics keep working)."""
        self.failing = failing

    def degrade(self, *specs: Degradation) -> None:
        """Degrade requests for each spec's model from now on (a spec that changes nothing removes it)."""
        self._check_served(specs)
        self.degradations.set(specs)

    def _check_served(self, specs: tuple[Degradation, ...]) -> None:
        served = self.models()
        unknown = sorted({s.model for s in specs} - set(served))
        if unknown:
            raise ValueError(f"degrade: {', '.join(unknown)} not served here (serving: {', '.join(served)})")

    async def set_down(self, down: bool) -> None:
        """Stop listening and drop every connection and request (a killed pod), or listen again."""
        if down == self.down:
            return
        self.down = down
        if down:
            if self._site is not None:
                await self._site.stop()
                self._site = None
            self._cancel_inflight()
            self.engine.reset()
            self._lora_series.clear()
            if self._runner is not None:
                # Close idle keep-alive connections too: a killed pod resets them.
                server = self._runner.server
                if server is not None:
                    for conn in list(server.connections):
                        conn.force_close()
        else:
            await self._listen()

    def apply_control(self, control: dict[str, Any]) -> dict[str, Any]:
        """Apply a /sim/control body except `down` (async); returns the resulting control state."""
        unknown = set(control) - CONTROL_KEYS
        if unknown:
            raise ValueError(f"unknown control keys: {', '.join(sorted(unknown))}")
        # Check everything before changing anything, so a 400 leaves the server as it was.
        slowdown = control.get("slowdown")
        if "slowdown" in control and (
            isinstance(slowdown, bool) or not isinstance(slowdown, int | float) or slowdown <= 0
        ):
            raise ValueError("slowdown must be a number > 0")
        degrade = parse_degradations(control.get("degrade"))
        self._check_served(degrade)
        overrides = {k: validated_override(k, control[k]) for k in control if k in vars(self.overrides)}
        if control.get("clear"):
            self.clear_overrides()
        if degrade:
            self.degrade(*degrade)
        if slowdown is not None:
            self.set_slowdown(float(slowdown))
        if "fail" in control:
            self.set_fail(bool(control["fail"]))
        for key, value in overrides.items():
            setattr(self.overrides, key, value)
        return self.control_state()

    def control_state(self) -> dict[str, Any]:
        return {
            "slowdown": self.engine.slowdown,
            "fail": self.failing,
            "down": self.down,
            "degrade": self.degradations.state(),
            "overrides": {
                k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(self.overrides).items()
            },
        }

    def reset_stats(self) -> None:
        self.stats = ServerStats()

    def stats_json(self) -> dict[str, Any]:
        snap = self.engine.snapshot()
        return {
            "server": self.name,
            "address": self.address,
            **self.stats.as_json(),
            "engine": {
                "running": snap.running,
                "waiting": snap.waiting,
                "kv_tokens_held": snap.kv_tokens_held,
                "kv_cache_usage": snap.kv_cache_usage,
                "loaded_lora_adapters": list(snap.loaded_lora_adapters),
                "running_lora_adapters": list(snap.running_lora_adapters),
                "prompt_tokens": self.engine.counters.prompt_tokens,
                "prompt_tokens_cached": self.engine.counters.prompt_tokens_cached,
                "generation_tokens": self.engine.counters.generation_tokens,
                "lora_loads": self.engine.counters.lora_loads,
            },
            "control": self.control_state(),
        }

    def metrics_text(self) -> str:
        view = view_of(self.engine.snapshot())
        if self.overrides.any():
            view = self.overrides.apply(view)
        if self.config.lora_modules:
            self._lora_series.observe(view.running_lora_adapters, view.waiting_lora_adapters, time.time())
        return self._metrics.render(view, self.engine.counters, self._lora_series)

    # HTTP --------------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            response: web.StreamResponse = await handler(request)
        except ApiError as api_err:
            response = web.json_response(api_err.body(), status=api_err.status)
        except web.HTTPException as exc:
            # aiohttp's own errors (413 too large, 405, 404 path) in vLLM's error shape.
            err = ApiError(
                exc.status, exc.reason, "Bad Request" if exc.status < 500 else "InternalServerError"
            )
            response = web.json_response(err.body(), status=exc.status)
        except Exception as exc:  # a simulator bug answers 500 instead of dropping the connection
            log.exception("sim handler failed", server=self.name, path=request.path)
            response = web.json_response(internal_error(repr(exc)).body(), status=500)
        finally:
            if task is not None:
                self._inflight.discard(task)
        if not response.prepared:
            response.headers[SERVER_HEADER] = self.name
        return response

    async def _health(self, request: web.Request) -> web.Response:
        if self.failing:
            raise internal_error()
        return web.Response(status=200)

    async def _models(self, request: web.Request) -> web.Response:
        cfg = self.config
        created = int(self._created)
        base = cfg.served_model_name
        data = [
            model_card(base, cfg.model_root, None, cfg.effective_max_model_len, created, self._perm_ids[base])
        ]
        data += [
            model_card(name, path, base, None, created, self._perm_ids[name])
            for name, path in cfg.lora_modules.items()
        ]
        return web.json_response({"object": "list", "data": data})

    async def _metrics_handler(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics_text().encode(), headers={"Content-Type": METRICS_CONTENT_TYPE})

    async def _stats_handler(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats_json())

    async def _stats_reset(self, request: web.Request) -> web.Response:
        self.reset_stats()
        return web.json_response(self.stats_json())

    async def _control(self, request: web.Request) -> web.Response:
        try:
            control = await request.json()
        except ValueError as exc:
            raise ApiError(400, f"JSON decode error: {exc}", "Bad Request") from exc
        if not isinstance(control, dict):
            raise ApiError(400, "control body must be a JSON object", "Bad Request")
        try:
            state = self.apply_control(control)
        except ValueError as exc:
            raise ApiError(400, str(exc), "Bad Request") from exc
        if "down" in control and bool(control["down"]):
            # Answer first, then stop listening (a down server cannot answer its own control call).
            asyncio.get_running_loop().call_later(0.01, self._go_down)
            state["down"] = True
        return web.json_response(state)

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._inference(request, "completion")

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._inference(request, "chat")

    async def _inference(self, request: web.Request, kind: Kind) -> web.StreamResponse:
        raw = await request.read()
        try:
            req, body = parse_request(kind, raw)
        except ApiError:
            self.stats.requests_by_model["<invalid>"] += 1
            self.stats.responses_by_status[400] += 1
            raise
        model = req.model if req.model is not None else self.config.served_model_name
        self.stats.requests_by_model[model] += 1
        self.stats.last_request = body
        try:
            response = await self._generate(request, req, model)
        except ApiError as err:
            self.stats.responses_by_status[err.status] += 1
            raise
        self.stats.responses_by_status[response.status] += 1
        return response

    async def _generate(self, request: web.Request, req: InferenceRequest, model: str) -> web.StreamResponse:
        if model not in self.config.lora_modules and model != self.config.served_model_name:
            raise not_found_model(model, [self.config.served_model_name])
        if self.failing:
            raise internal_error()
        effect = self.degradations.on_request(model)
        if effect is not None and effect.fail:
            raise internal_error(f"simulated degradation of {model}")
        prompt_tokens = count_tokens(len(req.prompt))
        max_tokens = req.max_tokens if req.max_tokens is not None else self.config.default_max_tokens
        max_len = self.config.effective_max_model_len
        if prompt_tokens + max_tokens > max_len or not self.engine.fits(prompt_tokens, max_tokens):
            raise context_length_error(min(max_len, self.config.kv_cache_tokens), prompt_tokens, max_tokens)
        adapter = model if model in self.config.lora_modules else None
        loop = asyncio.get_running_loop()
        seq = Sequence(
            model=model,
            adapter=adapter,
            prompt_tokens=prompt_tokens,
            max_tokens=max_tokens,
            block_hashes=prompt_block_hashes(req.prompt, self.config.block_size, salt=adapter or ""),
            arrival=loop.time(),
            done=loop.create_future(),
            ttft_factor=effect.ttft if effect is not None else 1.0,
            tpot_factor=effect.tpot if effect is not None else 1.0,
        )
        self.engine.submit(seq)
        request_id = new_request_id(req.kind)
        try:
            if req.stream:
                return await self._stream(request, req, seq, request_id, model)
            reason = await seq.done
            if reason == "abort":
                raise internal_error("request aborted: the server is going down")
            if seq.token_times is not None:  # a degraded request answers on its stretched clock
                await asyncio.sleep(max(0.0, self.engine.emit_time(seq, seq.generated - 1) - loop.time()))
            body = completion_body(
                req.kind,
                request_id,
                model,
                filler_text(0, seq.generated),
                reason,
                prompt_tokens,
                seq.generated,
            )
            return web.json_response(body)
        finally:
            self.engine.abort(seq)  # no-op once finished; frees the slot if the client went away

    async def _stream(
        self, request: web.Request, req: InferenceRequest, seq: Sequence, request_id: str, model: str
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                SERVER_HEADER: self.name,
            }
        )
        await response.prepare(request)
        chunks = StreamChunks(req.kind, request_id, model)
        await write_stream(request, response, chunks, self.engine, seq, req.include_usage)
        return response
