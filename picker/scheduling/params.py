"""Typed reads of plugin `parameters` from config, with errors that name the field path."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ConfigError(ValueError):
    """Scheduler configuration that cannot be used; the message starts with the field path."""


class Params:
    """A plugin's `parameters` mapping; every getter validates and rejects unknown keys on `done()`."""

    def __init__(self, data: Mapping[str, Any] | None, path: str) -> None:
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {type(data).__name__}")
        self._data = dict(data)
        self._seen: set[str] = set()
        self.path = path

    def number(
        self,
        key: str,
        default: float,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
        exclusive_minimum: bool = False,
    ) -> float:
        self._seen.add(key)
        value = self._data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{self.path}.{key}: expected a number, got {value!r}")
        if minimum is not None and (value < minimum or (exclusive_minimum and value == minimum)):
            bound = ">" if exclusive_minimum else ">="
            raise ConfigError(f"{self.path}.{key}: must be {bound} {minimum}, got {value!r}")
        if maximum is not None and value > maximum:
            raise ConfigError(f"{self.path}.{key}: must be <= {maximum}, got {value!r}")
        return float(value)

    def integer(self, key: str, default: int, *, minimum: int | None = None) -> int:
        self._seen.add(key)
        value = self._data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{self.path}.{key}: expected an integer, got {value!r}")
        if minimum is not None and value < minimum:
            raise ConfigError(f"{self.path}.{key}: must be >= {minimum}, got {value!r}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        self._seen.add(key)
        value = self._data.get(key, default)
        if not isinstance(value, bool):
            raise ConfigError(f"{self.path}.{key}: expected true or false, got {value!r}")
        return value

    def done(self) -> None:
        """Reject parameters the plugin does not know (a typo must not silently use a default)."""
        unknown = sorted(set(self._data) - self._seen)
        if unknown:
            raise ConfigError(f"{self.path}.{unknown[0]}: unknown parameter; known: {sorted(self._seen)}")
