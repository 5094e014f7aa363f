"""FileSource: YAML files and directories as the source of truth, refreshed at call time and watched."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from api.sources import FileSource, Snapshot

SAMPLES = Path(__file__).resolve().parents[1] / "config" / "samples"

POOL = """\
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: InferencePool
metadata:
  name: pool
spec:
  targetPortNumber: 8000
  selector:
    app: vllm
  extensionRef:
    name: picker
"""

MODEL = """\
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: InferenceModel
metadata:
  name: {name}
spec:
  modelName: {model}
  poolRef:
    name: pool
"""

POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: sim-0
  labels:
    app: vllm
status:
  podIP: 127.0.0.2
"""


def model_doc(name: str, model: str) -> str:
    return MODEL.format(name=name, model=model)


def test_loads_multi_document_files_from_a_directory(tmp_path: Path) -> None:
    (tmp_path / "pool.yaml").write_text(POOL + "---\n" + POD)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "models.yml").write_text(model_doc("a", "llama") + "---\n" + model_doc("b", "qwen"))
    (tmp_path / "notes.txt").write_text("not yaml: [")
    source = FileSource([tmp_path])
    assert source.refresh()
    snap = source.store.snapshot()
    assert set(snap.pools) == {"default/pool"}
    assert set(snap.models) == {"default/a", "default/b"}
    assert [p.ip for p in snap.pods_for_pool(snap.pools["default/pool"])] == ["127.0.0.2"]


def test_edit_is_seen_by_refresh_immediately(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(model_doc("a", "llama"))
    source = FileSource([path])
    source.refresh()
    assert source.store.snapshot().models["default/a"].model_name == "llama"
    path.write_text(model_doc("a", "gemma"))  # same size, likely same mtime tick
    assert source.refresh()
    assert source.store.snapshot().models["default/a"].model_name == "gemma"


def test_unchanged_files_do_not_bump_the_version(tmp_path: Path) -> None:
    (tmp_path / "pool.yaml").write_text(POOL)
    source = FileSource([tmp_path])
    source.refresh()
    version = source.store.snapshot().version
    assert not source.refresh()
    assert source.store.snapshot().version == version


def test_objects_gone_from_files_are_deleted(tmp_path: Path) -> None:
    (tmp_path / "models.yaml").write_text(model_doc("a", "llama") + "---\n" + model_doc("b", "qwen"))
    (tmp_path / "pool.yaml").write_text(POOL)
    source = FileSource([tmp_path])
    source.refresh()
    (tmp_path / "models.yaml").write_text(model_doc("a", "llama"))
    source.refresh()
    assert set(source.store.snapshot().models) == {"default/a"}
    (tmp_path / "pool.yaml").unlink()
    source.refresh()
    assert source.store.snapshot().pools == {}


def test_syntax_error_keeps_last_good_content_and_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(model_doc("a", "llama"))
    source = FileSource([tmp_path])
    source.refresh()
    path.write_text("apiVersion: [unclosed\n")
    source.refresh()
    assert set(source.store.snapshot().models) == {"default/a"}
    assert "invalid YAML" in source.errors[path]
    path.write_text(model_doc("b", "qwen"))
    source.refresh()
    assert set(source.store.snapshot().models) == {"default/b"}
    assert not source.errors


def test_invalid_object_is_reported_in_snapshot(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(model_doc("a", "llama").replace("  poolRef:\n    name: pool\n", ""))
    source = FileSource([tmp_path])
    source.refresh()
    snap = source.store.snapshot()
    assert snap.models == {}
    assert any("spec.poolRef" in e for e in snap.invalid["InferenceModel default/a"])


def test_keep_kinds_selects_raw_objects(tmp_path: Path) -> None:
    shutil.copy(SAMPLES / "seed-lora-canary.yaml", tmp_path)
    source = FileSource([tmp_path], keep_kinds=("Service",))
    source.refresh()
    snap = source.store.snapshot()
    assert {o["kind"] for o in snap.others} == {"Service"}
    assert all(o["metadata"]["namespace"] == "default" for o in snap.others)
    assert set(snap.models) == {"default/inferencemodel-sample"}


@pytest.mark.parametrize("sample", ["seed-lora-canary.yaml", "seed-base-model-canary.yaml"])
def test_seed_samples_load_unchanged(sample: str) -> None:
    source = FileSource([SAMPLES / sample])
    source.refresh()
    snap = source.store.snapshot()
    assert snap.pools and snap.models and not snap.invalid and not source.errors


async def _wait_for(source: FileSource, check: Callable[[Snapshot], bool]) -> Snapshot:
    async def loop() -> Snapshot:
        snap = source.store.snapshot()
        while not check(snap):
            snap = await source.store.wait_for_change(snap.version, timeout=1.0)
        return snap

    return await asyncio.wait_for(loop(), timeout=30)


async def test_run_follows_create_edit_replace_and_delete(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(model_doc("a", "llama"))
    source = FileSource([tmp_path], poll_interval=5.0)
    task = asyncio.create_task(source.run())
    try:
        await asyncio.wait_for(source.wait_synced(), 30)
        assert set(source.store.snapshot().models) == {"default/a"}

        (tmp_path / "more.yaml").write_text(model_doc("b", "qwen"))
        await _wait_for(source, lambda s: "default/b" in s.models)

        # Editors save by writing a temporary file and renaming it over the original.
        tmp = tmp_path / ".models.yaml.swp"
        tmp.write_text(model_doc("a", "mistral"))
        os.replace(tmp, path)
        await _wait_for(
            source,
            lambda s: s.models.get("default/a") is not None and s.models["default/a"].model_name == "mistral",
        )

        (tmp_path / "more.yaml").unlink()
        await _wait_for(source, lambda s: "default/b" not in s.models)
    finally:
        source.stop()
        await asyncio.wait_for(task, 30)


async def test_fresh_snapshot_sees_an_edit_without_the_watcher(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(model_doc("a", "llama"))
    source = FileSource([path])
    assert (await source.fresh_snapshot()).models["default/a"].model_name == "llama"
    path.write_text(model_doc("a", "phi"))
    assert (await source.fresh_snapshot()).models["default/a"].model_name == "phi"
