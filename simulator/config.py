"""Configuration of simulated servers and fleets (Python values, vLLM-like CLI flags, fleet YAML)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from simulator.degradation import Degradation, parse_degradations
from simulator.engine import EngineConfig
from simulator.latency import H100_KV_CACHE_TOKENS, LORA_LOAD_MS


@dataclass(frozen=True)
class SimServerConfig:
    """One simulated vLLM server. port 0 picks a free port (read SimServer.port after start)."""

    host: str = "127.0.0.1"
    port: int = 0
    served_model_name: str = "sim-model"
    lora_modules: Mapping[str, str] = field(default_factory=dict)  # adapter name -> path
    max_loras: int = 1
    max_num_seqs: int = 256
    kv_cache_tokens: int = H100_KV_CACHE_TOKENS
    block_size: int = 16
    max_model_len: int | None = None  # None: whatever fits the KV cache
    time_scale: float = 1.0
    lora_load_ms: float = LORA_LOAD_MS
    default_max_tokens: int = 16
    model: str | None = None  # the "root" path shown by /v1/models; default /models/<served name>
    name: str | None = None  # x-sim-server value; default "<host>:<port>"
    degrade: tuple[Degradation, ...] = ()  # per-model degradations, armed when the server is created

    def __post_init__(self) -> None:
        checks = {
            "max_loras": self.max_loras >= 1,
            "max_num_seqs": self.max_num_seqs >= 1,
            "kv_cache_tokens": self.kv_cache_tokens >= 1,
            "block_size": self.block_size >= 1,
            "time_scale": self.time_scale > 0,
            "default_max_tokens": self.default_max_tokens >= 1,
            "port": 0 <= self.port <= 65535,
            "max_model_len": self.max_model_len is None or self.max_model_len >= 1,
            "lora_load_ms": self.lora_load_ms >= 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid simulator config: {', '.join(bad)} out of range")
        served = {self.served_model_name, *self.lora_modules}
        strangers = sorted({d.model for d in self.degrade} - served)
        if strangers:
            raise ValueError(f"invalid simulator config: degrade names unserved model {', '.join(strangers)}")

    @property
    def effective_max_model_len(self) -> int:
        return self.max_model_len if self.max_model_len is not None else self.kv_cache_tokens

    @property
    def model_root(self) -> str:
        return self.model if self.model is not None else f"/models/{self.served_model_name}"

    def engine_config(self) -> EngineConfig:
        return EngineConfig(
            max_num_seqs=self.max_num_seqs,
            kv_cache_tokens=self.kv_cache_tokens,
            block_size=self.block_size,
            max_loras=self.max_loras,
            lora_load_ms=self.lora_load_ms,
            time_scale=self.time_scale,
        )


def parse_lora_modules(items: Iterable[str]) -> dict[str, str]:
    """vLLM's `--lora-modules name=path ...` (a bare name gets path /adapters/<name>)."""
    modules: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        name = name.strip()
        if not name:
            raise ValueError(f"bad --lora-modules entry {item!r}: expected name=path")
        modules[name] = path.strip() if sep else f"/adapters/{name}"
    return modules


_FIELD_NAMES = {f.name for f in fields(SimServerConfig)}


def server_config_from_mapping(data: Mapping[str, Any], where: str = "server") -> SimServerConfig:
    """Build a config from a YAML/JSON mapping; keys may use dashes or underscores."""
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in _FIELD_NAMES:
            raise ValueError(f"{where}.{key}: unknown field (known: {', '.join(sorted(_FIELD_NAMES))})")
        if name == "lora_modules":
            if isinstance(value, Mapping):
                value = {str(k): str(v) for k, v in value.items()}
            elif isinstance(value, list):
                value = parse_lora_modules(str(v) for v in value)
            else:
                raise ValueError(f"{where}.lora_modules: expected a mapping or a list of name=path")
        if name == "degrade":
            try:
                value = parse_degradations(value)
            except ValueError as exc:
                raise ValueError(f"{where}.degrade: {exc}") from exc
        kwargs[name] = value
    try:
        return SimServerConfig(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from exc


@dataclass(frozen=True)
class FleetConfig:
    """Servers of a fleet plus an optional admin address for fleet-wide stats and control."""

    servers: tuple[SimServerConfig, ...]
    admin_host: str | None = None
    admin_port: int | None = None


def load_fleet_config(path: str | Path) -> FleetConfig:
    """Read a fleet YAML: `defaults:` (any server field), `servers:` (list), optional `admin: {host, port}`.

    A server entry may set `count: N` to expand into N servers on consecutive addresses from its host.
    """
    raw = yaml.safe_load(Path(path).read_text())
    if not isinstance(raw, Mapping):
        raise ValueError(f"{path}: expected a mapping with a `servers` list")
    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, Mapping):
        raise ValueError(f"{path}: defaults must be a mapping")
    entries = raw.get("servers")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: servers must be a non-empty list")
    servers: list[SimServerConfig] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise ValueError(f"{path}: servers[{i}] must be a mapping")
        merged = {**defaults, **entry}
        count = int(merged.pop("count", 1))
        base = server_config_from_mapping(merged, where=f"servers[{i}]")
        servers.extend(replace(base, host=h) for h in consecutive_hosts(base.host, count))
    admin = raw.get("admin") or {}
    if not isinstance(admin, Mapping):
        raise ValueError(f"{path}: admin must be a mapping with host and port")
    return FleetConfig(
        servers=tuple(servers),
        admin_host=str(admin["host"]) if "host" in admin else None,
        admin_port=int(admin["port"]) if "port" in admin else None,
    )


def consecutive_hosts(first: str, count: int) -> list[str]:
    """`count` IPv4 addresses starting at `first` (127.0.0.2, 127.0.0.3, ...)."""
    parts = [int(p) for p in first.split(".")]
    if len(parts) != 4:
        raise ValueError(f"not an IPv4 address: {first}")
    start = (parts[0] << 24) | (parts[1] << 16) | (parts[2] << 8) | parts[3]
    return [".".join(str((n >> s) & 255) for s in (24, 16, 8, 0)) for n in range(start, start + count)]
