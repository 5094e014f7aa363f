#!/usr/bin/env bash
# The demo: runs a scenario through the real stack (the local gateway without Go, or with --stand-in):
# the seed's LoRA canary (lora, the default), its base-model canary (base), or mirroring into a pool (mirror).
#   ./hack/demo.sh [lora|base|mirror] [--requests N] [--keep] [--stand-in]
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib/venv.sh
ensure_venv
echo "== validating the samples"
"$PY" -m api validate config/samples/*.yaml
echo "== running the demo"
PYTHONPATH=. exec "$PY" -m localgateway.demo "$@"
