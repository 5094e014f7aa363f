"""The committed EG extension code matches its .proto files, and Envoy stubs really type-check."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from api.egextension import context_pb2, service_pb2

ROOT = Path(__file__).resolve().parent.parent


def test_committed_generated_code_is_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, "hack/gen_stubs.py", "--check-or-write"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (ROOT / "typings" / "envoy" / "config" / "cluster" / "v3" / "cluster_pb2.pyi").is_file()
    assert (
        ROOT / "typings" / "envoy" / "service" / "ext_proc" / "v3" / "external_processor_pb2_grpc.pyi"
    ).is_file()


def test_wire_names_and_field_numbers_match_envoy_gateway() -> None:
    service = service_pb2.DESCRIPTOR.services_by_name["EnvoyGatewayExtension"]
    assert service.full_name == "envoygateway.extension.EnvoyGatewayExtension"
    assert [m.name for m in service.methods] == [
        "PostRouteModify",
        "PostVirtualHostModify",
        "PostHTTPListenerModify",
        "PostClusterModify",
        "PostEndpointsModify",
        "PostTranslateModify",
    ]
    numbers = {f.name: f.number for f in service_pb2.PostTranslateModifyRequest.DESCRIPTOR.fields}
    assert numbers == {"post_translate_context": 1, "clusters": 2, "secrets": 3, "listeners": 4, "routes": 5}
    numbers = {f.name: f.number for f in service_pb2.PostTranslateModifyResponse.DESCRIPTOR.fields}
    assert numbers == {"clusters": 1, "secrets": 2, "listeners": 3, "routes": 4}
    route_ctx = {f.name: f.number for f in context_pb2.PostRouteExtensionContext.DESCRIPTOR.fields}
    assert route_ctx == {"extension_resources": 1, "hostnames": 2, "extension_policies": 3}
    assert context_pb2.ExtensionResource.DESCRIPTOR.fields_by_name["unstructured_bytes"].number == 1


def test_mypy_rejects_misuse_of_an_envoy_message(tmp_path: Path) -> None:
    source = tmp_path / "misuse.py"
    source.write_text(
        "from envoy.config.cluster.v3.cluster_pb2 import Cluster\n"
        "c = Cluster(name='x')\n"
        "c.name = 5\n"
        "c.no_such_field = 1\n"
    )
    subprocess.run(
        [sys.executable, "hack/gen_stubs.py", "--check-or-write"], cwd=ROOT, check=True, capture_output=True
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--config-file",
            "pyproject.toml",
            str(source),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1, result.stdout
    assert 'variable has type "str"' in result.stdout
    assert '"Cluster" has no attribute "no_such_field"' in result.stdout
