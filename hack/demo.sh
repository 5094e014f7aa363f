#!/usr/bin/env bash
# The demo: runs a seed scenario (lora, the default, or base) through the local gateway.
#   ./hack/demo.sh [lora|base] [--requests N] [--keep]
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib/venv.sh
ensure_venv
echo "== validating the samples"
"$PY" -m api validate config/samples/*.yaml
echo "== running the demo"
PYTHONPATH=. exec "$PY" -m localgateway.demo "$@"
