#!/usr/bin/env bash
# Runs every check: installs the project with its dev extra into .venv, then ruff, mypy --strict, pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib/venv.sh
ensure_venv

echo "== generated code up to date"
"$PY" hack/gen_stubs.py --check-or-write
echo "== ruff"
"$VENV/bin/ruff" check .
echo "== mypy --strict"
"$VENV/bin/mypy"
echo "== pytest"
exec "$VENV/bin/pytest" -q "$@"
