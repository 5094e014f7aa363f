#!/usr/bin/env bash
# TEMPORARY demo: validates both seed scenarios (later issues make it run the whole local gateway).
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib/venv.sh
ensure_venv
"$PY" -m api validate config/samples/*.yaml
