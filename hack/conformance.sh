#!/usr/bin/env bash
# The Gateway API Inference Extension conformance suite (v1.6.0) against the real stack: builds the suite,
# lwepp and echo-basic (first time), brings the stack up, runs the suite, writes GIE's report to
# docs/conformance/v1.6.0/, stops the stack and ends with one line:
#   conformance: passed=N failed=M skipped=K (gateway-api-inference-extension v1.6.0)
# Exit code non-zero if a test failed or was skipped.
#   ./hack/conformance.sh [--state DIR] [--keep] [--run-test NAME] [--report FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib/venv.sh
ensure_venv
PYTHONPATH=. exec "$PY" -m hack.conformance "$@"
