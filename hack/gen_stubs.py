#!/usr/bin/env python3
"""Generate the EG extension gRPC code (committed) and `.pyi` stubs for the Envoy API modules (typings/).

xds-protos ships `_pb2` modules but no `.proto` sources, so the Envoy dependencies are handed to protoc as a
FileDescriptorSet dumped from the installed modules' descriptors.

Modes:
  --write           regenerate api/egextension/*_pb2* and typings/
  --check-or-write  regenerate typings/; fail if the committed api/egextension/*_pb2* are out of date
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FileDescriptor

ROOT = Path(__file__).resolve().parent.parent
OUR_PROTOS = ("api/egextension/context.proto", "api/egextension/service.proto")
GENERATED_DIR = ROOT / "api" / "egextension"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")
TYPINGS = ROOT / "typings"

# Envoy API modules the project imports; their transitive closure gets stubs.
ENVOY_MODULES = (
    "envoy.extensions.clusters.aggregate.v3.cluster_pb2",
    "envoy.admin.v3.config_dump_pb2",
    "envoy.config.accesslog.v3.accesslog_pb2",
    "envoy.config.bootstrap.v3.bootstrap_pb2",
    "envoy.config.cluster.v3.circuit_breaker_pb2",
    "envoy.config.cluster.v3.cluster_pb2",
    "envoy.config.core.v3.address_pb2",
    "envoy.config.core.v3.base_pb2",
    "envoy.config.core.v3.config_source_pb2",
    "envoy.config.core.v3.grpc_service_pb2",
    "envoy.config.core.v3.health_check_pb2",
    "envoy.config.core.v3.protocol_pb2",
    "envoy.extensions.retry.host.previous_hosts.v3.previous_hosts_pb2",
    "envoy.config.endpoint.v3.endpoint_components_pb2",
    "envoy.config.endpoint.v3.endpoint_pb2",
    "envoy.config.listener.v3.listener_components_pb2",
    "envoy.config.listener.v3.listener_pb2",
    "envoy.config.route.v3.route_components_pb2",
    "envoy.config.route.v3.route_pb2",
    "envoy.data.accesslog.v3.accesslog_pb2",
    "envoy.extensions.access_loggers.grpc.v3.als_pb2",
    "envoy.extensions.filters.http.ext_proc.v3.ext_proc_pb2",
    "envoy.extensions.filters.http.ext_proc.v3.processing_mode_pb2",
    "envoy.extensions.filters.http.health_check.v3.health_check_pb2",
    "envoy.extensions.filters.http.header_mutation.v3.header_mutation_pb2",
    "envoy.extensions.filters.http.json_to_metadata.v3.json_to_metadata_pb2",
    "envoy.extensions.filters.http.lua.v3.lua_pb2",
    "envoy.extensions.filters.http.router.v3.router_pb2",
    "envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2",
    "envoy.extensions.load_balancing_policies.least_request.v3.least_request_pb2",
    "envoy.extensions.load_balancing_policies.override_host.v3.override_host_pb2",
    "envoy.extensions.load_balancing_policies.round_robin.v3.round_robin_pb2",
    "envoy.extensions.transport_sockets.tls.v3.secret_pb2",
    "envoy.extensions.transport_sockets.tls.v3.tls_pb2",
    "envoy.extensions.upstreams.http.v3.http_protocol_options_pb2",
    "envoy.service.accesslog.v3.als_pb2",
    "envoy.service.cluster.v3.cds_pb2",
    "envoy.service.discovery.v3.ads_pb2",
    "envoy.service.discovery.v3.discovery_pb2",
    "envoy.service.endpoint.v3.eds_pb2",
    "envoy.service.ext_proc.v3.external_processor_pb2",
    "envoy.service.listener.v3.lds_pb2",
    "envoy.service.route.v3.rds_pb2",
    "envoy.type.matcher.v3.metadata_pb2",
    "envoy.type.matcher.v3.string_pb2",
    "envoy.type.v3.http_status_pb2",
    "envoy.type.v3.percent_pb2",
    "xds.type.v3.typed_struct_pb2",
)

# types-protobuf already types these; generating them again would shadow it.
SKIP_STUB_PREFIXES = ("google/protobuf/",)


def collect_descriptors(module_names: Iterable[str]) -> list[FileDescriptor]:
    """Transitive closure of the modules' file descriptors, dependencies first."""
    ordered: list[FileDescriptor] = []
    seen: set[str] = set()

    def visit(fd: FileDescriptor) -> None:
        if fd.name in seen:
            return
        seen.add(fd.name)
        for dep in fd.dependencies:
            visit(dep)
        ordered.append(fd)

    for name in module_names:
        visit(importlib.import_module(name).DESCRIPTOR)
    return ordered


def descriptor_set(files: Iterable[FileDescriptor]) -> bytes:
    fds = descriptor_pb2.FileDescriptorSet()
    for fd in files:
        proto = fds.file.add()
        proto.ParseFromString(fd.serialized_pb)
    return fds.SerializeToString()


def run_protoc(args: list[str]) -> None:
    env = dict(os.environ)
    # protoc finds protoc-gen-mypy / protoc-gen-mypy_grpc on PATH: the venv's bin dir.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    cmd = [sys.executable, "-m", "grpc_tools.protoc", *args]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"protoc failed ({' '.join(cmd)}):\n{result.stderr}")


def generate_extension(deps_pb: Path, out: Path) -> None:
    """Generate the committed EG extension modules (with their stubs) under out/."""
    out.mkdir(parents=True, exist_ok=True)
    run_protoc(
        [
            f"--descriptor_set_in={deps_pb}",
            "-I.",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            f"--mypy_out={out}",
            f"--mypy_grpc_out={out}",
            *OUR_PROTOS,
        ]
    )


def generate_typings(deps_pb: Path, files: list[FileDescriptor], out: Path) -> None:
    """Generate .pyi stubs for every Envoy-side file in the closure, plus __init__.pyi for packages."""
    names = [fd.name for fd in files if not fd.name.startswith(SKIP_STUB_PREFIXES)]
    with tempfile.TemporaryDirectory(prefix="typings-") as tmp:
        staged = Path(tmp)
        run_protoc(
            [f"--descriptor_set_in={deps_pb}", f"--mypy_out={staged}", f"--mypy_grpc_out={staged}", *names]
        )
        # Regular packages in site-packages need regular stub packages; `google` stays a namespace package so
        # types-protobuf's google.protobuf is still found.
        for directory in sorted(p for p in staged.rglob("*") if p.is_dir()):
            if directory.relative_to(staged).parts[0] != "google":
                (directory / "__init__.pyi").touch()
        (staged / "README").write_text("Generated by hack/gen_stubs.py; do not edit, not committed.\n")
        sync_tree(staged, out)


def sync_tree(src: Path, dst: Path) -> None:
    """Make dst equal to src, touching only files that changed (a mypy run elsewhere never sees a gap)."""
    wanted = {p.relative_to(src) for p in src.rglob("*") if p.is_file()}
    for rel in sorted(wanted):
        target = dst / rel
        data = (src / rel).read_bytes()
        if not target.is_file() or target.read_bytes() != data:
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = target.with_name(target.name + ".tmp")
            staging.write_bytes(data)
            staging.replace(target)
    if dst.is_dir():
        for path in sorted(dst.rglob("*"), reverse=True):
            rel = path.relative_to(dst)
            if path.is_file() and rel not in wanted:
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()


def committed_files() -> dict[str, str]:
    return {
        p.name: p.read_text()
        for p in sorted(GENERATED_DIR.iterdir())
        if p.is_file() and p.name.endswith(GENERATED_SUFFIXES)
    }


def fresh_files(deps_pb: Path, scratch: Path) -> dict[str, str]:
    generate_extension(deps_pb, scratch)
    gen = scratch / "api" / "egextension"
    return {p.name: p.read_text() for p in sorted(gen.iterdir()) if p.name.endswith(GENERATED_SUFFIXES)}


def drift(committed: dict[str, str], fresh: dict[str, str]) -> list[str]:
    """Human-readable differences between committed and freshly generated files (empty = up to date)."""
    problems: list[str] = []
    for name in sorted(set(committed) | set(fresh)):
        if name not in fresh:
            problems.append(f"{name}: committed but no longer generated")
        elif name not in committed:
            problems.append(f"{name}: generated but not committed")
        elif committed[name] != fresh[name]:
            diff = difflib.unified_diff(
                committed[name].splitlines(), fresh[name].splitlines(), "committed", "fresh", lineterm="", n=1
            )
            problems.append(f"{name}: differs\n" + "\n".join(list(diff)[:20]))
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="regenerate everything")
    mode.add_argument("--check-or-write", action="store_true", help="write typings/, check committed code")
    args = parser.parse_args(argv)

    files = collect_descriptors(ENVOY_MODULES)
    with tempfile.TemporaryDirectory(prefix="gen_stubs-") as tmp:
        deps_pb = Path(tmp) / "deps.pb"
        deps_pb.write_bytes(descriptor_set(files))
        generate_typings(deps_pb, files, TYPINGS)
        fresh = fresh_files(deps_pb, Path(tmp) / "out")
        if args.write:
            for name, text in fresh.items():
                (GENERATED_DIR / name).write_text(text)
            for name in set(committed_files()) - set(fresh):
                (GENERATED_DIR / name).unlink()
            print(f"wrote {len(fresh)} files to {GENERATED_DIR.relative_to(ROOT)} and stubs to typings/")
            return 0
        problems = drift(committed_files(), fresh)
    if problems:
        print(
            "api/egextension generated code is out of date with its .proto files; "
            "run `python hack/gen_stubs.py --write`:\n" + "\n".join(problems),
            file=sys.stderr,
        )
        return 1
    print(f"api/egextension up to date; stubs for {len(files)} proto files in typings/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
