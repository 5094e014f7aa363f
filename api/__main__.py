"""`python -m api validate FILE...`: check every inference object (pools, models, rewrites...) in YAML."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TextIO

from api.errors import ValidationError
from api.parse import Parsed, owns, parse_object
from api.yamlio import ManifestError, load_documents


def validate_file(path: str, out: TextIO) -> bool:
    """Print one line per owned object (and every error of invalid ones); True if all are valid."""
    try:
        docs = load_documents(path)
    except ManifestError as exc:
        print(f"FAIL {exc}", file=out)
        return False
    ok = True
    for doc in docs:
        if not owns(doc):
            continue
        try:
            obj: Parsed = parse_object(doc)
        except ValidationError as exc:
            ok = False
            for error in exc.errors:
                print(f"FAIL {path}: {error}", file=out)
            continue
        version = obj.api_version.rsplit("/", 1)[1]
        print(f"ok   {type(obj).__name__} {obj.key} ({version})", file=out)
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m api", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    validate = commands.add_parser("validate", help="validate InferencePool/InferenceModel manifests")
    validate.add_argument("files", nargs="+", metavar="FILE")
    args = parser.parse_args(argv)
    for path in args.files:
        # Stop at the first invalid file, after listing all of its errors.
        if not validate_file(path, sys.stdout):
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
