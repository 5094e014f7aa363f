"""`python -m api validate`: one line per owned object, all errors of an invalid file, exit status."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api", "validate", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def test_accepts_both_seed_samples() -> None:
    samples = sorted(str(p) for p in (ROOT / "config" / "samples").glob("seed-*.yaml"))
    assert len(samples) == 2
    result = run(*samples)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        "ok   InferencePool default/reasoning-pool (v1alpha1)",
        "ok   InferenceModel default/inferencemodel-sample (v1alpha1)",
        "ok   InferencePool default/vllm-llama2-7b-pool (v1alpha1)",
        "ok   InferenceModel default/inferencemodel-sample (v1alpha1)",
    ]


def test_accepts_the_rewrite_sample() -> None:
    result = run(str(ROOT / "config" / "samples" / "rewrite-lora-canary.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        "ok   InferenceModelRewrite default/lora-request-canary (v1alpha2)",
        "ok   InferenceObjective default/batch (v1alpha2)",
    ]


def test_invalid_file_lists_every_error_and_stops(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n---\n"
        "apiVersion: inference.networking.x-k8s.io/v1alpha2\nkind: InferenceModel\nmetadata: {name: foo}\n"
        "spec:\n  modelName: m\n  poolRef: {name: p}\n  targetModels: [{name: a, weight: 0}, {name: b}]\n",
        encoding="utf-8",
    )
    never = tmp_path / "never.yaml"
    never.write_text("kind: [", encoding="utf-8")
    result = run(str(bad), str(never))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"FAIL {bad}: InferenceModel default/foo: spec.targetModels[0].weight: must be between 1 and 1000000",
        f"FAIL {bad}: InferenceModel default/foo: spec.targetModels: "
        "weights must be set on all targetModels or on none",
    ]


def test_yaml_error_is_reported_not_raised(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("a: [1\n", encoding="utf-8")
    result = run(str(bad))
    assert result.returncode == 1 and "broken.yaml:" in result.stdout and "Traceback" not in result.stderr
