"""The real stack's pure parts: which program runs a container, path localization, cluster DNS answers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from dnslib import QTYPE, RCODE, DNSRecord

from hack.stack import dns, runners

SAMPLES = Path(__file__).resolve().parents[1] / "config" / "samples"
CONFIG = Path(__file__).resolve().parents[1] / "config"


def _containers(path: Path) -> list[dict[str, object]]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == "Deployment"]
    return [c for d in docs for c in d["spec"]["template"]["spec"]["containers"]]


def test_the_lora_seed_runs_the_simulator_with_its_adapters() -> None:
    (container,) = _containers(SAMPLES / "seed-lora-canary.yaml")
    plan = runners.plan(container)
    argv = list(plan.argv)
    assert argv[:3] == [sys.executable, "-m", "simulator"]
    assert argv[argv.index("--port") + 1] == "8000"
    assert argv[argv.index("--max-loras") + 1] == "10"
    adapters = argv[argv.index("--lora-modules") + 1 :]
    assert {a.split("=")[0] for a in adapters} >= {"tweet-summary", "sql-lora"}


def test_the_base_seed_serves_each_deployments_model() -> None:
    names = []
    for container in _containers(SAMPLES / "seed-base-model-canary.yaml"):
        argv = list(runners.plan(container).argv)
        names.append(argv[argv.index("--served-model-name") + 1])
    assert len(set(names)) == len(names) >= 2


def test_our_image_runs_its_command_in_this_python_and_asks_for_the_pods_token() -> None:
    (picker,) = _containers(CONFIG / "picker" / "deployment.yaml")
    plan = runners.plan(picker)
    assert plan.argv[:3] == (sys.executable, "-m", "picker")
    assert plan.in_cluster


def test_envoy_gateways_proxy_runs_the_wheels_envoy_and_its_sidecar_runs_our_eg_build() -> None:
    envoy = {
        "name": "envoy",
        "image": "docker.io/envoyproxy/envoy:distroless-v1.39.1",
        "args": ["--config-yaml", "x"],
    }
    assert runners.plan(envoy).argv[1:] == ("--config-yaml", "x")
    sidecar = {
        "name": "shutdown-manager",
        "image": "docker.io/envoyproxy/gateway-dev:latest",
        "command": ["envoy-gateway"],
        "args": ["envoy", "shutdown-manager"],
    }
    assert runners.plan(sidecar).argv[1:] == ("envoy", "shutdown-manager")
    assert runners.plan(sidecar).argv[0].endswith("envoy-gateway-v1.9.1")


def test_an_unknown_image_is_refused_by_name() -> None:
    with pytest.raises(runners.Unsupported, match="busybox"):
        runners.plan({"name": "x", "image": "busybox:1.36", "command": ["sleep", "1"]})


def test_mount_paths_in_an_inline_bootstrap_point_at_local_dirs() -> None:
    bootstrap = (
        'tls: {filename: "/certs/tls.crt"}\nsds: /sds/xds-trusted-ca.json\nkeep: /certsX/a /other/certs/b'
    )
    out = runners.localize(("--config-yaml", bootstrap), {"/certs": "/s/p/certs", "/sds": "/s/p/sds"})
    assert '"/s/p/certs/tls.crt"' in out[1]
    assert "/s/p/sds/xds-trusted-ca.json" in out[1]
    assert "/certsX/a /other/certs/b" in out[1]


def test_dollar_vars_expand_as_kubernetes_does() -> None:
    assert runners.expand("--service-node $(ENVOY_POD_NAME) $(NOPE)", {"ENVOY_POD_NAME": "p"}) == (
        "--service-node p $(NOPE)"
    )


def test_cluster_dns_answers_ready_endpoints_and_refuses_other_names() -> None:
    slices = {
        "items": [
            {"endpoints": [{"addresses": ["10.77.0.12"], "conditions": {"ready": True}}]},
            {
                "endpoints": [
                    {"addresses": ["10.77.0.11"]},
                    {"addresses": ["10.77.0.13"], "conditions": {"ready": False}},
                ]
            },
        ]
    }
    assert dns.ready_addresses(slices) == ["10.77.0.11", "10.77.0.12"]
    table = {"picker.default.svc.cluster.local": ["10.77.0.11", "10.77.0.12"]}

    def resolve(name: str) -> list[str] | None:
        return table.get(name.rstrip("."))

    reply = DNSRecord.parse(
        dns.answer(DNSRecord.question("picker.default.svc.cluster.local").pack(), resolve)
    )
    assert sorted(str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A) == ["10.77.0.11", "10.77.0.12"]
    miss = DNSRecord.parse(dns.answer(DNSRecord.question("example.com").pack(), resolve))
    assert miss.header.rcode == RCODE.NXDOMAIN and not miss.rr


def test_pod_addresses_come_back_only_after_the_others() -> None:
    from hack.stack.network import AddressPool

    pool = AddressPool(first=10, last=12)
    a, b = pool.take(), pool.take()
    pool.release(a)
    assert pool.take() == "10.77.0.12"  # not the address just released
    assert pool.take() == a  # the subnet wrapped: now it is the only free one
    pool.release(b)
    assert pool.take() == b
