"""api/yamlio.py: multi-document manifests and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.yamlio import ManifestError, load_documents, parse_documents


def test_skips_empty_documents_and_comments(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("# head\n---\nkind: A\n---\n---\n# only a comment\n---\nkind: B\n", encoding="utf-8")
    assert [d["kind"] for d in load_documents(path)] == ["A", "B"]


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("kind: A\n---\nkind: B\nspec: {a: [1, 2}\n", encoding="utf-8")
    with pytest.raises(ManifestError, match=r"bad\.yaml:4:\d+: invalid YAML"):
        load_documents(path)


def test_non_mapping_document_is_an_error() -> None:
    with pytest.raises(ManifestError, match="document 2 is a list"):
        parse_documents("kind: A\n---\n- 1\n", "x.yaml")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="cannot read"):
        load_documents(tmp_path / "nope.yaml")
