#!/usr/bin/env bash
# Runs every check: installs the project with its dev extra into .venv, builds the real control plane
# (hack/realparts), then ruff, mypy --strict, pytest (the real-stack tests included).
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
echo "== real parts (Envoy Gateway, kube-apiserver, etcd, ...: built with Go on first use, then cached)"
if command -v go >/dev/null; then
  PYTHONPATH=. "$PY" -m hack.realparts
else
  echo "no Go toolchain on PATH: the real-stack tests (marker 'stack') will fail; install Go >= 1.26"
fi
echo "== pytest"
exec "$VENV/bin/pytest" -q "$@"
