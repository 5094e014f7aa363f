"""GIE v1.6.0's conformance suite (gateway profile) on the real stack, every test run, as
./hack/conformance.sh runs it; the report goes to a temporary file (docs/conformance/ keeps the committed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hack.conformance.results import SUITE_TESTS

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parent.parent


def test_the_conformance_suite_passes_every_test(tmp_path: Path) -> None:
    report = tmp_path / "report.yaml"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "hack.conformance",
            "--state",
            str(tmp_path / "stack"),
            "--report",
            str(report),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=2400,
        check=False,
    )
    lines = run.stdout.strip().splitlines()
    expected = (
        f"conformance: passed={len(SUITE_TESTS)} failed=0 skipped=0 (gateway-api-inference-extension v1.6.0)"
    )
    assert lines and lines[-1] == expected, run.stdout[-4000:] + run.stderr[-2000:]
    assert run.returncode == 0
    (profile,) = yaml.safe_load(report.read_text())["profiles"]
    assert profile["core"]["result"] == "success"
    assert profile["core"]["statistics"] == {"Failed": 0, "Passed": len(SUITE_TESTS), "Skipped": 0}
