"""The conformance run's pure parts: the suite images' programs, Gateway addresses, reading the results."""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from hack.conformance.results import SUITE_TESTS, OutputReader, output_counts, report_counts
from hack.realparts import GIE_VERSION
from hack.stack import loadbalancer, podlet, runners

LWEPP = {
    "name": "epp",
    "image": "registry.k8s.io/gateway-api-inference-extension/lwepp:v1.6.0",
    "args": ["--pool-name", "primary-inference-pool", "--grpc-port", "9002"],
}
ECHO = {
    "name": "echoserver",
    "image": "gcr.io/k8s-staging-gateway-api/echo-basic:v20251106-v1.3.0-263-g47c3435c",
    "env": [
        {"name": "HTTP_PORT", "value": "3002"},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    ],
}


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> None:
    """Binaries by name, without building anything."""
    monkeypatch.setattr(runners, "binary", lambda name: Path(f"/bin/{name}"))


def test_the_suite_images_run_echo_basic_and_lwepp_with_their_args(built: None) -> None:
    echo = runners.plan(ECHO)
    assert echo.argv == ("/bin/echo-basic",) and not echo.kubeconfig_env
    lwepp = runners.plan(LWEPP)
    assert lwepp.argv == ("/bin/lwepp", "--pool-name", "primary-inference-pool", "--grpc-port", "9002")
    assert lwepp.kubeconfig_env and not lwepp.in_cluster
    assert runners.plan({**LWEPP, "command": ["/lwepp"]}).argv[:2] == ("/bin/lwepp", "--pool-name")


def test_a_pods_env_gets_field_refs_and_lwepp_its_token_kubeconfig(built: None, tmp_path: Path) -> None:
    node = podlet.Podlet.__new__(podlet.Podlet)
    node.node_netns = "igw-test"
    pod: dict[str, Any] = {"metadata": {"name": "p-1", "namespace": "ns", "uid": "u"}, "spec": {}}
    local = podlet.LocalPod("u", "ns", "p-1", "10.77.0.42", "igw-test-u", tmp_path)
    account = tmp_path / "sa"
    volumes = {"kube-api-access": account}
    mount = {"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}
    echo = node._container(pod, local, ECHO, runners.plan(ECHO), volumes)
    assert (echo.env["POD_NAME"], echo.env["NAMESPACE"], echo.env["POD_IP"]) == ("p-1", "ns", "10.77.0.42")
    assert echo.env["HTTP_PORT"] == "3002" and "KUBECONFIG" not in echo.env
    lwepp = {**LWEPP, "volumeMounts": [mount]}
    epp = node._container(pod, local, lwepp, runners.plan(lwepp), volumes)
    config = yaml.safe_load(Path(epp.env["KUBECONFIG"]).read_text())
    assert config["users"][0]["user"] == {"tokenFile": str(account / "token")}
    assert config["clusters"][0]["cluster"]["server"] == "https://10.77.0.1:6443"
    with pytest.raises(runners.Unsupported, match="ServiceAccount"):
        node._container(pod, local, LWEPP, runners.plan(LWEPP), {})


def test_each_gateway_service_gets_its_own_loopback_address() -> None:
    octet = loadbalancer.stack_octet(Path("/tmp/a-stack"))
    assert 1 <= octet <= 254
    assert octet == loadbalancer.stack_octet(Path("/tmp/a-stack"))
    octets = {loadbalancer.stack_octet(Path(f"/tmp/stack-{i}")) for i in range(50)}
    assert len(octets) > 25  # state dirs spread over the /8
    first = next(loadbalancer.candidate_addresses(octet, "infra/envoy-primary"))
    other = next(loadbalancer.candidate_addresses(octet, "infra/envoy-secondary"))
    assert first != other
    for address in (first, other):
        ip = ipaddress.ip_address(address)
        assert ip.is_loopback and address.startswith(f"127.{octet}.")
        assert 0 < int(address.rsplit(".", 1)[1]) < 255
    some = [a for a, _ in zip(loadbalancer.candidate_addresses(octet, "x/y"), range(600), strict=False)]
    assert len(set(some)) == len(some)


def test_a_gateways_service_ports_name_its_gateway() -> None:
    service = {
        "metadata": {
            "labels": {loadbalancer.OWNING_GATEWAY: "primary", loadbalancer.OWNING_GATEWAY_NS: "infra"}
        },
        "spec": {"ports": [{"port": 80}, {"port": 443, "protocol": "UDP"}]},
    }
    assert loadbalancer.gateways_by_port(service, []) == {80: ["infra/primary"]}


OUTPUT = """\
=== RUN   TestConformance
=== RUN   TestConformance/EppUnAvailableFailOpen
=== RUN   TestConformance/EppUnAvailableFailOpen/Phase_1
    http.go:325: 2026-12-01T20:58:17Z: Response expectation failed for: {} not ready yet: got 503. CRes: x
    epp_unavailable_fail_open.go:73:
        \tError Trace:\t/x/http.go:200
        \tError:      \tCondition never satisfied
        \tTest:       \tTestConformance/EppUnAvailableFailOpen/Phase_1
=== RUN   TestConformance/InferencePoolAccepted
    --- FAIL: TestConformance/EppUnAvailableFailOpen/Phase_1 (300.00s)
    --- FAIL: TestConformance/EppUnAvailableFailOpen (301.50s)
    --- PASS: TestConformance/InferencePoolAccepted (2.00s)
    --- SKIP: TestConformance/GatewayFollowingEPPRouting (0.00s)
"""


def test_the_suite_output_gives_each_tests_outcome_and_why_it_failed() -> None:
    reader = OutputReader()
    for line in OUTPUT.splitlines(keepends=True):
        reader.feed(line)
    results = {r.name: r for r in reader.final()}
    assert list(results) == list(SUITE_TESTS)
    assert results["EppUnAvailableFailOpen"].outcome == "FAIL"
    assert results["EppUnAvailableFailOpen"].reasons == [
        "Condition never satisfied",
        "last response: got 503",
    ]
    assert results["InferencePoolAccepted"].outcome == "PASS"
    assert results["GatewayFollowingEPPRouting"].outcome == "SKIP"
    assert results["InferencePoolResolvedRefsCondition"].outcome == "NOT RUN"
    counts = output_counts(reader.final())
    assert (counts.passed, counts.failed, counts.skipped) == (1, 12, 1)  # NOT RUN counts as failed


def test_the_report_counts_its_gateway_profile() -> None:
    report = {
        "profiles": [
            {"name": "Gateway", "core": {"statistics": {"Passed": 12, "Failed": 1, "Skipped": 1}}},
        ]
    }
    counts = report_counts(report)
    assert counts is not None
    assert counts.line("v1.6.0") == (
        "conformance: passed=12 failed=1 skipped=1 (gateway-api-inference-extension v1.6.0)"
    )
    assert report_counts({"profiles": [{"name": "Mesh"}]}) is None


def test_the_script_says_what_it_does() -> None:
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-m", "hack.conformance", "--help"],
        cwd=root,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert "--run-test" in done.stdout and "GatewayNamespace" in done.stdout


@pytest.mark.stack
def test_the_pinned_test_list_is_the_suites() -> None:
    """SUITE_TESTS (what a run is counted against) names exactly the ShortNames GIE v1.6.0 defines, read
    from the module the suite binary is built from (needs Go; offline once the module is cached)."""
    module = f"sigs.k8s.io/gateway-api-inference-extension/conformance@{GIE_VERSION}"
    done = subprocess.run(["go", "mod", "download", "-json", module], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    tests = Path(json.loads(done.stdout)["Dir"]) / "tests"
    names = [m for path in tests.glob("*.go") for m in re.findall(r'ShortName:\s*"(\w+)"', path.read_text())]
    assert sorted(names) == sorted(SUITE_TESTS)
