"""Builds Envoy Gateway, etcd, kube-apiserver, kube-controller-manager, kubectl and the Inference Extension's
conformance parts (the suite, lwepp, echo-basic) with the Go toolchain.

Each binary lands in ``<cache>/bin/<name>-<version>``, built under a lock and finished by a stamp, so
concurrent runs wait for one build and an interrupted build is redone. Go's own build cache makes a
rebuild after a cache wipe cheap; the first build of everything takes 15-25 minutes on 2 cores.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from hack.cache import cache_root, locked, stamp_ok, write_stamp

_HERE = Path(__file__).resolve().parent

EG_MODULE = "github.com/envoyproxy/gateway"
EG_VERSION = "v1.9.1"
KUBERNETES_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.16"
# The Gateway API release EG v1.9.1 pins in its go.mod (its CRDs ship inside EG's module).
GATEWAY_API_VERSION = "v1.6.1"
# The Gateway API Inference Extension release whose conformance suite we run (it pins Gateway API v1.6.1 too).
GIE_MODULE = "sigs.k8s.io/gateway-api-inference-extension"
GIE_VERSION = "v1.6.0"


@dataclass(frozen=True)
class Part:
    """One binary: the package to build and, where the module has `replace` directives, our wrapper."""

    name: str
    version: str
    package: str
    wrapper: str | None = None  # directory under hack/realparts holding a go.mod that pins the module
    ldflags: str = ""  # the version stamps a release build sets (what `version` commands and /version say)
    test: bool = False  # a test binary (`go test -c`) of a non-main package, run like any program

    @property
    def wrapper_dir(self) -> Path | None:
        return _HERE / self.wrapper if self.wrapper else None


_K8S_MINOR = KUBERNETES_VERSION.split(".")[1]
_K8S_LDFLAGS = (
    f"-X k8s.io/component-base/version.gitVersion={KUBERNETES_VERSION} "
    f"-X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor={_K8S_MINOR} "
    "-X k8s.io/component-base/version.gitTreeState=clean"
)

_GIE_LDFLAGS = f"-X {GIE_MODULE}/version.BuildRef={GIE_VERSION}"

PARTS: dict[str, Part] = {
    part.name: part
    for part in (
        Part(
            "envoy-gateway",
            EG_VERSION,
            f"{EG_MODULE}/cmd/envoy-gateway",
            ldflags=f"-X {EG_MODULE}/internal/cmd/version.envoyGatewayVersion={EG_VERSION}",
        ),
        Part("etcd", ETCD_VERSION, "go.etcd.io/etcd/server/v3", wrapper="etcd"),
        *(
            Part(name, KUBERNETES_VERSION, f"k8s.io/kubernetes/cmd/{name}", "kubernetes", _K8S_LDFLAGS)
            for name in ("kube-apiserver", "kube-controller-manager", "kubectl")
        ),
        # The conformance run's parts (hack/conformance.sh); the stack builds them only when asked.
        Part("conformance", GIE_VERSION, f"{GIE_MODULE}/conformance", "conformance", test=True),
        Part("lwepp", GIE_VERSION, f"{GIE_MODULE}/cmd/lwepp", "lwepp", _GIE_LDFLAGS),
        Part(
            "echo-basic", GATEWAY_API_VERSION, "sigs.k8s.io/gateway-api/conformance/echo-basic", "echo-basic"
        ),
    )
}
# What `up` builds; the rest are built on first use (hack/conformance.sh, or a Pod running their image).
STACK_PARTS = ("envoy-gateway", "etcd", "kube-apiserver", "kube-controller-manager", "kubectl")


def _log(message: str) -> None:
    print(f"[realparts] {message}", file=sys.stderr, flush=True)


def go_available() -> bool:
    """True when a Go toolchain is on PATH (the real stack needs Go >= 1.26)."""
    return shutil.which("go") is not None


def _go_version() -> str:
    return subprocess.run(
        ["go", "env", "GOVERSION"], check=True, capture_output=True, text=True
    ).stdout.strip()


def _stamp_key(part: Part) -> str:
    # A test binary's key says so; other keys stay as they were (so existing caches stay valid).
    test = " test" if part.test else ""
    digest = hashlib.sha256(f"{part.package}@{part.version} {part.ldflags}{test} {_go_version()}".encode())
    if part.wrapper_dir is not None:
        for name in ("go.mod", "go.sum"):
            digest.update((part.wrapper_dir / name).read_bytes())
    return digest.hexdigest()[:16]


def _bin_dir() -> Path:
    return cache_root() / "bin"


def _ticker(label: str, stop: threading.Event) -> None:
    started = time.monotonic()
    while not stop.wait(30):
        _log(f"still building {label} ({time.monotonic() - started:.0f} s)")


def _go_build(part: Part, out: Path) -> None:
    env = dict(os.environ)
    env.setdefault("GOFLAGS", "-mod=mod")
    if part.wrapper_dir is None:
        with tempfile.TemporaryDirectory(prefix="realparts-") as gobin:
            env["GOBIN"] = gobin
            target = f"{part.package}@{part.version}"
            cmd = ["go", "install", "-buildvcs=false", f"-ldflags={part.ldflags}", target]
            _log("$ " + " ".join(cmd))
            subprocess.run(cmd, check=True, env=env)
            built = Path(gobin) / part.package.rsplit("/", 1)[-1]
            shutil.move(str(built), out)
        return
    # -buildvcs=false: the wrappers sit inside this repository, whose VCS state says nothing of the binary
    # (and a clone owned by another user makes git refuse, failing the build).
    verb = ["test", "-c"] if part.test else ["build"]
    cmd = ["go", *verb, "-buildvcs=false", f"-ldflags={part.ldflags}", "-o", str(out), part.package]
    _log(f"$ (cd {part.wrapper_dir}) " + " ".join(cmd))
    subprocess.run(cmd, check=True, env=env, cwd=part.wrapper_dir)


def binary(name: str) -> Path:
    """The path of a built binary; builds it first if the cache lacks it (progress on stderr)."""
    part = PARTS[name]
    out = _bin_dir() / f"{part.name}-{part.version}"
    stamp = out.with_name(out.name + ".stamp")
    key = _stamp_key(part)
    if stamp_ok(stamp, key) and out.is_file():
        return out
    with locked(out.with_name(out.name + ".lock"), "realparts"):
        if stamp_ok(stamp, key) and out.is_file():
            return out
        if not go_available():
            raise RuntimeError("the real stack needs the Go toolchain (>= 1.26) on PATH")
        _log(f"building {part.name} {part.version} from the Go module proxy (first time: minutes)")
        started = time.monotonic()
        stop = threading.Event()
        threading.Thread(target=_ticker, args=(part.name, stop), daemon=True).start()
        tmp = out.with_name(out.name + ".partial")
        try:
            _go_build(part, tmp)
        finally:
            stop.set()
        tmp.replace(out)
        write_stamp(stamp, key)
        _log(f"built {out} in {time.monotonic() - started:.0f} s")
    return out


def _module_dir(module: str, version: str) -> Path:
    done = subprocess.run(
        ["go", "mod", "download", "-json", f"{module}@{version}"], check=True, capture_output=True, text=True
    )
    return Path(json.loads(done.stdout)["Dir"])


def eg_crd_files() -> list[Path]:
    """Gateway API CRDs at the version EG pins, then EG's own: from EG's module, Helm guards removed."""
    out_dir = cache_root() / "crds" / f"envoy-gateway-{EG_VERSION}"
    stamp = out_dir / ".stamp"
    if not stamp_ok(stamp, EG_VERSION):
        templates = _module_dir(EG_MODULE, EG_VERSION) / "charts" / "gateway-crds-helm" / "templates"
        sources = [
            templates / "experimental-gatewayapi-crds.yaml",
            *sorted((templates / "generated").glob("*.yaml")),
        ]
        if len(sources) < 2 or not all(p.is_file() for p in sources):
            raise RuntimeError(f"Envoy Gateway {EG_VERSION}'s module lacks its CRD files under {templates}")
        out_dir.mkdir(parents=True, exist_ok=True)
        for index, source in enumerate(sources):
            # The chart wraps each file in one `{{- if ... }}` / `{{- end }}` pair: plain YAML inside.
            lines = [line for line in source.read_text().splitlines() if not line.startswith("{{")]
            (out_dir / f"{index:02d}-{source.name}").write_text("\n".join(lines) + "\n")
        write_stamp(stamp, EG_VERSION)
    return sorted(out_dir.glob("*.yaml"))


def gie_crd_files() -> list[Path]:
    """GIE's own InferencePool (inference.networking.k8s.io/v1) CRD at GIE_VERSION, from its module: the one
    the conformance suite is written against, with the bundle-version annotation it reads."""
    out_dir = cache_root() / "crds" / f"gateway-api-inference-extension-{GIE_VERSION}"
    stamp = out_dir / ".stamp"
    if not stamp_ok(stamp, GIE_VERSION):
        source = (
            _module_dir(GIE_MODULE, GIE_VERSION)
            / "config"
            / "crd"
            / "bases"
            / "inference.networking.k8s.io_inferencepools.yaml"
        )
        if not source.is_file():
            raise RuntimeError(f"the Inference Extension {GIE_VERSION} module lacks {source.name}")
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / source.name).write_bytes(source.read_bytes())
        write_stamp(stamp, GIE_VERSION)
    return sorted(out_dir.glob("*.yaml"))


def stack_version_line() -> str:
    return f"stack: envoy-gateway {EG_VERSION} kube-apiserver {KUBERNETES_VERSION}"
