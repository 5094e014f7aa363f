"""The Envoy Gateway stand-in (extserver/eg/standin.py, behind `extserver translate` and the local gateway)
against real Envoy Gateway v1.9.1 on the same manifests: the same listeners, route configurations,
virtual hosts, routes and clusters reach Envoy, by name."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e_support import LORA_SAMPLE
from tests.stack_support import RealStack, eventually

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[1]
ROUTE_POOLS = Path(__file__).parent / "data" / "stack" / "httproute-pools.yaml"
# Resources EG adds for its own use, in both: the readiness listener and the bootstrap's static parts.
READY_LISTENER = "envoy-gateway-proxy-ready-0.0.0.0-19003"


def _names_from_dump(dump: dict[str, Any]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {
        "listeners": set(),
        "routeConfigs": set(),
        "virtualHosts": set(),
        "routes": set(),
    }
    out["clusters"] = set()
    for config in dump["configs"]:
        kind = config["@type"]
        if kind.endswith("ListenersConfigDump"):
            out["listeners"] |= {
                i["active_state"]["listener"]["name"] for i in config.get("dynamic_listeners", [])
            }
        elif kind.endswith("ClustersConfigDump"):
            out["clusters"] |= {i["cluster"]["name"] for i in config.get("dynamic_active_clusters", [])}
        elif kind.endswith("RoutesConfigDump"):
            for item in config.get("dynamic_route_configs", []):
                _add_route_config(out, item["route_config"], "virtual_hosts")
    return out


def _add_route_config(out: dict[str, set[str]], rc: dict[str, Any], vhosts_key: str) -> None:
    out["routeConfigs"].add(rc["name"])
    for vhost in rc.get(vhosts_key, []):
        out["virtualHosts"].add(vhost["name"])
        out["routes"] |= {route.get("name", "") for route in vhost.get("routes", [])}


def _names_from_standin(document: dict[str, Any]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {k: set() for k in ("listeners", "routeConfigs", "virtualHosts", "routes")}
    out["listeners"] = {lis["name"] for lis in document["listeners"]}
    out["clusters"] = {c["name"] for c in document["clusters"]}
    for rc in document["routes"]:
        _add_route_config(out, rc, "virtualHosts")
    return out


@pytest.mark.parametrize(
    ("manifests", "gateway"),
    [((LORA_SAMPLE,), "inference-gateway"), ((LORA_SAMPLE, ROUTE_POOLS), "route-gateway")],
    ids=["attach-to seed", "httproutes to every pool version"],
)
def test_the_stand_in_builds_what_real_envoy_gateway_builds(
    real_stack: RealStack, manifests: tuple[Path, ...], gateway: str
) -> None:
    for manifest in manifests:
        real_stack.kubectl("apply", "-f", str(manifest))
    translate = [sys.executable, "-m", "extserver", "translate", "-o", "json"]
    for manifest in manifests:
        translate += ["-f", str(manifest)]
    done = subprocess.run(translate, capture_output=True, text=True, check=True, cwd=ROOT)
    documents = json.loads(done.stdout)
    documents = documents if isinstance(documents, list) else [documents]
    (document,) = [d for d in documents if d["gateway"] == f"default/{gateway}"]
    expected = _names_from_standin(document)

    def same() -> dict[str, tuple[set[str], set[str]]]:
        real = _names_from_dump(json.loads(real_stack.envoy_admin(gateway, "/config_dump")))
        return {k: (real[k], expected[k]) for k in expected if real[k] != expected[k]}

    def converged() -> bool:
        return not same()

    try:
        eventually(converged, 60, "the same names in real Envoy as from the stand-in", interval=0.5)
    except AssertionError:
        differences = {
            k: {"real only": sorted(r - s), "stand-in only": sorted(s - r)} for k, (r, s) in same().items()
        }
        raise AssertionError(
            f"real EG and the stand-in differ: {json.dumps(differences, indent=1)}"
        ) from None
    assert READY_LISTENER in expected["listeners"]
