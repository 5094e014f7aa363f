"""Free TCP ports for tests: the local gateway's helpers (localgateway/ports.py), one implementation."""

from localgateway.ports import common_free_port, free_port

__all__ = ["common_free_port", "free_port"]
