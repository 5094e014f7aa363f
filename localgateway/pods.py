"""Turn the Deployments of a manifest set into local Pods: one loopback address and one simulator each."""

from __future__ import annotations

import shlex
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from simulator.degradation import DEGRADE_ENV, Degradation, parse_degradations


@dataclass(frozen=True)
class LocalPod:
    """A simulated model-server pod: where it listens and what it serves, read from the vLLM command line."""

    namespace: str
    name: str
    labels: Mapping[str, str]
    ip: str
    port: int
    served_model_name: str
    lora_adapters: tuple[str, ...] = ()
    max_loras: int = 4
    max_num_seqs: int = 256
    deployment: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)
    sim_degrade: str = (
        ""  # the container's SIM_DEGRADE: the simulator's --degrade text (a real vLLM ignores it)
    )

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    def degradations(self) -> tuple[Degradation, ...]:
        """The simulator's degradations from SIM_DEGRADE, or a ValueError that names the pod."""
        try:
            return parse_degradations(self.sim_degrade)
        except ValueError as exc:
            raise ValueError(f"pod {self.namespace}/{self.name}: {DEGRADE_ENV}: {exc}") from exc

    def manifest(self) -> dict[str, Any]:
        """A Pod object with status.podIP, as the picker and the local gateway read pods."""
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": self.name, "namespace": self.namespace, "labels": dict(self.labels)},
            "spec": {"containers": [{"name": "model-server", "ports": [{"containerPort": self.port}]}]},
            "status": {
                "phase": "Running",
                "podIP": self.ip,
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }


@dataclass(frozen=True)
class VllmArgs:
    served_model_name: str
    port: int
    lora_adapters: tuple[str, ...]
    max_loras: int
    max_num_seqs: int


def _tokens(container: Mapping[str, Any]) -> list[str]:
    words = [str(w) for w in (container.get("command") or [])] + [
        str(w) for w in (container.get("args") or [])
    ]
    # `sh -c "vllm serve ..."`: the real command line is the script.
    if len(words) >= 3 and words[0] in ("sh", "bash", "/bin/sh", "/bin/bash") and words[1] == "-c":
        return shlex.split(words[2])
    return words


def _options(tokens: Sequence[str]) -> Iterator[tuple[str, list[str]]]:
    """Yield (option, values) pairs; vLLM accepts both --a_b and --a-b, and --opt=value."""
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.startswith("--"):
            name, eq, inline = token[2:].partition("=")
            name = name.replace("_", "-")
            values = [inline] if eq else []
            i += 1
            while not eq and i < len(tokens) and not tokens[i].startswith("--"):
                values.append(tokens[i])
                i += 1
            yield name, values
        else:
            yield "", [token]
            i += 1


def container_env(container: Mapping[str, Any], name: str) -> str:
    """A literal `env` value of the container ("" if unset or taken from elsewhere)."""
    for item in container.get("env") or []:
        if isinstance(item, Mapping) and item.get("name") == name and "value" in item:
            return str(item["value"])
    return ""


def parse_vllm_args(container: Mapping[str, Any], default_port: int = 8000) -> VllmArgs:
    tokens = _tokens(container)
    model = ""
    served = ""
    port = default_port
    adapters: list[str] = []
    max_loras = 4
    max_num_seqs = 256
    positional: list[str] = []
    for name, values in _options(tokens):
        if name == "":
            positional.extend(values)
        elif name == "model" and values:
            model = values[0]
        elif name == "served-model-name" and values:
            served = values[0]
        elif name == "port" and values:
            port = int(values[0])
        elif name == "lora-modules":
            adapters.extend(v.split("=", 1)[0] for v in values)
        elif name == "max-loras" and values:
            max_loras = int(values[0])
        elif name == "max-num-seqs" and values:
            max_num_seqs = int(values[0])
    if not model and "serve" in positional:
        after = positional[positional.index("serve") + 1 :]
        model = after[0] if after else ""
    return VllmArgs(served or model or "model", port, tuple(adapters), max_loras, max_num_seqs)


class AddressAllocator:
    """Hands out 127.<a>.<b>.N addresses; Linux routes all of 127/8 to the loopback device."""

    def __init__(self, prefix: str = "127.0.0.") -> None:
        self._prefix = prefix
        self._next = 2

    def next(self) -> str:
        if self._next > 254:
            raise RuntimeError("out of loopback addresses")
        ip = f"{self._prefix}{self._next}"
        self._next += 1
        return ip


def pods_from_deployments(
    objects: Sequence[Mapping[str, Any]], allocator: AddressAllocator, replicas_override: int | None = None
) -> list[LocalPod]:
    pods: list[LocalPod] = []
    for obj in objects:
        if obj.get("kind") != "Deployment":
            continue
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        template = spec.get("template") or {}
        labels = {str(k): str(v) for k, v in ((template.get("metadata") or {}).get("labels") or {}).items()}
        containers = (template.get("spec") or {}).get("containers") or []
        if not containers:
            continue
        container = containers[0]
        ports = [p.get("containerPort") for p in container.get("ports") or [] if p.get("containerPort")]
        args = parse_vllm_args(container, int(ports[0]) if ports else 8000)
        replicas = replicas_override if replicas_override is not None else int(spec.get("replicas", 1))
        for i in range(replicas):
            pods.append(
                LocalPod(
                    namespace=str(meta.get("namespace") or "default"),
                    name=f"{meta.get('name')}-{i}",
                    labels=labels,
                    ip=allocator.next(),
                    port=args.port,
                    served_model_name=args.served_model_name,
                    lora_adapters=args.lora_adapters,
                    max_loras=args.max_loras,
                    max_num_seqs=args.max_num_seqs,
                    deployment=str(meta.get("name")),
                    sim_degrade=container_env(container, DEGRADE_ENV),
                )
            )
    return pods
