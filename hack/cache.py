"""The per-user cache the dev tools share: where it lives, a lock per step and a stamp written last."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from collections.abc import Iterator
from pathlib import Path


def cache_root() -> Path:
    """``${XDG_CACHE_HOME:-~/.cache}/inference-gateway-extension``: never the clone, which CI makes fresh."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "inference-gateway-extension"


@contextlib.contextmanager
def locked(lock_path: Path, who: str) -> Iterator[None]:
    """Holds an exclusive advisory lock; a second process waits here instead of doing the work twice."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"[{who}] waiting for another run holding {lock_path}", file=sys.stderr, flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def stamp_ok(stamp: Path, key: str) -> bool:
    return stamp.is_file() and stamp.read_text().strip() == key


def write_stamp(stamp: Path, key: str) -> None:
    """Written last, atomically: an interrupted step is redone from scratch next time."""
    tmp = stamp.with_suffix(".tmp")
    tmp.write_text(key + "\n")
    tmp.replace(stamp)
