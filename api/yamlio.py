"""Reading Kubernetes manifests: multi-document YAML files into plain dicts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class ManifestError(ValueError):
    """A manifest file cannot be read or is not YAML made of mappings; the message names file and line."""


def load_documents(path: str | Path) -> list[dict[str, Any]]:
    """Every non-empty document of a (multi-document) YAML file, each a mapping."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read: {exc}") from None
    return parse_documents(text, str(path))


def parse_documents(text: str, source: str = "<string>") -> list[dict[str, Any]]:
    """Like load_documents, for text already in memory; `source` names it in errors."""
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        raise ManifestError(f"{source}{where}: invalid YAML: {problem}") from None
    out: list[dict[str, Any]] = []
    for index, doc in enumerate(docs):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise ManifestError(f"{source}: document {index + 1} is a {type(doc).__name__}, not a mapping")
        out.append(doc)
    return out
