"""Starts and stops one real vLLM OpenAI server (CPU build) from the cached venv, for checks and tests.

Two servers share this 2-core machine, so each runs its engine on one OpenMP thread pinned to its own
core, with a small KV cache and a short max model length. Use as a context manager (sync or async).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path
from types import TracebackType

from hack.vllm.setup import LORA_RANK, VllmEnv, ensure_tiny_model, ensure_vllm, offline_env
from localgateway.ports import free_port

STARTUP_TIMEOUT_S = 240.0
STOP_GRACE_S = 15.0
LOG_TAIL_LINES = 40
_PR_SET_PDEATHSIG = 1
# Loopback servers: never route through a proxy from the environment.
LOCAL_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _term_with_parent() -> None:
    """Runs in the child before exec: SIGTERM when the thread that started it dies."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class VllmServerError(RuntimeError):
    """The vLLM server did not come up; the message holds the tail of its log."""


class VllmServer:
    """One `python -m vllm.entrypoints.openai.api_server` process group, started and health-checked."""

    def __init__(
        self,
        *,
        model_dir: Path,
        served_model_name: str,
        lora_modules: dict[str, Path | str],
        chat_template: Path | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        max_loras: int = 2,
        max_num_seqs: int = 4,
        max_model_len: int = 1024,
        kv_cache_space_gib: int = 1,
        cpu_core: int | None = None,
        dtype: str = "bfloat16",
        extra_args: tuple[str, ...] = (),
        env: VllmEnv | None = None,
        log_path: Path | None = None,
        startup_timeout_s: float = STARTUP_TIMEOUT_S,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.served_model_name = served_model_name
        self.lora_modules = {name: Path(path) for name, path in lora_modules.items()}
        self.chat_template = chat_template
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.max_loras = max_loras
        self.max_num_seqs = max_num_seqs
        self.max_model_len = max_model_len
        self.kv_cache_space_gib = kv_cache_space_gib
        self.cpu_core = cpu_core
        self.dtype = dtype
        self.extra_args = extra_args
        self._env = env
        self._owns_log = log_path is None  # a log we made is removed after a clean run, kept after a failure
        self.log_path = log_path or Path(tempfile.mkstemp(prefix=f"vllm-{self.port}-", suffix=".log")[1])
        self.startup_timeout_s = startup_timeout_s
        self.startup_seconds: float | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._tmpdir: Path | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        """The argv that starts this server (python from the cached vLLM venv)."""
        env = self._env or ensure_vllm()
        argv = [
            str(env.python), "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(self.model_dir),
            "--served-model-name", self.served_model_name,
            "--host", self.host,
            "--port", str(self.port),
            "--dtype", self.dtype,
            "--max-model-len", str(self.max_model_len),
            "--max-num-seqs", str(self.max_num_seqs),
            "--enable-lora",
            "--max-loras", str(self.max_loras),
            "--max-lora-rank", str(LORA_RANK),
        ]
        if self.lora_modules:
            argv += ["--lora-modules", *(f"{name}={path}" for name, path in self.lora_modules.items())]
        if self.chat_template is not None:
            argv += ["--chat-template", str(self.chat_template)]
        return argv + list(self.extra_args)

    def environment(self, tmpdir: Path | None = None) -> dict[str, str]:
        """Offline, one OpenMP thread, a small KV cache; pinned to cpu_core when given."""
        threads_bind = str(self.cpu_core) if self.cpu_core is not None else "nobind"
        extra = {"TMPDIR": str(tmpdir)} if tmpdir is not None else {}
        return offline_env({
            **extra,
            "VLLM_CPU_KVCACHE_SPACE": str(self.kv_cache_space_gib),
            "VLLM_CPU_OMP_THREADS_BIND": threads_bind,
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            "CUDA_VISIBLE_DEVICES": "",
        })

    def start(self) -> None:
        """Starts the server and blocks until /health answers 200; raises VllmServerError otherwise."""
        started = self._spawn()
        self._await_ready(started)

    def _spawn(self) -> float:
        if self._process is not None:
            raise VllmServerError(f"vLLM server on {self.address} already started")
        started = time.monotonic()
        # vLLM leaves rendezvous files in TMPDIR; give it a private one that stop() removes.
        self._tmpdir = Path(tempfile.mkdtemp(prefix="vllm-tmp-"))
        with self.log_path.open("wb") as log:
            # Own session: stop() signals the whole group (the API server forks an engine core). The
            # parent-death signal stops it if this process dies without calling stop().
            self._process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, env=self.environment(self._tmpdir),
                start_new_session=True, stdin=subprocess.DEVNULL, preexec_fn=_term_with_parent,
            )
        return started

    def _await_ready(self, started: float) -> None:
        try:
            self._wait_healthy(started)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started

    def _wait_healthy(self, started: float) -> None:
        assert self._process is not None
        deadline = started + self.startup_timeout_s
        while time.monotonic() < deadline:
            code = self._process.poll()
            if code is not None:
                raise VllmServerError(
                    f"vLLM server on {self.address} exited with {code} during startup; "
                    f"{self.log_path} ends:\n"
                    + self.log_tail()
                )
            if self._healthy():
                return
            time.sleep(1.0)
        raise VllmServerError(
            f"vLLM server on {self.address} not healthy after {self.startup_timeout_s:.0f} s; "
            f"{self.log_path} ends:\n"
            + self.log_tail()
        )

    def _healthy(self) -> bool:
        try:
            with LOCAL_HTTP.open(self.base_url + "/health", timeout=2.0) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of the server's log."""
        try:
            with self.log_path.open("r", errors="replace") as log:
                return "".join(deque(log, maxlen=lines))
        except OSError as err:
            return f"(log {self.log_path} unreadable: {err})"

    def stop(self) -> None:
        """SIGTERM to the process group, then SIGKILL after a grace period; idempotent."""
        process, self._process = self._process, None
        if process is None:
            return
        self._signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self._signal_group(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_GRACE_S)
        # The engine core may outlive the API server briefly: make sure nothing of the group is left.
        self._signal_group(process.pid, signal.SIGKILL)
        if self._owns_log and self.startup_seconds is not None:
            self.log_path.unlink(missing_ok=True)
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> VllmServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> VllmServer:
        # Spawn on the loop's thread: the parent-death signal is tied to the thread that forked.
        started = self._spawn()
        await asyncio.to_thread(self._await_ready, started)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)


def start_all(servers: list[VllmServer], *, together: bool = False) -> None:
    """Starts servers one after another, or all at once (faster when the cores are otherwise idle)."""
    started: list[VllmServer] = []
    try:
        if together:
            spawned = [(server, server._spawn()) for server in servers]
            started = [server for server, _ in spawned]
            for server, at in spawned:
                server._await_ready(at)
        else:
            for server in servers:
                server.start()
                started.append(server)
    except BaseException:
        for server in started:
            server.stop()
        raise


def main(argv: list[str] | None = None) -> int:
    """Serves the tiny model with both adapters on each host until Ctrl-C (or just measures startup)."""
    parser = argparse.ArgumentParser(description="Run real vLLM servers for the tiny model and adapters.")
    parser.add_argument("--hosts", nargs="+", default=["127.0.0.2", "127.0.0.3"])
    parser.add_argument("--port", type=int, default=8000, help="the same port on every host")
    parser.add_argument("--served-model-name", default="tiny")
    parser.add_argument("--together", action="store_true", help="start all servers at once")
    parser.add_argument("--check", action="store_true", help="stop as soon as every server is healthy")
    args = parser.parse_args(argv)
    env = ensure_vllm()
    model = ensure_tiny_model(env)
    servers = [
        VllmServer(
            model_dir=model.model_dir, served_model_name=args.served_model_name,
            lora_modules=dict(model.adapters), chat_template=model.chat_template,
            host=host, port=args.port, cpu_core=index % (os.cpu_count() or 1), env=env,
        )
        for index, host in enumerate(args.hosts)
    ]
    began = time.monotonic()
    start_all(servers, together=args.together)
    try:
        for server in servers:
            print(f"{server.base_url} healthy after {server.startup_seconds:.1f} s (log {server.log_path})")
        print(f"all healthy after {time.monotonic() - began:.1f} s", flush=True)
        if not args.check:
            stop_signals = {signal.SIGINT, signal.SIGTERM}
            signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)  # after spawning: children keep defaults
            signal.sigwait(stop_signals)
    finally:
        for server in servers:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
