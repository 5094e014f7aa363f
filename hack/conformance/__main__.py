"""``python -m hack.conformance``: up, run GIE's conformance suite against the stack, report, down.

The stack runs with Envoy Gateway deploying each Gateway's Envoy in the Gateway's own namespace
(`--envoy-deploy GatewayNamespace`): the suite's setup waits for Pods in the Gateways' namespace
`inference-conformance-infra` (Gateway API v1.6.1's NamespacesMustBeReady requires at least one), and
with EG's default deploy mode that namespace holds none, so the setup would time out.

What the stack needs beyond `up` is done here, with kubectl, as a platform team would before a run:
GIE's own v1.6.0 InferencePool CRD replaces the project's (the suite reads the bundle version from its
annotation, and v1.6.0 made `endpointPickerRef` optional: the project's CRD still requires it), and the
GatewayClass `inference-gateway` that names Envoy Gateway's controller is applied.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

from hack.conformance.results import SUITE_TESTS, Counts, OutputReader, output_counts, report_counts
from hack.realparts import GIE_VERSION, STACK_PARTS, binary, gie_crd_files

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "hack" / "stack.sh"
REPORT = ROOT / "docs" / "conformance" / GIE_VERSION / "inference-gateway-extension-report.yaml"
GATEWAY_CLASS = "inference-gateway"
CONTROLLER = "gateway.envoyproxy.io/gatewayclass-controller"
CONFORMANCE_PARTS = ("conformance", "lwepp", "echo-basic")
TICK_SECONDS = 60.0


def _log(message: str) -> None:
    print(f"[conformance] {message}", flush=True)


def _git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else ""


def implementation_version() -> str:
    """The commit under test (GIE's rules: a reproducible snapshot, never a branch name)."""
    commit = _git("rev-parse", "--short=12", "HEAD") or "unknown"
    return commit + ("-dirty" if _git("status", "--porcelain", "--untracked-files=no") else "")


def kubectl(state: Path, *args: str, stdin: str | None = None) -> str:
    cmd = [str(binary("kubectl")), f"--kubeconfig={state / 'kubeconfig'}", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, input=stdin)
    if done.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def prepare(state: Path) -> None:
    """GIE's InferencePool CRD in place of ours, and the GatewayClass the suite is told to use."""
    for crd in gie_crd_files():
        _log(f"installing GIE {GIE_VERSION}'s {crd.name} in place of the project's")
        kubectl(state, "replace", "-f", str(crd))
    kubectl(state, "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    gateway_class = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GatewayClass",
        "metadata": {"name": GATEWAY_CLASS},
        "spec": {"controllerName": CONTROLLER},
    }
    kubectl(state, "apply", "-f", "-", stdin=yaml.safe_dump(gateway_class))


def suite_command(args: argparse.Namespace, report: Path) -> list[str]:
    cmd = [
        str(binary("conformance")),
        "-test.v",
        "-test.run=^TestConformance$",
        "-test.timeout=4h",
        f"-gateway-class={GATEWAY_CLASS}",
        f"-organization={args.organization}",
        f"-project={args.project}",
        f"-url={args.url}",
        f"-version={args.version or implementation_version()}",
        f"-contact={args.contact or _git('log', '-1', '--format=%ae') or 'unknown'}",
        "-mode=default",
        f"-report-output={report}",
    ]
    if args.run_test:
        cmd.append(f"-run-test={args.run_test}")
    if args.keep:
        cmd += ["-cleanup-base-resources=false"]
    return cmd + list(args.suite_arg)


def run_suite(cmd: list[str], state: Path, log_path: Path) -> OutputReader:
    """Runs the suite binary, its whole output in `log_path`, a line per test on stdout."""
    reader = OutputReader()
    env = {**os.environ, "KUBECONFIG": str(state / "kubeconfig")}
    started = time.monotonic()
    done = threading.Event()

    def tick() -> None:
        while not done.wait(TICK_SECONDS):
            current, since = reader.current, reader.current_since
            what = f"{current} for {time.monotonic() - since:.0f} s" if current else "between tests"
            if not reader.results and current is None:
                what = "setup (base manifests, Gateways, Pods)"
            _log(f"still running: {what} (suite {time.monotonic() - started:.0f} s)")

    threading.Thread(target=tick, daemon=True).start()
    _log(f"running the suite (log: {log_path})")
    with (
        log_path.open("w") as out,
        subprocess.Popen(
            cmd, cwd=state, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as process,
    ):
        assert process.stdout is not None
        for line in process.stdout:
            out.write(line)
            out.flush()
            before, since = reader.current, reader.current_since
            result = reader.feed(line)
            if reader.current != before:
                if before is not None:
                    # The outcome comes at the end of the run (go test -v prints subtests' results then).
                    signs = " | ".join(reader.reasons_so_far(before))
                    elapsed = time.monotonic() - since
                    _log(f"{before} ended after {elapsed:.0f} s" + (f": {signs}" if signs else ""))
                if reader.current is not None:
                    _log(f"{reader.current} ...")
            if result is not None:
                _log(f"{result.outcome} {result.name} ({result.seconds:.0f} s)")
        process.wait()
    done.set()
    _log(f"suite exited with {process.returncode} after {time.monotonic() - started:.0f} s")
    return reader


def summarize(reader: OutputReader, report: Path) -> Counts:
    results = reader.final()
    for result in results:
        _log(f"{result.outcome:<7} {result.name}")
        for reason in result.reasons:
            _log(f"          {reason}")
    counts = output_counts(results)
    if report.is_file():
        from_report = report_counts(yaml.safe_load(report.read_text()) or {})
        if from_report is not None:
            counts = from_report
    else:
        _log(f"the suite wrote no report ({report}): counts from its output, a test not run as failed")
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(prog="hack/conformance.sh", description=__doc__)
    parser.add_argument("--state", type=Path, help="the stack's state directory (default: a new temp dir)")
    parser.add_argument("--keep", action="store_true", help="leave the stack and the suite's base resources")
    parser.add_argument("--run-test", help="one test by its short name (the others count as skipped)")
    parser.add_argument("--report", type=Path, help=f"default: {REPORT.relative_to(ROOT)} (full runs)")
    parser.add_argument("--organization", default="inference-gateway-extension")
    parser.add_argument("--project", default="inference-gateway-extension")
    parser.add_argument("--url", default="https://gateway.envoyproxy.io", help="the project's home page")
    parser.add_argument("--version", help="implementation version (default: the commit under test)")
    parser.add_argument("--contact", help="default: the last commit's author e-mail")
    parser.add_argument("--suite-arg", action="append", default=[], help="passed on to the suite binary")
    args = parser.parse_args()

    for name in (*STACK_PARTS, *CONFORMANCE_PARTS):
        _log(f"{name}: {binary(name)}")
    state = (args.state or Path(tempfile.mkdtemp(prefix="igw-conformance-"))).resolve()
    report = (args.report or (state / "report.yaml" if args.run_test else REPORT)).resolve()
    report.parent.mkdir(parents=True, exist_ok=True)
    report.unlink(missing_ok=True)
    _log(f"bringing the stack up in {state}")
    up = [str(STACK), "up", "--state", str(state), "--envoy-deploy", "GatewayNamespace"]
    if subprocess.run(up).returncode != 0:
        _log("the stack did not come up")
        print(Counts(0, len(SUITE_TESTS), 0).line(GIE_VERSION))
        return 1
    try:
        prepare(state)
        reader = run_suite(suite_command(args, report), state, state / "logs" / "conformance.log")
        counts = summarize(reader, report)
        _log(f"report: {report}")
        _log(f"logs: {state / 'logs'}, Pods' logs under {state / 'pods'}")
    finally:
        if args.keep:
            _log(f"stack kept: KUBECONFIG={state / 'kubeconfig'}; ./hack/stack.sh down --state {state}")
        else:
            subprocess.run([str(STACK), "down", "--state", str(state)], capture_output=True)
    print(counts.line(GIE_VERSION), flush=True)
    return 0 if counts.failed == 0 and counts.skipped == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
