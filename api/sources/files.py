"""Local mode: YAML manifests in files and directories as the source of truth, kept in sync with disk."""

from __future__ import annotations

import asyncio
import copy
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import structlog
import watchfiles

from api import parse
from api.sources.store import ObjectKey, ObjectStore, Snapshot, key_of
from api.yamlio import load_documents

log = structlog.get_logger(__name__)

DEFAULT_KEEP_KINDS = ("Gateway", "GatewayClass", "HTTPRoute", "Service", "Pod")
YAML_SUFFIXES = (".yaml", ".yml")
# Kinds that have no namespace; everything else without metadata.namespace lands in "default".
CLUSTER_SCOPED_KINDS = frozenset(
    {"GatewayClass", "Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "Node"}
)
DEFAULT_NAMESPACE = "default"
# A file modified this recently is re-read even if its stat looks unchanged: a second write within
# the filesystem's timestamp granularity can keep mtime and size equal ("racy" stat, as in git).
_RACY_WINDOW_NS = 2_000_000_000


@dataclass(frozen=True)
class _FileState:
    signature: tuple[int, int, int, int]  # inode, size, mtime_ns, ctime_ns
    objects: tuple[Mapping[str, Any], ...]  # last good content
    error: str | None = None


class FileSource:
    """Loads InferencePools/InferenceModels (and `keep_kinds`) from YAML files into a store.

    Objects that disappear from the files are deleted; a file with a YAML error keeps its last good
    content and the error is reported in `errors` and the log. `refresh()` is cheap (stat only for
    unchanged files), so callers run it at hook time and never serve stale output.
    """

    def __init__(
        self,
        paths: Sequence[Path | str],
        store: ObjectStore | None = None,
        keep_kinds: Sequence[str] = DEFAULT_KEEP_KINDS,
        poll_interval: float = 5.0,
    ) -> None:
        self.paths = tuple(Path(p) for p in paths)
        self.store = store if store is not None else ObjectStore()
        self.keep_kinds = frozenset(keep_kinds)
        self.poll_interval = poll_interval
        self._lock = threading.Lock()
        self._files: dict[Path, _FileState] = {}
        self._applied: dict[ObjectKey, Mapping[str, Any]] = {}
        self._synced = asyncio.Event()
        self._stop = asyncio.Event()

    @property
    def errors(self) -> Mapping[Path, str]:
        """Files whose latest content could not be loaded, with the reason."""
        with self._lock:
            return MappingProxyType({p: s.error for p, s in self._files.items() if s.error})

    def refresh(self) -> bool:
        """Rescan now (synchronous, thread-safe); returns whether the store changed."""
        with self._lock:
            scan_started = time.time_ns()
            current = _yaml_files(self.paths)
            changed_files = False
            for path in list(self._files):
                if path not in current:
                    del self._files[path]
                    changed_files = True
                    log.info("manifest file removed", path=str(path))
            for path, signature in current.items():
                old = self._files.get(path)
                racy = scan_started - signature[2] < _RACY_WINDOW_NS
                if old is not None and old.signature == signature and not racy:
                    continue
                state = self._load(path, signature, old)
                if old is None or state.objects != old.objects or state.error != old.error:
                    changed_files = True
                self._files[path] = state
            if not changed_files:
                return False
            return self._apply()

    async def fresh_snapshot(self) -> Snapshot:
        """A snapshot that reflects the files as they are now."""
        self.refresh()
        return self.store.snapshot()

    @property
    def kinds_read(self) -> frozenset[str]:
        """Kinds whose objects in the files are the whole truth: Pods and HTTPRoutes once any is there.

        Services are not: manifests name picker Services they do not define (the local gateway's)."""
        snapshot = self.store.snapshot()
        present = {"Pod"} if snapshot.pods else set()
        if snapshot.others_of_kind("HTTPRoute"):
            present.add("HTTPRoute")
        return frozenset(present)

    async def wait_synced(self) -> None:
        """Return once the files have been loaded at least once."""
        await self._synced.wait()

    async def run(self) -> None:
        """Load, then follow changes until `stop()` (watchfiles, plus a slow poll as a safety net)."""
        await asyncio.to_thread(self.refresh)
        self._synced.set()
        watch_roots = _watch_roots(self.paths)
        if not watch_roots:
            log.warning("no existing manifest paths to watch; polling", paths=[str(p) for p in self.paths])
        while not self._stop.is_set():
            try:
                if watch_roots:
                    async for _changes in watchfiles.awatch(
                        *watch_roots,
                        stop_event=self._stop,
                        debounce=100,
                        step=20,
                        rust_timeout=int(self.poll_interval * 1000),
                        yield_on_timeout=True,
                    ):
                        await asyncio.to_thread(self.refresh)
                else:
                    await asyncio.wait_for(self._stop.wait(), self.poll_interval)
            except TimeoutError:
                await asyncio.to_thread(self.refresh)
            except (OSError, RuntimeError) as exc:
                # A watched directory vanished or the notifier failed: poll, then try to watch again.
                log.warning("file watch failed; retrying", error=str(exc))
                await asyncio.sleep(min(self.poll_interval, 1.0))
                await asyncio.to_thread(self.refresh)
                watch_roots = _watch_roots(self.paths)

    def stop(self) -> None:
        self._stop.set()

    def _load(self, path: Path, signature: tuple[int, int, int, int], old: _FileState | None) -> _FileState:
        try:
            docs = load_documents(path)
        except Exception as exc:  # a bad file must never take the source down
            message = str(exc)
            if old is None or old.error != message:
                log.error(
                    "manifest file not loaded; keeping its last good content", path=str(path), error=message
                )
            return _FileState(signature, old.objects if old else (), message)
        objects = tuple(_normalized(d) for d in docs if self._wanted(d))
        return _FileState(signature, objects)

    def _wanted(self, obj: Mapping[str, Any]) -> bool:
        return parse.owns(obj) or obj.get("kind") in self.keep_kinds

    def _apply(self) -> bool:
        desired: dict[ObjectKey, Mapping[str, Any]] = {}
        for path in sorted(self._files):
            for obj in self._files[path].objects:
                key = key_of(obj)
                if key in desired and desired[key] != obj:
                    log.warning(
                        "object defined in several files; the last file wins",
                        object=key.display,
                        path=str(path),
                    )
                desired[key] = obj
        deletes = [k for k in self._applied if k not in desired]
        upserts = [o for k, o in desired.items() if self._applied.get(k) != o]
        self._applied = desired
        return self.store.apply(upserts=upserts, deletes=deletes)


def _normalized(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """Fill metadata.namespace the way `kubectl apply` would, so keys and consumers agree."""
    out = copy.deepcopy(dict(obj))
    meta = out.get("metadata")
    if isinstance(meta, dict) and not meta.get("namespace") and out.get("kind") not in CLUSTER_SCOPED_KINDS:
        meta["namespace"] = DEFAULT_NAMESPACE
    return out


def _yaml_files(paths: Sequence[Path]) -> dict[Path, tuple[int, int, int, int]]:
    """Every YAML file named or under a named directory (hidden entries skipped), with its stat."""
    found: dict[Path, tuple[int, int, int, int]] = {}
    for root in paths:
        candidates: list[Path]
        if root.is_dir():
            candidates = []
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                candidates.extend(
                    Path(dirpath, f) for f in filenames if f.endswith(YAML_SUFFIXES) and not f.startswith(".")
                )
        else:
            candidates = [root]
        for path in candidates:
            try:
                st = path.stat()
            except OSError:
                continue  # gone between listing and stat, or a dangling path: treated as absent
            found[path] = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    return found


def _watch_roots(paths: Sequence[Path]) -> list[Path]:
    """Directories to watch: named directories, and the parent of each named file (editors replace
    files by rename, which a watch on the file itself would lose)."""
    roots: set[Path] = set()
    for p in paths:
        target = p if p.is_dir() else p.parent
        if target.is_dir():
            roots.add(target)
    return sorted(roots)
